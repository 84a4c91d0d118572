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
}

impl PhaseLayout {
    /// The layout for `g`, with at least `min_wq` floats per phase (a kernel that reads
    /// whole tiles past the last output asks for more).
    pub fn new(g: &Conv2dGeometry, min_wq: usize) -> Self {
        let [_, _, left, right] = g.padding;
        let sw = g.stride[1];
        let wp = left + g.w + right;
        let map = |c: usize| g.padding_mode.source_index(c as isize - left as isize, g.w);
        Self {
            sw,
            wq: wp.div_ceil(sw).max(min_wq),
            padding: g.padding,
            h: g.h,
            w: g.w,
            mode: g.padding_mode,
            left_src: (0..left).map(map).collect(),
            right_src: (left + g.w..wp).map(map).collect(),
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
        let Some(y) = self.source_row(r) else {
            dst.fill(0.0);
            return;
        };
        let src = &plane[y * self.w..][..self.w];
        let (left, sw, wq) = (self.padding[2], self.sw, self.wq);
        if sw == 1 {
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
        let wp = left + self.w + self.right_src.len();
        if sw == 2 {
            // The common strided case, both phases in one pass over the input: pairs of
            // padded columns (2t, 2t + 1) go to element t of phases 0 and 1.
            let (even, odd) = dst.split_at_mut(wq);
            let t_lo = left.div_ceil(2);
            let t_hi = (left + self.w) / 2;
            if t_hi > t_lo {
                let first = 2 * t_lo - left;
                for ((e, o), pair) in even[t_lo..t_hi]
                    .iter_mut()
                    .zip(&mut odd[t_lo..t_hi])
                    .zip(src[first..].chunks_exact(2))
                {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
            // The columns outside full interior pairs (the padding, and an odd column at
            // either end), one by one.
            let value = |col: usize| {
                if col < left {
                    self.left_src[col].map_or(0.0, |s| src[s])
                } else if col < left + self.w {
                    src[col - left]
                } else {
                    self.right_src[col - left - self.w].map_or(0.0, |s| src[s])
                }
            };
            for col in (0..2 * t_lo).chain(2 * t_hi.max(t_lo)..wp) {
                if col % 2 == 0 {
                    even[col / 2] = value(col);
                } else {
                    odd[col / 2] = value(col);
                }
            }
            even[wp.div_ceil(2)..].fill(0.0);
            odd[wp / 2..].fill(0.0);
            return;
        }
        for (p, dst) in dst.chunks_exact_mut(wq).enumerate() {
            // Padded column of element t: p + t·s_w. The input part starts at the first t
            // with p + t·s_w ≥ left and ends before p + t·s_w ≥ left + w.
            let t_lo = left.saturating_sub(p).div_ceil(sw);
            let t_hi = (left + self.w).saturating_sub(p).div_ceil(sw);
            let t_end = wp.saturating_sub(p).div_ceil(sw);
            for (t, d) in dst.iter_mut().enumerate().take(t_lo) {
                *d = self.left_src[p + t * sw].map_or(0.0, |s| src[s]);
            }
            if t_hi > t_lo {
                let first = p + t_lo * sw - left;
                for (d, &s) in dst[t_lo..t_hi]
                    .iter_mut()
                    .zip(src[first..].iter().step_by(sw))
                {
                    *d = s;
                }
            }
            for (t, d) in dst.iter_mut().enumerate().take(t_end).skip(t_hi) {
                *d = self.right_src[p + t * sw - left - self.w].map_or(0.0, |s| src[s]);
            }
            dst[t_end..].fill(0.0);
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
            (w, sw, left, right, mode, extra) in (1usize..20, 1usize..5, 0usize..6, 0usize..6, 0usize..5, 0usize..4),
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
