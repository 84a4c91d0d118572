use proptest::prelude::*;

use super::*;
use crate::conv::params::{Conv2dParams, Padding};
use crate::conv::testutil::{check_against_reference, drawn_geom};

fn check(g: &Conv2dGeometry, seed: u32, bias: bool) {
    check_banded(g, seed, bias, BAND_BYTES);
}

fn check_banded(g: &Conv2dGeometry, seed: u32, bias: bool, band_bytes: usize) {
    // Whole tasks per chunk, or chunks of a few tiles (the path of large planes).
    let chunk_bytes = if seed.is_multiple_of(3) {
        CHUNK_BYTES
    } else {
        64 + seed as usize % 4096
    };
    check_against_reference(g, seed, bias, |x, w, b| {
        conv2d_banded(x, w, b, g, &CancelToken::new(), band_bytes, chunk_bytes).unwrap()
    });
}

use crate::conv::testutil::simple_geom as geom;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Strides 1–3, dilations 1–3, groups, every padding mode, batch 1–3, 1×1 to 5×5,
    /// output channels that do and do not fill the 8-row tile, planes from 1 to 40
    /// wide (flat and per-row vectors, masked tails).
    #[test]
    fn equals_reference(
        (n, groups, cpg, opg, h, w) in (1usize..4, 1usize..4, 1usize..6, 1usize..20, 1usize..24, 1usize..40),
        (k_h, k_w, s_h, s_w, d_h, d_w) in (1usize..6, 1usize..6, 1usize..4, 1usize..4, 1usize..4, 1usize..4),
        (mode, t, b, l, r, same, bias, seed) in (0usize..5, 0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4, any::<bool>(), any::<u32>()),
    ) {
        if !available() {
            return Ok(());
        }
        let Some(g) = drawn_geom((n, groups, cpg, opg, h, w), (k_h, k_w, s_h, s_w, d_h, d_w), (mode, t, b, l, r, same)) else { return Ok(()) };
        // Whole padded planes, and bands of a few rows (the path of large planes).
        check_banded(&g, seed, bias, if seed % 2 == 0 { BAND_BYTES } else { 256 + seed as usize % 2048 });
    }
}

#[test]
fn cnn_shapes_equal_the_reference() {
    if !available() {
        eprintln!("skipped: no AVX-512F on this CPU");
        return;
    }
    // A stem (stride 2), a 7×7 plane split by channels (flat, a compressed store in
    // most vectors), a wide plane with a masked tail, AlexNet's 11×11/4 (flat over
    // four phase planes).
    check(&geom([1, 3, 40, 44], [24, 3, 7, 7], 2, 3), 1, true);
    check(&geom([1, 3, 67, 67], [16, 3, 11, 11], 4, 2), 6, true);
    check(&geom([1, 64, 7, 7], [40, 64, 3, 3], 1, 1), 2, true);
    check(&geom([2, 8, 9, 37], [16, 8, 3, 3], 1, 1), 3, false);
    // Banded: planes padded a few rows at a time inside the tasks.
    check_banded(&geom([1, 3, 40, 44], [24, 3, 7, 7], 2, 3), 4, true, 4096);
    check_banded(&geom([2, 8, 29, 37], [16, 8, 3, 3], 1, 1), 5, true, 4096);
    check_banded(&geom([1, 3, 67, 67], [16, 3, 11, 11], 4, 2), 7, true, 4096);
}

#[test]
fn vectors_keep_each_output_once_and_waste_little() {
    let v = Vectors::new;
    // 56 wide, 3×3: flat over 58-wide padded rows beats 4 vectors per row.
    let g = geom([1, 4, 56, 56], [8, 4, 3, 3], 1, 1);
    let vs = v(&g);
    assert_eq!(vs.list.len(), (56 * 58usize).div_ceil(16));
    assert!(vs.list.iter().any(|x| x.mask & x.mask.wrapping_add(1) != 0));
    // Stride 2 with 112 outputs per row: per row, 7 full vectors.
    let g = geom([1, 3, 224, 224], [8, 3, 7, 7], 2, 3);
    let vs = v(&g);
    assert_eq!(vs.list.len(), 112 * 7);
    assert!(vs.list.iter().all(|x| x.mask == u16::MAX));
    // Stride 2 with 28 outputs per row: flat over rows of 29 (2 vectors per row would
    // waste 4 lanes in 32).
    let g = geom([1, 64, 56, 56], [8, 64, 3, 3], 2, 1);
    assert_eq!(v(&g).list.len(), (28 * 29usize).div_ceil(16));
    // AlexNet's stem, 11×11/4 → 55 per row: flat over rows of 57, not 4 per row.
    let g = geom([1, 3, 224, 224], [8, 3, 11, 11], 4, 2);
    assert_eq!(g.out_w, 55);
    assert_eq!(v(&g).list.len(), (55 * 57usize).div_ceil(16));
}

#[test]
fn flat_vector_count_matches_counting_each_vector() {
    for (w, k, pad, s) in [
        (56, 3, 1, 1),
        (7, 3, 1, 1),
        (5, 15, 7, 1),
        (40, 1, 0, 1),
        (3, 5, 9, 1),
        (17, 3, 0, 1),
        (56, 3, 1, 2),
        (224, 11, 2, 4),
        (31, 5, 2, 3),
    ] {
        for h in [1, 2, 7, 13] {
            let params = Conv2dParams {
                padding: Padding::Explicit([pad; 4]),
                stride: [s, s],
                ..Default::default()
            };
            let Ok(g) = Conv2dGeometry::new([1, 1, h, w], [1, 1, k, k], None, &params) else {
                continue;
            };
            let row_len = (g.w + 2 * pad).div_ceil(s);
            let len = g.out_h * row_len;
            let brute = (0..len)
                .step_by(16)
                .filter(|&q| (q..(q + 16).min(len)).any(|x| x % row_len < g.out_w))
                .count();
            assert_eq!(flat_vectors(&g), brute, "{g:?}");
        }
    }
}

#[test]
fn tasks_cover_every_panel_and_tile_once() {
    for (g, tiles, panels) in [
        (geom([1, 512, 7, 7], [512, 512, 3, 3], 1, 1), 2, 64),
        (geom([1, 3, 224, 224], [64, 3, 7, 7], 2, 3), 262, 8),
        (geom([1, 16, 8, 8], [16, 16, 3, 3], 1, 1), 2, 2),
    ] {
        let k = g.c_in * g.k_h * g.k_w;
        let tasks = plan_tasks(&g, tiles, panels, k, 1 + tiles % 3, 5);
        let mut seen = vec![0u8; tiles * panels];
        for t in &tasks {
            for p in t.panels.clone() {
                for x in t.tiles.clone() {
                    seen[p * tiles + x] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        assert!(tasks.iter().all(|t| (1..=t.tiles.len()).contains(&t.chunk)));
        if g.macs() > 1 << 24 {
            assert!(tasks.len() >= 2 * rayon::current_num_threads());
        }
    }
}

#[test]
fn a_fired_token_stops_it() {
    if !available() {
        return;
    }
    let g = geom([2, 16, 8, 8], [16, 16, 3, 3], 1, 1);
    let x = Array4::zeros(g.input_shape());
    let w = Array4::zeros(g.weight_shape());
    let t = CancelToken::new();
    t.cancel();
    assert_eq!(
        conv2d_igemm(x.view(), w.view(), None, &g, &t),
        Err(Cancelled)
    );
}
