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
    // SAFETY: AVX-512F is present (asserted); every load is at `r·row_stride + offset + j`
    // with `j < width`, below `reach` ≤ `buf.len()`; every store is inside `out` (row `r` <
    // rows, column < out_w by the masks).
    unsafe { run_avx512(b, rows, out.as_mut_ptr().cast::<f32>()) }
}

#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(b: &DepthwiseBand<'_>, rows: usize, out: *mut f32) {
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
                column::<1>(b, rows, j0, masks, out);
            } else {
                column::<2>(b, rows, j0, masks, out);
            }
        }
    }
}

/// Every row of the columns `j0 .. j0 + 16·N`: 4 rows at a time, then one by one.
#[target_feature(enable = "avx512f")]
unsafe fn column<const N: usize>(
    b: &DepthwiseBand<'_>,
    rows: usize,
    j0: usize,
    masks: [u16; 2],
    out: *mut f32,
) {
    let mut r = 0;
    // SAFETY (all calls): the caller's bounds hold for rows r .. r + R ≤ rows.
    unsafe {
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
