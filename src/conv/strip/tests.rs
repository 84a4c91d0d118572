//! Strips against the whole-tensor run: bit for bit, for every algorithm, padding mode,
//! stride, dilation and strip boundary.

use ndarray::{Array1, Array4};
use proptest::prelude::*;

use super::*;
use crate::conv::testutil::MODES;
use crate::conv::{buffers, Conv2dAlgo};

/// Full-mantissa values in about ±4, so that any change in summation order shows.
fn data(shape: [usize; 4], seed: &mut u64) -> Array4<f32> {
    Array4::from_shape_simple_fn(shape, || next(seed))
}

fn next(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0 + 1.0 / 3.0
}

/// The whole-tensor run of `layers` with algorithm `algos[i]` for layer `i`.
fn whole(
    x: &Array4<f32>,
    layers: &[Conv2dLayer],
    geoms: &[Conv2dGeometry],
    algos: &[Conv2dAlgo],
) -> Array4<f32> {
    let cancel = CancelToken::new();
    let mut cur = x.clone();
    for ((l, g), &a) in layers.iter().zip(geoms).zip(algos) {
        let mut y = conv2d_with(
            a,
            cur.view(),
            l.weight.view(),
            l.bias.as_ref().map(|b| b.view()),
            g,
            &cancel,
        )
        .expect("not cancelled");
        if l.activation == Activation::Relu {
            y.mapv_inplace(|v| v.max(0.0));
        }
        cur = y;
    }
    cur
}

/// Every image of `x` strip by strip, strips cut at `cuts` (output rows).
fn striped(x: &Array4<f32>, stack: &StripStack<'_>, cuts: &[usize]) -> Array4<f32> {
    let cancel = CancelToken::new();
    let [_, out_h, _] = stack.output_dims();
    let mut bounds: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < out_h)
        .collect();
    bounds.push(0);
    bounds.push(out_h);
    bounds.sort_unstable();
    bounds.dedup();
    let images: Vec<Array4<f32>> = (0..x.shape()[0])
        .map(|i| {
            let one = x.slice(s![i..i + 1, .., .., ..]);
            let src = TensorRows(one);
            let strips: Vec<_> = bounds
                .windows(2)
                .map(|b| stack.run(&src, b[0]..b[1], &cancel).expect("not cancelled"))
                .collect();
            concat_rows(&strips)
        })
        .collect();
    let views: Vec<_> = images.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(0), &views).expect("images")
}

fn assert_bits(got: &Array4<f32>, want: &Array4<f32>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0),
            "{what}: element {i}: {a} vs {b}"
        );
    }
}

/// One drawn layer over `input`: `(k, s, d, pad, mode, groups, c_out per group)`.
type Drawn = (
    [usize; 2],
    [usize; 2],
    [usize; 2],
    [usize; 4],
    usize,
    usize,
    usize,
    bool,
    bool,
);

fn layer(
    input: [usize; 4],
    d: Drawn,
    seed: &mut u64,
    rank1: bool,
) -> Option<(Conv2dLayer, Conv2dGeometry)> {
    let (k, stride, dil, pad, mode, groups, opg, same, relu) = d;
    let params = Conv2dParams {
        stride,
        dilation: dil,
        padding: if same {
            Padding::Same
        } else {
            Padding::Explicit(pad)
        },
        groups,
        padding_mode: MODES[mode],
    };
    let c_in = input[1];
    if !c_in.is_multiple_of(groups) {
        return None;
    }
    let wshape = [groups * opg, c_in / groups, k[0], k[1]];
    let g = Conv2dGeometry::new(input, wshape, Some(groups * opg), &params).ok()?;
    let weight = if rank1 {
        let (u, v): (Vec<f32>, Vec<f32>) = (
            (0..k[0]).map(|_| next(seed)).collect(),
            (0..k[1]).map(|_| next(seed)).collect(),
        );
        Array4::from_shape_fn(wshape, |(_, _, i, j)| u[i] * v[j])
    } else {
        data(wshape, seed)
    };
    let bias = Some(Array1::from_shape_simple_fn(groups * opg, || next(seed)));
    let activation = if relu {
        Activation::Relu
    } else {
        Activation::None
    };
    Some((
        Conv2dLayer {
            weight,
            bias,
            params,
            activation,
        },
        g,
    ))
}

fn drawn() -> impl Strategy<Value = Drawn> {
    (
        (1usize..6, 1usize..6),
        (1usize..4, 1usize..3),
        (1usize..3, 1usize..3),
        (0usize..4, 0usize..4, 0usize..3, 0usize..3),
        0usize..5,
        (1usize..4, 1usize..4),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((kh, kw), (sh, sw), (dh, dw), (t, b, l, r), mode, (groups, opg), (same, relu))| {
                (
                    [kh, kw],
                    [sh, sw],
                    [dh, dw],
                    [t, b, l, r],
                    mode,
                    groups,
                    opg,
                    same,
                    relu,
                )
            },
        )
}

/// Runs a drawn stack under every algorithm that supports all its layers.
fn check_stack(
    input: [usize; 4],
    draws: &[Drawn],
    seed: u64,
    cuts: &[usize],
    rank1: bool,
) -> Result<(), TestCaseError> {
    let mut s = seed | 1;
    let mut shape = input;
    let mut layers = Vec::new();
    let mut geoms = Vec::new();
    for &d in draws {
        let Some((l, g)) = layer(shape, d, &mut s, rank1) else {
            return Ok(());
        };
        shape = g.output_shape();
        layers.push(l);
        geoms.push(g);
    }
    let x = data(input, &mut s);
    for algo in Conv2dAlgo::ALL {
        if !geoms.iter().all(|g| algo.supports(g)) {
            continue;
        }
        if algo == Conv2dAlgo::Separable && !rank1 {
            continue;
        }
        let algos = vec![algo; layers.len()];
        let Ok(stack) = StripStack::with_algorithms(&layers, &geoms, &algos) else {
            continue;
        };
        let want = whole(&x, &layers, &geoms, &algos);
        let got = striped(&x, &stack, cuts);
        assert_bits(&got, &want, &format!("{algo} on {geoms:?}, cuts {cuts:?}"));
    }
    // And the plans the stack makes itself.
    if let Ok((stack, plans)) = StripStack::new(&layers, &geoms) {
        let algos: Vec<_> = plans.iter().map(|p| p.algorithm).collect();
        let want = if algos.contains(&Conv2dAlgo::Separable) {
            crate::conv::run_stack(x.view(), &layers, &geoms, &CancelToken::new())
                .expect("ran")
                .0
        } else {
            whole(&x, &layers, &geoms, &algos)
        };
        assert_bits(
            &striped(&x, &stack, cuts),
            &want,
            &format!("planned {algos:?} on {geoms:?}"),
        );
    }
    buffers::give(Vec::new());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn one_layer_in_strips_is_the_whole_run_bit_for_bit(
        (n, c, h, w) in (1usize..3, 1usize..5, 1usize..30, 1usize..40),
        d in drawn(),
        cuts in proptest::collection::vec(0usize..30, 0..5),
        seed in any::<u64>(),
        rank1 in any::<bool>(),
    ) {
        check_stack([n, c, h, w], &[d], seed, &cuts, rank1)?;
    }

    #[test]
    fn stacks_in_strips_are_the_whole_run_bit_for_bit(
        (c, h, w) in (1usize..4, 4usize..40, 1usize..30),
        d in proptest::collection::vec(drawn(), 2..4),
        cuts in proptest::collection::vec(0usize..30, 1..6),
        seed in any::<u64>(),
    ) {
        check_stack([1, c, h, w], &d, seed, &cuts, false)?;
    }

    #[test]
    fn many_channel_layers_in_strips_are_the_whole_run_bit_for_bit(
        (c, h, w) in (8usize..40, 4usize..24, 4usize..24),
        k in 1usize..4,
        mode in 0usize..5,
        opg in 1usize..20,
        stride in 1usize..3,
        cuts in proptest::collection::vec(0usize..24, 1..5),
        seed in any::<u64>(),
    ) {
        // Winograd, the GEMMs and the channel tile get their layers here.
        let d = ([k, k], [stride, stride], [1, 1], [k / 2; 4], mode, 1, opg, false, false);
        check_stack([1, c, h, w], &[d], seed, &cuts, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn winograd_layers_in_strips_keep_the_tile_grid(
        (c, h, w) in (16usize..24, 3usize..20, 3usize..20),
        mode in 0usize..5,
        opg in 1usize..8,
        cuts in proptest::collection::vec(0usize..20, 1..6),
        seed in any::<u64>(),
    ) {
        let d = ([3, 3], [1, 1], [1, 1], [1; 4], mode, 1, opg, false, false);
        check_stack([1, c, h, w], &[d], seed, &cuts, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn rank1_depthwise_layers_in_strips_are_the_whole_run_bit_for_bit(
        (c, h, w) in (1usize..4, 3usize..40, 3usize..40),
        k in (5usize..8, 5usize..8),
        stride in (1usize..3, 1usize..3),
        mode in 0usize..5,
        cuts in proptest::collection::vec(0usize..40, 1..6),
        seed in any::<u64>(),
        two in any::<bool>(),
    ) {
        // The separable passes (the blurs of photos), alone and under a second layer.
        let d = ([k.0, k.1], [stride.0, stride.1], [1, 1], [k.0 / 2, k.0 / 2, k.1 / 2, k.1 / 2], mode, c, 1, false, false);
        let lap = ([3, 3], [1, 1], [1, 1], [1; 4], mode, c, 1, true, false);
        let draws = if two { vec![d, lap] } else { vec![d] };
        check_stack([1, c, h, w], &draws, seed, &cuts, true)?;
    }
}

#[test]
fn padding_that_fills_an_output_row_is_not_streamable() {
    let mut s = 7;
    let (l, g) = layer(
        [1, 1, 5, 5],
        ([3, 3], [1, 1], [1, 1], [3, 0, 1, 1], 0, 1, 1, false, false),
        &mut s,
        false,
    )
    .unwrap();
    let layers = [l];
    assert!(StripStack::new(&layers, &[g]).is_err());
}

#[test]
fn circular_padding_in_a_second_layer_reads_the_far_rows() {
    // Layer 2 wraps: its top strip needs layer 1's bottom rows.
    let d1 = ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 1, 2, false, true);
    let d2 = ([5, 3], [1, 1], [1, 1], [2, 2, 1, 1], 3, 1, 1, false, false);
    check_stack([1, 2, 17, 9], &[d1, d2], 99, &[1, 3, 8, 16], false).unwrap();
}
