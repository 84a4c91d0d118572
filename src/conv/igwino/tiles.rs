//! The register tiles of [`super`]: [`tile`] forms the points' weights itself, one vector
//! at a time; [`tile_passes`] reads them packed and sums one point after the other over up
//! to 4 vectors.
#![allow(unsafe_code)]

use super::{point_slot, Entry, TileArgs, Vector, MR};

/// One register tile: rows `0 .. rows` of the output at the 32 outputs of one vector of
/// pairs.
///
/// # Safety
/// AVX-512F must be present; every `src + koff + j·ss + lane` (16 lanes, `j` below the
/// chunk's points) must be readable, and `out + r·ldo + dst ..[..popcount(mask)]`
/// writable for each row and half.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile(t: &TileArgs<'_>) {
    use std::arch::x86_64::*;
    let rows = t.bias.len();
    assert!((1..=MR).contains(&rows) && t.w.len() == rows * t.k);
    let (s, ss) = (t.s, t.ss);
    // Rows past `rows` repeat the last one (computed, never stored).
    let wr: [*const f32; MR] = std::array::from_fn(|r| t.w[r.min(rows - 1) * t.k..].as_ptr());
    let zero = _mm512_setzero_ps();
    let mut acc: [[__m512; 4]; MR] =
        std::array::from_fn(|r| [zero, _mm512_set1_ps(t.bias[r.min(rows - 1)]), zero, zero]);
    // SAFETY (whole body): the caller guarantees the plane loads and output stores are in
    // bounds; weight reads are at `woff + i·s` < k of a row (the chunk's columns).
    unsafe {
        // The weights are broadcast from memory in asm: written as intrinsics, LLVM turns
        // `g₀ + g₂ ± g₁` of broadcasts into scalar adds and register broadcasts, which
        // take the vector pipes the FMAs need (Zen 4 adds 512-bit vectors on pipes of
        // their own). `s4` is the column stride in bytes.
        let s4 = s * 4;
        {
            for e in &t.by_taps[0] {
                let d: [__m512; 4] = inputs(t.src, e, ss);
                for (r, a) in acc.iter_mut().enumerate() {
                    let p = wr[r].add(e.woff as usize);
                    std::arch::asm!(
                        "vbroadcastss {w0}, dword ptr [{p}]",
                        "vfmadd231ps {a0}, {d0}, {w0}",
                        "vaddps {t}, {w0}, dword ptr [{p} + {s4}*2]{{1to16}}",
                        "vfmadd231ps {a3}, {d3}, dword ptr [{p} + {s4}*2]{{1to16}}",
                        "vaddps {w0}, {t}, dword ptr [{p} + {s4}]{{1to16}}",
                        "vsubps {t}, {t}, dword ptr [{p} + {s4}]{{1to16}}",
                        "vfmadd231ps {a1}, {d1}, {w0}",
                        "vfmadd231ps {a2}, {d2}, {t}",
                        w0 = out(zmm_reg) _,
                        t = out(zmm_reg) _,
                        a0 = inout(zmm_reg) a[0],
                        a1 = inout(zmm_reg) a[1],
                        a2 = inout(zmm_reg) a[2],
                        a3 = inout(zmm_reg) a[3],
                        d0 = in(zmm_reg) d[0],
                        d1 = in(zmm_reg) d[1],
                        d2 = in(zmm_reg) d[2],
                        d3 = in(zmm_reg) d[3],
                        p = in(reg) p,
                        s4 = in(reg) s4,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
            }
            for e in &t.by_taps[1] {
                let d: [__m512; 3] = inputs(t.src, e, ss);
                for (r, a) in acc.iter_mut().enumerate() {
                    std::arch::asm!(
                        "vbroadcastss {w0}, dword ptr [{p}]",
                        "vfmadd231ps {a0}, {d0}, {w0}",
                        "vaddps {w0}, {w0}, dword ptr [{p} + {s4}]{{1to16}}",
                        "vfmadd231ps {a1}, {d1}, {w0}",
                        "vfmadd231ps {a3}, {d2}, dword ptr [{p} + {s4}]{{1to16}}",
                        w0 = out(zmm_reg) _,
                        a0 = inout(zmm_reg) a[0],
                        a1 = inout(zmm_reg) a[1],
                        a3 = inout(zmm_reg) a[3],
                        d0 = in(zmm_reg) d[0],
                        d1 = in(zmm_reg) d[1],
                        d2 = in(zmm_reg) d[2],
                        p = in(reg) wr[r].add(e.woff as usize),
                        s4 = in(reg) s4,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
            }
            for e in &t.by_taps[2] {
                let d: [__m512; 2] = inputs(t.src, e, ss);
                for (r, a) in acc.iter_mut().enumerate() {
                    std::arch::asm!(
                        "vfmadd231ps {a0}, {d0}, dword ptr [{p}]{{1to16}}",
                        "vfnmadd231ps {a3}, {d1}, dword ptr [{p}]{{1to16}}",
                        a0 = inout(zmm_reg) a[0],
                        a3 = inout(zmm_reg) a[3],
                        d0 = in(zmm_reg) d[0],
                        d1 = in(zmm_reg) d[1],
                        p = in(reg) wr[r].add(e.woff as usize),
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
            }
        }
        let inter = interleave_indices(t);
        for (r, [m0, m1, m2, m3]) in acc.iter().enumerate().take(rows) {
            store_pairs(t, inter, &t.vecs[0], r, (*m0, *m1, *m2), *m3);
        }
    }
}

/// `NV` register tiles at once, from the packed weights: rows `0 .. rows` of the output at
/// the 32 outputs of each of `t.vecs` (`NV` consecutive vectors of pairs).
///
/// The points are summed one after the other, each a GEMM tile of [`MR`] × `NV` vectors
/// (one broadcast weight feeds `NV` FMAs, one loaded vector `MR`): 10 loads per 24 FMAs
/// at `NV = 4`, where summing the four points of one vector together takes 28 (each
/// weight used once), too many for Zen 5's two 512-bit FMA pipes. The first three points'
/// sums wait in a stack buffer until the last one is done.
///
/// # Safety
/// As [`tile`], for each of the `NV` vectors; `t.packed` is this panel's packed weights.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_passes<const NV: usize>(t: &TileArgs<'_>) {
    let rows = t.bias.len();
    assert!((1..=MR).contains(&rows) && t.vecs.len() == NV);
    let pw = t.packed.expect("packed weights");
    let mut p = pw.as_ptr();
    // SAFETY: the caller guarantees the plane loads and output stores are in bounds, and
    // the four passes read the packed weights in their order, `MR` per entry and point
    // (the debug assertion checks the end).
    unsafe {
        let m0 = point_pass::<NV>(t, 0, &mut p);
        let m1 = point_pass::<NV>(t, 1, &mut p);
        let m2 = point_pass::<NV>(t, 2, &mut p);
        let m3 = point_pass::<NV>(t, 3, &mut p);
        debug_assert_eq!(p, pw.as_ptr_range().end);
        let inter = interleave_indices(t);
        for (v, vec) in t.vecs.iter().enumerate() {
            for r in 0..rows {
                store_pairs(t, inter, vec, r, (m0[r][v], m1[r][v], m2[r][v]), m3[r][v]);
            }
        }
    }
}

/// Point `M_j`'s sums over `NV` vectors for [`MR`] rows: every entry that has the point
/// ([`point_slot`]) times its packed weights from `*p` on (advanced past them). `M₁`
/// starts at the bias.
///
/// # Safety
/// As [`tile_passes`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn point_pass<const NV: usize>(
    t: &TileArgs<'_>,
    j: usize,
    p: &mut *const f32,
) -> [[std::arch::x86_64::__m512; NV]; MR] {
    use std::arch::x86_64::*;
    let rows = t.bias.len();
    let mut acc: [[__m512; NV]; MR] = std::array::from_fn(|r| {
        [if j == 1 {
            _mm512_set1_ps(t.bias[r.min(rows - 1)])
        } else {
            _mm512_setzero_ps()
        }; NV]
    });
    let mut w = *p;
    // SAFETY: as the contract.
    unsafe {
        for (i, list) in t.by_taps.iter().enumerate() {
            let Some(slot) = point_slot(i, j) else {
                continue;
            };
            let at = t.src.add(slot * t.ss);
            for e in list {
                let src = at.add(e.koff as usize);
                let x: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(src.add(16 * v)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let wr = _mm512_set1_ps(*w.add(r));
                    for (a, x) in a.iter_mut().zip(&x) {
                        *a = _mm512_fmadd_ps(wr, *x, *a);
                    }
                }
                w = w.add(MR);
            }
        }
    }
    *p = w;
    acc
}

/// The outputs' order ([`super::interleave`]) as the two index vectors of
/// [`store_pairs`]: loaded once per tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn interleave_indices(t: &TileArgs<'_>) -> [std::arch::x86_64::__m512i; 2] {
    use std::arch::x86_64::_mm512_loadu_si512;
    // SAFETY: `inter` holds 32 indices, read as two vectors of 16.
    unsafe {
        [
            _mm512_loadu_si512(t.inter.as_ptr().cast()),
            _mm512_loadu_si512(t.inter[16..].as_ptr().cast()),
        ]
    }
}

/// Combines one row's four points over one vector, `y₀ = M₀ + M₁ + M₂`, `y₁ = M₁ − M₂ −
/// M₃`, interleaves them into the vector's 32 outputs and stores those it keeps.
///
/// # Safety
/// AVX-512F must be present; the row's stores for `vec` must be writable (as [`tile`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_pairs(
    t: &TileArgs<'_>,
    [lo, hi]: [std::arch::x86_64::__m512i; 2],
    vec: &Vector,
    r: usize,
    (m0, m1, m2): (
        std::arch::x86_64::__m512,
        std::arch::x86_64::__m512,
        std::arch::x86_64::__m512,
    ),
    m3: std::arch::x86_64::__m512,
) {
    use std::arch::x86_64::*;
    // SAFETY: as the contract.
    unsafe {
        let y0 = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        let y1 = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        let parts = [
            _mm512_permutex2var_ps(y0, lo, y1),
            _mm512_permutex2var_ps(y0, hi, y1),
        ];
        let row = t.out.add(r * t.ldo);
        for (&(dst, m), v) in vec.halves.iter().zip(parts) {
            let dst = row.add(dst as usize);
            if m == 0 {
                continue;
            } else if m & m.wrapping_add(1) == 0 {
                _mm512_mask_storeu_ps(dst, m, v);
            } else {
                let kept = _mm512_maskz_compress_ps(m, v);
                _mm512_mask_storeu_ps(dst, ((1u32 << m.count_ones()) - 1) as u16, kept);
            }
        }
    }
}

/// The `N` transformed vectors of entry `e`: its chunk's slots `0 .. N` at `src + koff`.
///
/// # Safety
/// AVX-512F must be present; `src + koff + j·ss + lane` readable for `j < N`, 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn inputs<const N: usize>(
    src: *const f32,
    e: &Entry,
    ss: usize,
) -> [std::arch::x86_64::__m512; N] {
    // SAFETY: as the contract.
    std::array::from_fn(|j| unsafe {
        std::arch::x86_64::_mm512_loadu_ps(src.add(e.koff as usize + j * ss))
    })
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn tile(_: &TileArgs<'_>) {
    unreachable!("supports() is false off x86-64")
}
