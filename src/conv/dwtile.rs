//! The AVX-512 register tile of the phased kernel for one input channel per output
//! (depthwise layers): 4 output rows × 2 vectors of 16 outputs.
//!
//! [`super::phased`] pads and phase-splits a band of input rows, after which every tap of
//! every output is one contiguous run of that band. Its portable tile (plain Rust, compiled
//! per instruction set) keeps 2 rows × 2 vectors in registers: four FMA chains, each
//! waiting on the previous tap's result, and the bounds checks of each tap's slice between
//! them. On 28×28 depthwise planes that ran at ~40 % of the FMA rate. This tile keeps 8
//! independent accumulators, folds the loads into the FMAs and checks bounds once per
//! band, so a tap costs one broadcast and 8 FMAs.
//!
//! At stride 1 and dilation 1 down the rows, kernel row `u` of output row `r` reads input
//! row `r + u`, so 4 output rows read `4 + k_h − 1` input rows between them: the tile
//! then loads each input vector once and feeds it to every output row it belongs to
//! (3×3: 36 loads for 72 FMAs instead of 72), summing in the same order.
//!
//! Only for CPUs with AVX-512F, which [`super::isa`] has detected when it runs the AVX-512
//! build of the phased kernel (the only caller).
#![allow(unsafe_code)]

use super::isa::Out;

/// One band of one output plane, as [`super::phased`] prepared it.
pub(crate) struct DepthwiseBand<'a> {
    /// Padded, phase-split input rows of the band.
    pub buf: &'a [f32],
    /// Offset in `buf` of each tap's run for output row 0, column 0.
    pub offsets: &'a [usize],
    /// One weight per tap.
    pub taps: &'a [f32],
    /// Floats between consecutive output rows' runs (`s_h · row_len`).
    pub row_stride: usize,
    /// Kernel width: taps are `(u, v)` row-major, `offsets.len() / k_w` rows.
    pub k_w: usize,
    pub out_w: usize,
    pub bias: f32,
}

/// Writes the band's `out.len() / out_w` output rows.
///
/// # Panics
/// If a tap's run for some output could fall outside `buf` (a caller bug), or the CPU lacks
/// AVX-512F.
pub(crate) fn run(b: &DepthwiseBand<'_>, out: &mut [Out]) {
    assert!(std::arch::is_x86_feature_detected!("avx512f"));
    assert_eq!(b.offsets.len(), b.taps.len());
    assert!(b.out_w > 0 && out.len().is_multiple_of(b.out_w));
    let rows = out.len() / b.out_w;
    if rows == 0 {
        return;
    }
    let width = b
        .out_w
        .next_multiple_of(if b.out_w <= 16 { 16 } else { 32 });
    let reach = (rows - 1) * b.row_stride + b.offsets.iter().max().copied().unwrap_or(0) + width;
    assert!(reach <= b.buf.len(), "every tap's run inside the band");
    // Kernel row `u` of output row `r` reads the run of output row `r + u` (stride 1 and
    // dilation 1 down the rows): each loaded input vector then serves up to `k_h` output
    // rows ([`tile_rows`]).
    assert!(b.k_w > 0 && b.offsets.len().is_multiple_of(b.k_w));
    let k_h = b.offsets.len() / b.k_w;
    let shared = (0..k_h)
        .all(|u| (0..b.k_w).all(|v| b.offsets[u * b.k_w + v] == b.offsets[v] + u * b.row_stride));
    // SAFETY: AVX-512F is present (asserted); every load is at `r·row_stride + offset + j`
    // with `j < width`, below `reach` ≤ `buf.len()` (with `shared`, row `r0 + t` at column
    // offset `offsets[v]` is that of tap `(t − r, v)` of an output row `r0 + r` < rows);
    // every store is inside `out` (row `r` < rows, column < out_w by the masks).
    unsafe {
        run_avx512(
            b,
            rows,
            shared.then_some(k_h),
            out.as_mut_ptr().cast::<f32>(),
        )
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(b: &DepthwiseBand<'_>, rows: usize, shared: Option<usize>, out: *mut f32) {
    let mask = |j: usize| -> u16 {
        let n = b.out_w.saturating_sub(j).min(16);
        ((1u32 << n) - 1) as u16
    };
    let step = if b.out_w <= 16 { 16 } else { 32 };
    for j0 in (0..b.out_w).step_by(step) {
        let masks = [mask(j0), mask(j0 + 16)];
        // SAFETY (both): the caller's bounds hold for every row < rows.
        unsafe {
            if step == 16 {
                column::<1>(b, rows, j0, masks, shared, out);
            } else {
                column::<2>(b, rows, j0, masks, shared, out);
            }
        }
    }
}

/// Every row of the columns `j0 .. j0 + 16·N`: 4 at a time (sharing their input vectors
/// when `shared` is `Some(k_h)`), then one by one.
#[target_feature(enable = "avx512f")]
unsafe fn column<const N: usize>(
    b: &DepthwiseBand<'_>,
    rows: usize,
    j0: usize,
    masks: [u16; 2],
    shared: Option<usize>,
    out: *mut f32,
) {
    let mut r = 0;
    // SAFETY (all calls): the caller's bounds hold for rows r .. r + R ≤ rows.
    unsafe {
        if let Some(k_h) = shared {
            while r + ROWS_SHARED <= rows {
                tile_rows::<ROWS_SHARED, N>(b, k_h, r, j0, masks, out);
                r += ROWS_SHARED;
            }
        }
        while r + 4 <= rows {
            tile::<4, N>(b, r, j0, masks, out);
            r += 4;
        }
        while r < rows {
            tile::<1, N>(b, r, j0, masks, out);
            r += 1;
        }
    }
}

/// Rows `r0 .. r0 + R`, columns `j0 .. j0 + 16·N` (stores masked by `masks`).
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const N: usize>(
    b: &DepthwiseBand<'_>,
    r0: usize,
    j0: usize,
    masks: [u16; 2],
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_set1_ps(b.bias); N]; R];
    // SAFETY: see `run`.
    unsafe {
        let base = b.buf.as_ptr().add(r0 * b.row_stride + j0);
        for (&off, &w) in b.offsets.iter().zip(b.taps) {
            let w = _mm512_set1_ps(w);
            let p = base.add(off);
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_ps(p.add(r * b.row_stride + 16 * j));
                    *a = _mm512_fmadd_ps(w, x, *a);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = out.add((r0 + r) * b.out_w + j0);
            for (j, &a) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(row.add(16 * j), masks[j], a);
            }
        }
    }
}

/// Output rows per [`tile_rows`] tile.
const ROWS_SHARED: usize = 4;

/// Rows `r0 .. r0 + R`, columns `j0 .. j0 + 16·N`, when kernel row `u` of output row `r`
/// reads input row `r + u`: input rows are loaded once per tile, each vector feeding the
/// up to `k_h` output rows it belongs to (a 3×3 tile of 4 rows loads 6 rows instead of
/// 12; 8 rows measured slower, their branches and broadcasts outweighing the loads). Same sums in the same order as [`tile`]: for each output, taps `(u, v)` in order.
#[target_feature(enable = "avx512f")]
unsafe fn tile_rows<const R: usize, const N: usize>(
    b: &DepthwiseBand<'_>,
    k_h: usize,
    r0: usize,
    j0: usize,
    masks: [u16; 2],
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let k_w = b.k_w;
    let mut acc = [[_mm512_set1_ps(b.bias); N]; R];
    // SAFETY: see `run`; row `r0 + t` for t < R + k_h − 1 is row `r0 + r` of tap `t − r`.
    unsafe {
        let base = b.buf.as_ptr().add(r0 * b.row_stride + j0);
        for t in 0..R + k_h - 1 {
            let row = base.add(t * b.row_stride);
            for v in 0..k_w {
                let p = row.add(b.offsets[v]);
                let mut x = [_mm512_setzero_ps(); N];
                for (j, x) in x.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(p.add(16 * j));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let u = t.wrapping_sub(r);
                    if u < k_h {
                        let w = _mm512_set1_ps(*b.taps.get_unchecked(u * k_w + v));
                        for (a, &x) in acc.iter_mut().zip(&x) {
                            *a = _mm512_fmadd_ps(w, x, *a);
                        }
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = out.add((r0 + r) * b.out_w + j0);
            for (j, &a) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(row.add(16 * j), masks[j], a);
            }
        }
    }
}
