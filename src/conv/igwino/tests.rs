use proptest::prelude::*;

use super::*;
use crate::conv::testutil::simple_geom as geom;
use crate::conv::testutil::{
    assert_exact_on_small_integers, assert_outputs_over_zeros_are_zero, check_against_reference,
    drawn_geom,
};

fn check(g: &Conv2dGeometry, seed: u32, bias: bool) {
    // Whole tasks per chunk, or chunks of a few vectors (the path of large planes).
    let chunk_bytes = if seed.is_multiple_of(3) {
        super::super::igemm::CHUNK_BYTES
    } else {
        64 + seed as usize % 4096
    };
    check_against_reference(g, seed, bias, |x, w, b| {
        conv2d_chunked(x, w, b, g, &CancelToken::new(), chunk_bytes).unwrap()
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    /// Strides 1–3 (both axes), row dilations 1–3, column dilations 1, 2, 4 and 8 (at
    /// column stride 1), groups, every padding mode, batch 1–2,
    /// kernels 1–7 rows × 2–7 columns (every chunk kind), 1–40 output channels per group
    /// (partial panels), 2–40 input channels per group, rows 1–30 wide (odd widths: a last
    /// pair with one output; vectors across rows).
    #[test]
    fn equals_reference(
        (n, groups, cpg, opg, h, w) in (1usize..3, 1usize..3, 2usize..40, 1usize..40, 1usize..16, 1usize..30),
        (k_h, k_w, s_h, s_w, d_h, dl) in (1usize..8, 2usize..8, 1usize..4, 1usize..4, 1usize..4, 0u32..4),
        (mode, t, b, l, r, same, bias, seed) in (0usize..5, 0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4, any::<bool>(), any::<u32>()),
    ) {
        if !super::super::igemm::available() {
            return Ok(());
        }
        let d_w = 1 << dl;
        let s_w = if d_w > 1 { 1 } else { s_w };
        let Some(g) = drawn_geom((n, groups, cpg, opg, h, w), (k_h, k_w, s_h, s_w, d_h, d_w), (mode, t, b, l, r, same)) else { return Ok(()) };
        if !supports(&g) {
            return Ok(());
        }
        check(&g, seed, bias);
    }
}

#[test]
fn cnn_shapes_equal_the_reference() {
    if !super::super::igemm::available() {
        eprintln!("skipped: no AVX-512F on this CPU");
        return;
    }
    // ResNet's 3×3 on 7×7 (odd width, vectors across rows), 3×3/2 (phases of 2 and 1
    // columns), AlexNet's two-group 5×5 (chunks 3 + 2), row dilation 2, batch 2, a
    // 7×7/2 stem, 6 output channels (a partial panel).
    check(&geom([1, 64, 7, 7], [64, 64, 3, 3], 1, 1), 1, true);
    check(&geom([1, 32, 28, 28], [40, 32, 3, 3], 2, 1), 2, true);
    let alex = drawn_geom(
        (2, 2, 12, 16, 13, 13),
        (5, 5, 1, 1, 1, 1),
        (0, 2, 2, 2, 2, 2),
    );
    check(&alex.expect("a layer"), 3, false);
    let dil = drawn_geom(
        (1, 1, 16, 16, 20, 20),
        (3, 3, 1, 1, 2, 1),
        (0, 2, 2, 1, 1, 2),
    );
    check(&dil.expect("a layer"), 4, true);
    check(&geom([1, 3, 40, 45], [6, 3, 7, 7], 2, 3), 5, true);
    // DeepLab's dilated 3×3 (d = 2 and 4; an odd width, whose last group of pairs is
    // short), and a 5×5 at dilation 8 with reflect padding.
    let dil2 = drawn_geom(
        (1, 1, 32, 16, 28, 28),
        (3, 3, 1, 1, 2, 2),
        (0, 2, 2, 2, 2, 2),
    );
    check(&dil2.expect("a layer"), 6, true);
    let dil4 = drawn_geom(
        (1, 1, 24, 20, 21, 23),
        (3, 3, 1, 1, 4, 4),
        (0, 4, 4, 4, 4, 2),
    );
    check(&dil4.expect("a layer"), 7, false);
    let dil3 = drawn_geom(
        (2, 1, 8, 9, 17, 37),
        (5, 5, 1, 1, 3, 8),
        (1, 6, 6, 16, 16, 2),
    );
    check(&dil3.expect("a layer"), 8, true);
}

/// On small integers every transform, product and sum is exact: the result is the
/// reference's, bit for bit.
#[test]
fn exact_on_small_integers() {
    if !super::super::igemm::available() {
        return;
    }
    for (i, g) in [
        geom([1, 16, 9, 11], [20, 16, 3, 3], 1, 1),
        geom([2, 8, 17, 19], [10, 8, 3, 4], 2, 1),
        geom([1, 4, 15, 31], [7, 4, 2, 5], 3, 2),
    ]
    .iter()
    .enumerate()
    {
        assert_exact_on_small_integers(g, 7 + i as u32, |x, w, b| {
            conv2d_igwino(x, w, b, g, &CancelToken::new()).unwrap()
        });
    }
}

/// The vectors tile the plane: every output once, in order, odd widths compressed.
#[test]
fn vectors_tile_odd_and_even_planes() {
    for (h, w) in [(7, 7), (14, 14), (1, 1), (3, 33), (5, 32)] {
        let g = geom([1, 8, h, w], [8, 8, 3, 3], 1, 1);
        let list = vectors(&g);
        assert_eq!(list.len(), vector_count(&g));
        let kept: u32 = list
            .iter()
            .flat_map(|v| v.halves)
            .map(|(_, m)| m.count_ones())
            .sum();
        assert_eq!(kept as usize, h * w);
    }
    // 7×7: 28 pairs in 2 vectors, the implicit GEMM's 4 vectors of outputs.
    assert_eq!(vector_count(&geom([1, 8, 7, 7], [8, 8, 3, 3], 1, 1)), 2);
    // Column dilation: pairs `d` apart, each output once, whatever the width (`vectors`
    // asserts the tiling).
    for (w, d) in [(32, 4), (23, 4), (5, 2), (3, 4), (28, 2), (40, 16), (7, 8)] {
        let g = drawn_geom((1, 1, 8, 8, 9, w), (3, 3, 1, 1, 1, d), (0, 1, 1, d, d, 2));
        let g = g.expect("a layer");
        assert_eq!(vectors(&g).len(), vector_count(&g), "{w} wide, d = {d}");
    }
    // DeepLab's d = 4 on 32 columns: 16 pairs per row, no lane wasted.
    let dil4 = drawn_geom((1, 1, 8, 8, 32, 32), (3, 3, 1, 1, 4, 4), (0, 4, 4, 4, 4, 2));
    assert_eq!(vector_count(&dil4.expect("a layer")), 32);
    assert_eq!(interleave(1)[..4], [0, 16, 1, 17]);
    assert_eq!(interleave(2)[..8], [0, 1, 16, 17, 2, 3, 18, 19]);
}

#[test]
fn cancelled_before_any_task() {
    if !super::super::igemm::available() {
        return;
    }
    let g = geom([1, 16, 16, 16], [32, 16, 3, 3], 1, 1);
    let x = ndarray::Array4::<f32>::zeros(g.input_shape());
    let w = ndarray::Array4::<f32>::zeros(g.weight_shape());
    let cancel = CancelToken::new();
    cancel.cancel();
    assert_eq!(
        conv2d_igwino(x.view(), w.view(), None, &g, &cancel),
        Err(Cancelled)
    );
}

/// An output whose inputs are all zero is exactly zero, whatever its neighbours read
/// (chunks of 1, 2 and 3 columns).
#[test]
fn outputs_over_zeros_are_exactly_zero() {
    if !super::super::igemm::available() {
        return;
    }
    for (k_w, s, d) in [
        (3, 1, 1),
        (2, 1, 1),
        (3, 2, 1),
        (5, 1, 1),
        (7, 2, 1),
        (4, 1, 1),
        (3, 1, 2),
        (3, 1, 4),
    ] {
        let g = drawn_geom(
            (1, 1, 8, 12, 9, 40),
            (3, k_w, s, s, 1, d),
            (0, 0, 0, 0, 0, 2),
        );
        let g = g.expect("a layer");
        if !supports(&g) {
            continue;
        }
        assert_outputs_over_zeros_are_zero(&g, |x, w| {
            conv2d_igwino(x, w, None, &g, &CancelToken::new()).unwrap()
        });
    }
}

/// The packed tiles take up to 4 consecutive vectors: runs break at the width and where
/// a vector was skipped (a position gap), and cover the list in order.
#[test]
fn runs_are_consecutive_vectors_up_to_the_width() {
    let v = |src: u32| Vector {
        src,
        halves: [(0, 1), (0, 0)],
    };
    let list: Vec<Vector> = [0, 16, 32, 48, 64, 80, 112, 128].map(v).to_vec();
    let lens = |width| {
        runs(&list, width)
            .iter()
            .map(|r| r.len())
            .collect::<Vec<_>>()
    };
    assert_eq!(lens(4), [4, 2, 2]);
    assert_eq!(lens(1), [1; 8]);
    assert_eq!(lens(8), [6, 2]);
    let flat: Vec<u32> = runs(&list, 3)
        .iter()
        .flat_map(|r| r.iter().map(|v| v.src))
        .collect();
    assert_eq!(flat, list.iter().map(|v| v.src).collect::<Vec<_>>());
    assert!(runs(&[], 4).is_empty());
}

/// Each point's pass reads the slot that holds it in every chunk kind: the packed
/// layout's entries per point are those `chanwino::points` lists, in slot order.
#[test]
fn point_slots_follow_the_chunks_points() {
    for taps in 1..=3 {
        let i = 3 - taps;
        for (slot, &j) in chanwino::points(taps).iter().enumerate() {
            assert_eq!(point_slot(i, j), Some(slot), "{taps} columns, point {j}");
        }
        let count = (0..4).filter(|&j| point_slot(i, j).is_some()).count();
        assert_eq!(count, PACKED_POINTS[i]);
        assert_eq!(count, chanwino::points(taps).len());
    }
}

#[test]
fn chunks_hold_whole_runs_in_order() {
    let v = |src: u32| Vector {
        src,
        halves: [(0, 1), (0, 0)],
    };
    let list: Vec<Vector> = [0, 16, 32, 48, 64, 80, 112, 128, 144].map(v).to_vec();
    let r = runs(&list, 4);
    for chunk in [1, 2, 4, 5, 100] {
        let chunks = chunk_runs(&r, chunk);
        let flat: Vec<u32> = chunks
            .iter()
            .flat_map(|c| c.iter().flat_map(|run| run.iter().map(|v| v.src)))
            .collect();
        assert_eq!(flat, list.iter().map(|v| v.src).collect::<Vec<_>>());
        for c in &chunks {
            let len: usize = c.iter().map(|run| run.len()).sum();
            assert!(c.len() == 1 || len <= chunk, "chunk {chunk}: {len} vectors");
        }
    }
}
