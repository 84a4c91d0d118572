//! Direct convolution vectorised over output channels: layers with few input channels
//! per group and many output channels, such as stems (RGB → 64 channels, 7×7 at stride 2).
//!
//! The implicit GEMM ([`super::igemm`]) puts 16 output positions in a vector and reads
//! them from stride-phase planes; on a stem that costs a phase split of the image, lanes
//! past each row's end, and three unaligned vector loads per tap. Here the vector holds
//! 16 output channels instead:
//!
//! **The tile** is 6 output positions of one row × 4 vectors of 16 output channels (24
//! `zmm` accumulators, started at the bias). Per tap `k = (c, u, v)` it loads the 4
//! weight vectors `W[o0 .. o0 + 64, k]` from a panel packed once per call (`[k][64]`,
//! zeros past the group's channels) and broadcasts the 6 inputs
//! `x[c, i·s_h + u·d_h, (j + t)·s_w + v·d_w]` (`t < 6`) of the padded rows: 10 loads per
//! 24 FMAs, none crossing a cache line, at any stride and dilation.
//!
//! A row's results, 64 channels per position, go to a per-task row buffer and are
//! transposed 16 × 16 in registers into the NCHW output.
//!
//! **Tasks** are bands of output rows of one group (at least 3 per thread); each pads the
//! input rows its band reads (padding mode applied, zeros past the rows' ends) into a
//! per-thread buffer, then runs every panel of its group over them: the image is never
//! padded whole, and the workspace is `c_in/groups` × (band rows) padded rows per thread.
//!
//! **Where the time goes** on ResNet's 7×7/2 stem (one thread, 2.39 ms): the tile loop
//! about 2.13 ms, close to the FMA ceiling for its work; the 16 × 16 transposes 0.15–0.17
//! ms; the row fill and weight packing about 0.09 ms. Tried and measured no faster
//! (criterion and the peer harness, alternating builds): a 12-position × 32-channel tile
//! (its 18.8 KB panel fits L1; with a position pointer per lane it spilled, with
//! stride-phase rows it equalled this tile), transposes deferred behind the next row's
//! tiles, and 64-byte aligned panels. ONNX Runtime runs that layer at about 98 % of the
//! two cores' measured FMA ceiling, so only fewer multiply-adds could beat it clearly.
//!
//! Only for CPUs with AVX-512F ([`available`]). This module is one of the crate's
//! `unsafe` sites: raw-pointer loads and stores whose bounds are asserted once per band.
#![allow(unsafe_code)]

use std::cell::RefCell;

use ndarray::{Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

use super::igemm::OutPtr;
use super::params::Conv2dGeometry;
use super::phase::PhaseLayout;
use super::{CancelToken, Cancelled};

/// Vectors of 16 output channels per tile.
const NO: usize = 4;
/// Output channels per packed weight panel.
pub(crate) const PANEL: usize = 16 * NO;
/// Output positions per tile.
pub(crate) const NJ: usize = 6;
/// Bands of output rows per thread to aim for: enough that a thread that joins late
/// (a pool thread waking up) still takes its share.
const TASKS_PER_THREAD: usize = 8;
/// Smallest band worth scheduling, in multiply-adds.
const MIN_TASK_MACS: usize = 1 << 20;

/// Whether this CPU can run the kernel (AVX-512F).
pub fn available() -> bool {
    super::igemm::available()
}

/// Positions computed per output row: the row rounded up to whole tiles.
pub(crate) fn computed_width(out_w: usize) -> usize {
    out_w.next_multiple_of(NJ)
}

/// Positions the row buffer holds: the computed ones, and whole 16-wide blocks for the
/// transposes (whose lanes past `out_w` are read and not stored).
pub(crate) fn buffered_width(out_w: usize) -> usize {
    computed_width(out_w).max(out_w.next_multiple_of(16))
}

thread_local! {
    /// Per-thread padded input rows of the current band.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread results of one output row and panel, `[position][PANEL]`.
    static ROW_OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every band.
///
/// # Panics
/// If the CPU lacks AVX-512F (see [`available`]) or the shapes disagree with `geom`.
pub fn conv2d_chantile(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    assert!(available(), "the channel tile needs AVX-512F");
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let k = cpg * g.k_h * g.k_w;
    let panels = opg.div_ceil(PANEL);

    // Weights `[group][panel][k][PANEL]` and biases `[group][panel][PANEL]`, zeros past
    // the group's output channels.
    let mut packed = vec![0.0f32; g.groups * panels * k * PANEL];
    let mut biases = vec![0.0f32; g.groups * panels * PANEL];
    for grp in 0..g.groups {
        for o in 0..opg {
            let (p, lane) = (o / PANEL, o % PANEL);
            let panel = &mut packed[(grp * panels + p) * k * PANEL..][..k * PANEL];
            let row = &wt[(grp * opg + o) * k..][..k];
            for (kk, &w) in row.iter().enumerate() {
                panel[kk * PANEL + lane] = w;
            }
            if let Some(b) = &bias {
                biases[(grp * panels + p) * PANEL + lane] = b[grp * opg + o];
            }
        }
    }

    // Padded rows as the stride-1 phase layout writes them (one phase: the padded row).
    let mut g1 = g;
    g1.stride = [1, 1];
    let layout = PhaseLayout::new(&g1, 0);
    let wp = layout.wq;
    let bands = plan_bands(&g, k, panels);
    let band_out = bands.first().map_or(1, |b| b.len());
    // Input rows of the tallest band, and the tap offsets in a band's buffer.
    let cap = (band_out - 1) * g.stride[0] + (g.k_h - 1) * g.dilation[0] + 1;
    let koff: Vec<u32> = (0..cpg)
        .flat_map(|c| {
            (0..g.k_h).flat_map(move |u| {
                (0..g.k_w).map(move |v| c * cap * wp + u * g.dilation[0] * wp + v * g.dilation[1])
            })
        })
        .map(|o| u32::try_from(o).expect("band offsets fit u32"))
        .collect();
    let koff_max = koff.iter().copied().max().unwrap_or(0) as usize;
    let jt = computed_width(g.out_w);
    // The last tile of a band's last row reads up to here (positions past `out_w` are
    // computed from whatever follows and dropped).
    let reach = (band_out - 1) * g.stride[0] * wp + (jt - 1) * g.stride[1] + koff_max + 1;
    let buf_len = reach.max(cpg * cap * wp);

    let args = BandArgs {
        g: &g,
        layout: &layout,
        packed: &packed,
        biases: &biases,
        koff: &koff,
        koff_max,
        panels,
        cap,
        buf_len,
        jt,
    };
    run_bands(&g, x, &bands, cancel, |grp, xg, rows, out| {
        run_band(&args, grp, xg, rows, out);
    })
}

/// Runs `band(group, input channels of the group [c_in/groups, h, w], output rows,
/// the group's first output plane)` for every image, group and band of `bands` on the
/// current rayon pool, into a fresh `[n, c_out, out_h, out_w]` output; used here and by
/// [`super::chanwino`].
///
/// `band` must store every output column of every row of its band for each of the
/// group's output channels, writing nothing else.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every band.
pub(crate) fn run_bands(
    g: &Conv2dGeometry,
    x: &[f32],
    bands: &[std::ops::Range<usize>],
    cancel: &CancelToken,
    band: impl Fn(usize, &[f32], std::ops::Range<usize>, OutPtr) + Sync,
) -> Result<Array4<f32>, Cancelled> {
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let p_len = g.out_h * g.out_w;
    let len = g.n * g.c_out * p_len;
    let mut out = super::buffers::take(len);
    let base = OutPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    // Every image runs the same (group, band) tasks.
    let tasks: Vec<(usize, &std::ops::Range<usize>)> = (0..g.groups)
        .flat_map(|grp| bands.iter().map(move |b| (grp, b)))
        .collect();
    let done = (0..g.n).try_for_each(|img| {
        tasks.par_iter().try_for_each(|&(grp, rows)| {
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let xg = &x[(img * g.c_in + grp * cpg) * g.h * g.w..][..cpg * g.h * g.w];
            band(
                grp,
                xg,
                rows.clone(),
                base.at((img * g.c_out + grp * opg) * p_len),
            );
            Ok(())
        })
    });
    if done.is_err() {
        super::buffers::give(out);
        return Err(Cancelled);
    }
    // SAFETY: every (image, group, band) ran once and, by `band`'s contract, stored every
    // output column of every row of its band for each of the group's output channels;
    // the bands partition the rows, so all `len` elements are initialised.
    unsafe { out.set_len(len) };
    Ok(Array4::from_shape_vec(g.output_shape(), out).expect("shape"))
}

/// Output-row bands: at least [`TASKS_PER_THREAD`] per thread over all groups, none below
/// [`MIN_TASK_MACS`], all of one height except the last.
pub(crate) fn plan_bands(
    g: &Conv2dGeometry,
    k: usize,
    panels: usize,
) -> Vec<std::ops::Range<usize>> {
    let want = (TASKS_PER_THREAD * rayon::current_num_threads()).div_ceil(g.groups);
    let row_macs = g.out_w * k * panels * PANEL;
    let max_parts = (g.out_h * row_macs / MIN_TASK_MACS).max(1);
    let parts = want.min(max_parts).min(g.out_h).max(1);
    let size = g.out_h.div_ceil(parts);
    (0..g.out_h)
        .step_by(size)
        .map(|s| s..(s + size).min(g.out_h))
        .collect()
}

/// What every band of one call shares.
struct BandArgs<'a> {
    g: &'a Conv2dGeometry,
    layout: &'a PhaseLayout,
    /// `[group][panel][k][PANEL]`.
    packed: &'a [f32],
    /// `[group][panel][PANEL]`.
    biases: &'a [f32],
    /// Tap offsets into a band's padded rows, `(c, u, v)` in the weight's order.
    koff: &'a [u32],
    /// The largest of `koff`.
    koff_max: usize,
    panels: usize,
    /// Padded rows per channel in a band's buffer.
    cap: usize,
    /// Floats of a band's buffer (its rows, and what the last tiles read past them).
    buf_len: usize,
    /// Positions computed per row ([`computed_width`]).
    jt: usize,
}

/// Output rows `rows` of group `grp` (input channels `xg`, `[c_in/groups, h, w]`), every
/// output channel of the group, into `out` (the group's first output plane).
fn run_band(a: &BandArgs<'_>, grp: usize, xg: &[f32], rows: std::ops::Range<usize>, out: OutPtr) {
    let g = a.g;
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let k = a.koff.len();
    let wp = a.layout.wq;
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let r0 = rows.start * sh;
    let n_rows = (rows.len() - 1) * sh + (g.k_h - 1) * g.dilation[0] + 1;
    assert!(n_rows <= a.cap);
    let mut buf = ROWS.take();
    let mut row_out = ROW_OUT.take();
    buf.resize(a.buf_len, 0.0);
    row_out.resize(buffered_width(g.out_w) * PANEL, 0.0);
    for c in 0..cpg {
        let plane = &xg[c * g.h * g.w..][..g.h * g.w];
        let chan = &mut buf[c * a.cap * wp..][..n_rows * wp];
        for (r, dst) in chan.chunks_exact_mut(wp).enumerate() {
            a.layout.fill_row(plane, r0 + r, dst);
        }
    }
    // Every tile reads below `(rows.len() − 1)·s_h·wp + (jt − 1)·s_w + koff + 1`, which
    // `buf_len` covers (computed from the tallest band).
    let last = (rows.len() - 1) * sh * wp + (a.jt - 1) * sw;
    assert!(
        last + a.koff_max < buf.len(),
        "tiles read inside the band's buffer"
    );
    let p_len = g.out_h * g.out_w;
    for p in 0..a.panels {
        let chans = (opg - p * PANEL).min(PANEL);
        let w = &a.packed[(grp * a.panels + p) * k * PANEL..][..k * PANEL];
        let b = &a.biases[(grp * a.panels + p) * PANEL..][..PANEL];
        for (rr, i) in rows.clone().enumerate() {
            let at = rr * sh * wp;
            // SAFETY: AVX-512F is present (asserted by the caller); the loads are below the
            // bound asserted above; `row_out` holds `jt` positions × PANEL and the stores
            // go to channels `p·PANEL .. + chans` of the group, row `i`, columns < out_w,
            // which this band alone writes.
            unsafe {
                row_tiles(w, b, a.koff, &buf[at..], sw, g.out_w, &mut row_out, chans);
                transpose_row(
                    &row_out,
                    chans,
                    g.out_w,
                    out.at(p * PANEL * p_len + i * g.out_w).0,
                    p_len,
                );
            }
        }
    }
    ROWS.set(buf);
    ROW_OUT.set(row_out);
}

/// Runs the tiles of one output row: positions `0 .. jt` (steps of [`NJ`], a shorter
/// tile for the rest) with the vectors that cover `chans` channels, into
/// `row_out[j·PANEL ..]`.
///
/// # Safety
/// AVX-512F must be present; `x[(j + t)·sw + koff[k]]` must be in `x` for `j + t < jt`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn row_tiles(
    w: &[f32],
    bias: &[f32],
    koff: &[u32],
    x: &[f32],
    sw: usize,
    jt: usize,
    row_out: &mut [f32],
    chans: usize,
) {
    debug_assert!(row_out.len() >= jt * PANEL && w.len() == koff.len() * PANEL);
    for j in (0..jt).step_by(NJ) {
        let xs = x.as_ptr().add(j * sw);
        let dst = row_out.as_mut_ptr().add(j * PANEL);
        // SAFETY: as this function's contract.
        unsafe {
            match chans.div_ceil(16) {
                4 => tiles::<4>(jt - j, w, bias, koff, xs, sw, dst),
                3 => tiles::<3>(jt - j, w, bias, koff, xs, sw, dst),
                2 => tiles::<2>(jt - j, w, bias, koff, xs, sw, dst),
                _ => tiles::<1>(jt - j, w, bias, koff, xs, sw, dst),
            }
        }
    }
}

/// One tile of `min(left, NJ)` positions (see [`tile`]).
///
/// # Safety
/// As [`tile`] for that many positions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tiles<const V: usize>(
    left: usize,
    w: &[f32],
    bias: &[f32],
    koff: &[u32],
    x: *const f32,
    sw: usize,
    dst: *mut f32,
) {
    // SAFETY: as this function's contract.
    unsafe {
        match left {
            1 => tile::<V, 1>(w, bias, koff, x, sw, dst),
            2 => tile::<V, 2>(w, bias, koff, x, sw, dst),
            3 => tile::<V, 3>(w, bias, koff, x, sw, dst),
            4 => tile::<V, 4>(w, bias, koff, x, sw, dst),
            5 => tile::<V, 5>(w, bias, koff, x, sw, dst),
            _ => tile::<V, NJ>(w, bias, koff, x, sw, dst),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn row_tiles(
    _: &[f32],
    _: &[f32],
    _: &[u32],
    _: &[f32],
    _: usize,
    _: usize,
    _: &mut [f32],
    _: usize,
) {
    unreachable!("available() is false off x86-64")
}

/// One tile: `dst[t·PANEL + 16·o ..][..16] = bias[16·o ..] + Σ_k w[k·PANEL + 16·o ..] ·
/// x[t·sw + koff[k]]` for `t < N`, `o < V` (`N ≤ NJ`).
///
/// # Safety
/// AVX-512F must be present; `x[t·sw + koff[k]]` readable, `dst[.. N·PANEL]` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize, const N: usize>(
    w: &[f32],
    bias: &[f32],
    koff: &[u32],
    x: *const f32,
    sw: usize,
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): `w` holds `koff.len()` rows of PANEL floats and `bias` PANEL
    // (checked by the caller's slicing); the input loads and the stores are the caller's.
    unsafe {
        // Loops, not `array::from_fn`: see `transpose16`.
        let mut b0 = [_mm512_setzero_ps(); V];
        for (v, b) in b0.iter_mut().enumerate() {
            *b = _mm512_loadu_ps(bias.as_ptr().add(16 * v));
        }
        let mut acc = [b0; N];
        let mut xs = [x; N];
        for (t, p) in xs.iter_mut().enumerate() {
            *p = x.add(t * sw);
        }
        let mut wk = w.as_ptr();
        for &o in koff {
            let o = o as usize;
            let mut wv = [_mm512_setzero_ps(); V];
            for (v, w) in wv.iter_mut().enumerate() {
                *w = _mm512_loadu_ps(wk.add(16 * v));
            }
            for t in 0..N {
                let b = _mm512_set1_ps(*xs[t].add(o));
                for v in 0..V {
                    acc[t][v] = _mm512_fmadd_ps(wv[v], b, acc[t][v]);
                }
            }
            wk = wk.add(PANEL);
        }
        for (t, acc) in acc.iter().enumerate() {
            for (v, &a) in acc.iter().enumerate() {
                _mm512_storeu_ps(dst.add(t * PANEL + 16 * v), a);
            }
        }
    }
}

/// Writes `row_out` (`[position][PANEL]`, at least `out_w.next_multiple_of(16)`
/// positions) to channels `0 .. chans` of one output row: channel `o`'s row at
/// `out + o·ldo`, columns `0 .. out_w`.
///
/// # Safety
/// AVX-512F must be present; `out + o·ldo + j` writable for `o < chans`, `j < out_w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_row(
    row_out: &[f32],
    chans: usize,
    out_w: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::*;
    assert!(row_out.len() >= out_w.next_multiple_of(16) * PANEL);
    for j0 in (0..out_w).step_by(16) {
        let mask = ((1u32 << (out_w - j0).min(16)) - 1) as u16;
        for o0 in (0..chans).step_by(16) {
            // SAFETY: rows j0 .. j0 + 16 of row_out, channels o0 .. o0 + 16 < PANEL
            // (length asserted); stores as the contract.
            unsafe {
                let mut rows = [_mm512_setzero_ps(); 16];
                for (r, row) in rows.iter_mut().enumerate() {
                    *row = _mm512_loadu_ps(row_out.as_ptr().add((j0 + r) * PANEL + o0));
                }
                let cols = transpose16(rows);
                for (c, col) in cols.iter().enumerate().take(chans - o0) {
                    let dst = out.add((o0 + c) * ldo + j0);
                    if mask == u16::MAX {
                        _mm512_storeu_ps(dst, *col);
                    } else {
                        _mm512_mask_storeu_ps(dst, mask, *col);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn transpose_row(_: &[f32], _: usize, _: usize, _: *mut f32, _: usize) {
    unreachable!("available() is false off x86-64")
}

/// The 16 × 16 transpose: `out[c]` lane `r` = `rows[r]` lane `c`.
///
/// Plain loops, no closures: a closure is a function of its own, which does not inherit
/// this one's target features when it is not inlined (the server's build called the
/// intrinsics out of line through one and ran the stem at a third of its speed).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved by 32-bit element, per 128-bit lane.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Quads by 64-bit element: u[4q + c] holds column 4L + c of rows 4q .. 4q + 4 in
    // 128-bit lane L.
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        for h in 0..2 {
            let a = _mm512_castps_pd(t[4 * q + h]);
            let b = _mm512_castps_pd(t[4 * q + 2 + h]);
            u[4 * q + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[4 * q + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let lo01 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let hi01 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let lo23 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let hi23 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(lo01, lo23);
        out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(lo01, lo23);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(hi01, hi23);
        out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(hi01, hi23);
    }
    out
}

#[cfg(test)]
mod tests;
