//! Issue #13 through the real server: phone photos upright, 16-bit and float images exact,
//! float TIFF and WebP out, colour montages. The files are made here by other encoders
//! (`image`'s JPEG and PNG writers, the `tiff` crate), the EXIF block written by hand.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Luma, Rgb};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use tiff::decoder::{Decoder, DecodingResult};
use tiff::encoder::colortype::{Gray32Float, RGB32Float};
use tiff::encoder::TiffEncoder;

use crate::helpers::{expect_problem, read_npy_f32, spawn_app, spawn_app_with, TestApp};

async fn convolve(
    app: &TestApp,
    images: &[Vec<u8>],
    spec: Value,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut form = Form::new().text("spec", spec.to_string());
    for bytes in images {
        form = form.part("image", Part::bytes(bytes.clone()).file_name("x"));
    }
    let mut req = app.client.post(app.url("/v1/convolve")).multipart(form);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).unwrap();
    out.into_inner()
}

/// `jpeg` with an APP1 Exif segment (Orientation = `o`, big-endian TIFF) after SOI.
fn with_orientation(jpeg: &[u8], o: u8) -> Vec<u8> {
    let mut body = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0".to_vec();
    body.extend_from_slice(&[o, 0, 0, 0, 0, 0, 0]);
    let len = (body.len() + 2) as u16;
    [
        &jpeg[..2],
        &[0xFF, 0xE1],
        &len.to_be_bytes(),
        &body,
        &jpeg[2..],
    ]
    .concat()
}

fn float_tiff(w: u32, h: u32, rgb: bool, data: &[f32]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut out).unwrap();
    if rgb {
        enc.write_image::<RGB32Float>(w, h, data).unwrap();
    } else {
        enc.write_image::<Gray32Float>(w, h, data).unwrap();
    }
    out.into_inner()
}

fn shape(res: &reqwest::Response) -> String {
    res.headers()["x-conv-shape"].to_str().unwrap().to_string()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every page of a float TIFF, and the first page's description.
fn tiff_pages(bytes: &[u8]) -> (Vec<f32>, Value) {
    let mut d = Decoder::new(Cursor::new(bytes)).unwrap();
    let desc = d
        .get_tag_ascii_string(tiff::tags::Tag::ImageDescription)
        .unwrap();
    let mut all = Vec::new();
    loop {
        match d.read_image().unwrap() {
            DecodingResult::F32(v) => all.extend(v),
            _ => panic!("not float32"),
        }
        if !d.more_images() {
            break;
        }
        d.next_image().unwrap();
    }
    (all, serde_json::from_str(&desc).unwrap())
}

fn colour(seed: u32) -> Vec<u8> {
    let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(9, 7, |x, y| {
        Rgb([
            (x * 29 + seed) as u8,
            (y * 31) as u8,
            ((x * y + seed) * 7) as u8,
        ])
    }));
    encode(&img, ImageFormat::Png)
}

const IDENTITY: &str = "identity";

#[tokio::test]
async fn an_orientation_6_jpeg_is_upright_by_default_and_ignore_gives_pillows_order() {
    let app = spawn_app().await;
    // Stored 48 wide, 24 high, as a phone held upright writes it.
    let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(48, 24, |x, y| {
        Luma([if x < 8 && y < 8 { 250 } else { 10 }])
    }));
    let jpeg = with_orientation(&encode(&img, ImageFormat::Jpeg), 6);
    let spec = json!({"preset": IDENTITY, "size": 1, "output": {"format": "npy"}});
    let res = convolve(&app, std::slice::from_ref(&jpeg), spec.clone(), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(shape(&res), "1,1,48,24");
    let (_, up) = read_npy_f32(&res.bytes().await.unwrap());
    // The stored top-left block is top-right once turned clockwise.
    assert!(up[23] > 200.0 && up[0] < 50.0);

    let mut ignore = spec;
    ignore["orientation"] = json!("ignore");
    let res = convolve(&app, &[jpeg], ignore, None).await;
    assert_eq!(shape(&res), "1,1,24,48");

    let res = convolve(
        &app,
        &[colour(0)],
        json!({"preset": IDENTITY, "size": 1, "orientation": "sideways"}),
        None,
    )
    .await;
    assert_eq!(
        expect_problem(res, 422).await["pointer"],
        "/parts/spec/orientation"
    );
}

#[tokio::test]
async fn a_16_bit_pngs_2048_distinct_values_survive() {
    let app = spawn_app().await;
    let img = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(64, 32, |x, y| {
        Luma([((y * 64 + x) * 31 + 5) as u16])
    }));
    let spec = json!({"preset": IDENTITY, "size": 1, "output": {"format": "npy"}});
    let res = convolve(&app, &[encode(&img, ImageFormat::Png)], spec, None).await;
    assert_eq!(res.status(), 200);
    let (_, got) = read_npy_f32(&res.bytes().await.unwrap());
    let want: Vec<f32> = img
        .as_luma16()
        .unwrap()
        .iter()
        .map(|&v| f32::from(v))
        .collect();
    assert_eq!(got, want);
    let mut distinct = bits(&got);
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 2048);
}

#[tokio::test]
async fn a_float_tiffs_values_enter_exactly() {
    let app = spawn_app().await;
    let data: Vec<f32> = (0..4 * 3 * 3).map(|i| (i as f32 - 17.3) * 0.731).collect();
    let tif = float_tiff(4, 3, true, &data);
    let spec =
        json!({"preset": IDENTITY, "size": 1, "channels": "each", "output": {"format": "npy"}});
    let res = convolve(&app, &[tif], spec, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(shape(&res), "1,3,3,4");
    let (_, got) = read_npy_f32(&res.bytes().await.unwrap());
    for (i, p) in data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            assert_eq!(got[c * 12 + i].to_bits(), p[c].to_bits());
        }
    }
    let gray: Vec<f32> = vec![-1.25, 0.5, 1e-3, -7.0];
    let spec = json!({"preset": IDENTITY, "size": 1, "output": {"format": "json"}});
    let res = convolve(&app, &[float_tiff(2, 2, false, &gray)], spec, None).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"], json!([-1.25, 0.5, 0.001, -7.0]));
}

#[tokio::test]
async fn the_tiff_out_equals_the_npy_and_json_values_bit_for_bit() {
    let app = spawn_app().await;
    let spec = |format: &str| json!({"preset": "gaussian", "size": 3, "channels": "each", "output": {"format": format}});
    let images = [colour(0), colour(100)];
    let npy = convolve(&app, &images, spec("npy"), None).await;
    let (_, want) = read_npy_f32(&npy.bytes().await.unwrap());
    let res = convolve(&app, &images, spec("tiff"), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/tiff");
    let (got, manifest) = tiff_pages(&res.bytes().await.unwrap());
    assert_eq!(bits(&got), bits(&want));
    assert_eq!(manifest["shape"], json!([2, 3, 5, 7]));
    assert_eq!(manifest["maps"].as_array().unwrap().len(), 6);
    assert_eq!(
        manifest["maps"][4],
        json!({"page": 4, "n": 1, "c": 1, "min": manifest["maps"][4]["min"], "max": manifest["maps"][4]["max"]})
    );
    // The same through `Accept`, which answers with `Vary`.
    let mut by_accept = spec("x");
    by_accept["output"] = json!({});
    let res = convolve(&app, &images, by_accept, Some("image/tiff")).await;
    assert_eq!(res.headers()["content-type"], "image/tiff");
    assert_eq!(res.headers()["vary"], "accept");
    let json_body: Value = convolve(&app, &images, spec("json"), None)
        .await
        .json()
        .await
        .unwrap();
    let mut flat = Vec::new();
    crate::helpers::flatten(&json_body["data"], &mut flat);
    assert_eq!(
        bits(&flat),
        bits(&tiff_pages(&res.bytes().await.unwrap()).0)
    );
}

#[tokio::test]
async fn the_webp_out_decodes_to_exactly_the_png_outputs_pixels() {
    let app = spawn_app().await;
    for (images, extra) in [
        (vec![colour(0)], json!({"channels": "each"})),
        (vec![colour(0), colour(50)], json!({"channels": "each"})),
        (vec![colour(0)], json!({})),
        (
            vec![colour(0), colour(9)],
            json!({"channels": "each", "output": {"color": "gray"}}),
        ),
    ] {
        let spec = |format: &str| {
            let mut s = json!({"preset": "box", "size": 3});
            for (k, v) in extra.as_object().unwrap() {
                s[k] = v.clone();
            }
            let mut out = s["output"].as_object().cloned().unwrap_or_default();
            out.insert("format".into(), json!(format));
            s["output"] = Value::Object(out);
            s
        };
        let png = convolve(&app, &images, spec("png"), None).await;
        let png_range = png.headers()["x-conv-range"].clone();
        let png = image::load_from_memory(&png.bytes().await.unwrap()).unwrap();
        let res = convolve(&app, &images, spec("webp"), None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "image/webp");
        assert_eq!(res.headers()["x-conv-range"], png_range);
        let webp =
            image::load_from_memory_with_format(&res.bytes().await.unwrap(), ImageFormat::WebP)
                .unwrap();
        assert_eq!(webp.to_rgba8(), png.to_rgba8(), "{extra}");
    }
    // Accept: image/webp when the spec names no format; the spec wins over Accept.
    let spec = json!({"preset": "box", "size": 3});
    let res = convolve(&app, &[colour(0)], spec.clone(), Some("image/webp")).await;
    assert_eq!(res.headers()["content-type"], "image/webp");
    let mut png = spec;
    png["output"] = json!({"format": "png"});
    let res = convolve(&app, &[colour(0)], png, Some("image/webp")).await;
    assert_eq!(res.headers()["content-type"], "image/png");
    // WebP is 8-bit.
    let spec = json!({"preset": "box", "size": 3, "output": {"format": "webp", "bit_depth": 16}});
    let res = convolve(&app, &[colour(0)], spec, None).await;
    assert_eq!(
        expect_problem(res, 422).await["pointer"],
        "/parts/spec/output/bit_depth"
    );
}

#[tokio::test]
async fn a_batch_of_colour_images_filtered_per_channel_is_a_colour_montage() {
    let app = spawn_app().await;
    let spec = json!({"preset": "box", "size": 3, "channels": "each"});
    let res = convolve(&app, &[colour(0), colour(70)], spec.clone(), None).await;
    assert_eq!(res.status(), 200);
    let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgb8);
    assert_eq!((img.width(), img.height()), (7, 5 + 4 + 5));
    // A depthwise `groups: 3` kernel and a 4-D kernel with 3 outputs on RGB too.
    let k = vec![vec![vec![vec![1.0]]]; 3];
    for spec in [
        json!({"kernel": k, "groups": 3}),
        json!({"kernel": vec![vec![vec![vec![1.0]; 1]; 3]; 3]}),
    ] {
        let res = convolve(&app, &[colour(0)], spec.clone(), None).await;
        assert_eq!(res.status(), 200, "{spec}");
        let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(img.color(), image::ColorType::Rgb8, "{spec}");
    }
    // `output.color: gray` keeps one gray tile per map.
    let mut gray = spec;
    gray["output"] = json!({"color": "gray"});
    let res = convolve(&app, &[colour(0), colour(70)], gray, None).await;
    let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(img.color(), image::ColorType::L8);
    assert_eq!((img.width(), img.height()), (3 * 7 + 2 * 4, 5 + 4 + 5));
}

#[tokio::test]
async fn zip_holds_webp_or_float_tiff_per_map_with_zip_format() {
    let app = spawn_app().await;
    for (inner, name) in [("webp", "n1_c2.webp"), ("tiff", "n1_c2.tif")] {
        let spec = json!({"preset": "box", "size": 3, "channels": "each", "output": {"format": "zip", "zip_format": inner}});
        let res = convolve(&app, &[colour(0), colour(1)], spec, None).await;
        assert_eq!(res.status(), 200);
        let mut zip =
            zip::ZipArchive::new(Cursor::new(res.bytes().await.unwrap().to_vec())).unwrap();
        assert!(zip.by_name(name).is_ok(), "{inner}");
    }
    let spec =
        json!({"preset": "box", "size": 3, "output": {"format": "png", "zip_format": "webp"}});
    let res = convolve(&app, &[colour(0)], spec, None).await;
    assert_eq!(
        expect_problem(res, 422).await["pointer"],
        "/parts/spec/output/zip_format"
    );
}

#[tokio::test]
async fn limits_hold_for_16_bit_png_and_float_tiff() {
    let app = spawn_app_with(|s| {
        s.limits.max_image_pixels = 1000;
        s.limits.max_image_side = 100;
    })
    .await;
    let spec = json!({"preset": IDENTITY, "size": 1});
    let big16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(50, 30, Luma([9u16])));
    let wide16 =
        DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(101, 1, Rgb([9u16, 1, 2])));
    for (bytes, what) in [
        (encode(&big16, ImageFormat::Png), "pixels"),
        (encode(&wide16, ImageFormat::Tiff), "width"),
        (float_tiff(40, 40, false, &[0.5; 1600]), "pixels"),
        (float_tiff(1, 101, true, &[0.5; 303]), "height"),
    ] {
        let res = convolve(&app, &[bytes], spec.clone(), None).await;
        let p = expect_problem(res, 413).await;
        assert_eq!(p["pointer"], "/parts/image/0", "{what}");
        assert!(p["detail"].as_str().unwrap().contains(what), "{p}");
    }
}
