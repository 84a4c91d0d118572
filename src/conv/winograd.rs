//! Winograd F(2×2, 3×3): a 3×3 stride-1 layer in 16 multiplications per 2×2 outputs and
//! input channel instead of 36.
//!
//! The output is cut into 2×2 tiles; tile `(a, b)` reads the 4×4 padded input at rows
//! `2a ..`, columns `2b ..`. With the transforms of Lavin & Gray (2016),
//! ```text
//!        ⎡1  0 −1  0⎤          ⎡ 1    0    0 ⎤          ⎡1  1  1  0⎤
//! Bᵀ  =  ⎢0  1  1  0⎥    G  =  ⎢1/2  1/2  1/2⎥    Aᵀ =  ⎣0  1 −1 −1⎦
//!        ⎢0 −1  1  0⎥          ⎢1/2 −1/2  1/2⎥
//!        ⎣0  1  0 −1⎦          ⎣ 0    0    1 ⎦
//! ```
//! each output tile is `Aᵀ [Σ_c (G w_{o,c} Gᵀ) ⊙ (Bᵀ d_c B)] A`: for each of the 16
//! positions `ξ` of the 4×4 transformed tile, one GEMM `M_ξ[c_out, tiles] = U_ξ[c_out,
//! c_in] · V_ξ[c_in, tiles]` ([`super::igemm::matmul`], the AVX-512 register tile). The
//! GEMMs do 16/36 of the direct multiply-adds; the transforms are additions.
//!
//! **Accuracy.** The transforms only add, subtract and halve (exact scalings), but they
//! round intermediate sums that are larger than the terms of the direct sum: each output
//! is `Σ_ξ Σ_c Aᵀ(U ⊙ V)A`, with `Σ|Aᵀ||U||V|A| ≤ 4·Σ|x·w|` for this choice of points, so
//! its error is at most about `4·(c_in + 10)·ε·Σ|x·w|` (c_in-term GEMM sums plus the
//! transforms' few roundings). The fixtures' bound for a direct sum of `K = 9·c_in` terms
//! is `(K + 2)·ε·Σ|x·w|`, which that stays under from about 10 input channels on; with
//! one input channel Winograd was measured 11× over it. So it runs from
//! `MIN_CHANNELS` = 16 input channels (real CNN layers), and the property test checks it
//! against the reference with that bound on exactly that range.
//!
//! **Layout.** Padded input rows are split into even and odd columns
//! ([`super::phase`] at horizontal "stride" 2), so both transforms are element-wise
//! operations on contiguous rows of tiles and vectorise. Work is split into blocks of
//! tile rows (one task each, ≥ 4 per thread): a task pads its band of input rows, builds
//! `V` for its tiles (all channels), runs the 16 GEMMs and writes its rows of every output
//! plane. Its buffers (`16·(c_in + c_out)` floats per tile) are sized to stay in L2.
//!
//! For `groups = 1`, 3×3, stride 1, dilation 1, at least `MIN_CHANNELS` input channels,
//! on CPUs with AVX-512F ([`supports`]).

use std::cell::RefCell;

use ndarray::{Array4, ArrayView1, ArrayView4, ArrayViewMut3, Axis};
use rayon::prelude::*;

use super::params::Conv2dGeometry;
use super::phase::PhaseLayout;
use super::{CancelToken, Cancelled};

/// Bytes of a task's `V` and `M` buffers together (an L2, with room for the weights).
const BLOCK_BYTES: usize = 1 << 20;
/// Tasks per thread to aim for.
const TASKS_PER_THREAD: usize = 4;
/// Fewest input channels for which the rounding error stays within the fixtures' bound.
pub const MIN_CHANNELS: usize = 16;

/// Whether Winograd F(2×2, 3×3) can run `g` here.
pub fn supports(g: &Conv2dGeometry) -> bool {
    g.k_h == 3
        && g.k_w == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.c_in >= MIN_CHANNELS
        && super::igemm::available()
}

thread_local! {
    /// Per-thread band of padded rows, `V` and `M`, reused across tasks and calls.
    static BUFS: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Tile rows per task for `g`: buffers within `BLOCK_BYTES`, at least 3 vectors (48
/// tiles) per GEMM where the plane has them, and `TASKS_PER_THREAD` tasks per thread
/// where that leaves blocks of that size.
pub fn block_rows(g: &Conv2dGeometry) -> usize {
    let (th, tw) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
    let want = TASKS_PER_THREAD * rayon::current_num_threads();
    let fits = (BLOCK_BYTES / (4 * 16 * (g.c_in + g.c_out)) / tw).max(1);
    let spread = th.div_ceil(want.div_ceil(g.n));
    let full = 48usize.div_ceil(tw);
    fits.min(spread.max(full)).clamp(1, th)
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in, 3, 3]` plus
/// `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every task.
///
/// # Panics
/// If `!supports(geom)` or the shapes disagree with `geom`.
#[allow(unsafe_code)] // calls into the AVX-512 transforms, see the SAFETY notes
pub fn conv2d_winograd(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    assert!(supports(geom), "Winograd F(2x2, 3x3) cannot run {geom:?}");
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let (c_in, c_out) = (g.c_in, g.c_out);
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let bias = bias.map_or_else(|| vec![0.0; c_out], |b| b.to_vec());
    let u = transform_weights(weight);
    let zeros = vec![0.0; c_out];

    // Tiles: th × tw per image; padded rows and columns beyond the padded input (odd
    // output sizes) are zeros and only feed outputs that are dropped.
    let (th, tw) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
    let mut split = g;
    split.stride = [1, 2];
    let layout = PhaseLayout::new(&split, tw + 1);
    let (row_len, wq) = (layout.row_len(), layout.wq);
    let hp = g.h + g.padding[0] + g.padding[1];

    let block_rows = block_rows(&g);
    let ldb_max = (block_rows * tw).next_multiple_of(16);
    // Fewer blocks than threads (deep layers on 14×14 or 7×7 planes): the output channels
    // are split too, so that every core works; each part transforms its block's input
    // (the cheap part) again.
    let blocks = th.div_ceil(block_rows);
    let mr = super::igemm::MR;
    let u_len = c_out.next_multiple_of(mr) * c_in;
    let oc_parts = rayon::current_num_threads()
        .div_ceil(g.n * blocks)
        .min(c_out.div_ceil(mr));
    let oc_chunk = c_out.div_ceil(oc_parts).next_multiple_of(mr).min(c_out);

    // Every element is written by `output_transform` (the tasks' bands tile each plane),
    // so the buffer is taken unzeroed: zeroing a fresh 6 MB output cost 0.3 ms.
    let len = g.output_shape().iter().product();
    let mut out = Array4::from_shape_vec(g.output_shape(), super::buffers::take_unzeroed(len))
        .expect("shape");
    for (img, mut out_img) in out.outer_iter_mut().enumerate() {
        let xi = &x[img * c_in * g.h * g.w..][..c_in * g.h * g.w];
        let mut tasks: Vec<(usize, usize, ArrayViewMut3<'_, f32>)> = Vec::new();
        for (part, chans) in out_img.axis_chunks_iter_mut(Axis(0), oc_chunk).enumerate() {
            // Row bands of this part's planes, split off one by one (owned views).
            let mut rest = chans;
            for blk in 0..blocks {
                let take = (2 * block_rows).min(rest.shape()[1]);
                let (dst, tail) = rest.split_at(Axis(1), take);
                tasks.push((part * oc_chunk, blk, dst));
                rest = tail;
            }
        }
        tasks.into_par_iter().try_for_each(|(o0, blk, mut dst)| {
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let oc = dst.shape()[0];
            let t0 = blk * block_rows;
            let rows = (th - t0).min(block_rows);
            let nt = rows * tw;
            let ldb = nt.next_multiple_of(16);
            debug_assert!(ldb <= ldb_max);
            BUFS.with_borrow_mut(|[band, v, m]| {
                // Padded rows 2·t0 .. 2·(t0 + rows) + 2 of every channel.
                let band_rows = 2 * rows + 2;
                band.resize(c_in * band_rows * row_len, 0.0);
                v.resize(16 * c_in * ldb + 16, 0.0);
                m.resize(16 * oc * ldb, 0.0);
                // SAFETY: `supports` checked AVX-512F at entry.
                unsafe {
                    pad_band(&layout, xi, g.h * g.w, hp, 2 * t0, band, band_rows);
                    input_transform(band, c_in, band_rows, row_len, wq, rows, tw, ldb, v);
                }
                for xi_ in 0..16 {
                    super::igemm::matmul(
                        &u[xi_ * u_len + o0 * c_in..][..oc.next_multiple_of(mr) * c_in],
                        c_in,
                        &zeros[..oc],
                        &v[xi_ * c_in * ldb..],
                        ldb,
                        nt,
                        &mut m[xi_ * oc * ldb..][..oc * ldb],
                        ldb,
                    );
                }
                // SAFETY: as above.
                unsafe { output_transform(m, oc, ldb, rows, tw, &bias[o0..o0 + oc], &mut dst) };
            });
            Ok(())
        })?;
    }
    super::buffers::give(u);
    Ok(out)
}

/// `U[ξ][o][c] = (G w_{o,c} Gᵀ)[ξ]`, `ξ = 4·i + j`, each `U_ξ` in the panels of
/// [`super::igemm::matmul`] (`[c_out/8][c_in][8]`, zeros past `c_out`), on the rayon
/// pool in chunks of panels. The buffer comes from [`super::buffers`]; hand it back when
/// done.
///
/// Done serially, one (o, c) at a time, this was a third of a 256-channel layer: the 16
/// values of one pair go to 16 rows of `U` 4 KiB apart. Here 8 output × 8 input channels
/// are transposed into 9 tap rows, transformed with vector arithmetic, and each `U_ξ`
/// gets one contiguous run of 64.
#[allow(unsafe_code)]
fn transform_weights(weight: ArrayView4<'_, f32>) -> Vec<f32> {
    const MR: usize = super::igemm::MR;
    const RUN: usize = 8 * MR;
    let (c_out, c_in) = (weight.shape()[0], weight.shape()[1]);
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let panels = c_out.div_ceil(MR);
    let per_xi = panels * c_in * MR;
    let len = 16 * per_xi;
    let mut u = super::buffers::take(len);
    let chunk = panels.div_ceil(4 * rayon::current_num_threads()).max(1);
    // Panels `p·chunk ..` of every U_ξ, gathered per task so that tasks own disjoint parts.
    let mut xi_chunks: Vec<_> = u.spare_capacity_mut()[..len]
        .chunks_exact_mut(per_xi)
        .map(|x| x.chunks_mut(chunk * c_in * MR))
        .collect();
    let parts: Vec<Vec<&mut [std::mem::MaybeUninit<f32>]>> = (0..panels.div_ceil(chunk))
        .map(|_| {
            xi_chunks
                .iter_mut()
                .map(|x| x.next().expect("16 equal splits"))
                .collect()
        })
        .collect();
    parts
        .into_par_iter()
        .enumerate()
        .for_each(|(part, mut dst)| {
            let mut taps = [[0.0f32; RUN]; 9];
            let mut cols = [[0.0f32; RUN]; 12];
            let mut vals = [[0.0f32; RUN]; 16];
            let first = part * chunk;
            for p in first..(first + chunk).min(panels) {
                for c0 in (0..c_in).step_by(8) {
                    let cb = 8.min(c_in - c0);
                    // Lane b = cc·8 + r: input channel c0 + cc, output channel 8p + r.
                    for cc in 0..cb {
                        for r in 0..MR {
                            let o = p * MR + r;
                            for (t, tap) in taps.iter_mut().enumerate() {
                                tap[cc * MR + r] = if o < c_out {
                                    wt[(o * c_in + c0 + cc) * 9 + t]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                    // G w: the 4 transformed values of each of the 3 columns; then
                    // (G w) Gᵀ: the same on row i of those columns.
                    for j in 0..3 {
                        g_lanes(
                            [&taps[j], &taps[3 + j], &taps[6 + j]],
                            &mut cols[4 * j..4 * j + 4],
                        );
                    }
                    for i in 0..4 {
                        g_lanes(
                            [&cols[i], &cols[4 + i], &cols[8 + i]],
                            &mut vals[4 * i..4 * i + 4],
                        );
                    }
                    let at = ((p - first) * c_in + c0) * MR;
                    for (d, v) in dst.iter_mut().zip(&vals) {
                        for (d, &v) in d[at..at + cb * MR].iter_mut().zip(&v[..cb * MR]) {
                            d.write(v);
                        }
                    }
                }
            }
        });
    // SAFETY: the parts partition each U_ξ (runs of whole panels), and every element of
    // every panel, `c_in × 8` floats, was written above.
    unsafe { u.set_len(len) };
    u
}

/// `G a` for three rows of lanes `a` (the same transform in every lane) into four rows.
#[inline(always)]
fn g_lanes<const N: usize>(a: [&[f32; N]; 3], out: &mut [[f32; N]]) {
    let [a0, a1, a2] = a;
    let [o0, o1, o2, o3] = out else {
        unreachable!("four output rows")
    };
    for b in 0..N {
        o0[b] = a0[b];
        o1[b] = 0.5 * (a0[b] + a1[b] + a2[b]);
        o2[b] = 0.5 * (a0[b] - a1[b] + a2[b]);
        o3[b] = a2[b];
    }
}

/// Padded rows `first .. first + band_rows` of every channel of `x` (`plane` floats
/// each) into `band`; rows past the padded input (`hp`) are zeros.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn pad_band(
    layout: &PhaseLayout,
    x: &[f32],
    plane: usize,
    hp: usize,
    first: usize,
    band: &mut [f32],
    band_rows: usize,
) {
    let row_len = layout.row_len();
    for (src, chan) in x
        .chunks_exact(plane)
        .zip(band.chunks_exact_mut(band_rows * row_len))
    {
        for (r, row) in chan.chunks_exact_mut(row_len).enumerate() {
            if first + r < hp {
                layout.fill_row(src, first + r, row);
            } else {
                row.fill(0.0);
            }
        }
    }
}

/// `V[ξ][c][t] = (Bᵀ d_{c,t} B)[ξ]` for the `rows × tw` tiles of a band (`band_rows`
/// padded rows per channel, each split into even and odd halves of `wq` floats).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn input_transform(
    band: &[f32],
    c_in: usize,
    band_rows: usize,
    row_len: usize,
    wq: usize,
    rows: usize,
    tw: usize,
    ldb: usize,
    v: &mut [f32],
) {
    // Bᵀ over rows (element-wise on whole padded rows), then B over columns (element-wise
    // on the even/odd halves); e[t] is column 2t, o[t] is column 2t + 1.
    let mut rows_t = vec![0.0f32; 4 * row_len];
    for c in 0..c_in {
        let chan = &band[c * band_rows * row_len..][..band_rows * row_len];
        for a in 0..rows {
            let d = |i: usize| &chan[(2 * a + i) * row_len..][..row_len];
            let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
            let (x0, rest) = rows_t.split_at_mut(row_len);
            let (x1, rest) = rest.split_at_mut(row_len);
            let (x2, x3) = rest.split_at_mut(row_len);
            for (x0, (&a0, &a2)) in x0.iter_mut().zip(d0.iter().zip(d2)) {
                *x0 = a0 - a2;
            }
            for (((x1, x2), x3), ((&a1, &a2), &a3)) in x1
                .iter_mut()
                .zip(x2.iter_mut())
                .zip(x3.iter_mut())
                .zip(d1.iter().zip(d2).zip(d3))
            {
                *x1 = a1 + a2;
                *x2 = a2 - a1;
                *x3 = a1 - a3;
            }
            for (i, xr) in rows_t.chunks_exact(row_len).enumerate() {
                let (e, o) = xr.split_at(wq);
                let (e0, e1, o0, o1) = (&e[..tw], &e[1..=tw], &o[..tw], &o[1..=tw]);
                let row = |j: usize| {
                    let at = ((4 * i + j) * c_in + c) * ldb + a * tw;
                    at..at + tw
                };
                let r = row(0);
                for (dst, (&p, &q)) in v[r].iter_mut().zip(e0.iter().zip(e1)) {
                    *dst = p - q;
                }
                let r = row(1);
                for (dst, (&p, &q)) in v[r].iter_mut().zip(o0.iter().zip(e1)) {
                    *dst = p + q;
                }
                let r = row(2);
                for (dst, (&p, &q)) in v[r].iter_mut().zip(e1.iter().zip(o0)) {
                    *dst = p - q;
                }
                let r = row(3);
                for (dst, (&p, &q)) in v[r].iter_mut().zip(o0.iter().zip(o1)) {
                    *dst = p - q;
                }
            }
        }
    }
}

/// Output rows of the band from `M[ξ][o][t]`: `Aᵀ M A + bias`, dropping the row and
/// column past an odd output size.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn output_transform(
    m: &[f32],
    c_out: usize,
    ldb: usize,
    rows: usize,
    tw: usize,
    bias: &[f32],
    dst: &mut ArrayViewMut3<'_, f32>,
) {
    let out_w = dst.shape()[2];
    let band_h = dst.shape()[1];
    let mut s = vec![0.0f32; 8 * tw];
    for o in 0..c_out {
        let mut plane = dst.index_axis_mut(Axis(0), o);
        let b = bias[o];
        for a in 0..rows {
            let mm = |i: usize, j: usize| &m[((4 * i + j) * c_out + o) * ldb + a * tw..][..tw];
            // Aᵀ over rows: s_r[j] for r = 0, 1 and j = 0..4.
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mm(0, j), mm(1, j), mm(2, j), mm(3, j));
                let (s0, s1) = s.split_at_mut(4 * tw);
                let (s0, s1) = (&mut s0[j * tw..][..tw], &mut s1[j * tw..][..tw]);
                for ((s0, s1), (((&a0, &a1), &a2), &a3)) in s0
                    .iter_mut()
                    .zip(s1.iter_mut())
                    .zip(m0.iter().zip(m1).zip(m2).zip(m3))
                {
                    *s0 = a0 + a1 + a2;
                    *s1 = a1 - a2 - a3;
                }
            }
            // A over columns, interleaved into the output row.
            for r in 0..2 {
                let y = 2 * a + r;
                if y >= band_h {
                    break;
                }
                let sr = &s[r * 4 * tw..][..4 * tw];
                let (q0, q1, q2, q3) = (
                    &sr[..tw],
                    &sr[tw..2 * tw],
                    &sr[2 * tw..3 * tw],
                    &sr[3 * tw..],
                );
                let mut row = plane.index_axis_mut(Axis(0), y);
                let row = row.as_slice_mut().expect("contiguous output row");
                let pairs = out_w / 2;
                for (pair, (((&a0, &a1), &a2), &a3)) in row[..2 * pairs]
                    .chunks_exact_mut(2)
                    .zip(q0.iter().zip(q1).zip(q2).zip(q3))
                {
                    pair[0] = a0 + a1 + a2 + b;
                    pair[1] = a1 - a2 - a3 + b;
                }
                if out_w % 2 == 1 {
                    let t = pairs;
                    row[out_w - 1] = q0[t] + q1[t] + q2[t] + b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::conv::params::{Conv2dParams, Padding};
    use crate::conv::testutil::{check_against_reference, MODES};

    fn check(g: &Conv2dGeometry, seed: u32, bias: bool) {
        check_against_reference(g, seed, bias, |x, w, b| {
            conv2d_winograd(x, w, b, g, &CancelToken::new()).unwrap()
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Every padding mode, explicit/same/valid padding, odd and even output sizes,
        /// batch 1–3, output channels that do and do not fill the 8-row tile.
        #[test]
        fn equals_reference(
            (n, c_in, c_out, h, w) in (1usize..3, MIN_CHANNELS..40, 1usize..20, 1usize..20, 1usize..36),
            (mode, t, b, l, r, same, bias, seed) in (0usize..5, 0usize..3, 0usize..3, 0usize..3, 0usize..3, 0usize..4, any::<bool>(), any::<u32>()),
        ) {
            if !crate::conv::igemm::available() {
                return Ok(());
            }
            let padding = match same { 0 => Padding::Same, 1 => Padding::Valid, _ => Padding::Explicit([t, b, l, r]) };
            let params = Conv2dParams { padding, padding_mode: MODES[mode], ..Default::default() };
            let Ok(g) = Conv2dGeometry::new([n, c_in, h, w], [c_out, c_in, 3, 3], Some(c_out), &params) else { return Ok(()) };
            check(&g, seed, bias);
        }
    }

    #[test]
    fn a_resnet_layer_equals_the_reference() {
        if !crate::conv::igemm::available() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        let params = Conv2dParams {
            padding: Padding::Explicit([1; 4]),
            ..Default::default()
        };
        let g = Conv2dGeometry::new([1, 64, 28, 28], [64, 64, 3, 3], Some(64), &params).unwrap();
        check(&g, 7, true);
    }

    #[test]
    fn few_input_channels_are_left_to_the_exact_sums() {
        let g = |c| {
            Conv2dGeometry::new(
                [1, c, 32, 32],
                [16, c, 3, 3],
                None,
                &Conv2dParams::default(),
            )
            .unwrap()
        };
        assert!(!supports(&g(MIN_CHANNELS - 1)));
        assert_eq!(supports(&g(MIN_CHANNELS)), crate::conv::igemm::available());
    }

    #[test]
    fn a_fired_token_stops_it() {
        if !crate::conv::igemm::available() {
            return;
        }
        let g = Conv2dGeometry::new([2, 16, 8, 8], [4, 16, 3, 3], None, &Conv2dParams::default())
            .unwrap();
        let x = Array4::zeros(g.input_shape());
        let w = Array4::zeros(g.weight_shape());
        let t = CancelToken::new();
        t.cancel();
        assert_eq!(
            conv2d_winograd(x.view(), w.view(), None, &g, &t),
            Err(Cancelled)
        );
    }
}
