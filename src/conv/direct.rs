//! The serving convolution: direct (no im2col), parallel over output planes × row bands.
//!
//! Each rayon task owns a band of consecutive output rows of one `(n, o)` plane, so tasks
//! write disjoint chunks of the output (`par_chunks_mut`) and need no synchronisation.
//! For every output row, the kernel taps are accumulated row by row: the input row a tap
//! reads is found once through the padding mode, and the columns are split into an
//! interior run (contiguous for stride 1, so the compiler vectorises it) and the few border
//! columns that go through the padding mode. No padded copy of the input is made.
//!
//! The summation order per output element is the reference's (`c`, `u`, `v`, bias last),
//! without fused multiply-add, so results are bit-identical to
//! [`conv2d_reference`](super::conv2d_reference).

use ndarray::{Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

use super::params::Conv2dGeometry;
use super::{CancelToken, Cancelled};

/// Work per task, in multiply-accumulates: large enough that scheduling is noise,
/// small enough to spread a single image over all cores and to react to cancellation.
const TASK_MACS: usize = 1 << 18;

/// Where output column `j` reads for one kernel column `v`.
struct ColumnPlan {
    /// Output columns `lo..hi` read input column `j·s_w + offset` directly.
    lo: usize,
    hi: usize,
    offset: isize,
    /// Border columns: `(j, source column or None for zero)`.
    border: Vec<(usize, Option<usize>)>,
}

impl ColumnPlan {
    fn new(g: &Conv2dGeometry, v: usize) -> Self {
        let sw = g.stride[1] as isize;
        let offset = (v * g.dilation[1]) as isize - g.padding[2] as isize;
        let out_w = g.out_w as isize;
        let w = g.w as isize;
        // First j with j·sw + offset ≥ 0, and one past the last with j·sw + offset ≤ w − 1.
        let lo = if offset >= 0 {
            0
        } else {
            (-offset + sw - 1) / sw
        }
        .min(out_w);
        let hi = if w - 1 - offset < 0 {
            0
        } else {
            ((w - 1 - offset) / sw + 1).min(out_w)
        }
        .max(lo);
        let border = (0..out_w)
            .filter(|j| !(lo..hi).contains(j))
            .map(|j| {
                let x = j * sw + offset;
                (j as usize, g.padding_mode.source_index(x, g.w))
            })
            .collect();
        Self {
            lo: lo as usize,
            hi: hi as usize,
            offset,
            border,
        }
    }
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every row band.
pub fn conv2d_direct(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());

    let plane = g.out_h * g.out_w;
    let mut out = vec![0.0f32; g.n * g.c_out * plane];
    let columns: Vec<ColumnPlan> = (0..g.k_w).map(|v| ColumnPlan::new(&g, v)).collect();
    let row_macs = (g.out_w * (g.c_in / g.groups) * g.k_h * g.k_w).max(1);
    let band_rows = (TASK_MACS / row_macs).clamp(1, g.out_h.max(1));

    out.par_chunks_mut(plane)
        .enumerate()
        .try_for_each(|(p, out_plane)| {
            let (b, o) = (p / g.c_out, p % g.c_out);
            out_plane
                .par_chunks_mut(band_rows * g.out_w)
                .enumerate()
                .try_for_each(|(band, rows)| {
                    if cancel.is_cancelled() {
                        return Err(Cancelled);
                    }
                    for (r, out_row) in rows.chunks_mut(g.out_w).enumerate() {
                        let i = band * band_rows + r;
                        output_row(&g, x, wt, &columns, b, o, i, out_row);
                        if let Some(bias) = &bias {
                            out_row.iter_mut().for_each(|y| *y += bias[o]);
                        }
                    }
                    Ok(())
                })
        })?;
    Ok(Array4::from_shape_vec(g.output_shape(), out).expect("output length matches shape"))
}

/// Accumulates output row `i` of plane `(b, o)` into `out_row` (which starts at zero).
#[allow(clippy::too_many_arguments)]
#[inline]
fn output_row(
    g: &Conv2dGeometry,
    x: &[f32],
    wt: &[f32],
    columns: &[ColumnPlan],
    b: usize,
    o: usize,
    i: usize,
    out_row: &mut [f32],
) {
    let c_per_group = g.c_in / g.groups;
    let group = o / (g.c_out / g.groups);
    let in_plane = g.h * g.w;
    let sw = g.stride[1];
    for c in 0..c_per_group {
        let ci = group * c_per_group + c;
        let plane = &x[(b * g.c_in + ci) * in_plane..][..in_plane];
        for u in 0..g.k_h {
            let y = (i * g.stride[0] + u * g.dilation[0]) as isize - g.padding[0] as isize;
            let Some(y) = g.padding_mode.source_index(y, g.h) else {
                continue;
            };
            let row = &plane[y * g.w..][..g.w];
            let taps = &wt[((o * c_per_group + c) * g.k_h + u) * g.k_w..][..g.k_w];
            for (col, &wv) in columns.iter().zip(taps) {
                // Border columns are accumulated in the same (c, u, v) order as the interior.
                for &(j, src) in &col.border {
                    if let Some(s) = src {
                        out_row[j] += row[s] * wv;
                    }
                }
                if col.hi > col.lo {
                    let start = (col.lo as isize * sw as isize + col.offset) as usize;
                    let dst = &mut out_row[col.lo..col.hi];
                    if sw == 1 {
                        let src = &row[start..start + dst.len()];
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d += s * wv;
                        }
                    } else {
                        for (k, d) in dst.iter_mut().enumerate() {
                            *d += row[start + k * sw] * wv;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array4};
    use proptest::prelude::*;

    use super::*;
    use crate::conv::conv2d_reference;
    use crate::conv::params::{Conv2dParams, Padding, PaddingMode};

    const MODES: [PaddingMode; 5] = [
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
        PaddingMode::Symmetric,
    ];

    /// A random but valid case: shapes, parameters and small-integer data (so that the
    /// comparison can be exact whatever the summation order).
    fn case() -> impl Strategy<
        Value = (
            Array4<f32>,
            Array4<f32>,
            Option<Array1<f32>>,
            Conv2dGeometry,
        ),
    > {
        (
            (1usize..3, 1usize..4, 1usize..4, 1usize..13, 1usize..13),
            (
                1usize..5,
                1usize..5,
                1usize..4,
                1usize..4,
                1usize..3,
                1usize..3,
            ),
            (
                0usize..5,
                0usize..4,
                0usize..4,
                0usize..4,
                0usize..4,
                any::<bool>(),
                any::<u64>(),
            ),
        )
            .prop_filter_map(
                "impossible spec",
                |(
                    (n, groups, cpg, h, w),
                    (k_h, k_w, s_h, s_w, d_h, d_w),
                    (mode, t, b, l, r, bias, seed),
                )| {
                    let c_in = groups * cpg;
                    let c_out = groups * (1 + (seed as usize % 3));
                    let padding = match seed % 7 {
                        0 => Padding::Same,
                        1 => Padding::Valid,
                        _ => Padding::Explicit([t, b, l, r]),
                    };
                    let params = Conv2dParams {
                        stride: [s_h, s_w],
                        dilation: [d_h, d_w],
                        padding,
                        groups,
                        padding_mode: MODES[mode],
                    };
                    let g = Conv2dGeometry::new(
                        [n, c_in, h, w],
                        [c_out, cpg, k_h, k_w],
                        bias.then_some(c_out),
                        &params,
                    )
                    .ok()?;
                    let mut state = seed | 1;
                    let mut next = move || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        ((state % 17) as f32) - 8.0
                    };
                    let x = Array4::from_shape_simple_fn(g.input_shape(), &mut next);
                    let wt = Array4::from_shape_simple_fn(g.weight_shape(), &mut next);
                    let bias = bias.then(|| Array1::from_shape_simple_fn(c_out, &mut next));
                    Some((x, wt, bias, g))
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn direct_equals_reference_bit_for_bit((x, w, b, g) in case()) {
            let want = conv2d_reference(x.view(), w.view(), b.as_ref().map(|b| b.view()), &g);
            let got = conv2d_direct(x.view(), w.view(), b.as_ref().map(|b| b.view()), &g, &CancelToken::new()).unwrap();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_fired_token_stops_the_computation() {
        let g = Conv2dGeometry::new([1, 1, 64, 64], [1, 1, 3, 3], None, &Conv2dParams::default())
            .unwrap();
        let x = Array4::zeros(g.input_shape());
        let w = Array4::zeros(g.weight_shape());
        let t = CancelToken::new();
        t.cancel();
        assert_eq!(
            conv2d_direct(x.view(), w.view(), None, &g, &t),
            Err(Cancelled)
        );
    }

    #[test]
    fn one_by_one_image_with_kernel_equal_to_input() {
        let g = Conv2dGeometry::new(
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            Some(1),
            &Conv2dParams::default(),
        )
        .unwrap();
        let x = Array4::from_elem(g.input_shape(), 3.0);
        let w = Array4::from_elem(g.weight_shape(), 2.0);
        let b = Array1::from_elem(1, 1.0);
        let y = conv2d_direct(x.view(), w.view(), Some(b.view()), &g, &CancelToken::new()).unwrap();
        assert_eq!(y.into_raw_vec_and_offset().0, vec![7.0]);
    }
}
