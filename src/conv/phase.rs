//! Padded input rows split into stride phases: the layout the strided kernels read.
//!
//! A padded input row has `w_pad = left + w + right` columns, each mapped to an input
//! column by the padding mode (or to a zero). Split into `s_w` phases, phase `p` holds
//! the padded columns `p, p + s_w, p + 2·s_w, …` contiguously, `wq` floats (zeros past
//! the row's end). Output column `j` of kernel column `v` reads padded column
//! `j·s_w + v·d_w`, which is element `j + ⌊v·d_w / s_w⌋` of phase `(v·d_w) mod s_w`: so
//! a run of consecutive outputs reads consecutive floats for every tap, whatever the
//! stride, dilation or padding mode. Used by the im2col GEMM (whole padded planes) and
//! by the phased direct kernel (a band of rows at a time).

use super::params::Conv2dGeometry;

/// How one padded input row is laid out in phases, fixed for one layer.
#[derive(Debug, Clone)]
pub(crate) struct PhaseLayout {
    /// `s_w`: phases per row.
    pub sw: usize,
    /// Floats per phase.
    pub wq: usize,
    /// `[top, bottom, left, right]`.
    padding: [usize; 4],
    h: usize,
    w: usize,
    mode: super::PaddingMode,
    /// For each padded column outside the input, the input column it copies (None: 0).
    left_src: Vec<Option<usize>>,
    right_src: Vec<Option<usize>>,
    /// Stride 2: the padded columns outside the interior pairs (the padding, and an odd
    /// input column at either end) as (phase, element, input column or None: 0).
    border2: Vec<(usize, usize, Option<usize>)>,
}

impl PhaseLayout {
    /// The layout for `g`, with at least `min_wq` floats per phase (a kernel that reads
    /// whole tiles past the last output asks for more).
    pub fn new(g: &Conv2dGeometry, min_wq: usize) -> Self {
        let [_, _, left, right] = g.padding;
        let sw = g.stride[1];
        let wp = left + g.w + right;
        let map = |c: usize| g.padding_mode.source_index(c as isize - left as isize, g.w);
        let wq = wp.div_ceil(sw).max(min_wq);
        let (t_lo, t_hi) = (left.div_ceil(2), (left + g.w) / 2);
        let border2 = if sw == 2 {
            (0..2 * t_lo)
                .chain(2 * t_hi.max(t_lo)..wp)
                .map(|col| (col % 2, col / 2, map(col)))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            sw,
            wq,
            padding: g.padding,
            h: g.h,
            w: g.w,
            mode: g.padding_mode,
            left_src: (0..left).map(map).collect(),
            right_src: (left + g.w..wp).map(map).collect(),
            border2,
        }
    }

    /// Floats of one padded row in this layout (`s_w · wq`).
    pub fn row_len(&self) -> usize {
        self.sw * self.wq
    }

    /// The input row padded row `r` reads (None: a row of zeros). Inlined into the row
    /// fill, which runs once per padded row.
    #[inline(always)]
    pub fn source_row(&self, r: usize) -> Option<usize> {
        self.mode
            .source_index(r as isize - self.padding[0] as isize, self.h)
    }

    /// Writes padded row `r` of the channel `plane` (`[h, w]` row-major) into `dst`
    /// (`row_len()` floats). Inlined so that a kernel compiled for AVX-512 copies and
    /// deinterleaves with AVX-512 too.
    #[inline(always)]
    pub fn fill_row(&self, plane: &[f32], r: usize, dst: &mut [f32]) {
        debug_assert_eq!(dst.len(), self.row_len());
        self.fill_row_split(plane, r, dst, self.wq);
    }

    /// [`fill_row`](Self::fill_row) with phase `p` written at `dst[p · phase_stride ..][..wq]`
    /// (`phase_stride ≥ wq`), for layouts that keep each phase in its own plane.
    #[inline(always)]
    pub fn fill_row_split(&self, plane: &[f32], r: usize, dst: &mut [f32], phase_stride: usize) {
        let (sw, wq) = (self.sw, self.wq);
        assert!(phase_stride >= wq && dst.len() >= (sw - 1) * phase_stride + wq);
        let Some(y) = self.source_row(r) else {
            for p in 0..sw {
                dst[p * phase_stride..][..wq].fill(0.0);
            }
            return;
        };
        let src = &plane[y * self.w..][..self.w];
        let left = self.padding[2];
        if sw == 1 {
            let dst = &mut dst[..wq];
            dst[left..left + self.w].copy_from_slice(src);
            for (d, s) in dst.iter_mut().zip(&self.left_src) {
                *d = s.map_or(0.0, |s| src[s]);
            }
            let right = &mut dst[left + self.w..];
            for (d, s) in right.iter_mut().zip(&self.right_src) {
                *d = s.map_or(0.0, |s| src[s]);
            }
            right[self.right_src.len()..].fill(0.0);
            return;
        }
        if sw == 2 {
            // The common strided case, both phases in one pass over the input: pairs of
            // padded columns (2t, 2t + 1) go to element t of phases 0 and 1, zeros after
            // them; then the border columns (precomputed) are written over.
            let (even, odd) = dst.split_at_mut(phase_stride);
            let (even, odd) = (&mut even[..wq], &mut odd[..wq]);
            let t_lo = left.div_ceil(2);
            let t_hi = (left + self.w) / 2;
            let first = (2 * t_lo).saturating_sub(left);
            let pairs = t_hi.saturating_sub(t_lo);
            deinterleave(
                &src[first..first + 2 * pairs],
                &mut even[t_lo..],
                &mut odd[t_lo..],
            );
            for &(p, t, col) in &self.border2 {
                let v = col.map_or(0.0, |s| src[s]);
                if p == 0 {
                    even[t] = v;
                } else {
                    odd[t] = v;
                }
            }
            return;
        }
        for p in 0..sw {
            let dst = &mut dst[p * phase_stride..][..wq];
            // Padded column of element t: p + t·s_w. The input part starts at the first t
            // with p + t·s_w ≥ left and ends before p + t·s_w ≥ left + w.
            let t_lo = left.saturating_sub(p).div_ceil(sw);
            let t_hi = (left + self.w).saturating_sub(p).div_ceil(sw);
            let wp = left + self.w + self.right_src.len();
            let t_end = wp.saturating_sub(p).div_ceil(sw);
            for (t, d) in dst.iter_mut().enumerate().take(t_lo) {
                *d = self.left_src[p + t * sw].map_or(0.0, |s| src[s]);
            }
            if t_hi > t_lo {
                let first = p + t_lo * sw - left;
                // Chunks of `sw`, not `step_by`: that compiled to a loop with a bounds
                // check per element (12 % of AlexNet's 11×11/4 stem in the row Winograd).
                for (d, s) in dst[t_lo..t_hi].iter_mut().zip(src[first..].chunks(sw)) {
                    *d = s[0];
                }
            }
            for (t, d) in dst.iter_mut().enumerate().take(t_end).skip(t_hi) {
                *d = self.right_src[p + t * sw - left - self.w].map_or(0.0, |s| src[s]);
            }
            dst[t_end..].fill(0.0);
        }
    }
}

/// `even[t] = src[2t]`, `odd[t] = src[2t + 1]` for the `src.len() / 2` pairs, and zeros
/// in the rest of `even` and `odd` (of equal lengths, at least the pairs).
///
/// The interior of every stride-2 row fill: with AVX-512 two loads, two permutes and two
/// stores per 16 pairs. The plain loop compiled to scalar moves, and was half of a strided
/// depthwise layer's time (dw 5×5/2 on 144×56×56).
#[inline(always)]
#[allow(unsafe_code)]
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = src.len() / 2;
    assert!(src.len() == 2 * n && odd.len() == even.len() && even.len() >= n);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present; the lengths are asserted above.
        unsafe { deinterleave_avx512(src, even, odd) };
        return;
    }
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
    even[n..].fill(0.0);
    odd[n..].fill(0.0);
}

/// [`deinterleave`] with AVX-512: 16 pairs per step, the last step masked, then zeros.
///
/// # Safety
/// AVX-512F must be present, `src.len()` even, `odd.len() == even.len() ≥ src.len() / 2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn deinterleave_avx512(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    use std::arch::x86_64::*;
    let (n, len) = (src.len() / 2, even.len());
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (s, e, o) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
    let mask = |k: usize| ((1u32 << k.min(16)) - 1) as u16;
    // SAFETY (whole body): loads read src[2t ..] masked to 2n floats; stores write
    // [t, t + 16) of even and odd masked to their length.
    unsafe {
        let mut t = 0;
        while t + 16 <= n {
            let (a, b) = (
                _mm512_loadu_ps(s.add(2 * t)),
                _mm512_loadu_ps(s.add(2 * t + 16)),
            );
            _mm512_storeu_ps(e.add(t), _mm512_permutex2var_ps(a, evens, b));
            _mm512_storeu_ps(o.add(t), _mm512_permutex2var_ps(a, odds, b));
            t += 16;
        }
        if t < n {
            let left = 2 * (n - t);
            let a = _mm512_maskz_loadu_ps(mask(left), s.add(2 * t));
            let b =
                _mm512_maskz_loadu_ps(mask(left.saturating_sub(16)), s.wrapping_add(2 * t + 16));
            // Lanes past the pairs come out as zeros (masked loads), so they start the tail.
            let keep = mask(len - t);
            _mm512_mask_storeu_ps(e.add(t), keep, _mm512_permutex2var_ps(a, evens, b));
            _mm512_mask_storeu_ps(o.add(t), keep, _mm512_permutex2var_ps(a, odds, b));
            t += 16;
        }
        let zero = _mm512_setzero_ps();
        while t < len {
            _mm512_mask_storeu_ps(e.add(t), mask(len - t), zero);
            _mm512_mask_storeu_ps(o.add(t), mask(len - t), zero);
            t += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::params::{Conv2dParams, Padding, PaddingMode};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_phase_element_is_the_padded_column_it_stands_for(
            (w, sw, left, right, mode, extra) in (1usize..80, 1usize..5, 0usize..6, 0usize..6, 0usize..5, 0usize..4),
        ) {
            let modes = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular, PaddingMode::Symmetric];
            let params = Conv2dParams { stride: [1, sw], padding: Padding::Explicit([1, 1, left, right]), padding_mode: modes[mode], ..Default::default() };
            let Ok(g) = Conv2dGeometry::new([1, 1, 3, w], [1, 1, 1, 1], None, &params) else { return Ok(()) };
            let l = PhaseLayout::new(&g, extra);
            let plane: Vec<f32> = (0..3 * w).map(|i| i as f32 + 1.0).collect();
            for r in 0..5 {
                let mut row = vec![f32::NAN; l.row_len()];
                l.fill_row(&plane, r, &mut row);
                let wp = left + w + right;
                for (p, ph) in row.chunks_exact(l.wq).enumerate() {
                    for (t, &v) in ph.iter().enumerate() {
                        let col = p + t * sw;
                        let want = if col >= wp { 0.0 } else {
                            match (l.source_row(r), modes[mode].source_index(col as isize - left as isize, w)) {
                                (Some(y), Some(x)) => plane[y * w + x],
                                _ => 0.0,
                            }
                        };
                        prop_assert_eq!(v, want, "row {} phase {} t {}", r, p, t);
                    }
                }
            }
        }
    }
}
