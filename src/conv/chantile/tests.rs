use proptest::prelude::*;

use super::*;
use crate::conv::testutil::{check_against_reference, drawn_geom};

fn check(g: &Conv2dGeometry, seed: u32, bias: bool) {
    check_against_reference(g, seed, bias, |x, w, b| {
        conv2d_chantile(x, w, b, g, &CancelToken::new()).unwrap()
    });
}

use crate::conv::testutil::simple_geom as geom;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    /// Strides 1–3, dilations 1–3, groups, every padding mode, batch 1–2, 1×1 to 7×7,
    /// output channels per group from 1 to 150 (partial vectors, one to three panels),
    /// rows from 1 to 40 wide (one tile to several, transposes with masked tails).
    #[test]
    fn equals_reference(
        (n, groups, cpg, opg, h, w) in (1usize..3, 1usize..3, 1usize..5, 1usize..150, 1usize..20, 1usize..40),
        (k_h, k_w, s_h, s_w, d_h, d_w) in (1usize..8, 1usize..8, 1usize..4, 1usize..4, 1usize..4, 1usize..4),
        (mode, t, b, l, r, same, bias, seed) in (0usize..5, 0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4, any::<bool>(), any::<u32>()),
    ) {
        if !available() {
            return Ok(());
        }
        let Some(g) = drawn_geom((n, groups, cpg, opg, h, w), (k_h, k_w, s_h, s_w, d_h, d_w), (mode, t, b, l, r, same)) else { return Ok(()) };
        check(&g, seed, bias);
    }
}

#[test]
fn cnn_shapes_equal_the_reference() {
    if !available() {
        eprintln!("skipped: no AVX-512F on this CPU");
        return;
    }
    // ResNet's 7×7/2 stem and AlexNet's 11×11/4 on small planes, 64 and 96 output
    // channels (one full panel; a full and a half panel), batch 2.
    check(&geom([1, 3, 40, 44], [64, 3, 7, 7], 2, 3), 1, true);
    check(&geom([2, 3, 67, 67], [96, 3, 11, 11], 4, 2), 2, true);
    check(&geom([1, 1, 33, 70], [16, 1, 3, 3], 1, 1), 3, false);
}

#[test]
fn transpose16_moves_every_lane() {
    if !available() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: AVX-512F is present; 16 loads and stores of 16 floats inside 256.
        let t = unsafe {
            let rows = std::array::from_fn(|r| _mm512_loadu_ps(m.as_ptr().add(16 * r)));
            let cols = transpose16(rows);
            let mut t = vec![0.0f32; 256];
            for (c, col) in cols.iter().enumerate() {
                _mm512_storeu_ps(t.as_mut_ptr().add(16 * c), *col);
            }
            t
        };
        for r in 0..16 {
            for c in 0..16 {
                assert_eq!(t[c * 16 + r], m[r * 16 + c], "row {r} column {c}");
            }
        }
    }
}

#[test]
fn bands_cover_the_rows_in_order() {
    let g = geom([1, 3, 224, 224], [64, 3, 7, 7], 2, 3);
    let bands = plan_bands(&g, 3 * 49, 1);
    assert!(bands.len() >= 2);
    assert_eq!(bands.first().unwrap().start, 0);
    assert_eq!(bands.last().unwrap().end, g.out_h);
    assert!(bands.windows(2).all(|w| w[0].end == w[1].start));
    // A tiny layer is one band.
    let g = geom([1, 1, 4, 4], [16, 1, 3, 3], 1, 1);
    assert_eq!(plan_bands(&g, 9, 1), vec![0..4]);
}

#[test]
fn cancelled_before_any_band() {
    if !available() {
        return;
    }
    let g = geom([1, 3, 16, 16], [32, 3, 3, 3], 1, 1);
    let x = ndarray::Array4::<f32>::zeros(g.input_shape());
    let w = ndarray::Array4::<f32>::zeros(g.weight_shape());
    let cancel = CancelToken::new();
    cancel.cancel();
    assert_eq!(
        conv2d_chantile(x.view(), w.view(), None, &g, &cancel),
        Err(Cancelled)
    );
}
