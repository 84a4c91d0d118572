//! Direct convolution over padded, stride-phase-split rows: depthwise and grouped layers
//! with few channels per group, at any stride and dilation, and narrow planes.
//!
//! A task is one output plane `(b, o)` × a band of output rows. It first copies the input
//! rows the band reads, for each channel of `o`'s group, into a per-thread scratch in the
//! [`super::phase`] layout: padded by the padding mode and split into `s_w` phases. Then
//! every tap of every output tile is one contiguous run of the scratch (output `j` of
//! kernel column `v` reads element `j + ⌊v·d_w/s_w⌋` of phase `(v·d_w) mod s_w`), so the
//! tile loop is a vector load and an FMA per tap at stride 2, 3 or 4 and any dilation as at
//! stride 1: no scalar gather, no border columns. The phase rows are zero-extended to a
//! whole number of tiles, so the last tile of a row is computed full width and only its
//! valid outputs are stored.
//!
//! The tile is the smallest of 16, 32, 64 or 128 (AVX-512; 64 with AVX2) outputs that
//! covers the row (capped at the widest), so a 28- or 56-wide depthwise plane keeps one
//! accumulator set in registers with little waste. When one tile covers a row of at most
//! 32 outputs, two output rows are computed together: twice the independent FMA chains.
//!
//! Depthwise planes (one input channel per output) on AVX-512 use the intrinsics tile of
//! [`super::dwtile`] instead: 4 rows × 2 vectors, 8 independent FMA chains (dw 5×5 on
//! 28×28: 0.21 → 0.16 ms).
//!
//! Depthwise planes with zero padding at column stride 1 or 2 skip the copy altogether:
//! the AVX-512 tile of [`super::dwsplit`] reads the input rows in place (at stride 2
//! splitting their even and odd columns in registers; the copy was twice the tiles' time
//! there). Through the server, alternated with the phase-copy build at load ~3: dw 3×3/2
//! on 96×112×112 0.32 → 0.15 ms, 5×5/2 on 144×56×56 0.175 → 0.10 ms.
//!
//! Against the in-place direct kernel ([`super::direct`]) this pays one copy of the band's
//! input per output channel, which is why the plan keeps wide stride-1 image filters on
//! the in-place kernel and sends strided, dilated, narrow and depthwise layers here.

use std::cell::RefCell;

use ndarray::{Array4, ArrayView1, ArrayView4};

use super::isa::{self, madd, Bands, Isa, Out, TASK_MACS};
use super::params::Conv2dGeometry;
use super::phase::PhaseLayout;
use super::{CancelToken, Cancelled};

/// Widest tile any instruction set uses (AVX-512: 8 zmm).
const MAX_TILE: usize = 2 * isa::TILE;

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every row band.
pub fn conv2d_phased(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    conv2d_phased_isa(input, weight, bias, geom, cancel, isa::detect())
}

/// [`conv2d_phased`] with the kernel compiled for `isa`.
pub(crate) fn conv2d_phased_isa(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
    isa: Isa,
) -> Result<Array4<f32>, Cancelled> {
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());
    let cpg = g.c_in / g.groups;
    let taps = cpg * g.k_h * g.k_w;
    let tile = tile_for(g.out_w);
    // Every tile of every row reads `tile` floats from `j0 + shift` with
    // `j0 < out_w.next_multiple_of(tile)`, `shift ≤ (eff_w − 1) / s_w`.
    let [_, eff_w] = g.effective_kernel();
    let layout = PhaseLayout::new(
        &g,
        g.out_w.next_multiple_of(tile) + (eff_w - 1) / g.stride[1],
    );
    let row_macs = (g.out_w * taps).max(1);
    let band_rows = (TASK_MACS / row_macs).max(1);
    let group_len = cpg * g.h * g.w;
    let split = isa == Isa::Avx512 && splits_in_registers(&g);
    isa::run(isa, &g, band_rows, cancel, |p| {
        let (b, o) = (p / g.c_out, p % g.c_out);
        let group = o / (g.c_out / g.groups);
        PhasedArgs {
            g: &g,
            layout: &layout,
            x: &x[(b * g.c_in + group * cpg) * g.h * g.w..][..group_len],
            taps: &wt[o * taps..][..taps],
            bias: bias.as_ref().map_or(0.0, |v| v[o]),
            tile,
            split,
        }
    })
}

/// Whether the AVX-512 build computes `g` from the input rows in place
/// ([`super::dwsplit`]: depthwise, column stride 1, or 2 with even and odd columns split
/// in registers, zero padding) instead of copying each band into the phase layout first.
pub fn splits_in_registers(g: &Conv2dGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa::detect() == Isa::Avx512 && super::dwsplit::supports(g)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// The smallest tile of 16, 32, 64 or [`MAX_TILE`] outputs that covers `out_w`.
fn tile_for(out_w: usize) -> usize {
    [16, 32, 64]
        .into_iter()
        .find(|&t| out_w <= t)
        .unwrap_or(MAX_TILE)
}

/// Inputs of one output plane's bands.
pub(crate) struct PhasedArgs<'a> {
    g: &'a Conv2dGeometry,
    layout: &'a PhaseLayout,
    /// The input channels of this plane's group, `[c_in/groups, h, w]` row-major.
    x: &'a [f32],
    /// This output channel's weights, `[c_in/groups, k_h, k_w]` row-major.
    taps: &'a [f32],
    bias: f32,
    /// Outputs per tile (16, 32, 64 or 128), capped by the instruction set's widest.
    tile: usize,
    /// Read the input rows in place through [`super::dwsplit`] (AVX-512 build only).
    split: bool,
}

// SAFETY: `phased_band` and `dwsplit::run` store every output column of every row of
// their band: tiles start at 0, 16, 32… up to `out_w` and each stores `min(tile, out_w −
// j0)` outputs (property-tested against the reference, which would see uninitialised
// values otherwise).
#[allow(unsafe_code)]
unsafe impl Bands for PhasedArgs<'_> {
    #[inline(always)]
    fn band<const FMA: bool, const TILE: usize>(&self, i0: usize, out: &mut [Out]) {
        // Constant tile widths so the accumulators are registers; never wider than the
        // instruction set's widest (TILE).
        // The AVX-512 build (TILE = MAX_TILE) hands depthwise planes to the intrinsics
        // tiles: in place at column stride 1 and 2 with zero padding, else over the phase
        // copy.
        #[cfg(target_arch = "x86_64")]
        if TILE == MAX_TILE && self.split {
            let plane = super::dwsplit::SplitPlane {
                x: self.x,
                taps: self.taps,
                g: self.g,
                bias: self.bias,
            };
            return super::dwsplit::run(&plane, i0, out);
        }
        if TILE == MAX_TILE && cfg!(target_arch = "x86_64") && self.g.c_in == self.g.groups {
            return phased_band::<FMA, 16, true>(self, i0, out);
        }
        match self.tile.min(TILE) {
            16 => phased_band::<FMA, 16, false>(self, i0, out),
            32 => phased_band::<FMA, 32, false>(self, i0, out),
            64 => phased_band::<FMA, 64, false>(self, i0, out),
            _ => phased_band::<FMA, TILE, false>(self, i0, out),
        }
    }
}

thread_local! {
    /// Per-thread padded, phase-split rows of the current band.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread tap offsets into `ROWS`.
    static TAPS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of padded rows one sub-band fills: half of L1d, so that the tiles read the rows
/// from L1 right after they were written. A whole 112×112 plane at stride 2 is 58 KiB, and
/// filling and reading it through L2 cost dw 3×3/2 a fifth of its time.
const SCRATCH_BYTES: usize = 16 << 10;

/// Output rows `i0 ..` (as many as `out` holds) of one plane, in sub-bands whose padded
/// input rows fit [`SCRATCH_BYTES`]; with `DW` (one input channel per output, AVX-512
/// only) through [`super::dwtile`].
#[inline(always)]
fn phased_band<const FMA: bool, const T: usize, const DW: bool>(
    a: &PhasedArgs<'_>,
    i0: usize,
    out: &mut [Out],
) {
    let g = a.g;
    let [eff_h, _] = g.effective_kernel();
    let row_bytes = (g.c_in / g.groups) * a.layout.row_len() * 4;
    let in_rows = SCRATCH_BYTES / row_bytes;
    // At least 4 output rows, the depthwise tile's height.
    let sub_rows = (in_rows.saturating_sub(eff_h) / g.stride[0] + 1).max(4);
    for (s, rows) in out.chunks_mut(sub_rows * g.out_w).enumerate() {
        phased_rows::<FMA, T, DW>(a, i0 + s * sub_rows, rows);
    }
}

/// [`phased_band`] for one sub-band.
#[inline(always)]
fn phased_rows<const FMA: bool, const T: usize, const DW: bool>(
    a: &PhasedArgs<'_>,
    i0: usize,
    out: &mut [Out],
) {
    let g = a.g;
    let cpg = g.c_in / g.groups;
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let (dh, dw) = (g.dilation[0], g.dilation[1]);
    let rows_out = out.len() / g.out_w;
    // Padded rows r0 .. r0 + n_rows feed this band.
    let r0 = i0 * sh;
    let n_rows = (rows_out - 1) * sh + (g.k_h - 1) * dh + 1;
    let (row_len, wq) = (a.layout.row_len(), a.layout.wq);
    // The scratch is taken out of its thread-local and put back after: the tile loop must
    // not sit in a closure (`LocalKey::with`), which would not inherit this function's
    // target features (its `mul_add` became a libm call: 1 GFLOP/s).
    let mut buf = ROWS.take();
    let mut offsets = TAPS.take();
    {
        buf.resize(cpg * n_rows * row_len, 0.0);
        for (c, chan) in buf.chunks_exact_mut(n_rows * row_len).enumerate() {
            let plane = &a.x[c * g.h * g.w..][..g.h * g.w];
            for (r, row) in chan.chunks_exact_mut(row_len).enumerate() {
                a.layout.fill_row(plane, r0 + r, row);
            }
        }
        let buf = &buf[..];
        // Offset of tap (c, u, v)'s run for output row 0 of the band, tile 0, in the
        // weight's order; row `rr` and tile `j0` add `rr·s_h·row_len + j0`. Computed once
        // per band so that the tile loop does no division.
        'tiles: {
            offsets.clear();
            for c in 0..cpg {
                for u in 0..g.k_h {
                    let row = (c * n_rows + u * dh) * row_len;
                    offsets.extend((0..g.k_w).map(|v| row + (v * dw % sw) * wq + v * dw / sw));
                }
            }
            let offsets = &offsets[..];
            #[cfg(target_arch = "x86_64")]
            if DW {
                let band = super::dwtile::DepthwiseBand {
                    buf,
                    offsets,
                    taps: a.taps,
                    row_stride: sh * row_len,
                    k_w: g.k_w,
                    out_w: g.out_w,
                    bias: a.bias,
                };
                super::dwtile::run(&band, out);
                break 'tiles;
            }
            let src = |base: usize, tap: usize| -> &[f32; T] {
                buf[base + offsets[tap]..][..T]
                    .try_into()
                    .expect("tile in bounds")
            };
            let store = |out_row: &mut [Out], j0: usize, acc: &[f32; T]| {
                let len = T.min(g.out_w - j0);
                for (o, v) in out_row[j0..j0 + len].iter_mut().zip(acc) {
                    o.write(v + a.bias);
                }
            };
            let mut rr = 0;
            // Two rows at a time when one narrow tile covers a row: 2 × (1 or 2) registers of
            // independent accumulators instead of 1 or 2.
            if T <= 32 && g.out_w <= T {
                while rr + 2 <= rows_out {
                    let (mut acc0, mut acc1) = ([0.0f32; T], [0.0f32; T]);
                    let (b0, b1) = (rr * sh * row_len, (rr + 1) * sh * row_len);
                    for (tap, &w) in a.taps.iter().enumerate() {
                        let (s0, s1) = (src(b0, tap), src(b1, tap));
                        for t in 0..T {
                            acc0[t] = madd::<FMA>(w, s0[t], acc0[t]);
                            acc1[t] = madd::<FMA>(w, s1[t], acc1[t]);
                        }
                    }
                    let (first, second) =
                        out[rr * g.out_w..(rr + 2) * g.out_w].split_at_mut(g.out_w);
                    store(first, 0, &acc0);
                    store(second, 0, &acc1);
                    rr += 2;
                }
            }
            for rr in rr..rows_out {
                let out_row = &mut out[rr * g.out_w..(rr + 1) * g.out_w];
                for j0 in (0..g.out_w).step_by(T) {
                    let mut acc = [0.0f32; T];
                    let base = rr * sh * row_len + j0;
                    for (tap, &w) in a.taps.iter().enumerate() {
                        let s = src(base, tap);
                        for t in 0..T {
                            acc[t] = madd::<FMA>(w, s[t], acc[t]);
                        }
                    }
                    store(out_row, j0, &acc);
                }
            }
        }
    }
    ROWS.set(buf);
    TAPS.set(offsets);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::conv::conv2d_reference;
    use crate::conv::testutil::{assert_close, case, depthwise_case};

    fn check_all_isas(
        x: &Array4<f32>,
        w: &Array4<f32>,
        b: Option<&ndarray::Array1<f32>>,
        g: &Conv2dGeometry,
    ) {
        let want = conv2d_reference(x.view(), w.view(), b.map(|b| b.view()), g);
        for isa in isa::available() {
            let got = conv2d_phased_isa(
                x.view(),
                w.view(),
                b.map(|b| b.view()),
                g,
                &CancelToken::new(),
                isa,
            )
            .unwrap();
            assert_close(&got, &want, x, w, b, g);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn phased_equals_reference_with_every_isa((x, w, b, g) in case()) {
            check_all_isas(&x, &w, b.as_ref(), &g);
        }

        #[test]
        fn depthwise_layers_equal_reference((x, w, b, g) in depthwise_case()) {
            check_all_isas(&x, &w, b.as_ref(), &g);
        }

        // The in-register split (`dwsplit`): depthwise at column stride 2 with zero
        // padding, any row stride and row dilation (the split needs d_h | s_h, the rest
        // takes the phase copy), channel multipliers, kernels up to 9 columns, rows
        // narrower than a vector to several tiles wide, batches.
        #[test]
        fn depthwise_column_stride_2_equals_reference(
            (n, c, mult, h, w) in (1usize..3, 1usize..5, 1usize..3, 1usize..30, 1usize..90),
            (k_h, k_w, s_h, d_h) in (1usize..6, 1usize..10, 1usize..5, 1usize..3),
            (pad, bias, seed) in ([0usize..5, 0usize..5, 0usize..5, 0usize..5], any::<bool>(), any::<u64>()),
        ) {
            let Some((x, w, b, g)) = crate::conv::testutil::build(
                [n, c, h, w],
                [c * mult, 1, k_h, k_w],
                ([s_h, 2], [d_h, 1], c, 0, pad),
                bias,
                seed,
            ) else {
                return Ok(());
            };
            check_all_isas(&x, &w, b.as_ref(), &g);
        }

        // The in-place tile at column stride 1 (`dwsplit::tile_s1`): any column dilation,
        // row strides and dilations (d_h | s_h in place, the rest the phase copy), kernels
        // up to 9 columns, rows narrower than a vector to several tiles wide, padding
        // wider than the kernel, batches.
        #[test]
        fn depthwise_column_stride_1_equals_reference(
            (n, c, mult, h, w) in (1usize..3, 1usize..5, 1usize..3, 1usize..30, 1usize..90),
            (k_h, k_w, s_h, d_h, d_w) in (1usize..6, 1usize..10, 1usize..4, 1usize..3, 1usize..4),
            (pad, bias, seed) in ([0usize..5, 0usize..5, 0usize..5, 0usize..5], any::<bool>(), any::<u64>()),
        ) {
            let Some((x, w, b, g)) = crate::conv::testutil::build(
                [n, c, h, w],
                [c * mult, 1, k_h, k_w],
                ([s_h, 1], [d_h, d_w], c, 0, pad),
                bias,
                seed,
            ) else {
                return Ok(());
            };
            check_all_isas(&x, &w, b.as_ref(), &g);
        }
    }

    #[test]
    fn depthwise_stride_2_zoo_layers_split_in_registers() {
        use crate::conv::params::{Conv2dParams, Padding};
        use crate::conv::testutil::check_against_reference;
        // MobileNetV2's 3×3/2 and EfficientNet's 5×5/2 (fewer channels), and a 7×7/2 with
        // padding 3: every row tile of 4 plus a remainder row, one and two vectors.
        for (c, hw, k, pad) in [(5, 112, 3, 1), (3, 56, 5, 2), (2, 45, 7, 3)] {
            let params = Conv2dParams {
                stride: [2, 2],
                padding: Padding::Explicit([pad; 4]),
                groups: c,
                ..Default::default()
            };
            let g = Conv2dGeometry::new([1, c, hw, hw], [c, 1, k, k], Some(c), &params).unwrap();
            assert_eq!(
                splits_in_registers(&g),
                isa::detect() == Isa::Avx512,
                "{g:?}"
            );
            check_against_reference(&g, 5, true, |x, w, b| {
                conv2d_phased(x, w, b, &g, &CancelToken::new()).unwrap()
            });
        }
    }

    #[test]
    fn depthwise_stride_1_zoo_layers_read_rows_in_place() {
        use crate::conv::params::{Conv2dParams, Padding};
        use crate::conv::testutil::check_against_reference;
        // MobileNetV2's 3×3 and EfficientNet's 5×5 (fewer channels), a 7×7 with padding 3:
        // every row tile of 4 plus a remainder row, one and two vectors, a masked tail.
        for (c, hw, k, pad) in [(5, 56, 3, 1), (3, 28, 5, 2), (2, 45, 7, 3)] {
            let params = Conv2dParams {
                padding: Padding::Explicit([pad; 4]),
                groups: c,
                ..Default::default()
            };
            let g = Conv2dGeometry::new([1, c, hw, hw], [c, 1, k, k], Some(c), &params).unwrap();
            assert_eq!(
                splits_in_registers(&g),
                isa::detect() == Isa::Avx512,
                "{g:?}"
            );
            check_against_reference(&g, 6, true, |x, w, b| {
                conv2d_phased(x, w, b, &g, &CancelToken::new()).unwrap()
            });
        }
    }

    #[test]
    fn wide_planes_run_in_sub_bands_that_meet_exactly() {
        use crate::conv::params::{Conv2dParams, Padding, PaddingMode};
        use crate::conv::testutil::check_against_reference;
        // Rows of 2 × ~350 floats: a few input rows fill the scratch, so each band runs
        // as several sub-bands of 4 output rows, depthwise and grouped, in every mode.
        for (groups, mode) in [
            (3, PaddingMode::Zeros),
            (3, PaddingMode::Reflect),
            (1, PaddingMode::Circular),
        ] {
            let params = Conv2dParams {
                stride: [2, 2],
                padding: Padding::Explicit([1, 2, 1, 1]),
                padding_mode: mode,
                groups,
                ..Default::default()
            };
            let g = Conv2dGeometry::new([2, 3, 45, 700], [3, 3 / groups, 3, 3], Some(3), &params)
                .unwrap();
            let layout = PhaseLayout::new(&g, 0);
            assert!((3 / groups) * layout.row_len() * 4 * 8 > SCRATCH_BYTES);
            check_against_reference(&g, 7, true, |x, w, b| {
                conv2d_phased(x, w, b, &g, &CancelToken::new()).unwrap()
            });
        }
    }

    #[test]
    fn depthwise_rows_that_share_input_rows_equal_reference() {
        use crate::conv::params::{Conv2dParams, Padding, PaddingMode};
        use crate::conv::testutil::check_against_reference;
        // Stride 1 down the rows: the depthwise tile loads each input row once for up to
        // k_h output rows (bands of 4 rows, then the rest one by one), 3×3 and 5×5, narrow
        // and two-vector rows, column dilation, every padding mode.
        for (k, dil, mode, w) in [
            (3, [1, 1], PaddingMode::Zeros, 40),
            (5, [1, 1], PaddingMode::Reflect, 17),
            (3, [1, 2], PaddingMode::Replicate, 29),
            (5, [1, 1], PaddingMode::Circular, 9),
        ] {
            let params = Conv2dParams {
                dilation: dil,
                padding: Padding::Same,
                padding_mode: mode,
                groups: 4,
                ..Default::default()
            };
            let g = Conv2dGeometry::new([2, 4, 23, w], [4, 1, k, k], Some(4), &params).unwrap();
            check_against_reference(&g, 11, true, |x, w, b| {
                conv2d_phased(x, w, b, &g, &CancelToken::new()).unwrap()
            });
        }
    }

    #[test]
    fn tiles_cover_the_row_with_the_least_waste() {
        assert_eq!(tile_for(7), 16);
        assert_eq!(tile_for(28), 32);
        assert_eq!(tile_for(56), 64);
        assert_eq!(tile_for(112), MAX_TILE);
        assert_eq!(tile_for(1000), MAX_TILE);
    }
}
