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
