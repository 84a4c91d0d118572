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
//! `S` is built one column block at a time (`k × cols` floats, about half a core's L2), and
//! each block is one GEMM into the matching columns of `C`.
//!
//! The GEMM is the `gemm` crate with its `x86-v4` feature: AVX-512, AVX2+FMA or scalar
//! kernels picked at run time. It replaced ndarray's `general_mat_mul` (matrixmultiply,
//! which stops at AVX2): W4 went from 39 to 18 ms. Its API takes raw pointers, so the one
//! call sits in a small checked wrapper (`blas`). Tasks are images × groups on the
//! current rayon pool; the GEMM runs single-threaded inside each task (its own rayon mode
//! scales badly at `c_out` ≈ 64).

use ndarray::{s, Array4, ArrayView1, ArrayView4, Axis};
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
    let x = input.as_standard_layout();
    let len = g.n * g.c_out * g.out_h * g.out_w;
    let mut out = super::buffers::take(len);
    out.resize(len, 0.0);
    let mut out = Array4::from_shape_vec(g.output_shape(), out).expect("length matches");
    let wt = wt.as_slice().expect("weight is contiguous");
    // Column blocks of the output small enough that a block of the shifted matrix
    // (k × COLS floats) stays in L2 while the GEMM reads it.
    let cols = (COLS_BYTES / (4 * k)).clamp(64, n_cols.max(64));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .try_for_each(|(n, mut out_n)| {
            let mut plane = vec![0.0f32; cpg * plane_len];
            let mut shifted = vec![0.0f32; k * cols];
            let mut c = vec![0.0f32; opg * n_cols];
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
                let a = &wt[grp * opg * k..(grp + 1) * opg * k];
                for c0 in (0..n_cols).step_by(cols) {
                    let nb = cols.min(n_cols - c0);
                    // Row (c, u, v) of the block is channel c's plane shifted by the tap:
                    // one contiguous copy per row; then one GEMM with K = c_in/groups·k_h·k_w
                    // writes the block of C once rather than once per tap.
                    for (row_k, row) in shifted.chunks_exact_mut(nb).take(k).enumerate() {
                        let (ch, t) = (row_k / (g.k_h * g.k_w), row_k % (g.k_h * g.k_w));
                        let off = ch * plane_len
                            + (t / g.k_w) * g.dilation[0] * wp
                            + (t % g.k_w) * g.dilation[1]
                            + c0;
                        row.copy_from_slice(&plane[off..off + nb]);
                    }
                    blas::sgemm(
                        opg,
                        nb,
                        k,
                        a,
                        k,
                        &shifted[..k * nb],
                        nb,
                        &mut c[c0..],
                        n_cols,
                    );
                }
                for o in 0..opg {
                    let oc = grp * opg + o;
                    let bias = bias.map_or(0.0, |b| b[oc]);
                    let row = &c[o * n_cols..(o + 1) * n_cols];
                    let mut dst = out_n.index_axis_mut(Axis(0), oc);
                    for (i, mut dst_row) in dst.axis_iter_mut(Axis(0)).enumerate() {
                        let src = &row[i * wp..i * wp + g.out_w];
                        for (d, &v) in dst_row.iter_mut().zip(src) {
                            *d = v + bias;
                        }
                    }
                }
            }
            Ok(())
        })?;
    Ok(out)
}

/// Bytes of the shifted-matrix block one GEMM reads (about half of a core's L2).
const COLS_BYTES: usize = 512 << 10;

/// The one call into the `gemm` crate, whose API takes raw pointers.
#[allow(unsafe_code)]
mod blas {
    /// `C[m×n] = A[m×k] · B[k×n]`, all row-major with row strides `lda`, `ldb`, `ldc`,
    /// single-threaded (callers parallelise over images). `gemm` picks AVX-512, AVX2+FMA
    /// or scalar kernels at run time.
    ///
    /// # Panics
    /// If a dimension is 0 or a slice is shorter than its matrix.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sgemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        assert!(m > 0 && n > 0 && k > 0);
        assert!(lda >= k && ldb >= n && ldc >= n);
        assert!(a.len() >= (m - 1) * lda + k, "A out of bounds");
        assert!(b.len() >= (k - 1) * ldb + n, "B out of bounds");
        assert!(c.len() >= (m - 1) * ldc + n, "C out of bounds");
        let s = |x: usize| isize::try_from(x).expect("stride fits isize");
        // SAFETY: the asserts above keep every element the strides address inside the
        // slices; `c` is borrowed mutably so it aliases neither input; read_dst = false
        // means C is only written (dst := 0·dst + 1·A·B).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                s(ldc),
                false,
                a.as_ptr(),
                1,
                s(lda),
                b.as_ptr(),
                1,
                s(ldb),
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
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
