//! Every photo a user has (issue #14): picture jobs are bound by pixels and their memory
//! estimate, decided from the image headers before decoding; tensor outputs keep the
//! tensor limits.

use serde_json::{json, Value};

use crate::helpers::{convolve, expect_problem, png_claiming, spawn_app, spawn_app_with};

/// A `w×h` RGB photo-like PNG.
fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 3 + y) as u8, (x * y / 7) as u8, (x ^ y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn blur() -> Value {
    json!({"preset": "gaussian", "size": 5, "channels": "each", "padding": "same", "output": {"normalize": "clamp"}})
}

#[tokio::test]
async fn a_photo_over_the_tensor_limits_is_a_picture_but_not_a_json_tensor() {
    // 300×200 RGB = 180,000 input elements, three times the tensor limit.
    let app = spawn_app_with(|s| {
        s.limits.max_tensor_elements = 60_000;
        s.limits.max_output_elements = 60_000;
    })
    .await;
    let res = convolve(&app, photo(300, 200), &blur()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-conv-shape"], "1,3,200,300");
    let memory: u64 = res.headers()["x-conv-memory"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(memory > 2 * 180_000, "{memory}");
    let png = res.bytes().await.unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (img.width(), img.height(), img.color()),
        (300, 200, image::ColorType::Rgb8)
    );

    let mut spec = blur();
    spec["output"]["format"] = json!("json");
    let body = expect_problem(convolve(&app, photo(300, 200), &spec).await, 413).await;
    assert_eq!(body["limit_name"], "input elements", "{body}");
    assert_eq!(body["pointer"], "/parts/image", "{body}");
}

#[tokio::test]
async fn a_job_over_its_memory_budget_is_refused_from_the_header_before_decoding() {
    let app = spawn_app_with(|s| s.limits.max_job_bytes = 64 << 20).await;
    // 6000×4000 RGB: 72 MB of samples and as much of picture, claimed by a header whose
    // data would not decode.
    let body = expect_problem(
        convolve(&app, png_claiming(6000, 4000, 2), &blur()).await,
        413,
    )
    .await;
    assert_eq!(body["limit_name"], "job memory estimate (bytes)", "{body}");
    assert_eq!(body["limit"], 64 << 20);
    assert!(body["actual"].as_u64().unwrap() > 144_000_000, "{body}");
    // Over the pixel limit: also from the header.
    let body = expect_problem(
        convolve(&app, png_claiming(9000, 8000, 2), &blur()).await,
        413,
    )
    .await;
    assert_eq!(body["limit_name"], "image pixels", "{body}");
    // Within every limit, the same header is decoded and found corrupt.
    let res = convolve(&app, png_claiming(60, 40, 2), &blur()).await;
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn the_memory_estimate_is_reported_in_the_zip_manifest_and_by_shape() {
    let app = spawn_app().await;
    let mut spec = blur();
    spec["output"]["format"] = json!("zip");
    let png = photo(64, 48);
    let res = convolve(&app, png.clone(), &spec).await;
    assert_eq!(res.status(), 200);
    let header: u64 = res.headers()["x-conv-memory"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = res.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let manifest: Value = serde_json::from_reader(zip.by_name("manifest.json").unwrap()).unwrap();
    let m = &manifest["memory"];
    assert_eq!(m["total_bytes"], header, "{manifest}");
    assert_eq!(m["decoded_bytes"], 64 * 48 * 3);
    assert_eq!(m["picture_bytes"], 64 * 48 * 3);
    assert_eq!(m["streamed"], true);
    // One PNG is decoded row by row into the strips: the request body (the image, the
    // spec and the multipart framing) is held meanwhile, and counted.
    let body = m["body_bytes"].as_u64().unwrap();
    let spec_len = spec.to_string().len() as u64;
    assert!(
        body >= png.len() as u64 + spec_len && body < png.len() as u64 + spec_len + 1024,
        "{manifest}"
    );
    let whole = m["decoded_bytes"].as_u64().unwrap()
        + m["working_bytes"].as_u64().unwrap()
        + m["picture_bytes"].as_u64().unwrap();
    assert!(header >= whole + body, "{manifest}");

    let res = app
        .conv2d_shape(&json!({"input_shape": [1, 3, 3024, 4032], "weight_shape": [3, 1, 5, 5], "groups": 3, "padding": "same"}))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let m = &body["memory"];
    assert_eq!(m["picture"]["decoded_bytes"], 3024 * 4032 * 3, "{body}");
    assert_eq!(m["picture"]["streamed"], true);
    assert_eq!(m["picture"]["body_bytes"], 0, "{body}");
    // A 12 MP colour photo's job stays far under the default budget; as float32 tensors it
    // would hold its input and output whole.
    let total = m["picture"]["total_bytes"].as_u64().unwrap();
    assert!(total < 120 << 20, "{body}");
    assert!(
        m["tensor_bytes"].as_u64().unwrap() > 2 * 4 * 3024 * 4032 * 3,
        "{body}"
    );
}

#[tokio::test]
async fn every_output_format_that_formats_lists_is_served_with_its_media_type() {
    let app = spawn_app().await;
    let catalogue: Value = app.get("/v1/formats").await.json().await.unwrap();
    let outputs = catalogue["output"].as_array().unwrap();
    assert_eq!(outputs.len(), 6);
    for o in outputs {
        let mut spec = blur();
        spec["output"]["format"] = o["format"].clone();
        let res = convolve(&app, photo(40, 30), &spec).await;
        assert_eq!(res.status(), 200, "{o}");
        assert_eq!(
            res.headers()["content-type"],
            o["media_type"].as_str().unwrap(),
            "{o}"
        );
        // Pictures carry their memory estimate; raw tensors do not.
        let picture = o["kind"] == "picture";
        assert_eq!(res.headers().contains_key("x-conv-memory"), picture, "{o}");
    }
    for i in catalogue["input"].as_array().unwrap() {
        let name = i["format"].as_str().unwrap();
        let fmt = image::ImageFormat::from_extension(name).unwrap();
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            8,
            6,
            image::Rgb([9, 99, 199]),
        ));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, fmt).unwrap();
        let res = convolve(&app, bytes.into_inner(), &blur()).await;
        assert_eq!(res.status(), 200, "{name}");
    }
}
