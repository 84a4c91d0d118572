use proptest::prelude::*;

use super::*;
use crate::conv::testutil::simple_geom as geom;
use crate::conv::testutil::{
    assert_exact_on_small_integers, assert_outputs_over_zeros_are_zero, check_against_reference,
    drawn_geom,
};

fn check(g: &Conv2dGeometry, seed: u32, bias: bool) {
    check_against_reference(g, seed, bias, |x, w, b| {
        conv2d_chanwino(x, w, b, g, &CancelToken::new()).unwrap()
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    /// Strides 1–3 (both axes), row dilations 1–3, groups, every padding mode, batch 1–2,
    /// kernels 1–8 rows × 2–8 columns (every chunk kind: phases of 1 to 8 columns), output
    /// channels per group from 1 to 150 (partial vectors, one to three panels), rows from 1
    /// to 40 wide (odd widths: a last pair with one output).
    #[test]
    fn equals_reference(
        (n, groups, cpg, opg, h, w) in (1usize..3, 1usize..3, 1usize..5, 1usize..150, 1usize..20, 1usize..40),
        (k_h, k_w, s_h, s_w, d_h) in (1usize..9, 2usize..9, 1usize..4, 1usize..4, 1usize..4),
        (mode, t, b, l, r, same, bias, seed) in (0usize..5, 0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4, any::<bool>(), any::<u32>()),
    ) {
        if !chantile::available() {
            return Ok(());
        }
        let Some(g) = drawn_geom((n, groups, cpg, opg, h, w), (k_h, k_w, s_h, s_w, d_h, 1), (mode, t, b, l, r, same)) else { return Ok(()) };
        if !supports(&g) {
            return Ok(());
        }
        check(&g, seed, bias);
    }
}

#[test]
fn cnn_shapes_equal_the_reference() {
    if !chantile::available() {
        eprintln!("skipped: no AVX-512F on this CPU");
        return;
    }
    // ResNet's 7×7/2 stem (odd output width), VGG's 3×3 on RGB, MobileNet's 3×3/2 stem
    // (32 channels: half a panel), a 5×5 on one channel from 5 rows, batch 2.
    check(&geom([1, 3, 40, 45], [64, 3, 7, 7], 2, 3), 1, true);
    check(&geom([2, 3, 30, 34], [64, 3, 3, 3], 1, 1), 2, true);
    check(&geom([1, 3, 33, 33], [32, 3, 3, 3], 2, 1), 3, false);
    check(&geom([1, 1, 21, 70], [80, 1, 5, 5], 1, 2), 4, true);
}

/// On small integers every transform, product and sum is exact: the result is the
/// reference's, bit for bit.
#[test]
fn exact_on_small_integers() {
    if !chantile::available() {
        return;
    }
    for (i, g) in [
        geom([1, 3, 23, 37], [64, 3, 7, 7], 2, 3),
        geom([2, 2, 17, 19], [20, 2, 3, 4], 1, 1),
        geom([1, 4, 15, 31], [70, 4, 2, 5], 3, 2),
    ]
    .iter()
    .enumerate()
    {
        assert_exact_on_small_integers(g, 7 + i as u32, |x, w, b| {
            conv2d_chanwino(x, w, b, g, &CancelToken::new()).unwrap()
        });
    }
}

#[test]
fn chunks_and_products() {
    let g = geom([1, 3, 224, 224], [64, 3, 7, 7], 2, 3);
    let c = |v0, taps, slot| Chunk { v0, taps, slot };
    // Even columns 0, 2, 4 | 6; odd 1, 3, 5.
    assert_eq!(chunks(&g), vec![c(0, 3, 0), c(6, 1, 4), c(1, 3, 6)]);
    assert_eq!(products_per_pair(&g), 10);
    // Points 0 and 3 sum over all three chunks, for each of the 3 × 7 (channel, row).
    assert_eq!(longest_point(&g), 63);
    let alex = geom([1, 3, 224, 224], [64, 3, 11, 11], 4, 2);
    assert_eq!(products_per_pair(&alex), 15);
    assert_eq!(longest_point(&alex), 3 * 11 * 4);
    assert_eq!(
        products_per_pair(&geom([1, 3, 9, 9], [8, 3, 3, 3], 1, 1)),
        4
    );
    assert_eq!(
        products_per_pair(&geom([1, 3, 9, 9], [8, 3, 3, 3], 2, 1)),
        5
    );
    assert_eq!(
        products_per_pair(&geom([1, 3, 9, 9], [8, 3, 5, 5], 1, 1)),
        7
    );
    // Nothing to save: one column per phase.
    assert!(!supports(&geom([1, 3, 9, 9], [8, 3, 2, 2], 2, 0)));
    assert!(!supports(&geom([1, 3, 9, 9], [8, 3, 1, 1], 1, 0)));
}

#[test]
fn cancelled_before_any_band() {
    if !chantile::available() {
        return;
    }
    let g = geom([1, 3, 16, 16], [32, 3, 3, 3], 1, 1);
    let x = ndarray::Array4::<f32>::zeros(g.input_shape());
    let w = ndarray::Array4::<f32>::zeros(g.weight_shape());
    let cancel = CancelToken::new();
    cancel.cancel();
    assert_eq!(
        conv2d_chanwino(x.view(), w.view(), None, &g, &cancel),
        Err(Cancelled)
    );
}

/// An output whose inputs are all zero is exactly zero, whatever its neighbours read: no
/// product mixes one output's inputs into the other (chunks of 1, 2 and 3 columns).
#[test]
fn outputs_over_zeros_are_exactly_zero() {
    if !chantile::available() {
        return;
    }
    for (k_w, s) in [(3, 1), (2, 1), (3, 2), (5, 1), (7, 2), (4, 1)] {
        let g = geom([1, 3, 9, 40], [32, 3, 3, k_w], s, 0);
        if !supports(&g) {
            continue;
        }
        assert_outputs_over_zeros_are_zero(&g, |x, w| {
            conv2d_chanwino(x, w, None, &g, &CancelToken::new()).unwrap()
        });
    }
}
