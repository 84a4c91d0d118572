//! `POST /v1/conv2d` and `/v1/conv2d/shape` against the PaddlePaddle reference fixtures.

use serde_json::{json, Value};

use crate::helpers::{expect_problem, fixture, flatten, read_npy_f32, spawn_app, spawn_app_with};

const REQUEST_FIELDS: &[&str] = &[
    "input",
    "weight",
    "bias",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
];

fn request_of(case: &Value) -> Value {
    let mut req = serde_json::Map::new();
    for f in REQUEST_FIELDS {
        if let Some(v) = case.get(*f) {
            req.insert((*f).into(), v.clone());
        }
    }
    Value::Object(req)
}

fn load(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn every_reference_case_matches_paddle_within_its_tolerance() {
    let app = spawn_app().await;
    let mut paths: Vec<_> = std::fs::read_dir(fixture("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(paths.len() >= 100, "fixtures missing");
    let (mut exact, mut total) = (0, 0);
    for path in paths {
        let case = load(&path);
        let name = case["name"].as_str().unwrap().to_string();
        let res = app.conv2d(&request_of(&case)).await;
        assert_eq!(res.status(), 200, "{name}: {}", res.text().await.unwrap());
        assert!(res.headers().contains_key("server-timing"));
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["shape"], case["expected_shape"], "{name}");
        assert_eq!(body["datatype"], "FP32");
        let mut expected = Vec::new();
        flatten(&case["expected"], &mut expected);
        let mut got = Vec::new();
        flatten(&body["data"], &mut got);
        assert_eq!(got.len(), expected.len(), "{name}");
        let atol = case["tolerance"]["atol"].as_f64().unwrap();
        let is_exact = case["exact"].as_bool().unwrap_or(false);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            if is_exact {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{name}[{i}]: {g} != {e} (exact case)"
                );
            } else {
                assert!(
                    ((*g as f64) - (*e as f64)).abs() <= atol,
                    "{name}[{i}]: {g} vs {e}, atol {atol}"
                );
            }
        }
        exact += usize::from(is_exact);
        total += 1;
    }
    assert!(exact >= 12, "only {exact} exact cases");
    assert!(total >= 100);
}

#[tokio::test]
async fn every_invalid_spec_is_refused_with_a_problem_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let doc = load(&fixture("invalid.json"));
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let res = app.conv2d(&request_of(case)).await;
        let status = res.status().as_u16();
        assert!((400..500).contains(&status), "{name}: status {status}");
        let body = expect_problem(res, status).await;
        assert!(body["pointer"].is_string(), "{name}: no pointer in {body}");
    }
    textbook_2x2_is_answered(&app).await;
}

async fn textbook_2x2_is_answered(app: &crate::helpers::TestApp) {
    let res = app
        .conv2d(&json!({"input": [[[[1,2,3],[4,5,6],[7,8,9]]]], "weight": [[[[0,1],[2,3]]]]}))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"], json!([25.0, 31.0, 43.0, 49.0]));
}

#[tokio::test]
async fn textbook_cross_correlation_gives_25_31_43_49() {
    let app = spawn_app().await;
    textbook_2x2_is_answered(&app).await;
}

#[tokio::test]
async fn textbook_bias_one_gives_26_32_44_50_with_shape_details() {
    let app = spawn_app().await;
    let res = app
        .conv2d(&json!({"input": [[[[1,2,3],[4,5,6],[7,8,9]]]], "weight": [[[[0,1],[2,3]]]], "bias": [1],
                        "stride": [1,1], "padding": [0,0,0,0], "dilation": [1,1], "groups": 1, "padding_mode": "zeros"}))
        .await;
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["shape"], json!([1, 1, 2, 2]));
    assert_eq!(b["data"], json!([26.0, 32.0, 44.0, 50.0]));
    assert_eq!(b["receptive_field"], json!([2, 2]));
    assert_eq!(b["padding"], json!([0, 0, 0, 0]));
    assert_eq!(b["macs"], 16);
    assert_eq!(b["input_shape"], json!([1, 1, 3, 3]));
}

#[tokio::test]
async fn textbook_padding_one_and_two_grow_the_output() {
    let app = spawn_app().await;
    let input: Vec<Vec<f32>> = (0..4)
        .map(|i| (0..4).map(|j| (i * 4 + j) as f32).collect())
        .collect();
    for (pad, side) in [(1, 4), (2, 6)] {
        let res = app
            .conv2d(&json!({"input": [[input]], "weight": [[[[1,1,1],[1,1,1],[1,1,1]]]], "padding": pad}))
            .await;
        let b: Value = res.json().await.unwrap();
        assert_eq!(b["shape"], json!([1, 1, side, side]), "padding {pad}");
        assert_eq!(b["padding"], json!([pad, pad, pad, pad]));
    }
}

#[tokio::test]
async fn textbook_stride_two_on_100x100_gives_50x50() {
    let app = spawn_app().await;
    let res = app
        .conv2d(&json!({"input": {"shape": [1,1,100,100], "datatype": "FP32", "data": vec![1.0f32; 10_000]},
                        "weight": [[[[1,1,1],[1,1,1],[1,1,1]]]], "stride": 2, "padding": 1}))
        .await;
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["shape"], json!([1, 1, 50, 50]));
    // Interior outputs see all nine ones; the top-left corner sees four.
    assert_eq!(b["data"][0], 4.0);
    assert_eq!(b["data"][51], 9.0);
}

#[tokio::test]
async fn two_stacked_3x3_layers_see_5x5_with_relu() {
    let app = spawn_app().await;
    let ones = json!([[[[1, 1, 1], [1, 1, 1], [1, 1, 1]]]]);
    let res = app
        .conv2d(&json!({"input": {"shape": [1,1,7,7], "data": vec![1.0f32; 49]},
                        "layers": [{"weight": ones, "bias": [-10], "activation": "relu"}, {"weight": ones}]}))
        .await;
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["shape"], json!([1, 1, 3, 3]));
    assert_eq!(b["receptive_field"], json!([5, 5]));
    assert_eq!(b["layers"][1]["receptive_field"], json!([5, 5]));
    // The first layer gives 9 − 10 = −1 everywhere, relu makes it 0.
    assert_eq!(b["data"], json!(vec![0.0; 9]));
}

#[tokio::test]
async fn same_padding_keeps_the_size_and_puts_the_odd_pixel_bottom_right() {
    let app = spawn_app().await;
    let res = app
        .conv2d(
            &json!({"input": {"shape": [1,1,5,5], "data": vec![1.0f32; 25]},
                        "weight": [[[[1,1],[1,1]]]], "padding": "same"}),
        )
        .await;
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["shape"], json!([1, 1, 5, 5]));
    assert_eq!(b["padding"], json!([0, 1, 0, 1]));
}

#[tokio::test]
async fn npy_output_is_served_when_accepted() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/conv2d"))
        .header("accept", "application/x-npy")
        .json(&json!({"input": [[[[1,2,3],[4,5,6],[7,8,9]]]], "weight": [[[[0,1],[2,3]]]], "bias": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-npy");
    let (shape, data) = read_npy_f32(&res.bytes().await.unwrap());
    assert_eq!(shape, vec![1, 1, 2, 2]);
    assert_eq!(data, vec![26.0, 32.0, 44.0, 50.0]);
}

#[tokio::test]
async fn multipart_npy_parts_are_accepted() {
    let app = spawn_app().await;
    let input = convd::npy::write_npy_f32(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let weight = convd::npy::write_npy_f32(&[1, 1, 2, 2], &[0., 1., 2., 3.]);
    let bias = convd::npy::write_npy_f32(&[1], &[1.]);
    let form = reqwest::multipart::Form::new()
        .part(
            "input",
            reqwest::multipart::Part::bytes(input).file_name("x.npy"),
        )
        .part(
            "weight",
            reqwest::multipart::Part::bytes(weight).file_name("w.npy"),
        )
        .part(
            "bias",
            reqwest::multipart::Part::bytes(bias).file_name("b.npy"),
        )
        .text("spec", r#"{"stride": 1, "padding": "valid"}"#);
    let res = app
        .client
        .post(app.url("/v1/conv2d"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
}

#[tokio::test]
async fn multipart_with_a_bad_spec_field_points_at_it() {
    let app = spawn_app().await;
    let input = convd::npy::write_npy_f32(&[1, 1, 3, 3], &[0.0; 9]);
    let weight = convd::npy::write_npy_f32(&[1, 1, 2, 2], &[0.0; 4]);
    let form = reqwest::multipart::Form::new()
        .part("input", reqwest::multipart::Part::bytes(input))
        .part("weight", reqwest::multipart::Part::bytes(weight))
        .text("spec", r#"{"strid": 1}"#);
    let res = app
        .client
        .post(app.url("/v1/conv2d"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let b = expect_problem(res, 422).await;
    assert_eq!(b["pointer"], "/parts/spec/strid");
}

#[tokio::test]
async fn shape_endpoint_plans_without_computing() {
    let app = spawn_app().await;
    let res = app
        .conv2d_shape(&json!({"input_shape": [8, 64, 56, 56],
                              "layers": [{"weight_shape": [64, 64, 3, 3], "padding": 1},
                                         {"weight_shape": [64, 64, 3, 3], "padding": 1, "stride": 2}]}))
        .await;
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["output_shape"], json!([8, 64, 28, 28]));
    assert_eq!(b["receptive_field"], json!([5, 5]));
    assert_eq!(b["jump"], json!([2, 2]));
    assert_eq!(b["layers"][0]["macs"], 8u64 * 64 * 56 * 56 * 64 * 9);
    let res = app
        .conv2d_shape(&json!({"input_shape": [1, 1, 2, 2], "weight_shape": [1, 1, 3, 3]}))
        .await;
    let b = expect_problem(res, 422).await;
    assert_eq!(b["pointer"], "/weight_shape");
}

#[tokio::test]
async fn errors_name_the_field_at_fault() {
    let app = spawn_app().await;
    let x = json!([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]);
    let w = json!([[[[0, 1], [2, 3]]]]);
    for (body, status, pointer) in [
        (
            json!({"input": x, "weight": w, "stride": 0}),
            422,
            "/stride",
        ),
        (
            json!({"input": x, "weight": w, "padding": [1, -1]}),
            422,
            "/padding",
        ),
        (
            json!({"input": x, "weight": w, "bias": [1, 2]}),
            422,
            "/bias",
        ),
        (
            json!({"input": x, "weight": w, "colour": 1}),
            422,
            "/colour",
        ),
        (
            json!({"input": [[[[1, "2"]]]], "weight": w}),
            422,
            "/input/0/0/0/1",
        ),
        (
            json!({"input": x, "layers": [{"weight": w}, {"weight": w, "dilation": -1}]}),
            422,
            "/layers/1/dilation",
        ),
        (
            json!({"input": x, "weight": w, "padding_mode": "mirror"}),
            422,
            "/padding_mode",
        ),
    ] {
        let res = app.conv2d(&body).await;
        let b = expect_problem(res, status).await;
        assert_eq!(b["pointer"], pointer, "{body}: {b}");
    }
}

#[tokio::test]
async fn malformed_json_is_400_and_wrong_content_type_is_415() {
    let app = spawn_app().await;
    expect_problem(
        app.conv2d_raw("application/json", "{\"input\": [[[[1,2]]]")
            .await,
        400,
    )
    .await;
    expect_problem(app.conv2d_raw("text/plain", "hello").await, 415).await;
}

#[tokio::test]
async fn an_overflowing_output_is_reported_not_sent_as_null() {
    let app = spawn_app().await;
    let res = app
        .conv2d(&json!({"input": [[[[3e38, 3e38]]]], "weight": [[[[1, 1]]]]}))
        .await;
    let b = expect_problem(res, 422).await;
    assert_eq!(b["type"], "urn:convd:problem:output-not-finite");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_limit_and_actual() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 1000).await;
    let big =
        json!({"input": {"shape": [1,1,1,500], "data": vec![1.0f32; 500]}, "weight": [[[[1]]]]});
    let b = expect_problem(app.conv2d(&big).await, 413).await;
    assert_eq!(b["limit"], 1000);
    assert!(b["actual"].as_u64().unwrap() > 1000);
}

#[tokio::test]
async fn the_compute_budget_is_enforced_before_computing() {
    let app = spawn_app_with(|s| s.limits.max_macs = 10).await;
    let b = expect_problem(
        app.conv2d(&json!({"input": [[[[1,2,3],[4,5,6],[7,8,9]]]], "weight": [[[[0,1],[2,3]]]]}))
            .await,
        422,
    )
    .await;
    assert_eq!(b["limit"], 10);
    assert_eq!(b["actual"], 16);
}

/// A layer `[c_out, c_in, k, k]` of ones-ish values as nested JSON, and its input.
fn layer_request(input: [usize; 4], weight: [usize; 4], extra: Value) -> Value {
    let n_in: usize = input.iter().product();
    let n_w: usize = weight.iter().product();
    let mut body = json!({
        "input": {"shape": input, "data": (0..n_in).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>()},
        "weight": {"shape": weight, "data": (0..n_w).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<_>>()},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn the_algorithm_that_ran_is_in_the_report_the_shape_plan_and_server_timing() {
    let app = spawn_app().await;
    // (input, weight, params, algorithm): one per class of layer. Where the CPU has
    // AVX-512, stems and first layers on RGB run vectors of output channels (with their
    // kernel rows as 1-D Winograd for long rows), deeper strided layers a GEMM reading
    // the padded planes in place, and deep 3×3 on small planes that GEMM over vectors of
    // output pairs with kernel rows as 1-D Winograd; elsewhere all gather im2col blocks.
    // On Zen 5's 512-bit FMA pipes the GEMM reading the planes in place gains most, and
    // runs the deep 3×3 on small planes too (the plan's rates per CPU).
    let zen5 = convd::conv::plan::rates::detected() == &convd::conv::plan::rates::ZEN5;
    let (gemm, stem, rows, deep) = if convd::conv::igemm::available() && zen5 {
        (
            "implicit_gemm",
            "channel_tile",
            "channel_winograd",
            "implicit_gemm",
        )
    } else if convd::conv::igemm::available() {
        (
            "implicit_gemm",
            "channel_tile",
            "channel_winograd",
            "implicit_winograd",
        )
    } else {
        ("gemm_im2col", "gemm_im2col", "gemm_im2col", "gemm_im2col")
    };
    let cases = [
        ([1, 64, 12, 12], [32, 64, 1, 1], json!({}), "gemm_pointwise"),
        (
            [1, 3, 112, 112],
            [64, 3, 7, 7],
            json!({"stride": 2, "padding": 3}),
            rows,
        ),
        ([1, 3, 48, 66], [32, 3, 3, 3], json!({"padding": 1}), stem),
        (
            [1, 32, 20, 20],
            [16, 32, 3, 3],
            json!({"stride": 2, "padding": 1}),
            gemm,
        ),
        (
            [1, 128, 7, 7],
            [128, 128, 3, 3],
            json!({"padding": 1}),
            deep,
        ),
        (
            [1, 8, 20, 20],
            [8, 1, 3, 3],
            json!({"groups": 8, "stride": 2, "padding": 1}),
            "phased",
        ),
        (
            [1, 1, 30, 300],
            [1, 1, 3, 3],
            json!({"padding": 1}),
            "direct",
        ),
    ];
    for (input, weight, params, algo) in cases {
        let res = app
            .conv2d(&layer_request(input, weight, params.clone()))
            .await;
        assert_eq!(res.status(), 200);
        let timing = res.headers()["server-timing"].to_str().unwrap().to_string();
        assert!(
            timing.contains(&format!("conv;desc=\"{algo}\";dur=")),
            "{input:?} {weight:?}: {timing}"
        );
        let b: Value = res.json().await.unwrap();
        assert_eq!(b["layers"][0]["algorithm"], algo, "{input:?} {weight:?}");
        assert!(!b["layers"][0]["algorithm_reason"]
            .as_str()
            .unwrap()
            .is_empty());
        let mut shape = json!({"input_shape": input, "weight_shape": weight});
        for (k, v) in params.as_object().unwrap() {
            shape[k] = v.clone();
        }
        let s: Value = app.conv2d_shape(&shape).await.json().await.unwrap();
        assert_eq!(s["layers"][0]["algorithm"], algo);
    }
    // A rank-1 5×5 kernel planned as a direct kernel runs as two 1-D passes.
    let mut body = layer_request([1, 1, 30, 300], [1, 1, 5, 5], json!({"padding": 2}));
    body["weight"]["data"] = json!(vec![1.0; 25]);
    let res = app.conv2d(&body).await;
    assert!(res.headers()["server-timing"]
        .to_str()
        .unwrap()
        .contains("conv;desc=\"separable\""));
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["layers"][0]["algorithm"], "separable");
    // A stack names every layer's algorithm in order.
    let res = app
        .conv2d(&json!({"input": {"shape": [1, 16, 24, 24], "data": vec![1.0f32; 16 * 24 * 24]},
                        "layers": [{"weight": {"shape": [32, 16, 1, 1], "data": vec![1.0f32; 512]}},
                                   {"weight": {"shape": [32, 1, 3, 3], "data": vec![0.5f32; 288]}, "groups": 32, "stride": 2}]}))
        .await;
    let timing = res.headers()["server-timing"].to_str().unwrap().to_string();
    assert!(
        timing.contains("conv;desc=\"gemm_pointwise+phased\""),
        "{timing}"
    );
}
