use super::*;
use serde_json::json;

fn build(name: &str, params: Value) -> Result<Kernel2d, PresetError> {
    let Value::Object(map) = params else {
        panic!("params must be an object")
    };
    build_preset(name, &map)
}

fn default(name: &str) -> Kernel2d {
    build(name, json!({})).expect("defaults build")
}

fn k(k_h: usize, k_w: usize, weights: &[f32]) -> Kernel2d {
    Kernel2d {
        k_h,
        k_w,
        weights: weights.to_vec(),
    }
}

fn assert_close(actual: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!((f64::from(a) - e).abs() <= tol, "weight {i}: {a} vs {e}");
    }
}

#[test]
fn fixed_presets_have_the_textbook_weights() {
    let cases: &[(&str, Kernel2d)] = &[
        ("edge_1x3", k(1, 3, &[1., 0., -1.])),
        (
            "laplacian",
            k(
                3,
                3,
                &[
                    -0.125, -0.125, -0.125, -0.125, 1., -0.125, -0.125, -0.125, -0.125,
                ],
            ),
        ),
        (
            "laplacian4",
            k(3, 3, &[0., -1., 0., -1., 4., -1., 0., -1., 0.]),
        ),
        ("sobel_x", k(3, 3, &[-1., 0., 1., -2., 0., 2., -1., 0., 1.])),
        ("sobel_y", k(3, 3, &[-1., -2., -1., 0., 0., 0., 1., 2., 1.])),
        (
            "scharr_x",
            k(3, 3, &[-3., 0., 3., -10., 0., 10., -3., 0., 3.]),
        ),
        (
            "scharr_y",
            k(3, 3, &[-3., -10., -3., 0., 0., 0., 3., 10., 3.]),
        ),
        (
            "prewitt_x",
            k(3, 3, &[-1., 0., 1., -1., 0., 1., -1., 0., 1.]),
        ),
        (
            "prewitt_y",
            k(3, 3, &[-1., -1., -1., 0., 0., 0., 1., 1., 1.]),
        ),
        (
            "sharpen",
            k(3, 3, &[0., -1., 0., -1., 5., -1., 0., -1., 0.]),
        ),
        ("emboss", k(3, 3, &[-2., -1., 0., -1., 1., 1., 0., 1., 2.])),
        (
            "outline",
            k(3, 3, &[-1., -1., -1., -1., 8., -1., -1., -1., -1.]),
        ),
    ];
    for (name, expected) in cases {
        assert_eq!(&default(name), expected, "preset {name}");
    }
}

#[test]
fn sobel_x_responds_positively_to_intensity_increasing_to_the_right() {
    let kernel = default("sobel_x");
    // 3×3 patch whose columns are 0, 1, 2 (brighter to the right).
    let response: f32 = kernel
        .weights
        .iter()
        .enumerate()
        .map(|(i, w)| w * (i % 3) as f32)
        .sum();
    assert!(response > 0.0);
}

#[test]
fn identity_has_a_single_one_in_the_centre() {
    assert_eq!(
        default("identity"),
        k(3, 3, &[0., 0., 0., 0., 1., 0., 0., 0., 0.])
    );
    let five = build("identity", json!({"size": 5})).unwrap();
    assert_eq!((five.k_h, five.k_w), (5, 5));
    assert_eq!(five.weights[12], 1.0);
    assert_eq!(five.weights.iter().sum::<f32>(), 1.0);
    assert_eq!(
        build("identity", json!({"size": 1})).unwrap(),
        k(1, 1, &[1.])
    );
}

#[test]
fn box_is_normalised_and_allows_even_and_rectangular_sizes() {
    assert_eq!(default("box"), k(3, 3, &[1. / 9.; 9]));
    assert_eq!(
        build("box", json!({"size": 2})).unwrap(),
        k(2, 2, &[0.25; 4])
    );
    assert_eq!(
        build("box", json!({"size": 4, "width": 2})).unwrap(),
        k(4, 2, &[0.125; 8])
    );
    assert_eq!(
        build("box", json!({"height": 1, "width": 5})).unwrap(),
        k(1, 5, &[0.2; 5])
    );
    assert_eq!(
        build("box", json!({"size": 63})).unwrap().weights.len(),
        63 * 63
    );
}

#[test]
fn gaussian_matches_a_hand_computed_3x3_sigma_1_kernel() {
    let g = build("gaussian", json!({"size": 3, "sigma": 1.0})).unwrap();
    // Corner e^-1, edge e^-0.5, centre 1, normalised by their sum.
    let (c, e) = ((-1.0_f64).exp(), (-0.5_f64).exp());
    let s = 1.0 + 4.0 * e + 4.0 * c;
    let expected = [
        c / s,
        e / s,
        c / s,
        e / s,
        1.0 / s,
        e / s,
        c / s,
        e / s,
        c / s,
    ];
    assert_close(&g.weights, &expected, 1e-7);
    assert_close(
        &g.weights[..3],
        &[0.075_113_61, 0.123_841_36, 0.075_113_61],
        1e-7,
    );
}

#[test]
fn gaussian_sums_to_one_and_uses_the_opencv_sigma_rule_by_default() {
    for size in [1, 3, 5, 7, 15, 63] {
        let g = build("gaussian", json!({"size": size})).unwrap();
        let sum: f64 = g.weights.iter().map(|&w| f64::from(w)).sum();
        assert!((sum - 1.0).abs() < 1e-5, "size {size}: sum {sum}");
    }
    assert!((opencv_sigma(5) - 1.1).abs() < 1e-12);
    assert!((opencv_sigma(3) - 0.8).abs() < 1e-12);
    let by_rule = default("gaussian");
    let explicit = build("gaussian", json!({"size": 5, "sigma": 1.1})).unwrap();
    assert_close(
        &by_rule.weights,
        &explicit
            .weights
            .iter()
            .map(|&w| f64::from(w))
            .collect::<Vec<_>>(),
        1e-7,
    );
    assert_eq!((by_rule.k_h, by_rule.k_w), (5, 5));
}

#[test]
fn unsharp_is_scaled_identity_minus_scaled_gaussian() {
    let u = build("unsharp", json!({"size": 3, "sigma": 1, "amount": 0.5})).unwrap();
    let g = build("gaussian", json!({"size": 3, "sigma": 1})).unwrap();
    let expected: Vec<f64> = g
        .weights
        .iter()
        .enumerate()
        .map(|(i, &w)| if i == 4 { 1.5 } else { 0.0 } - 0.5 * f64::from(w))
        .collect();
    assert_close(&u.weights, &expected, 1e-6);
    let sum: f32 = default("unsharp").weights.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "unsharp preserves flat areas");
    assert_eq!(default("unsharp").k_h, 5);
}

#[test]
fn separability_is_detected_for_rank_one_kernels_only() {
    let separable: Vec<&str> = catalogue()
        .iter()
        .filter(|p| p.separable)
        .map(|p| p.name)
        .collect();
    assert_eq!(
        separable,
        [
            "identity",
            "edge_1x3",
            "sobel_x",
            "sobel_y",
            "scharr_x",
            "scharr_y",
            "prewitt_x",
            "prewitt_y",
            "box",
            "gaussian"
        ]
    );
    let (u, v) = rank1_factors(&default("sobel_x")).unwrap();
    let sobel = default("sobel_x");
    for (i, &w) in sobel.weights.iter().enumerate() {
        assert!((u[i / 3] * v[i % 3] - f64::from(w)).abs() < 1e-12);
    }
    assert!(is_separable(&k(2, 2, &[0.0; 4])));
    assert!(
        !is_separable(&k(2, 2, &[1.0; 3])),
        "inconsistent length is not separable"
    );
}

#[test]
fn catalogue_lists_every_preset_in_order_with_its_parameters() {
    let cat = catalogue();
    let names: Vec<&str> = cat.iter().map(|p| p.name).collect();
    assert_eq!(names, PRESET_NAMES);
    assert_eq!(PRESETS.len(), PRESET_NAMES.len());
    let gaussian = cat.iter().find(|p| p.name == "gaussian").unwrap();
    let params: Vec<&str> = gaussian.params.iter().map(|p| p.name).collect();
    assert_eq!(params, ["size", "sigma"]);
    assert_eq!(gaussian.params[0].default, json!(5));
    assert_eq!(gaussian.params[0].kind, "int");
    assert_eq!(gaussian.params[1].kind, "number");
    let json = serde_json::to_value(&cat).unwrap();
    assert_eq!(json[0]["kernel"]["k_h"], json!(3));
    assert_eq!(json[10]["params"][1]["default"], Value::Null);
    for p in &cat {
        assert_eq!(
            p.kernel.weights.len(),
            p.kernel.k_h * p.kernel.k_w,
            "{}",
            p.name
        );
    }
}

#[test]
fn integral_floats_and_nulls_are_accepted_as_parameters() {
    assert_eq!(build("identity", json!({"size": 5.0})).unwrap().k_h, 5);
    assert_eq!(
        build("box", json!({"width": null})).unwrap(),
        default("box")
    );
}

#[test]
fn unknown_presets_list_the_known_ones() {
    let err = build("blur", json!({})).unwrap_err();
    assert!(matches!(&err, PresetError::Unknown { name, .. } if name == "blur"));
    assert!(err.to_string().contains("sobel_x, sobel_y"), "{err}");
}

#[test]
fn unknown_parameters_are_rejected_with_the_accepted_list() {
    let err = build("gaussian", json!({"radius": 2})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "preset `gaussian` does not take parameter `radius`; it takes: size, sigma"
    );
    let err = build("sobel_x", json!({"size": 3})).unwrap_err();
    assert!(
        err.to_string().ends_with("it takes: no parameters"),
        "{err}"
    );
}

#[test]
fn bad_parameter_values_are_rejected() {
    let cases = [
        ("gaussian", json!({"size": 4}), "size", "must be odd"),
        ("identity", json!({"size": 2}), "size", "must be odd"),
        ("gaussian", json!({"size": 65}), "size", "between 1 and 63"),
        ("box", json!({"size": 0}), "size", "between 1 and 63"),
        ("box", json!({"width": 64}), "width", "between 1 and 63"),
        ("box", json!({"size": 2.5}), "size", "must be an integer"),
        ("box", json!({"size": "3"}), "size", "must be an integer"),
        ("box", json!({"size": -3}), "size", "between 1 and 63"),
        ("gaussian", json!({"sigma": -1.0}), "sigma", "at least 0"),
        (
            "gaussian",
            json!({"sigma": "wide"}),
            "sigma",
            "finite number",
        ),
        ("unsharp", json!({"amount": [1]}), "amount", "finite number"),
        (
            "unsharp",
            json!({"amount": true}),
            "amount",
            "finite number",
        ),
    ];
    for (preset, params, param, reason) in cases {
        match build(preset, params.clone()) {
            Err(PresetError::BadParam {
                param: p,
                reason: r,
            }) => {
                assert_eq!(p, param, "{preset} {params}");
                assert!(r.contains(reason), "{preset} {params}: {r}");
            }
            other => panic!("{preset} {params}: expected BadParam, got {other:?}"),
        }
    }
}

#[test]
fn huge_sigma_and_tiny_sigma_still_give_finite_normalised_kernels() {
    for sigma in [1e-300, 1e-3, 1e6, 1e200] {
        let g = build("gaussian", json!({"size": 3, "sigma": sigma})).unwrap();
        assert!(g.weights.iter().all(|w| w.is_finite()), "sigma {sigma}");
        let sum: f32 = g.weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "sigma {sigma}");
    }
}

#[test]
fn sides_are_bounded_by_the_given_max_side() {
    let map = |v: Value| match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let b = build_preset_within("box", &map(json!({"size": 64})), 64).unwrap();
    assert_eq!((b.k_h, b.k_w), (64, 64));
    let err = build_preset_within("box", &map(json!({"size": 65})), 64).unwrap_err();
    assert!(err.to_string().contains("between 1 and 64"), "{err}");
    let err = build_preset_within("gaussian", &map(json!({"size": 9})), 8).unwrap_err();
    assert!(err.to_string().contains("between 1 and 8"), "{err}");
    let cat = catalogue_within(64);
    let b = cat.iter().find(|p| p.name == "box").unwrap();
    assert!(b.params.iter().all(|p| p.max == Some(64.0)));
}
