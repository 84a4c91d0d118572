//! Many-channel, stride-1 layers as "shifted GEMMs" over a padded plane, no im2col.
//!
//! For one image and one group, the input is copied once into a padded plane
//! `P [c_in/groups, (h_pad·w_pad) + tail]` (padding mode applied). The output is computed
//! on the padded width: with row pitch `w_pad`, output pixel `(i, j)` of tap `(u, v)` reads
//! `P[c, (i + u·d_h)·w_pad + j + v·d_w]`, so for each tap the input is one contiguous run
//! of `P` shifted by the tap. Stacking those runs gives `S [c·k_h·k_w, out_h·w_pad]` (one
//! copy per row, no per-pixel im2col gather) and the layer is one GEMM
//! `C[c_out/groups, out_h·w_pad] = W[c_out/groups, c_in/groups·k_h·k_w] · S`. The columns
//! `j ≥ out_w` of `C` are scratch and dropped when copying out. (Nine accumulating GEMMs,
//! one per tap, were measured first: 129 ms on W4 against this layout's figure in README.)
//!
//! The GEMM is ndarray's `general_mat_mul` (matrixmultiply: packed, cache-blocked, AVX2/FMA
//! kernels picked at run time; safe API). Tasks are images × groups on the current rayon
//! pool; matrixmultiply itself runs single-threaded inside each task.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Array4, ArrayView1, ArrayView4, Axis};
use rayon::prelude::*;

use super::params::Conv2dGeometry;
use super::{CancelToken, Cancelled};

/// Whether the layer suits the GEMM path: stride 1 and enough channels on both sides for
/// the GEMM's packing to pay (below that the direct kernel wins).
pub fn eligible(g: &Conv2dGeometry) -> bool {
    g.stride == [1, 1] && g.c_in / g.groups >= 8 && g.c_out / g.groups >= 8
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` (stride 1) into `[n, c_out, out_h, out_w]`.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every image × group.
pub fn conv2d_gemm(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    let g = *geom;
    assert_eq!(g.stride, [1, 1]);
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let [top, bottom, left, right] = g.padding;
    let (hp, wp) = (g.h + top + bottom, g.w + left + right);
    let tail = (g.k_w - 1) * g.dilation[1];
    let plane_len = hp * wp + tail;
    let n_cols = g.out_h * wp;
    // weight [c_out, c_in/groups, k_h, k_w] is already the row-major [c_out, K] matrix with
    // K = (c, u, v): the row order of the shifted-view matrix below.
    let k = cpg * g.k_h * g.k_w;
    let wt = weight.as_standard_layout();
    let wt = wt
        .into_shape_with_order((g.c_out, k))
        .expect("weight is contiguous");
    let x = input.as_standard_layout();
    let len = g.n * g.c_out * g.out_h * g.out_w;
    let mut out = super::buffers::take(len);
    out.resize(len, 0.0);
    let mut out = Array4::from_shape_vec(g.output_shape(), out).expect("length matches");
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .try_for_each(|(n, mut out_n)| {
            let mut plane = vec![0.0f32; cpg * plane_len];
            let mut shifted = Array2::<f32>::zeros((k, n_cols));
            let mut c = Array2::<f32>::zeros((opg, n_cols));
            for grp in 0..g.groups {
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                fill_plane(
                    &g,
                    x.slice(s![n, grp * cpg..(grp + 1) * cpg, .., ..]),
                    &mut plane,
                    plane_len,
                    wp,
                );
                // Row (c, u, v) of `shifted` is channel c's plane shifted by the tap: one
                // contiguous copy per row; then the whole layer is a single GEMM with K =
                // c_in/groups·k_h·k_w, so C is written once rather than once per tap.
                for (row_k, mut row) in shifted.axis_iter_mut(Axis(0)).enumerate() {
                    let (ch, t) = (row_k / (g.k_h * g.k_w), row_k % (g.k_h * g.k_w));
                    let off = ch * plane_len
                        + (t / g.k_w) * g.dilation[0] * wp
                        + (t % g.k_w) * g.dilation[1];
                    row.as_slice_mut()
                        .expect("row-major")
                        .copy_from_slice(&plane[off..off + n_cols]);
                }
                let a = wt.slice(s![grp * opg..(grp + 1) * opg, ..]);
                general_mat_mul(1.0, &a, &shifted, 0.0, &mut c);
                for o in 0..opg {
                    let oc = grp * opg + o;
                    let bias = bias.map_or(0.0, |b| b[oc]);
                    let row = c.row(o);
                    let mut dst = out_n.index_axis_mut(Axis(0), oc);
                    for (i, mut dst_row) in dst.axis_iter_mut(Axis(0)).enumerate() {
                        let src = row.slice(s![i * wp..i * wp + g.out_w]);
                        dst_row.zip_mut_with(&src, |d, &v| *d = v + bias);
                    }
                }
            }
            Ok(())
        })?;
    Ok(out)
}

/// Copies the channels of one group into the padded plane (`[c][h_pad·w_pad + tail]`).
fn fill_plane(
    g: &Conv2dGeometry,
    x: ArrayView4Slice<'_>,
    plane: &mut [f32],
    plane_len: usize,
    wp: usize,
) {
    let [top, _, left, _] = g.padding;
    let hp = plane_len / wp;
    for (c, chan) in x.axis_iter(Axis(0)).enumerate() {
        let dst_plane = &mut plane[c * plane_len..(c + 1) * plane_len];
        for r in 0..hp.min(g.h + g.padding[0] + g.padding[1]) {
            let dst = &mut dst_plane[r * wp..(r + 1) * wp];
            match g.padding_mode.source_index(r as isize - top as isize, g.h) {
                None => dst.fill(0.0),
                Some(y) => {
                    let src = chan.row(y);
                    for (col, d) in dst.iter_mut().enumerate() {
                        *d = g
                            .padding_mode
                            .source_index(col as isize - left as isize, g.w)
                            .map_or(0.0, |s| src[s]);
                    }
                }
            }
        }
    }
}

type ArrayView4Slice<'a> = ndarray::ArrayView3<'a, f32>;

#[cfg(test)]
mod tests {
    use ndarray::Array1;
    use proptest::prelude::*;

    use super::*;
    use crate::conv::fast::tests::assert_close;
    use crate::conv::params::{Conv2dParams, Padding, PaddingMode};
    use crate::conv::{conv2d, conv2d_reference};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn gemm_path_equals_reference(
            (n, groups, cpg, opg, h, w) in (1usize..3, 1usize..3, 8usize..11, 8usize..10, 1usize..9, 1usize..9),
            (k_h, k_w, d_h, d_w, mode, pad, seed) in (1usize..4, 1usize..4, 1usize..3, 1usize..3, 0usize..5, 0usize..3, any::<u32>()),
        ) {
            let modes = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular, PaddingMode::Symmetric];
            let params = Conv2dParams { dilation: [d_h, d_w], padding: Padding::Explicit([pad, pad, pad + 1, pad]), groups, padding_mode: modes[mode], ..Default::default() };
            let Ok(g) = Conv2dGeometry::new([n, groups * cpg, h, w], [groups * opg, cpg, k_h, k_w], Some(groups * opg), &params) else { return Ok(()) };
            prop_assert!(eligible(&g));
            let mut s = seed | 1;
            let mut next = move || { s ^= s << 13; s ^= s >> 17; s ^= s << 5; (s % 1000) as f32 / 100.0 - 5.0 };
            let x = Array4::from_shape_simple_fn(g.input_shape(), &mut next);
            let wt = Array4::from_shape_simple_fn(g.weight_shape(), &mut next);
            let b = Array1::from_shape_simple_fn(g.c_out, &mut next);
            let want = conv2d_reference(x.view(), wt.view(), Some(b.view()), &g);
            let got = conv2d(x.view(), wt.view(), Some(b.view()), &g, &CancelToken::new()).unwrap();
            assert_close(&got, &want, &x, &wt, Some(&b), &g);
        }
    }
}
