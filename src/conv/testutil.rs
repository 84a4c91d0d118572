//! Test helpers shared by the algorithms' property tests: the float32 tolerance rule and
//! a strategy of random valid layers.

use ndarray::{Array1, Array4};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::conv2d_reference;
use super::params::Conv2dGeometry;
use crate::conv::params::{Conv2dParams, Padding, PaddingMode};
use ndarray::Zip;

pub(crate) const MODES: [PaddingMode; 5] = [
    PaddingMode::Zeros,
    PaddingMode::Reflect,
    PaddingMode::Replicate,
    PaddingMode::Circular,
    PaddingMode::Symmetric,
];

/// Asserts `|got − want| ≤ 2·(K+1)·2⁻²⁴·Σ|x·w|+|b|` element-wise, the fixtures' rule,
/// with the magnitude computed by the reference on absolute values.
pub(crate) fn assert_close(
    got: &Array4<f32>,
    want: &Array4<f32>,
    x: &Array4<f32>,
    w: &Array4<f32>,
    b: Option<&Array1<f32>>,
    g: &Conv2dGeometry,
) {
    let ax = x.mapv(f32::abs);
    let aw = w.mapv(f32::abs);
    let ab = b.map(|b| b.mapv(f32::abs));
    let mag = conv2d_reference(ax.view(), aw.view(), ab.as_ref().map(|b| b.view()), g);
    let k = (g.c_in / g.groups * g.k_h * g.k_w + 1) as f32;
    assert_eq!(got.shape(), want.shape());
    Zip::from(got).and(want).and(&mag).for_each(|&a, &e, &m| {
        let atol = 2.0 * (k + 1.0) * f32::EPSILON / 2.0 * m;
        assert!((a - e).abs() <= atol, "{a} vs {e} (atol {atol})");
    });
}

/// The xorshift32 sequence from `seed` (made odd, so never the all-zero state): the test
/// data of the checks below.
fn xorshift(seed: u32) -> impl FnMut() -> u32 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    }
}

/// Runs `conv` on data drawn from `seed` (values in [−5, 5), bias when `bias`) for the
/// layer `g`, and asserts it matches the reference within the float32 bound.
pub(crate) fn check_against_reference(
    g: &Conv2dGeometry,
    seed: u32,
    bias: bool,
    conv: impl Fn(
        ndarray::ArrayView4<'_, f32>,
        ndarray::ArrayView4<'_, f32>,
        Option<ndarray::ArrayView1<'_, f32>>,
    ) -> Array4<f32>,
) {
    let mut bits = xorshift(seed);
    let mut next = move || (bits() % 1000) as f32 / 100.0 - 5.0;
    let x = Array4::from_shape_simple_fn(g.input_shape(), &mut next);
    let wt = Array4::from_shape_simple_fn(g.weight_shape(), &mut next);
    let b = bias.then(|| Array1::from_shape_simple_fn(g.c_out, &mut next));
    let want = conv2d_reference(x.view(), wt.view(), b.as_ref().map(|b| b.view()), g);
    let got = conv(x.view(), wt.view(), b.as_ref().map(|b| b.view()));
    assert_close(&got, &want, &x, &wt, b.as_ref(), g);
}

/// Runs `conv` on small integers drawn from `seed` (−4 ..= 4, with a bias) for the layer
/// `g`, where every product and sum of an exact algorithm is exact, and asserts the
/// result is the reference's bit for bit.
pub(crate) fn assert_exact_on_small_integers(
    g: &Conv2dGeometry,
    seed: u32,
    conv: impl Fn(
        ndarray::ArrayView4<'_, f32>,
        ndarray::ArrayView4<'_, f32>,
        Option<ndarray::ArrayView1<'_, f32>>,
    ) -> Array4<f32>,
) {
    let mut bits = xorshift(seed);
    let mut next = move || (bits() % 9) as f32 - 4.0;
    let x = Array4::from_shape_simple_fn(g.input_shape(), &mut next);
    let w = Array4::from_shape_simple_fn(g.weight_shape(), &mut next);
    let b = Array1::from_shape_simple_fn(g.c_out, &mut next);
    let want = conv2d_reference(x.view(), w.view(), Some(b.view()), g);
    assert_eq!(conv(x.view(), w.view(), Some(b.view())), want, "{g:?}");
}

/// Runs `conv` on an input whose columns `0 .. 20` are zero and the rest large, for a
/// layer `g` without left padding, and asserts that every output column reading only those
/// zeros is exactly zero (no product mixes one output's inputs into another's).
pub(crate) fn assert_outputs_over_zeros_are_zero(
    g: &Conv2dGeometry,
    conv: impl Fn(ndarray::ArrayView4<'_, f32>, ndarray::ArrayView4<'_, f32>) -> Array4<f32>,
) {
    assert_eq!(g.padding[2], 0);
    let x = Array4::from_shape_fn(g.input_shape(), |(_, c, i, j)| {
        if j < 20 {
            0.0
        } else {
            1e3 + (c * 7 + i * 3 + j) as f32 * 0.37
        }
    });
    let w = Array4::from_shape_fn(g.weight_shape(), |(o, c, u, v)| {
        ((o * 5 + c * 3 + u * 7 + v) % 11) as f32 * 0.13 - 0.6
    });
    let y = conv(x.view(), w.view());
    for j in 0..g.out_w {
        if j * g.stride[1] + (g.k_w - 1) * g.dilation[1] < 20 {
            for v in y.slice(ndarray::s![.., .., .., j]) {
                assert_eq!(*v, 0.0, "{g:?}, column {j}");
            }
        }
    }
}

/// A deterministic random valid case for `seed` (for non-proptest loops).
pub(crate) fn random_case(
    seed: u64,
) -> (
    Array4<f32>,
    Array4<f32>,
    Option<Array1<f32>>,
    Conv2dGeometry,
) {
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig::default(),
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &[seed as u8; 32],
        ),
    );
    case().new_tree(&mut runner).expect("a case").current()
}

/// A random but valid case: shapes, parameters and small-integer data (so that the
/// comparison can be exact whatever the summation order).
pub(crate) fn case() -> impl Strategy<
    Value = (
        Array4<f32>,
        Array4<f32>,
        Option<Array1<f32>>,
        Conv2dGeometry,
    ),
> {
    (
        (1usize..3, 1usize..4, 1usize..4, 1usize..13, 1usize..150),
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
                let c_out = groups * (1 + (seed as usize % 3));
                build(
                    [n, groups * cpg, h, w],
                    [c_out, cpg, k_h, k_w],
                    ([s_h, s_w], [d_h, d_w], groups, mode, [t, b, l, r]),
                    bias,
                    seed,
                )
            },
        )
}

/// Depthwise layers (one input channel per group, a channel multiplier of 1–3) on planes
/// of CNN-like sizes, at strides 1–4 and dilations 1–3.
pub(crate) fn depthwise_case() -> impl Strategy<Value = Case> {
    (
        (1usize..3, 1usize..6, 1usize..4, 1usize..40, 1usize..80),
        (
            1usize..6,
            1usize..6,
            1usize..5,
            1usize..5,
            1usize..4,
            1usize..4,
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
                (n, c, mult, h, w),
                (k_h, k_w, s_h, s_w, d_h, d_w),
                (mode, t, b, l, r, bias, seed),
            )| {
                build(
                    [n, c, h, w],
                    [c * mult, 1, k_h, k_w],
                    ([s_h, s_w], [d_h, d_w], c, mode, [t, b, l, r]),
                    bias,
                    seed,
                )
            },
        )
}

/// A random case: input, weight, bias and geometry.
pub(crate) type Case = (
    Array4<f32>,
    Array4<f32>,
    Option<Array1<f32>>,
    Conv2dGeometry,
);

/// Builds a case from shapes and `(stride, dilation, groups, padding mode index,
/// explicit padding)`; `seed % 7` picks `same` (0), `valid` (1) or the explicit padding,
/// and seeds the small-integer-valued data. None if the spec is impossible.
pub(crate) fn build(
    input: [usize; 4],
    weight: [usize; 4],
    (stride, dilation, groups, mode, pad): ([usize; 2], [usize; 2], usize, usize, [usize; 4]),
    bias: bool,
    seed: u64,
) -> Option<Case> {
    let c_out = weight[0];
    let padding = match seed % 7 {
        0 => Padding::Same,
        1 => Padding::Valid,
        _ => Padding::Explicit(pad),
    };
    let params = Conv2dParams {
        stride,
        dilation,
        padding,
        groups,
        padding_mode: MODES[mode],
    };
    let g = Conv2dGeometry::new(input, weight, bias.then_some(c_out), &params).ok()?;
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state % 2001) as f32) / 250.0 - 4.0
    };
    let x = Array4::from_shape_simple_fn(g.input_shape(), &mut next);
    let wt = Array4::from_shape_simple_fn(g.weight_shape(), &mut next);
    let bias = bias.then(|| Array1::from_shape_simple_fn(c_out, &mut next));
    Some((x, wt, bias, g))
}

/// A layer with the same stride and padding on every side, and a bias (fixed test shapes).
pub(crate) fn simple_geom(
    input: [usize; 4],
    weight: [usize; 4],
    stride: usize,
    pad: usize,
) -> Conv2dGeometry {
    let params = crate::conv::Conv2dParams {
        stride: [stride; 2],
        padding: crate::conv::Padding::Explicit([pad; 4]),
        ..Default::default()
    };
    Conv2dGeometry::new(input, weight, Some(weight[0]), &params).expect("a valid layer")
}

/// The layer a property test drew: `(n, groups, c_in/groups, c_out/groups, h, w)`,
/// `(k_h, k_w, s_h, s_w, d_h, d_w)` and `(padding mode index, top, bottom, left, right,
/// kind)` with kind 0 `same`, 1 `valid`, else the explicit sides; None when these make no
/// layer (the kernel does not fit, `same` at a stride, …).
pub(crate) fn drawn_geom(
    (n, groups, cpg, opg, h, w): (usize, usize, usize, usize, usize, usize),
    (k_h, k_w, s_h, s_w, d_h, d_w): (usize, usize, usize, usize, usize, usize),
    (mode, t, b, l, r, kind): (usize, usize, usize, usize, usize, usize),
) -> Option<Conv2dGeometry> {
    use crate::conv::{Conv2dParams, Padding};
    let padding = match kind {
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
    Conv2dGeometry::new(
        [n, groups * cpg, h, w],
        [groups * opg, cpg, k_h, k_w],
        Some(groups * opg),
        &params,
    )
    .ok()
}
