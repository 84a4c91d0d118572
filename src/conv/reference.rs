//! The plain, obviously-correct convolution: the oracle every fast path is tested against.
//!
//! It follows the definition literally, one output element at a time:
//!
//! ```text
//! y[n, o, i, j] = Σ_{c < c_in/groups, u < k_h, v < k_w}
//!                 xpad[n, g·(c_in/groups) + c, i·s_h + u·d_h, j·s_w + v·d_w] · w[o, c, u, v]
//!                 + bias[o]                         with g = o / (c_out/groups)
//! ```
//!
//! where `xpad` is the input padded by `[top, bottom, left, right]` in the padding mode.
//! The sum runs over `c`, then `u`, then `v`, in float32, and the bias is added last; the
//! fast paths keep that order where they can so that most comparisons are bit-exact.
//! It is never used to serve requests: it is slow on purpose (no tiling, no threads).

use ndarray::{Array4, ArrayView1, ArrayView4};

use super::params::Conv2dGeometry;

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// and adds `bias [c_out]`, returning `[n, c_out, out_h, out_w]`.
///
/// `geom` must have been built from these shapes by [`Conv2dGeometry::new`]; the shapes
/// are asserted.
pub fn conv2d_reference(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
) -> Array4<f32> {
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = geom;
    let c_per_group = g.c_in / g.groups;
    let out_per_group = g.c_out / g.groups;
    let [top, _, left, _] = g.padding;
    Array4::from_shape_fn(g.output_shape(), |(n, o, i, j)| {
        let group = o / out_per_group;
        let mut acc = 0.0f32;
        for c in 0..c_per_group {
            let ci = group * c_per_group + c;
            for u in 0..g.k_h {
                let y = (i * g.stride[0] + u * g.dilation[0]) as isize - top as isize;
                let Some(y) = g.padding_mode.source_index(y, g.h) else {
                    continue;
                };
                for v in 0..g.k_w {
                    let x = (j * g.stride[1] + v * g.dilation[1]) as isize - left as isize;
                    if let Some(x) = g.padding_mode.source_index(x, g.w) {
                        acc += input[[n, ci, y, x]] * weight[[o, c, u, v]];
                    }
                }
            }
        }
        match bias {
            Some(b) => acc + b[o],
            None => acc,
        }
    })
}
