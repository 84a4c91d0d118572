//! Run-time instruction-set dispatch for the direct kernels, and the parallel loop that
//! fills an uninitialised output with them.
//!
//! A kernel is plain Rust behind the [`Bands`] trait, compiled three times — for AVX-512,
//! AVX2+FMA and baseline x86-64 — and the widest variant the CPU has is chosen once
//! ([`detect`]): as fast as `-C target-cpu=native` and still portable. (`pulp`'s safe
//! closure dispatch was tried first: the closure was not inlined into its target-feature
//! function, so nothing vectorised — 0.5 GFLOP/s. Hence this small `unsafe` module.)
//! Tests force every variant the host can run ([`available`]), so the AVX2 build is
//! checked on an AVX-512 machine too.
//!
//! This module knows no kernel: each kernel module implements [`Bands`] for its own
//! arguments.
#![allow(unsafe_code)]

use ndarray::Array4;
use rayon::prelude::*;

use super::{buffers, CancelToken, Cancelled, Conv2dGeometry};

/// An output element before a kernel writes it.
pub(crate) type Out = std::mem::MaybeUninit<f32>;

/// Outputs per register tile with AVX2 (8 ymm accumulators); AVX-512 uses `2·TILE`
/// (8 zmm), which took W1 from 0.97 to 0.71 ms.
pub const TILE: usize = 64;

/// Work per task, in multiply-accumulates: large enough that scheduling is noise (≈25 µs),
/// small enough to balance one image over the cores and to react to cancellation quickly.
pub(crate) const TASK_MACS: usize = 1 << 19;

/// Computes every output plane `p = b·c_out + o` with the bands of `args(p)`, in
/// parallel, checking `cancel` before every task.
///
/// A task is `task_rows` output rows: a band of one plane when a plane has more rows,
/// else several whole planes (depthwise layers on 28×28 planes would otherwise make
/// thousands of microsecond tasks, where scheduling cost more than the work).
///
/// The output comes from [`buffers`] and is not zero-filled first (that fill was a
/// quarter of W1): the bands partition each plane and every [`Bands`] implementation
/// writes every element of its rows.
pub(crate) fn run<B: Bands>(
    isa: Isa,
    g: &Conv2dGeometry,
    task_rows: usize,
    cancel: &CancelToken,
    args: impl Fn(usize) -> B + Sync,
) -> Result<Array4<f32>, Cancelled> {
    let plane = g.out_h * g.out_w;
    let len = g.n * g.c_out * plane;
    let mut out = buffers::take(len);
    // Whole planes per task, but never fewer than four tasks per thread.
    let planes = g.n * g.c_out;
    let planes_per_task = (task_rows / g.out_h)
        .min(planes / (4 * rayon::current_num_threads()))
        .max(1);
    if planes_per_task > 1 {
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(planes_per_task * plane)
            .enumerate()
            .try_for_each(|(t, planes)| {
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                for (i, out_plane) in planes.chunks_exact_mut(plane).enumerate() {
                    self::band(isa, &args(t * planes_per_task + i), 0, out_plane);
                }
                Ok(())
            })?;
    } else {
        let band_rows = task_rows.clamp(1, g.out_h);
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(plane)
            .enumerate()
            .try_for_each(|(p, out_plane)| {
                let args = args(p);
                out_plane
                    .par_chunks_mut(band_rows * g.out_w)
                    .enumerate()
                    .try_for_each(|(band, rows)| {
                        if cancel.is_cancelled() {
                            return Err(Cancelled);
                        }
                        self::band(isa, &args, band * band_rows, rows);
                        Ok(())
                    })
            })?;
    }
    // SAFETY: not cancelled, so every task ran; the tasks partition the output into whole
    // planes or bands of rows, and every `Bands` implementation writes every element of
    // its rows (its contract), so the first `len` elements are initialised.
    unsafe { out.set_len(len) };
    Ok(Array4::from_shape_vec(g.output_shape(), out).expect("length matches the shape"))
}

/// An instruction set a kernel can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (+VL) with FMA: 16-lane registers, tiles of `2·TILE`.
    Avx512,
    /// AVX2 with FMA: 8-lane registers, tiles of `TILE`.
    Avx2Fma,
    /// Whatever the target's baseline is (SSE2 on x86-64); no fused multiply-add.
    Baseline,
}

/// The widest instruction set this CPU has, detected once.
pub fn detect() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| available()[0])
}

/// Every instruction set this CPU can run, widest first (always ends with `Baseline`).
pub fn available() -> Vec<Isa> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma");
        if fma
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
        {
            v.push(Isa::Avx512);
        }
        if fma && std::arch::is_x86_feature_detected!("avx2") {
            v.push(Isa::Avx2Fma);
        }
    }
    v.push(Isa::Baseline);
    v
}

/// A way to compute the rows of one output plane, compiled per instruction set.
///
/// # Safety
/// `band` must write every element of `out` (whole output rows `i0 ..`): [`run`]
/// marks the output initialised on that promise.
pub(crate) unsafe trait Bands: Sync {
    /// Writes output rows `i0 ..` (as many as `out` holds) of this plane. `FMA` says
    /// whether fused multiply-add is available; `TILE` is the widest register tile.
    fn band<const FMA: bool, const TILE: usize>(&self, i0: usize, out: &mut [Out]);
}

/// Runs `b`'s kernel compiled for `isa`: output rows `i0 ..` into `out`.
///
/// # Panics
/// If `isa` is not available on this CPU (checked, so a test cannot force an
/// instruction set the host lacks).
pub(crate) fn band<B: Bands>(isa: Isa, b: &B, i0: usize, out: &mut [Out]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            assert!(detect() == Isa::Avx512, "AVX-512 is not available");
            // SAFETY: checked just above: `detect` saw avx512f, avx512vl, avx2 and fma.
            unsafe { band_avx512(b, i0, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => {
            assert!(detect() != Isa::Baseline, "AVX2+FMA is not available");
            // SAFETY: `detect` returns Avx512 or Avx2Fma only after seeing avx2 and fma.
            unsafe { band_avx2(b, i0, out) }
        }
        _ => b.band::<false, TILE>(i0, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn band_avx512<B: Bands>(b: &B, i0: usize, out: &mut [Out]) {
    b.band::<true, { 2 * TILE }>(i0, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn band_avx2<B: Bands>(b: &B, i0: usize, out: &mut [Out]) {
    b.band::<true, TILE>(i0, out)
}

/// `acc + w·x`, fused when `FMA` (one rounding), else two roundings.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(w: f32, x: f32, acc: f32) -> f32 {
    if FMA {
        w.mul_add(x, acc)
    } else {
        acc + w * x
    }
}
