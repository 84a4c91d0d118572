//! Regression tests for the "new user" findings of issue #12 that were fixed in the code
//! (the ones fixed in README are covered where README points: `images.rs`, `codec::decode`).

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::helpers::{expect_problem, fixture, read_npy_f32, spawn_app, spawn_app_with, TestApp};

async fn convolve(app: &TestApp, image: &str, spec: Value) -> reqwest::Response {
    let bytes = std::fs::read(fixture(&format!("images/{image}"))).unwrap();
    let form = Form::new()
        .text("spec", spec.to_string())
        .part("image", Part::bytes(bytes).file_name(image.to_string()));
    app.client
        .post(app.url("/v1/convolve"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_box_preset_takes_every_side_a_kernel_may_have() {
    let app = spawn_app().await;
    // max_kernel_side is 64: a 64×64 kernel and a 64×64 box are both accepted...
    let npy = json!({"format": "npy"});
    let kernel = vec![vec![1.0 / 4096.0; 64]; 64];
    let res = convolve(&app, "camera.png", json!({"kernel": kernel, "output": npy})).await;
    assert_eq!(res.status(), 200);
    let by_kernel = read_npy_f32(&res.bytes().await.unwrap());
    let res = convolve(
        &app,
        "camera.png",
        json!({"preset": "box", "size": 64, "output": npy}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let by_preset = read_npy_f32(&res.bytes().await.unwrap());
    assert_eq!(by_kernel.0, by_preset.0);
    // ...and 65 is refused by both, each pointing at the member sent.
    let res = convolve(&app, "camera.png", json!({"preset": "box", "size": 65})).await;
    let p = expect_problem(res, 422).await;
    assert_eq!(p["pointer"], "/parts/spec/size");
    assert!(
        p["detail"].as_str().unwrap().contains("between 1 and 64"),
        "{p}"
    );
    let kernel = vec![vec![0.0; 65]; 65];
    let res = convolve(&app, "camera.png", json!({"kernel": kernel})).await;
    assert_eq!(
        expect_problem(res, 422).await["pointer"],
        "/parts/spec/kernel"
    );
    // The catalogue says the same.
    let cat: Value = app.get("/v1/kernels").await.json().await.unwrap();
    let b = cat["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "box")
        .unwrap();
    assert_eq!(b["params"][0]["max"], json!(64.0));
}

#[tokio::test]
async fn preset_sides_follow_a_configured_max_kernel_side() {
    let app = spawn_app_with(|s| s.limits.max_kernel_side = 8).await;
    let res = convolve(&app, "camera.png", json!({"preset": "gaussian", "size": 9})).await;
    let p = expect_problem(res, 422).await;
    assert_eq!(p["pointer"], "/parts/spec/size");
    assert!(
        p["detail"].as_str().unwrap().contains("between 1 and 8"),
        "{p}"
    );
}

#[tokio::test]
async fn zip_responses_carry_x_conv_range_like_png_ones() {
    let app = spawn_app().await;
    let spec = json!({"preset": "sobel_x", "channels": "each", "color": "rgb"});
    let mut zip = spec.clone();
    zip["output"] = json!({"format": "zip"});
    let res = convolve(&app, "astronaut.png", zip).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/zip");
    let zip_range = res.headers()["x-conv-range"].to_str().unwrap().to_string();
    assert_eq!(zip_range.split(',').count(), 3, "{zip_range}");
    let res = convolve(&app, "astronaut.png", spec).await;
    assert_eq!(res.headers()["x-conv-range"].to_str().unwrap(), zip_range);
}

#[tokio::test]
async fn format_beside_a_kernel_and_beside_a_preset_gets_the_same_answer() {
    let app = spawn_app().await;
    for spec in [
        json!({"kernel": [[1, 0, -1]], "format": "json"}),
        json!({"preset": "box", "format": "json"}),
        json!({"layers": [{"preset": "sobel_x", "format": "json"}]}),
    ] {
        let res = convolve(&app, "camera.png", spec.clone()).await;
        let p = expect_problem(res, 422).await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            p["pointer"].as_str().unwrap().ends_with("/format"),
            "{spec}: {p}"
        );
        assert!(
            detail.contains("does not take parameter `format`"),
            "{spec}: {p}"
        );
        assert!(detail.contains("goes in `output`"), "{spec}: {p}");
    }
}

#[tokio::test]
async fn an_unknown_member_of_a_shape_request_lists_every_member_it_could_be() {
    let app = spawn_app().await;
    let body = json!({"input_shape": [1, 1, 4, 4], "weight_shape": [1, 1, 3, 3], "strides": 2});
    let p = expect_problem(app.conv2d_shape(&body).await, 422).await;
    assert_eq!(p["pointer"], "/strides");
    let detail = p["detail"].as_str().unwrap();
    for member in [
        "input_shape",
        "weight_shape",
        "bias_shape",
        "layers",
        "stride",
        "padding",
    ] {
        assert!(
            detail.contains(&format!("`{member}`")),
            "{member}: {detail}"
        );
    }
    let body = json!({"input_shape": [1, 1, 4, 4], "layers": [{"weight_shape": [1, 1, 3, 3], "strides": 2}]});
    let p = expect_problem(app.conv2d_shape(&body).await, 422).await;
    assert_eq!(p["pointer"], "/layers/0/strides");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("`weight_shape`") && detail.contains("`bias_shape`"),
        "{detail}"
    );
    assert!(!detail.contains("`input_shape`"), "{detail}");
}

#[tokio::test]
async fn identity_passes_each_channel_through_and_sums_them_by_default() {
    let app = spawn_app().await;
    let npy = json!({"format": "npy"});
    let res = convolve(
        &app,
        "astronaut.png",
        json!({"preset": "identity", "color": "rgb", "channels": "each", "output": npy}),
    )
    .await;
    let (each_shape, each) = read_npy_f32(&res.bytes().await.unwrap());
    let res = convolve(
        &app,
        "astronaut.png",
        json!({"preset": "identity", "color": "rgb", "output": npy}),
    )
    .await;
    let (sum_shape, sum) = read_npy_f32(&res.bytes().await.unwrap());
    assert_eq!(each_shape[1], 3);
    assert_eq!(sum_shape[1], 1);
    let plane = sum.len();
    for i in (0..plane).step_by(997) {
        let rgb = each[i] + each[plane + i] + each[2 * plane + i];
        assert_eq!(sum[i], rgb, "pixel {i}");
    }
}

#[tokio::test]
async fn a_bad_cell_of_a_top_level_kernel_points_at_the_cell() {
    let app = spawn_app().await;
    for (kernel, at) in [
        (json!([[1, 2, 3], [4, 5, "x"]]), "/kernel/1/2"),
        (json!([[1, 2, 3], [4, 5, true]]), "/kernel/1/2"),
        (json!([[1, 2, 3], [4, 5]]), "/kernel/1"),
    ] {
        let res = convolve(&app, "camera.png", json!({"kernel": kernel})).await;
        let p = expect_problem(res, 422).await;
        assert_eq!(p["pointer"], format!("/parts/spec{at}"), "{kernel}: {p}");
        // Inside `layers` the pointer was already exact, and stays so.
        let spec = json!({"layers": [{"preset": "box"}, {"kernel": kernel}]});
        let p = expect_problem(convolve(&app, "camera.png", spec).await, 422).await;
        assert_eq!(
            p["pointer"],
            format!("/parts/spec/layers/1{at}"),
            "{kernel}: {p}"
        );
    }
}

/// `POST /v1/conv2d` with `.npy` parts `input` (1×1×3×3) and `weight` (when `weight`), and
/// `spec` as the JSON part.
async fn conv2d_multipart(app: &TestApp, weight: bool, spec: &Value) -> reqwest::Response {
    let npy = |shape: &[usize]| {
        let len = shape.iter().product();
        Part::bytes(convd::npy::write_npy_f32(shape, &vec![1.0; len])).file_name("x.npy")
    };
    let mut form = Form::new()
        .part("input", npy(&[1, 1, 3, 3]))
        .text("spec", spec.to_string());
    if weight {
        form = form.part("weight", npy(&[1, 1, 2, 2]));
    }
    app.client
        .post(app.url("/v1/conv2d"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn errors_in_the_layers_of_a_multipart_spec_point_into_the_spec_part() {
    let app = spawn_app().await;
    let w = json!([[[[0, 1], [2, 3]]]]);
    for (spec, pointer) in [
        // A bad parameter.
        (
            json!({"layers": [{"weight": w}, {"weight": w, "dilation": -1}]}),
            "/parts/spec/layers/1/dilation",
        ),
        (
            json!({"layers": [{"weight": w, "stride": 0}]}),
            "/parts/spec/layers/0/stride",
        ),
        // A bad shape: not 4-D, then not fitting the channels flowing in.
        (
            json!({"layers": [{"weight": [[0, 1], [2, 3]]}]}),
            "/parts/spec/layers/0/weight",
        ),
        (
            json!({"layers": [{"weight": w}, {"weight": [[[[1]], [[1]]]]}]}),
            "/parts/spec/layers/1/weight",
        ),
        // A bad cell, down to the element.
        (
            json!({"layers": [{"weight": [[[[0, "1"]]]]}]}),
            "/parts/spec/layers/0/weight/0/0/0/1",
        ),
        (json!({"layers": []}), "/parts/spec/layers"),
    ] {
        let p = expect_problem(conv2d_multipart(&app, false, &spec).await, 422).await;
        assert_eq!(p["pointer"], pointer, "{spec}: {p}");
    }
    // The top-level members of the spec part were already prefixed, and stay so.
    let p = expect_problem(
        conv2d_multipart(&app, true, &json!({"stride": [1, "2"]})).await,
        422,
    )
    .await;
    assert_eq!(p["pointer"], "/parts/spec/stride/1", "{p}");
}

#[tokio::test]
async fn the_json_tensor_api_keeps_its_element_pointers() {
    let app = spawn_app().await;
    let x = json!([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]);
    let w = json!([[[[0, 1], [2, 3]]]]);
    for (body, pointer) in [
        (
            json!({"input": [[[[1, "2"]]]], "weight": w}),
            "/input/0/0/0/1",
        ),
        (
            json!({"input": x, "weight": [[[[0, true]]]]}),
            "/weight/0/0/0/1",
        ),
        (
            json!({"input": x, "layers": [{"weight": w}, {"weight": [[[[0, "1"]]]]}]}),
            "/layers/1/weight/0/0/0/1",
        ),
        (
            json!({"input": x, "layers": [{"weight": w}, {"weight": w, "dilation": -1}]}),
            "/layers/1/dilation",
        ),
        (json!({"input": x, "layers": []}), "/layers"),
    ] {
        let p = expect_problem(app.conv2d(&body).await, 422).await;
        assert_eq!(p["pointer"], pointer, "{body}: {p}");
    }
}
