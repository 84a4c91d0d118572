use proptest::prelude::*;

use super::*;
use crate::conv::params::{Conv2dParams, Padding, PaddingMode};
use crate::conv::testutil::{check_against_reference, drawn_geom};

fn check(g: &Conv2dGeometry, lowering: Lowering, seed: u32, bias: bool) {
    check_against_reference(g, seed, bias, |x, w, b| {
        conv2d_gemm(x, w, b, g, lowering, &CancelToken::new()).unwrap()
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]
    #[test]
    fn im2col_equals_reference(
        (n, groups, cpg, opg, h, w) in (1usize..4, 1usize..4, 1usize..6, 1usize..40, 1usize..24, 1usize..24),
        (k_h, k_w, s_h, s_w, d_h, d_w) in (1usize..6, 1usize..6, 1usize..4, 1usize..4, 1usize..4, 1usize..3),
        (mode, t, b, l, r, same, bias, seed) in (0usize..5, 0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4, any::<bool>(), any::<u32>()),
    ) {
        let Some(g) = drawn_geom((n, groups, cpg, opg, h, w), (k_h, k_w, s_h, s_w, d_h, d_w), (mode, t, b, l, r, same)) else { return Ok(()) };
        check(&g, Lowering::Im2col, seed, bias);
    }

    #[test]
    fn pointwise_equals_reference(
        (n, groups, cpg, opg, h, w) in (1usize..4, 1usize..4, 1usize..20, 1usize..40, 1usize..30, 1usize..30),
        (s_h, s_w, bias, seed) in (1usize..4, 1usize..4, any::<bool>(), any::<u32>()),
    ) {
        let params = Conv2dParams { stride: [s_h, s_w], groups, ..Default::default() };
        let g = Conv2dGeometry::new([n, groups * cpg, h, w], [groups * opg, cpg, 1, 1], Some(groups * opg), &params).unwrap();
        check(&g, Lowering::Pointwise, seed, bias);
    }
}

#[test]
fn batch_one_splits_into_blocks_for_every_thread() {
    // 512 → 512 channels on a 7×7 plane: 49 columns, so rows must be split.
    let g = Conv2dGeometry::new(
        [1, 512, 7, 7],
        [512, 512, 3, 3],
        None,
        &Conv2dParams {
            padding: Padding::Explicit([1; 4]),
            ..Default::default()
        },
    )
    .unwrap();
    let s = Split::new(&g, 512 * 9, 1, Lowering::Im2col);
    assert!(s.rows.len() * s.cols.len() >= 2 * rayon::current_num_threads());
    // A stem: many columns, blocks bounded by COLS_BYTES.
    let g = Conv2dGeometry::new(
        [1, 3, 224, 224],
        [64, 3, 7, 7],
        None,
        &Conv2dParams {
            stride: [2, 2],
            padding: Padding::Explicit([3; 4]),
            ..Default::default()
        },
    )
    .unwrap();
    let s = Split::new(&g, 147, 1, Lowering::Im2col);
    assert!(s
        .cols
        .iter()
        .all(|&(_, nb)| nb * 147 * 4 <= COLS_BYTES + 64 * 147));
    assert_eq!(s.rows, vec![(0, 64)]);
    let _ = PaddingMode::Zeros;
}

#[test]
fn a_fired_token_stops_the_gemm() {
    let g = Conv2dGeometry::new(
        [2, 16, 8, 8],
        [16, 16, 3, 3],
        None,
        &Conv2dParams::default(),
    )
    .unwrap();
    let x = Array4::zeros(g.input_shape());
    let w = Array4::zeros(g.weight_shape());
    let t = CancelToken::new();
    t.cancel();
    assert_eq!(
        conv2d_gemm(x.view(), w.view(), None, &g, Lowering::Im2col, &t),
        Err(Cancelled)
    );
}
