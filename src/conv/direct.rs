//! In-place direct convolution: register tiles over input rows read where they are, the
//! plan's choice for image filters (few output channels per group, wide stride-1 rows).
//!
//! Work is split into one flat task space, output plane `(n, o)` × band of output rows,
//! each task writing a disjoint chunk of the output (`par_chunks_mut`). Nothing is copied:
//! - rows are read straight from the input; a kernel row that falls in the padding reads
//!   the row the padding mode maps it to, or is skipped for zero padding;
//! - the output columns whose taps all fall inside the input (all but a few at each edge)
//!   are computed in tiles of [`TILE`](super::isa::TILE) outputs (twice that with AVX-512: 8 independent
//!   FMA chains) held in a `[f32; TILE]` accumulator that stays in SIMD registers while every channel and tap is added, then stored once (bias
//!   last, as the reference does);
//! - the few border columns map each tap's column through the padding mode, one by one.
//!
//! The tile loop is plain Rust compiled for AVX-512, AVX2+FMA and baseline x86-64 and
//! dispatched at run time by [`super::isa`].
//! With FMA the products are fused, so results differ from the reference by rounding only:
//! property tests bound the difference by `2·(K+1)·2⁻²⁴·Σ|x·w|`.
//!
//! An earlier version copied each band of padded input rows into a per-thread scratch
//! first; that copy cost as much as a 3×3 convolution itself (a quarter of W1).
//!
//! With AVX-512, layers of one input channel per output at stride 1 and dilation 1 down
//! the rows compute their interior columns in `conv::rowtile` instead: 4 output rows
//! share each loaded input vector, and outputs of 16 MiB or more are written with
//! streaming stores. Criterion medians of 4 alternating rounds, before → after: W1 477 →
//! 372 µs, W5 9.25 → 6.45 ms, W6 3.66 → 2.50 ms (2.64 ms without streaming). Several
//! channels per output (W3) stay on the portable tile, which measured faster there.

use ndarray::{Array4, ArrayView1, ArrayView4};

use super::isa::{self, madd, Bands, Out, TASK_MACS};
use super::params::Conv2dGeometry;
use super::{CancelToken, Cancelled};

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every row band.
pub fn conv2d_direct(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    conv2d_isa(
        input,
        weight,
        bias,
        geom,
        cancel,
        isa::detect(),
        RowTile::Auto,
    )
}

/// Whether the AVX-512 build computes the interior through [`super::rowtile`], and how
/// it stores (tests compare every choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowTile {
    /// The portable tile only.
    #[cfg_attr(not(test), allow(dead_code))]
    Off,
    /// The row tile for one input channel per output, streaming stores for outputs of
    /// `STREAM_BYTES` or more.
    Auto,
    /// The row tile wherever it can run (any number of channels), always streaming.
    #[cfg_attr(not(test), allow(dead_code))]
    Always,
}

/// [`conv2d_direct`] with the kernel compiled for `isa` and the row tile as `row_tile`
/// says.
pub(crate) fn conv2d_isa(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
    isa: isa::Isa,
    row_tile: RowTile,
) -> Result<Array4<f32>, Cancelled> {
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());
    let plan = Plan::new(&g, row_tile);
    let c_per_group = g.c_in / g.groups;
    let group_len = c_per_group * g.h * g.w;

    isa::run(isa, &g, plan.band_rows, cancel, |p| {
        let (b, o) = (p / g.c_out, p % g.c_out);
        let group = o / (g.c_out / g.groups);
        BandArgs {
            g: &g,
            plan: &plan,
            x: &x[(b * g.c_in + group * c_per_group) * g.h * g.w..][..group_len],
            taps: &wt[o * plan.taps_per_output..][..plan.taps_per_output],
            bias: bias.as_ref().map_or(0.0, |v| v[o]),
        }
    })
}

// SAFETY: `band_kernel` writes every column of every row: the row tile, full or short
// tiles cover `lo .. hi`, `border_cols` holds every other column (property-tested against the
// reference, which would see uninitialised values otherwise).
#[allow(unsafe_code)]
unsafe impl Bands for BandArgs<'_> {
    #[inline(always)]
    fn band<const FMA: bool, const TILE: usize>(&self, i0: usize, out: &mut [Out]) {
        band_kernel::<FMA, TILE>(self, i0, out)
    }
}

/// Test hook: the convolution with a chosen instruction set.
#[cfg(test)]
fn conv_with(
    isa: isa::Isa,
    x: &Array4<f32>,
    w: &Array4<f32>,
    b: Option<&ndarray::Array1<f32>>,
    g: &Conv2dGeometry,
) -> Array4<f32> {
    conv_tiles(isa, RowTile::Auto, x, w, b, g)
}

/// Test hook: [`conv_with`], choosing whether the AVX-512 build uses the row tile.
#[cfg(test)]
fn conv_tiles(
    isa: isa::Isa,
    row_tile: RowTile,
    x: &Array4<f32>,
    w: &Array4<f32>,
    b: Option<&ndarray::Array1<f32>>,
    g: &Conv2dGeometry,
) -> Array4<f32> {
    conv2d_isa(
        x.view(),
        w.view(),
        b.map(|b| b.view()),
        g,
        &CancelToken::new(),
        isa,
        row_tile,
    )
    .expect("not cancelled")
}

/// Inputs of one output plane's bands.
struct BandArgs<'a> {
    g: &'a Conv2dGeometry,
    plan: &'a Plan,
    /// The input channels of this plane's group, `[c_in/groups, h, w]` row-major.
    x: &'a [f32],
    /// This output channel's weights, `[c_in/groups, k_h, k_w]` row-major.
    taps: &'a [f32],
    bias: f32,
}

/// Column split and task size, fixed for one call.
struct Plan {
    band_rows: usize,
    /// Output columns `lo .. hi` read only real input columns (`lo ≤ hi`).
    lo: usize,
    hi: usize,
    /// The other output columns, each with the input column every kernel column `v`
    /// reads (`None`: zero padding), `k_w` entries per column.
    border_cols: Vec<usize>,
    border_src: Vec<Option<usize>>,
    taps_per_output: usize,
    /// Whether the AVX-512 build computes the interior through [`super::rowtile`]
    /// (stride 1 and dilation 1 down the rows, an interior of a whole tile or more).
    row_tile: bool,
    /// Whether the row tile streams its stores (outputs of at least `STREAM_BYTES`).
    stream: bool,
}

impl Plan {
    fn new(g: &Conv2dGeometry, row_tile: RowTile) -> Self {
        let [_, eff_w] = g.effective_kernel();
        let (pl, sw) = (g.padding[2], g.stride[1]);
        // Column j reads input columns j·s_w − p_l .. j·s_w − p_l + eff_w − 1.
        let lo = pl.div_ceil(sw).min(g.out_w);
        let hi = if g.w + pl >= eff_w {
            ((g.w + pl - eff_w) / sw + 1).min(g.out_w)
        } else {
            0
        };
        let hi = hi.max(lo);
        let border_cols: Vec<usize> = (0..lo).chain(hi..g.out_w).collect();
        let border_src = border_cols
            .iter()
            .flat_map(|&j| {
                (0..g.k_w).map(move |v| {
                    let col = (j * sw + v * g.dilation[1]) as isize - pl as isize;
                    g.padding_mode.source_index(col, g.w)
                })
            })
            .collect();
        let c_per_group = g.c_in / g.groups;
        let row_macs = (g.out_w * c_per_group * g.k_h * g.k_w).max(1);
        // Only one input channel per output unless forced: with W3's 3 channels (3×3) the
        // tile's 18 input rows per 4 output rows measured 1.4 → 2.0 ms (3.3 → 4.5 ms on
        // one thread), where 1-channel W1 and W6 gained.
        let applies = match row_tile {
            RowTile::Off => false,
            RowTile::Auto => c_per_group == 1,
            RowTile::Always => true,
        } && cfg!(target_arch = "x86_64")
            && g.stride == [1, 1]
            && g.dilation[0] == 1
            && hi - lo >= ROW_TILE_WIDTH;
        // Bands of whole row tiles, so that only a plane's last band has rows left over.
        let band_rows = (TASK_MACS / row_macs).max(1);
        Self {
            band_rows: if applies {
                band_rows.next_multiple_of(row_tile_rows(g.k_h, g.k_w))
            } else {
                band_rows
            },
            lo,
            hi,
            border_cols,
            border_src,
            taps_per_output: c_per_group * g.k_h * g.k_w,
            row_tile: applies,
            stream: applies
                && match row_tile {
                    RowTile::Off => false,
                    RowTile::Auto => g.n * g.c_out * g.out_h * g.out_w * 4 >= STREAM_BYTES,
                    RowTile::Always => true,
                },
        }
    }
}

/// Computes output rows `i0 ..` (as many as `out_rows` holds) of one plane.
#[inline(always)]
fn band_kernel<const FMA: bool, const TILE: usize>(
    a: &BandArgs<'_>,
    i0: usize,
    out_rows: &mut [Out],
) {
    let BandArgs {
        g,
        plan,
        x,
        taps,
        bias,
    } = *a;
    let c_per_group = g.c_in / g.groups;
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let (dh, dw) = (g.dilation[0], g.dilation[1]);
    let pl = g.padding[2];
    let (lo, hi) = (plan.lo, plan.hi);
    // Stride-1 interiors run in full tiles only: a ragged tail is covered by one last full
    // tile shifted left, recomputing a few outputs with the same operations (same values).
    let full = sw == 1 && hi - lo >= TILE;
    // The AVX-512 build hands the interior of every row to the row-sharing tile.
    let interior_done = plan.row_tile && FMA && TILE == 2 * isa::TILE;
    #[cfg(target_arch = "x86_64")]
    if interior_done {
        row_tile(a, i0, out_rows);
    }
    let tile_starts = (lo..hi - TILE.min(hi - lo))
        .step_by(TILE)
        .chain(Some(hi.saturating_sub(TILE)))
        .filter(move |_| full && !interior_done);
    // Per output row: the input row each (channel, kernel row) reads, in the weight's
    // `[c][u]` order (None: a zero row). Filled once per row, so the tile loop makes no call
    // that would spill the accumulators.
    let mut rows: Vec<Option<&[f32]>> = Vec::with_capacity(c_per_group * g.k_h);
    for (r, out_row) in out_rows.chunks_exact_mut(g.out_w).enumerate() {
        let i = i0 + r;
        rows.clear();
        rows.extend((0..c_per_group).flat_map(|c| {
            (0..g.k_h).map(move |u| {
                let y = (i * sh + u * dh) as isize - g.padding[0] as isize;
                let y = g.padding_mode.source_index(y, g.h)?;
                Some(&x[(c * g.h + y) * g.w..][..g.w])
            })
        }));
        let taps_rows = || rows.iter().zip(taps.chunks_exact(g.k_w));
        // Full stride-1 tiles: the accumulator is only indexed by constants, so it lives in
        // registers (8 zmm / 8 ymm) across all channels and taps.
        for j0 in tile_starts.clone() {
            let mut acc = [0.0f32; TILE];
            for (row, w_row) in taps_rows() {
                let Some(row) = row else { continue };
                for (v, &w) in w_row.iter().enumerate() {
                    let start = j0 - pl + v * dw;
                    let src: &[f32; TILE] =
                        row[start..start + TILE].try_into().expect("tile in bounds");
                    for t in 0..TILE {
                        acc[t] = madd::<FMA>(w, src[t], acc[t]);
                    }
                }
            }
            for (o, a) in out_row[j0..j0 + TILE].iter_mut().zip(&acc) {
                o.write(a + bias);
            }
        }
        // Strided rows and interiors narrower than a tile, in short tiles (none when the
        // row tile covered the interior).
        let mut j0 = if full || interior_done { hi } else { lo };
        while j0 < hi {
            let len = TILE.min(hi - j0);
            let mut acc = [0.0f32; TILE];
            for (row, w_row) in taps_rows() {
                let Some(row) = row else { continue };
                for (v, &w) in w_row.iter().enumerate() {
                    let start = j0 * sw - pl + v * dw;
                    let src = &row[start..=start + (len - 1) * sw];
                    for (a, &x) in acc[..len].iter_mut().zip(src.iter().step_by(sw)) {
                        *a = madd::<FMA>(w, x, *a);
                    }
                }
            }
            for (o, a) in out_row[j0..j0 + len].iter_mut().zip(&acc) {
                o.write(a + bias);
            }
            j0 += len;
        }
        // Border columns: each tap's column mapped through the padding mode.
        for (&j, src_cols) in plan
            .border_cols
            .iter()
            .zip(plan.border_src.chunks_exact(g.k_w))
        {
            let mut acc = 0.0f32;
            for (row, w_row) in taps_rows() {
                let Some(row) = row else { continue };
                for (&w, col) in w_row.iter().zip(src_cols) {
                    if let Some(col) = *col {
                        acc = madd::<FMA>(w, row[col], acc);
                    }
                }
            }
            out_row[j].write(acc + bias);
        }
    }
}

/// The row-sharing tile's parameters, so that `Plan` is the same on every target.
#[cfg(target_arch = "x86_64")]
use super::rowtile::{rows_for as row_tile_rows, STREAM_BYTES, WIDTH as ROW_TILE_WIDTH};
#[cfg(not(target_arch = "x86_64"))]
const fn row_tile_rows(_k_h: usize, _k_w: usize) -> usize {
    1
}
#[cfg(not(target_arch = "x86_64"))]
const STREAM_BYTES: usize = usize::MAX;
#[cfg(not(target_arch = "x86_64"))]
const ROW_TILE_WIDTH: usize = usize::MAX;

/// Interior columns `lo .. hi` of output rows `i0 ..` through [`super::rowtile`]: the
/// input rows each band row reads, per channel, then the tile.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn row_tile(a: &BandArgs<'_>, i0: usize, out_rows: &mut [Out]) {
    let g = a.g;
    let c_per_group = g.c_in / g.groups;
    let n_t = out_rows.len() / g.out_w + g.k_h - 1;
    // Stride 1 and dilation 1 down the rows: band row t is padded row i0 + t.
    let rows: Vec<Option<&[f32]>> = (0..c_per_group)
        .flat_map(|c| {
            (0..n_t).map(move |t| {
                let y = (i0 + t) as isize - g.padding[0] as isize;
                let y = g.padding_mode.source_index(y, g.h)?;
                Some(&a.x[(c * g.h + y) * g.w..][..g.w])
            })
        })
        .collect();
    super::rowtile::run(
        &super::rowtile::RowBand {
            rows: &rows,
            w: g.w,
            taps: a.taps,
            k_h: g.k_h,
            k_w: g.k_w,
            d_w: g.dilation[1],
            pad_left: g.padding[2],
            lo: a.plan.lo,
            hi: a.plan.hi,
            out_w: g.out_w,
            bias: a.bias,
            stream: a.plan.stream,
        },
        out_rows,
    );
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array4};
    use proptest::prelude::*;

    use super::*;
    use crate::conv::conv2d_reference;
    use crate::conv::params::Conv2dParams;
    use crate::conv::testutil::{assert_close, case, random_case};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn direct_equals_reference_with_every_isa((x, w, b, g) in case()) {
            let want = conv2d_reference(x.view(), w.view(), b.as_ref().map(|b| b.view()), &g);
            for isa in isa::available() {
                let got = conv_with(isa, &x, &w, b.as_ref(), &g);
                assert_close(&got, &want, &x, &w, b.as_ref(), &g);
            }
        }
    }

    /// Stride-1 layers wide enough for the row tile: any row count (not a multiple of
    /// its 4 or 6 rows), channels per group, kernel sizes 1–6, column dilation, every padding
    /// mode and padding, batch and groups.
    fn row_tile_case() -> impl Strategy<Value = crate::conv::testutil::Case> {
        (
            (1usize..3, 1usize..3, 1usize..4, 1usize..23, 64usize..260),
            (1usize..7, 1usize..7, 1usize..3),
            (
                0usize..5,
                0usize..4,
                0usize..4,
                0usize..4,
                0usize..4,
                any::<bool>(),
                any::<u64>(),
            ),
        )
            .prop_filter_map(
                "impossible spec",
                |((n, groups, cpg, h, w), (k_h, k_w, d_w), (mode, t, b, l, r, bias, seed))| {
                    crate::conv::testutil::build(
                        [n, groups * cpg, h, w],
                        [groups * (1 + seed as usize % 2), cpg, k_h, k_w],
                        ([1, 1], [1, d_w], groups, mode, [t, b, l, r]),
                        bias,
                        seed,
                    )
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn row_tile_equals_reference_and_the_portable_tile_bit_for_bit(
            (x, w, b, g) in row_tile_case()
        ) {
            let want = conv2d_reference(x.view(), w.view(), b.as_ref().map(|b| b.view()), &g);
            for isa in isa::available() {
                let portable = conv_tiles(isa, RowTile::Off, &x, &w, b.as_ref(), &g);
                assert_close(&portable, &want, &x, &w, b.as_ref(), &g);
                // Same products summed in the same order: identical floats, however stored.
                for row_tile in [RowTile::Auto, RowTile::Always] {
                    let got = conv_tiles(isa, row_tile, &x, &w, b.as_ref(), &g);
                    prop_assert!(got.iter().zip(&portable).all(|(a, p)| a.to_bits() == p.to_bits()));
                }
            }
        }
    }

    #[test]
    fn image_filter_shapes_use_the_row_tile_and_equal_reference() {
        use crate::conv::params::{Padding, PaddingMode};
        use crate::conv::testutil::check_against_reference;
        // W6-, W1-, W3- and W5-like layers on narrower planes, rows not a multiple of 4 or 6
        // (W3, three channels per output, stays on the portable tile).
        for (input, weight, pad, groups, mode) in [
            ([2, 3, 37, 301], [3, 1, 5, 5], 2, 3, PaddingMode::Reflect),
            ([1, 1, 42, 200], [1, 1, 3, 3], 1, 1, PaddingMode::Zeros),
            ([1, 3, 19, 130], [1, 3, 3, 3], 0, 1, PaddingMode::Zeros),
            (
                [1, 1, 45, 180],
                [1, 1, 15, 15],
                7,
                1,
                PaddingMode::Replicate,
            ),
        ] {
            let params = Conv2dParams {
                padding: Padding::Explicit([pad; 4]),
                padding_mode: mode,
                groups,
                ..Default::default()
            };
            let g = Conv2dGeometry::new(input, weight, Some(weight[0]), &params).unwrap();
            assert_eq!(
                Plan::new(&g, RowTile::Auto).row_tile,
                groups == input[1],
                "{g:?}"
            );
            check_against_reference(&g, 5, true, |x, w, b| {
                conv2d_direct(x, w, b, &g, &CancelToken::new()).unwrap()
            });
        }
    }

    #[test]
    fn only_outputs_larger_than_half_the_cache_stream() {
        let params = |pad, groups| Conv2dParams {
            padding: crate::conv::params::Padding::Explicit([pad; 4]),
            groups,
            ..Default::default()
        };
        // W6: 25 MB of output; W1: 8 MB.
        let w6 = Conv2dGeometry::new([1, 3, 1080, 1920], [3, 1, 5, 5], None, &params(2, 3));
        let w1 = Conv2dGeometry::new([1, 1, 1080, 1920], [1, 1, 3, 3], None, &params(1, 1));
        let (w6, w1) = (
            Plan::new(&w6.unwrap(), RowTile::Auto),
            Plan::new(&w1.unwrap(), RowTile::Auto),
        );
        assert!(w6.row_tile && w1.row_tile);
        assert_eq!(
            (w6.stream, w1.stream),
            (cfg!(target_arch = "x86_64"), false)
        );
    }

    #[test]
    fn every_compiled_kernel_agrees_with_the_baseline() {
        for seed in 0..40 {
            let (x, w, b, g) = random_case(seed);
            let base = conv_with(isa::Isa::Baseline, &x, &w, b.as_ref(), &g);
            for isa in isa::available() {
                let got = conv_with(isa, &x, &w, b.as_ref(), &g);
                assert_close(&got, &base, &x, &w, b.as_ref(), &g);
            }
        }
    }

    #[test]
    fn a_fired_token_stops_the_computation() {
        let g = Conv2dGeometry::new([1, 1, 64, 64], [1, 1, 3, 3], None, &Conv2dParams::default())
            .unwrap();
        let x = Array4::zeros(g.input_shape());
        let w = Array4::zeros(g.weight_shape());
        let t = CancelToken::new();
        t.cancel();
        assert_eq!(
            conv2d_direct(x.view(), w.view(), None, &g, &t),
            Err(Cancelled)
        );
    }

    #[test]
    fn one_by_one_image_with_kernel_equal_to_input() {
        let g = Conv2dGeometry::new(
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            Some(1),
            &Conv2dParams::default(),
        )
        .unwrap();
        let x = Array4::from_elem(g.input_shape(), 3.0);
        let w = Array4::from_elem(g.weight_shape(), 2.0);
        let b = Array1::from_elem(1, 1.0);
        let y = conv2d_direct(x.view(), w.view(), Some(b.view()), &g, &CancelToken::new()).unwrap();
        assert_eq!(y.into_raw_vec_and_offset().0, vec![7.0]);
    }
}
