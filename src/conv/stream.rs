//! Streaming (non-temporal) stores for outputs far larger than the caches.
//!
//! An ordinary store to a line that is not cached first reads the line from memory (a
//! read for ownership), so writing a 25 MB output moves 50 MB. On the reference VM two
//! threads copying 25 MB (W6's output) took 2.1–2.2 ms with ordinary stores and 1.3–1.5
//! ms with streaming ones; 33 MB (W2's), 2.8–3.1 against 1.8–2.3 ms. Below
//! [`STREAM_BYTES`] the output may still be cached when the next stage reads it, and
//! ordinary stores are kept.
//!
//! A streaming store of a vector needs a 64-byte aligned address; kernels that stream
//! start their tiles on aligned columns where they can, and [`store`] streams the aligned
//! 16-float runs of what it is given and stores the rest plainly.
#![cfg_attr(target_arch = "x86_64", allow(unsafe_code))]

/// Smallest output, in bytes, written with streaming stores: half the reference
/// machine's 32 MiB L3.
pub(crate) const STREAM_BYTES: usize = 16 << 20;

/// The first index `≥ from` whose element of `out` is 64-byte aligned (16 floats).
pub(crate) fn aligned_from(out: &[super::isa::Out], from: usize) -> usize {
    let addr = out.as_ptr().wrapping_add(from) as usize;
    from + ((64 - addr % 64) % 64) / 4
}

/// Writes `values` into `out` (same length): 64-byte aligned runs of 16 with streaming
/// stores, the rest with ordinary ones. The caller fences ([`fence`]) before its task
/// ends.
///
/// # Panics
/// If the lengths differ or the CPU lacks AVX-512F (callers stream only after
/// [`super::isa::detect`] saw it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn store(out: &mut [super::isa::Out], values: &[f32]) {
    assert_eq!(out.len(), values.len());
    debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
    let head = (aligned_from(out, 0)).min(out.len());
    let body = (out.len() - head) / 16 * 16;
    for (o, &v) in out[..head].iter_mut().zip(values) {
        o.write(v);
    }
    if body > 0 {
        assert!(super::isa::detect() == super::isa::Isa::Avx512);
        // SAFETY: AVX-512F is present (asserted); `out[head ..]` is 64-byte aligned and
        // holds `body` floats, read from `values[head ..]` of the same length.
        unsafe {
            stream_run(
                out[head..].as_mut_ptr().cast(),
                values[head..].as_ptr(),
                body,
            )
        };
    }
    for (o, &v) in out[head + body..].iter_mut().zip(&values[head + body..]) {
        o.write(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_run(dst: *mut f32, src: *const f32, len: usize) {
    use std::arch::x86_64::*;
    for i in (0..len).step_by(16) {
        // SAFETY: the caller's bounds and alignment.
        unsafe { _mm512_stream_ps(dst.add(i), _mm512_loadu_ps(src.add(i))) };
    }
}

/// Makes this thread's streaming stores visible before its task ends (they are weakly
/// ordered; another thread may read the output next).
#[cfg(target_arch = "x86_64")]
pub(crate) fn fence() {
    // SAFETY: SSE is part of the x86-64 baseline.
    unsafe { std::arch::x86_64::_mm_sfence() };
}
