//! `POST /v1/convolve` on real photos (the textbook applications) and `GET /v1/kernels`.

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::helpers::{expect_problem, fixture, read_npy_f32, spawn_app, TestApp};

fn image_part(name: &str) -> Part {
    Part::bytes(std::fs::read(fixture(&format!("images/{name}"))).unwrap())
        .file_name(name.to_string())
}

async fn convolve(
    app: &TestApp,
    images: &[&str],
    spec: Value,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut form = Form::new().text("spec", spec.to_string());
    for name in images {
        form = form.part("image", image_part(name));
    }
    let mut req = app.client.post(app.url("/v1/convolve")).multipart(form);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

fn manifest_case(name: &str) -> Value {
    let m: Value =
        serde_json::from_slice(&std::fs::read(fixture("images/manifest.json")).unwrap()).unwrap();
    m["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

/// Compares a JSON tensor response with a manifest case's expected `.npy` within its atol.
async fn assert_matches_case(res: reqwest::Response, case: &str, scale: f32) {
    assert_eq!(res.status(), 200);
    let c = manifest_case(case);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["shape"], c["expected_shape"], "{case}");
    let rel = c["expected_npy"].as_str().unwrap();
    let (_, expected) = read_npy_f32(&std::fs::read(fixture(rel)).unwrap());
    let atol = c["tolerance"]["atol"].as_f64().unwrap() * scale as f64;
    let got = body["data"].as_array().unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let g = g.as_f64().unwrap();
        let e = (*e * scale) as f64;
        assert!((g - e).abs() <= atol.max(1e-6), "{case}[{i}]: {g} vs {e}");
    }
}

#[tokio::test]
async fn textbook_boundary_detection_with_1_0_minus_1() {
    let app = spawn_app().await;
    // The fixture's tensor is 1.0/0.0; its PNG is 255/0: scale 1/255 gives the tensor back.
    let res = convolve(
        &app,
        &["app1_edge_input.png"],
        json!({"preset": "edge_1x3", "scale": 1.0 / 255.0, "output": {"format": "json"}}),
        None,
    )
    .await;
    assert_matches_case(res, "app1_edge", 1.0).await;
    // In 0..255 the edge is 255 at the boundary columns, exactly.
    let res = convolve(
        &app,
        &["app1_edge_input.png"],
        json!({"kernel": [[1, 0, -1]]}),
        Some("application/json"),
    )
    .await;
    assert_matches_case(res, "app1_edge", 255.0).await;
}

#[tokio::test]
async fn textbook_outline_detection_sums_the_laplacian_over_rgb() {
    let app = spawn_app().await;
    let res = convolve(
        &app,
        &["astronaut.png"],
        json!({"preset": "laplacian", "output": {"format": "json"}}),
        None,
    )
    .await;
    assert_matches_case(res, "app2_laplacian_astronaut", 1.0).await;
}

#[tokio::test]
async fn textbook_mean_blur_of_a_grayscale_image() {
    let app = spawn_app().await;
    let res = convolve(
        &app,
        &["coffee.png"],
        json!({"preset": "box", "size": 5, "color": "gray"}),
        Some("application/json"),
    )
    .await;
    assert_matches_case(res, "app3_boxblur_coffee_L", 1.0).await;
    let res = convolve(
        &app,
        &["camera.png"],
        json!({"preset": "box", "size": 5}),
        Some("application/json"),
    )
    .await;
    assert_matches_case(res, "app3_boxblur_camera", 1.0).await;
}

#[tokio::test]
async fn npy_output_matches_the_reference_file() {
    let app = spawn_app().await;
    let res = convolve(
        &app,
        &["camera.png"],
        json!({"preset": "box", "size": 5, "output": {"format": "npy"}}),
        None,
    )
    .await;
    assert_eq!(res.headers()["content-type"], "application/x-npy");
    let (shape, data) = read_npy_f32(&res.bytes().await.unwrap());
    let (eshape, expected) =
        read_npy_f32(&std::fs::read(fixture("images/app3_boxblur_camera_expected.npy")).unwrap());
    assert_eq!(shape, eshape);
    let atol = manifest_case("app3_boxblur_camera")["tolerance"]["atol"]
        .as_f64()
        .unwrap() as f32;
    assert!(data
        .iter()
        .zip(&expected)
        .all(|(g, e)| (g - e).abs() <= atol));
}

#[tokio::test]
async fn png_output_is_the_min_max_normalised_map_within_one_grey_level() {
    let app = spawn_app().await;
    let res = convolve(
        &app,
        &["astronaut.png"],
        json!({"preset": "laplacian"}),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["x-conv-shape"], "1,1,510,510");
    assert!(res.headers()["server-timing"]
        .to_str()
        .unwrap()
        .contains("decode"));
    assert!(res.headers().contains_key("x-conv-range"));
    let png = image::load_from_memory(&res.bytes().await.unwrap())
        .unwrap()
        .to_luma8();
    assert_eq!(png.dimensions(), (510, 510));
    let (_, expected) = read_npy_f32(
        &std::fs::read(fixture("images/app2_laplacian_astronaut_expected.npy")).unwrap(),
    );
    let (lo, hi) = expected
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    for (p, e) in png.as_raw().iter().zip(&expected) {
        let want = ((e - lo) / (hi - lo) * 255.0).round();
        assert!((*p as f32 - want).abs() <= 1.0, "{p} vs {want}");
    }
}

#[tokio::test]
async fn each_channel_keeps_a_colour_picture_in_colour() {
    let app = spawn_app().await;
    let res = convolve(&app, &["astronaut.png"], json!({"preset": "gaussian", "size": 5, "sigma": 1.2, "channels": "each", "padding": "same", "output": {"normalize": "clamp"}}), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-conv-shape"], "1,3,512,512");
    let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgb8);
    assert_eq!((img.width(), img.height()), (512, 512));
}

#[tokio::test]
async fn every_convolve_spec_example_of_openapi_is_accepted() {
    // The ConvolveSpec examples, sent as they are documented (each must get 200).
    let doc: serde_yaml::Value = serde_yaml::from_str(include_str!("../../openapi.yaml")).unwrap();
    let examples = doc["components"]["schemas"]["ConvolveSpec"]["examples"]
        .as_sequence()
        .expect("ConvolveSpec has examples")
        .clone();
    assert!(examples.len() >= 4);
    let app = spawn_app().await;
    for ex in examples {
        let spec: Value = serde_json::to_value(&ex).unwrap();
        let res = convolve(&app, &["astronaut.png"], spec.clone(), None).await;
        assert_eq!(res.status(), 200, "{spec}: {}", res.text().await.unwrap());
    }
    // A top-level `channels` is the default of every layer without its own: the stack
    // example keeps RGB in colour through both layers.
    let spec = json!({"color": "rgb", "channels": "each", "layers": [{"preset": "box", "size": 3}, {"preset": "unsharp", "amount": 1.5, "padding": "same"}]});
    let res = convolve(&app, &["astronaut.png"], spec, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-conv-shape"], "1,3,510,510");
    // A layer's own `channels` wins: summed over RGB in the first layer, one map after.
    let spec = json!({"color": "rgb", "channels": "each", "layers": [{"preset": "box", "size": 3, "channels": "sum"}, {"preset": "identity", "size": 1}]});
    let res = convolve(&app, &["astronaut.png"], spec, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-conv-shape"], "1,1,510,510");
}

#[tokio::test]
async fn image_spec_errors_point_at_the_member_the_client_sent() {
    let app = spawn_app().await;
    // A kernel over max_kernel_side (64): the spec's `kernel`, not the tensor API's `weight`.
    let big = vec![vec![0.0; 65]; 65];
    let res = convolve(&app, &["astronaut.png"], json!({"kernel": big}), None).await;
    let p = expect_problem(res, 422).await;
    assert_eq!(p["pointer"], "/parts/spec/kernel", "{p}");
    let res = convolve(
        &app,
        &["astronaut.png"],
        json!({"layers": [{"preset": "box"}, {"kernel": big}]}),
        None,
    )
    .await;
    let p = expect_problem(res, 422).await;
    assert_eq!(p["pointer"], "/parts/spec/layers/1/kernel", "{p}");
    // `weight` is the tensor API's name: said so.
    let res = convolve(&app, &["astronaut.png"], json!({"weight": [[1]]}), None).await;
    let p = expect_problem(res, 422).await;
    assert_eq!(p["pointer"], "/parts/spec/weight", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("tensor API"), "{p}");
}

#[tokio::test]
async fn a_batch_of_two_gives_n_2_and_a_montage() {
    let app = spawn_app().await;
    let res = convolve(
        &app,
        &["camera.png", "camera.png"],
        json!({"kernel": [[[[1, 0, -1]]], [[[-1, 0, 1]]]]}),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-conv-shape"], "2,2,512,510");
    let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    let gap = convd::codec::MONTAGE_GAP as u32;
    assert_eq!((img.width(), img.height()), (2 * 510 + gap, 2 * 512 + gap));
}

#[tokio::test]
async fn zip_output_holds_one_png_per_map_and_a_manifest() {
    let app = spawn_app().await;
    let res = convolve(
        &app,
        &["camera.png", "camera.png"],
        json!({"kernel": [[[[1, 0, -1]]], [[[-1, 0, 1]]]]}),
        Some("application/zip"),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/zip");
    let bytes = res.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut names: Vec<String> = zip.file_names().map(String::from).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "manifest.json",
            "n0_c0.png",
            "n0_c1.png",
            "n1_c0.png",
            "n1_c1.png"
        ]
    );
    let manifest: Value = serde_json::from_reader(zip.by_name("manifest.json").unwrap()).unwrap();
    assert_eq!(manifest["shape"], json!([2, 2, 512, 510]));
    assert_eq!(manifest["maps"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn content_negotiation_picks_the_format_and_varies_on_accept() {
    let app = spawn_app().await;
    for (accept, ct) in [
        ("image/png", "image/png"),
        ("application/json", "application/json"),
        ("application/x-npy", "application/x-npy"),
        ("application/zip", "application/zip"),
        ("*/*", "image/png"),
    ] {
        let res = convolve(
            &app,
            &["app1_edge_input.png"],
            json!({"preset": "edge_1x3"}),
            Some(accept),
        )
        .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], ct, "{accept}");
        assert_eq!(res.headers()["vary"], "accept");
    }
    let res = convolve(
        &app,
        &["app1_edge_input.png"],
        json!({"preset": "edge_1x3"}),
        Some("text/html"),
    )
    .await;
    expect_problem(res, 406).await;
}

#[tokio::test]
async fn kernels_lists_every_preset_with_its_weights() {
    let app = spawn_app().await;
    let b: Value = app.get("/v1/kernels").await.json().await.unwrap();
    let ks = b["kernels"].as_array().unwrap();
    let names: Vec<&str> = ks.iter().map(|k| k["name"].as_str().unwrap()).collect();
    for want in [
        "identity",
        "edge_1x3",
        "laplacian",
        "laplacian4",
        "sobel_x",
        "sobel_y",
        "scharr_x",
        "scharr_y",
        "prewitt_x",
        "prewitt_y",
        "box",
        "gaussian",
        "sharpen",
        "emboss",
        "unsharp",
        "outline",
    ] {
        assert!(names.contains(&want), "{want}");
    }
    let lap = ks.iter().find(|k| k["name"] == "laplacian").unwrap();
    assert_eq!(
        lap["kernel"]["weights"],
        json!([-0.125, -0.125, -0.125, -0.125, 1.0, -0.125, -0.125, -0.125, -0.125])
    );
}

#[tokio::test]
async fn image_errors_are_problems_naming_the_part() {
    let app = spawn_app().await;
    let b = expect_problem(
        convolve(&app, &["camera.png"], json!({"preset": "nope"}), None).await,
        422,
    )
    .await;
    assert!(b["known"].as_array().unwrap().len() >= 16);
    assert_eq!(b["pointer"], "/parts/spec/preset");
    let b = expect_problem(
        convolve(
            &app,
            &["camera.png", "astronaut.png"],
            json!({"preset": "box"}),
            None,
        )
        .await,
        422,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("512×512"), "{b}");
    let form = Form::new()
        .text("spec", "{}")
        .part("image", Part::bytes(b"hello, not an image".to_vec()));
    let res = app
        .client
        .post(app.url("/v1/convolve"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let b = expect_problem(res, 415).await;
    assert_eq!(b["pointer"], "/parts/image/0");
    let form = Form::new().part("image", image_part("camera.png"));
    let res = app
        .client
        .post(app.url("/v1/convolve"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    expect_problem(res, 400).await;
    let form = Form::new().text("spec", r#"{"preset": "box"}"#);
    let res = app
        .client
        .post(app.url("/v1/convolve"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    expect_problem(res, 400).await;
    // A 4-D kernel whose channels do not fit an RGB image.
    let b = expect_problem(
        convolve(&app, &["astronaut.png"], json!({"kernel": [[[[1]]]]}), None).await,
        422,
    )
    .await;
    assert_eq!(b["pointer"], "/parts/spec/kernel");
    let b = expect_problem(
        convolve(
            &app,
            &["camera.png"],
            json!({"preset": "gaussian", "size": 4}),
            None,
        )
        .await,
        422,
    )
    .await;
    assert_eq!(b["pointer"], "/parts/spec/size");
}
