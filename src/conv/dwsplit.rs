//! The AVX-512 depthwise tile at column stride 2 that reads the input rows in place,
//! splitting even and odd columns in registers: no padded, phase-split copy.
//!
//! [`super::phased`] otherwise copies every band of input rows into its phase layout
//! before its tiles run; for a depthwise layer each input row is then read by only
//! `⌈k_h / s_h⌉` output rows and `k_w` taps, so that copy (load, de-interleave, store,
//! borders, zero tail, per row) cost twice the tiles (dw 3×3/2 on 96×112×112: 54 % of
//! the time in the copy, 26 % in the tiles).
//!
//! Here output column `j` of kernel column `v` reads input column `2j + v − left`. For
//! 16 outputs from `j0`, the taps with the same `s = ⌊(v − left)/2⌋` read the 32 input
//! columns from `2(j0 + s)`: two masked loads (lanes outside the row are the zero
//! padding), then one `vpermt2ps` per tap picks the even or odd columns. Output rows are
//! computed 4 at a time, each input row loaded once for all of them (at stride 2 down the
//! rows, 3×3: 9 input rows for 4 output rows instead of 12); a row above or below the
//! plane is skipped (zero padding). Each output sums its taps `(u, v)` in order.
//!
//! At column stride 1 nothing needs splitting: output column `j` of kernel column `v`
//! reads input column `j + v·d_w − left`, so each tap of each input row is one masked,
//! unaligned load per vector of 16 outputs ([`tile_s1`]); the rows are shared by 4 output
//! rows as above. The phase copy cost about as much as these tiles there (dw 3×3 on
//! 144×56×56, one thread: 32 % of the time in the copy, 47 % in the tiles).
//!
//! Zero padding, and column stride 2 with column dilation 1 or column stride 1 with any
//! column dilation ([`supports`]); other depthwise layers keep the phase copy and
//! [`super::dwtile`].
#![allow(unsafe_code)]

use super::isa::Out;
use super::params::{Conv2dGeometry, PaddingMode};

/// Widest kernel the tile handles (its per-tap tables are fixed arrays).
const MAX_K_W: usize = 16;
/// Distinct column shifts `s` of a kernel row of at most [`MAX_K_W`] taps.
const MAX_SHIFTS: usize = MAX_K_W / 2 + 1;
/// Output rows per tile.
const ROWS: usize = 4;

/// Whether the in-place tile computes `g` (on AVX-512): one input channel per output,
/// column stride 2 without column dilation (split in registers) or column stride 1,
/// zero padding, a row dilation that divides the row stride (so output rows share input
/// rows), at most [`MAX_K_W`] kernel columns.
pub(crate) fn supports(g: &Conv2dGeometry) -> bool {
    g.c_in == g.groups
        && (g.stride[1] == 2 && g.dilation[1] == 1 || g.stride[1] == 1)
        && g.padding_mode == PaddingMode::Zeros
        && g.stride[0].is_multiple_of(g.dilation[0])
        && g.k_w <= MAX_K_W
}

/// One input plane and one output channel's kernel.
pub(crate) struct SplitPlane<'a> {
    /// The input channel, `[h, w]` row-major.
    pub x: &'a [f32],
    /// The output channel's weights, `[k_h, k_w]` row-major.
    pub taps: &'a [f32],
    pub g: &'a Conv2dGeometry,
    pub bias: f32,
}

/// Writes output rows `i0 ..` (as many as `out` holds) of the plane.
///
/// # Panics
/// If the layer is not one [`supports`] accepts, the slices do not match it, or the CPU
/// lacks AVX-512F.
pub(crate) fn run(p: &SplitPlane<'_>, i0: usize, out: &mut [Out]) {
    let g = p.g;
    assert!(std::arch::is_x86_feature_detected!("avx512f"));
    assert!(supports(g));
    assert!(p.x.len() >= g.h * g.w && p.taps.len() == g.k_h * g.k_w);
    assert!(g.out_w > 0 && out.len().is_multiple_of(g.out_w));
    assert!(i0 + out.len() / g.out_w <= g.out_h);
    let left = g.padding[2] as isize;
    // At column stride 2, tap v reads shift `s = ⌊(v − left)/2⌋` (nondecreasing in v),
    // columns of parity `(v − left) mod 2` (at stride 1 `tile_s1` needs neither).
    let mut shifts = [0isize; MAX_SHIFTS];
    let mut cols = [(0usize, false); MAX_K_W];
    let mut n_shifts = 0;
    let split = if g.stride[1] == 2 { g.k_w } else { 0 };
    for (v, col) in cols.iter_mut().enumerate().take(split) {
        let e = v as isize - left;
        let s = e.div_euclid(2);
        if n_shifts == 0 || shifts[n_shifts - 1] != s {
            shifts[n_shifts] = s;
            n_shifts += 1;
        }
        *col = (n_shifts - 1, e.rem_euclid(2) == 1);
    }
    let layout = Layout {
        shifts: &shifts[..n_shifts],
        cols: &cols[..split],
    };
    // SAFETY: AVX-512F is present (asserted). Loads: rows `y` are checked to be in
    // `0..h`, and every lane outside `0..w` of the row is masked off (a masked-off lane is
    // not read and cannot fault), so every read is inside `x[y·w ..][..w]`. Stores: rows
    // `i0 ..` below `out.len() / out_w`, lanes masked to columns below `out_w`.
    unsafe { run_avx512(p, &layout, i0, out.as_mut_ptr().cast::<f32>(), out.len()) }
}

/// The taps' column shifts, fixed for a layer.
struct Layout<'a> {
    /// The distinct shifts `s`, increasing.
    shifts: &'a [isize],
    /// Per tap column `v`: index into `shifts`, and whether it reads the odd columns.
    cols: &'a [(usize, bool)],
}

#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(p: &SplitPlane<'_>, l: &Layout<'_>, i0: usize, out: *mut f32, len: usize) {
    let out_w = p.g.out_w;
    let rows = len / out_w;
    let blocks = out_w.div_ceil(16);
    // SAFETY (all calls): as `run`'s.
    unsafe {
        match (p.g.stride[1], p.g.k_w, p.g.padding[2]) {
            (1, 3, _) => rows_of::<1, 3, 0>(p, l, i0, rows, blocks, out),
            (1, 5, _) => rows_of::<1, 5, 0>(p, l, i0, rows, blocks, out),
            (1, 7, _) => rows_of::<1, 7, 0>(p, l, i0, rows, blocks, out),
            (1, _, _) => rows_of::<1, 0, 0>(p, l, i0, rows, blocks, out),
            (_, 3, 1) => rows_of::<2, 3, 1>(p, l, i0, rows, blocks, out),
            (_, 5, 2) => rows_of::<2, 5, 2>(p, l, i0, rows, blocks, out),
            (_, 7, 3) => rows_of::<2, 7, 3>(p, l, i0, rows, blocks, out),
            _ => rows_of::<2, 0, 0>(p, l, i0, rows, blocks, out),
        }
    }
}

/// Every tile of the band: 4 rows at a time, then one by one; 2 vectors at a time, then
/// one. Column stride `S` = 1: [`tile_s1`]; `S` = 2: `KW > 0`: the kernel is `KW` columns
/// wide with `LEFT` columns of left padding (centred odd kernels), so that every tap's
/// shift and parity is a constant ([`tile_k`]); `KW = 0`: any kernel ([`tile`]).
#[target_feature(enable = "avx512f")]
unsafe fn rows_of<const S: usize, const KW: usize, const LEFT: usize>(
    p: &SplitPlane<'_>,
    l: &Layout<'_>,
    i0: usize,
    rows: usize,
    blocks: usize,
    out: *mut f32,
) {
    let mut r = 0;
    // SAFETY (all calls): rows r .. r + R ≤ rows, blocks k .. k + N ≤ blocks; see `run`.
    unsafe {
        while r < rows {
            let four = r + ROWS <= rows;
            let mut k = 0;
            while k < blocks {
                let two = k + 2 <= blocks;
                match (four, two, KW) {
                    _ if S == 1 => match (four, two) {
                        (true, true) => tile_s1::<ROWS, 2, KW>(p, i0, r, k, out),
                        (true, false) => tile_s1::<ROWS, 1, KW>(p, i0, r, k, out),
                        (false, true) => tile_s1::<1, 2, KW>(p, i0, r, k, out),
                        (false, false) => tile_s1::<1, 1, KW>(p, i0, r, k, out),
                    },
                    (true, true, 0) => tile::<ROWS, 2>(p, l, i0, r, k, out),
                    (true, false, 0) => tile::<ROWS, 1>(p, l, i0, r, k, out),
                    (false, true, 0) => tile::<1, 2>(p, l, i0, r, k, out),
                    (false, false, 0) => tile::<1, 1>(p, l, i0, r, k, out),
                    (true, true, _) => tile_k::<ROWS, 2, KW, LEFT>(p, i0, r, k, out),
                    (true, false, _) => tile_k::<ROWS, 1, KW, LEFT>(p, i0, r, k, out),
                    (false, true, _) => tile_k::<1, 2, KW, LEFT>(p, i0, r, k, out),
                    (false, false, _) => tile_k::<1, 1, KW, LEFT>(p, i0, r, k, out),
                }
                k += if two { 2 } else { 1 };
            }
            r += if four { ROWS } else { 1 };
        }
    }
}

/// Output rows `i0 + r0 .. + R`, columns `16·k0 .. 16·(k0 + N)` at column stride 1:
/// tap `v` of input row `y` is the masked load of columns `16·k0 + v·d_w − left ..`
/// (lanes outside the row are the zero padding). `KW > 0`: the kernel is `KW` columns
/// wide; `KW = 0`: any width up to [`MAX_K_W`].
#[target_feature(enable = "avx512f")]
unsafe fn tile_s1<const R: usize, const N: usize, const KW: usize>(
    p: &SplitPlane<'_>,
    i0: usize,
    r0: usize,
    k0: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let (k_h, w) = (g.k_h, g.w);
    let k_w = if KW > 0 { KW } else { g.k_w };
    debug_assert!(g.k_w == k_w && k_w <= MAX_K_W);
    let c0 = 16 * k0 as isize - g.padding[2] as isize;
    let mut at = [0isize; MAX_K_W];
    let mut masks = [[0u16; 2]; MAX_K_W];
    for v in 0..k_w {
        at[v] = c0 + (v * g.dilation[1]) as isize;
        for (n, m) in masks[v].iter_mut().enumerate().take(N) {
            *m = lanes(at[v] + 16 * n as isize, w);
        }
    }
    let q = g.stride[0] / g.dilation[0];
    let y0 = (g.stride[0] * (i0 + r0)) as isize - g.padding[0] as isize;
    let mut acc = [[_mm512_set1_ps(p.bias); N]; R];
    for t in 0..q * (R - 1) + k_h {
        let y = y0 + (g.dilation[0] * t) as isize;
        if y < 0 || y >= g.h as isize {
            continue;
        }
        let row = p.x.as_ptr().wrapping_add(y as usize * w);
        for v in 0..k_w {
            let mut x = [_mm512_setzero_ps(); N];
            for (n, x) in x.iter_mut().enumerate() {
                // SAFETY: lanes outside the row are masked off (see `run`).
                *x = unsafe {
                    _mm512_maskz_loadu_ps(masks[v][n], row.wrapping_offset(at[v] + 16 * n as isize))
                };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let u = t.wrapping_sub(q * r);
                if u < k_h {
                    let wt = _mm512_set1_ps(p.taps[u * k_w + v]);
                    for (a, &x) in acc.iter_mut().zip(&x) {
                        *a = _mm512_fmadd_ps(wt, x, *a);
                    }
                }
            }
        }
    }
    // SAFETY: as `tile`'s stores.
    unsafe { store(&acc, g.out_w, r0, k0, out) }
}

/// [`tile`] for a kernel of `KW` columns and `LEFT` columns of left padding: the shifts
/// and parities are constants, each shift's pair of vectors is loaded once per input
/// row and every tap's columns picked before the FMAs, which take the weights straight
/// from memory (broadcast operands).
#[target_feature(enable = "avx512f")]
unsafe fn tile_k<const R: usize, const N: usize, const KW: usize, const LEFT: usize>(
    p: &SplitPlane<'_>,
    i0: usize,
    r0: usize,
    k0: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let (k_h, w) = (g.k_h, g.w);
    debug_assert!(g.k_w == KW && g.padding[2] == LEFT);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let s_lo = (-(LEFT as isize)).div_euclid(2);
    let n_shifts = ((KW - 1) as isize - LEFT as isize).div_euclid(2) - s_lo + 1;
    let c0 = 32 * k0 as isize;
    let mut masks = [[0u16; 4]; MAX_SHIFTS];
    for (si, m) in masks.iter_mut().enumerate().take(n_shifts as usize) {
        for (h, m) in m.iter_mut().enumerate().take(2 * N) {
            *m = lanes(c0 + 2 * (s_lo + si as isize) + 16 * h as isize, w);
        }
    }
    let q = g.stride[0] / g.dilation[0];
    let y0 = (g.stride[0] * (i0 + r0)) as isize - g.padding[0] as isize;
    let mut acc = [[_mm512_set1_ps(p.bias); N]; R];
    for t in 0..q * (R - 1) + k_h {
        let y = y0 + (g.dilation[0] * t) as isize;
        if y < 0 || y >= g.h as isize {
            continue;
        }
        let row = p.x.as_ptr().wrapping_add(y as usize * w);
        let mut pairs = [[[_mm512_setzero_ps(); 2]; N]; MAX_SHIFTS];
        for (si, pairs) in pairs.iter_mut().enumerate().take(n_shifts as usize) {
            let c = c0 + 2 * (s_lo + si as isize);
            for (n, pair) in pairs.iter_mut().enumerate() {
                for (h, x) in pair.iter_mut().enumerate() {
                    let at = c + 32 * n as isize + 16 * h as isize;
                    // SAFETY: lanes outside the row are masked off (see `run`).
                    *x = unsafe {
                        _mm512_maskz_loadu_ps(masks[si][2 * n + h], row.wrapping_offset(at))
                    };
                }
            }
        }
        let mut x = [[_mm512_setzero_ps(); N]; KW];
        for (v, x) in x.iter_mut().enumerate() {
            let e = v as isize - LEFT as isize;
            let si = (e.div_euclid(2) - s_lo) as usize;
            let idx = if e.rem_euclid(2) == 1 { odds } else { evens };
            for (x, pair) in x.iter_mut().zip(&pairs[si]) {
                *x = _mm512_permutex2var_ps(pair[0], idx, pair[1]);
            }
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let u = t.wrapping_sub(q * r);
            if u < k_h {
                for (v, x) in x.iter().enumerate() {
                    // SAFETY: u < k_h, v < KW = k_w, and `run` checked taps.len().
                    let wt = _mm512_set1_ps(unsafe { *p.taps.get_unchecked(u * KW + v) });
                    for (a, &x) in acc.iter_mut().zip(x) {
                        *a = _mm512_fmadd_ps(wt, x, *a);
                    }
                }
            }
        }
    }
    // SAFETY: as `tile`'s stores.
    unsafe { store(&acc, g.out_w, r0, k0, out) }
}

/// Stores rows `r0 .. r0 + R` of a tile at block `k0`, masked to `out_w` columns.
///
/// # Safety
/// Rows `r0 .. r0 + R` must be inside `out`'s band; `out` is AVX-512F-capable.
#[target_feature(enable = "avx512f")]
unsafe fn store<const R: usize, const N: usize>(
    acc: &[[std::arch::x86_64::__m512; N]; R],
    out_w: usize,
    r0: usize,
    k0: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r0 + r is inside the band; lanes masked to columns below out_w.
        unsafe {
            let row = out.add((r0 + r) * out_w);
            for (n, &a) in acc.iter().enumerate() {
                let j = 16 * (k0 + n);
                _mm512_mask_storeu_ps(row.wrapping_add(j), lanes(j as isize, out_w), a);
            }
        }
    }
}

/// The lanes of 16 floats from column `c` that lie inside a row of `w` columns.
#[inline(always)]
fn lanes(c: isize, w: usize) -> u16 {
    let lo = (-c).clamp(0, 16);
    let hi = (w as isize - c).clamp(0, 16);
    if hi <= lo {
        0
    } else {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
    }
}

/// Output rows `i0 + r0 .. + R`, columns `16·k0 .. 16·(k0 + N)` (stores masked to
/// `out_w`); `out` is output row `i0`.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const N: usize>(
    p: &SplitPlane<'_>,
    l: &Layout<'_>,
    i0: usize,
    r0: usize,
    k0: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let g = p.g;
    let (k_h, k_w, w) = (g.k_h, g.k_w, g.w);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // Input column of the first load of each shift, and its lanes inside the row.
    let c0 = 32 * k0 as isize;
    let mut masks = [[0u16; 4]; MAX_SHIFTS];
    for (m, &s) in masks.iter_mut().zip(l.shifts) {
        for (h, m) in m.iter_mut().enumerate().take(2 * N) {
            *m = lanes(c0 + 2 * s + 16 * h as isize, w);
        }
    }
    // Output row r reads input rows y0 + s_h·r + d_h·u: in steps of d_h, t = q·r + u.
    let q = g.stride[0] / g.dilation[0];
    let y0 = (g.stride[0] * (i0 + r0)) as isize - g.padding[0] as isize;
    let mut acc = [[_mm512_set1_ps(p.bias); N]; R];
    for t in 0..q * (R - 1) + k_h {
        let y = y0 + (g.dilation[0] * t) as isize;
        if y < 0 || y >= g.h as isize {
            continue;
        }
        let row = p.x.as_ptr().wrapping_add(y as usize * w);
        let mut loaded = usize::MAX;
        let mut pair = [[_mm512_setzero_ps(); 2]; N];
        for (v, &(si, odd)) in l.cols.iter().enumerate() {
            if si != loaded {
                let c = c0 + 2 * l.shifts[si];
                for (n, pair) in pair.iter_mut().enumerate() {
                    for (h, x) in pair.iter_mut().enumerate() {
                        let at = c + 32 * n as isize + 16 * h as isize;
                        // SAFETY: lanes outside the row are masked off (see `run`).
                        *x = unsafe {
                            _mm512_maskz_loadu_ps(masks[si][2 * n + h], row.wrapping_offset(at))
                        };
                    }
                }
                loaded = si;
            }
            let idx = if odd { odds } else { evens };
            let mut x = [_mm512_setzero_ps(); N];
            for (x, pair) in x.iter_mut().zip(&pair) {
                *x = _mm512_permutex2var_ps(pair[0], idx, pair[1]);
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let u = t.wrapping_sub(q * r);
                if u < k_h {
                    let wt = _mm512_set1_ps(p.taps[u * k_w + v]);
                    for (a, &x) in acc.iter_mut().zip(&x) {
                        *a = _mm512_fmadd_ps(wt, x, *a);
                    }
                }
            }
        }
    }
    // SAFETY: row r0 + r is inside the band (see `run`).
    unsafe { store(&acc, g.out_w, r0, k0, out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_keep_the_columns_inside_the_row() {
        assert_eq!(lanes(0, 100), 0xffff);
        assert_eq!(lanes(-2, 100), 0xfffc);
        assert_eq!(lanes(90, 100), 0x03ff);
        assert_eq!(lanes(-3, 5), 0x00f8);
        assert_eq!(lanes(100, 100), 0);
        assert_eq!(lanes(-16, 100), 0);
    }
}
