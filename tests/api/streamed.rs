//! Issue #14: a PNG is decoded row by row into the strips. A non-interlaced PNG streams; its
//! Adam7-interlaced twin (the same pixels) is decoded whole: both must answer the same
//! bytes (a streamed PNG output is also encoded as it is rendered, the twin's after), and
//! a broken PNG the same problem as the whole decode gives.

use serde_json::{json, Value};

use crate::helpers::{convolve, png_chunk, spawn_app, TestApp};

/// Pixels of a `w × h` RGB photo-like picture: gradients and a little noise.
fn pixels(w: usize, h: usize) -> Vec<u8> {
    let mut s = 0x2545_f491u32;
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let n = (s % 9) as usize;
            out.push(((x * 255 / w + n) % 256) as u8);
            out.push(((y * 255 / h + 2 * n) % 256) as u8);
            out.push((((x + y) * 3 + n) % 256) as u8);
        }
    }
    out
}

/// An 8-bit RGB PNG of `px`, Adam7-interlaced or not (filter `None` on every row).
fn rgb_png(px: &[u8], w: usize, h: usize, interlaced: bool) -> Vec<u8> {
    let passes: &[(usize, usize, usize, usize)] = if interlaced {
        &[
            (0, 0, 8, 8),
            (4, 0, 8, 8),
            (0, 4, 4, 8),
            (2, 0, 4, 4),
            (0, 2, 2, 4),
            (1, 0, 2, 2),
            (0, 1, 1, 2),
        ]
    } else {
        &[(0, 0, 1, 1)]
    };
    let mut raw = Vec::new();
    for &(x0, y0, dx, dy) in passes {
        if x0 >= w || y0 >= h {
            continue; // an empty pass has no rows at all
        }
        for y in (y0..h).step_by(dy) {
            raw.push(0);
            for x in (x0..w).step_by(dx) {
                raw.extend_from_slice(&px[(y * w + x) * 3..][..3]);
            }
        }
    }
    let mut ihdr = (w as u32).to_be_bytes().to_vec();
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, u8::from(interlaced)]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &fdeflate::compress_to_vec(&raw)));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

async fn answer(app: &TestApp, png: &[u8], spec: &Value) -> (u16, String, String, Vec<u8>) {
    let res = convolve(app, png.to_vec(), spec).await;
    let status = res.status().as_u16();
    let h = |k: &str| {
        res.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (timing, range) = (h("server-timing"), h("x-conv-range"));
    (status, timing, range, res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_streamed_png_answers_what_its_interlaced_twin_decoded_whole_answers() {
    let app = spawn_app().await;
    let (w, h) = (301, 203);
    let px = pixels(w, h);
    let (flat, adam7) = (rgb_png(&px, w, h, false), rgb_png(&px, w, h, true));
    assert_eq!(
        image::load_from_memory(&adam7)
            .unwrap()
            .to_rgb8()
            .into_raw(),
        px
    );
    let specs = [
        json!({"preset": "gaussian", "size": 5, "channels": "each", "padding": "same",
               "output": {"normalize": "clamp"}}),
        json!({"kernel": [[1, 2, 1], [0, 0, 0], [-1, -2, -1]], "padding": "same",
               "padding_mode": "circular", "output": {"normalize": "abs", "bit_depth": 16}}),
        json!({"kernel": [[1, 0, -1]], "stride": 2, "dilation": 2, "padding": "same",
               "padding_mode": "reflect", "color": "gray"}),
        json!({"preset": "box", "size": 9, "channels": "each", "padding": "same",
               "color": "rgba", "output": {"format": "zip"}}),
        json!({"preset": "gaussian", "size": 5, "channels": "each", "padding": "same",
               "output": {"format": "webp", "normalize": "minmax"}}),
    ];
    for spec in &specs {
        let (s1, timing, range1, body1) = answer(&app, &flat, spec).await;
        let (s2, timing2, range2, body2) = answer(&app, &adam7, spec).await;
        assert_eq!(
            (s1, s2),
            (200, 200),
            "{spec}: {}",
            String::from_utf8_lossy(&body1)
        );
        assert!(
            timing.contains("decode;desc=\"streamed\""),
            "{spec}: {timing}"
        );
        assert!(timing.contains("conv;desc=\""), "{spec}: {timing}");
        assert!(!timing2.contains("streamed"), "{spec}: {timing2}");
        // A streamed PNG output is encoded as it is rendered (codec::png_strips::PngStream),
        // its twin's after the render: the same bytes.
        let png = spec["output"]["format"].is_null();
        assert_eq!(
            timing.contains("encode;desc=\"with_conv\""),
            png,
            "{spec}: {timing}"
        );
        assert!(!timing2.contains("with_conv"), "{spec}: {timing2}");
        assert_eq!(range1, range2, "{spec}");
        if spec["output"]["format"] == "zip" {
            // The same members; the manifests differ only in the memory estimate, which
            // counts the body the streamed job holds while it decodes.
            let (m1, m2) = (zip_members(&body1), zip_members(&body2));
            assert_eq!(m1.len(), m2.len(), "{spec}");
            for ((n1, b1), (n2, b2)) in m1.iter().zip(&m2) {
                assert_eq!(n1, n2, "{spec}");
                if n1 != "manifest.json" {
                    assert!(b1 == b2, "{spec}: member {n1} differs");
                    continue;
                }
                let mut j1: Value = serde_json::from_slice(b1).unwrap();
                let mut j2: Value = serde_json::from_slice(b2).unwrap();
                let body = j1["memory"]["body_bytes"].as_u64().unwrap();
                assert!(body > flat.len() as u64, "the whole body: {j1}");
                assert_eq!(j2["memory"]["body_bytes"], 0, "{j2}");
                j1.as_object_mut().unwrap().remove("memory");
                j2.as_object_mut().unwrap().remove("memory");
                assert_eq!(j1, j2, "{spec}");
            }
        } else {
            assert!(body1 == body2, "{spec}: the bodies differ");
        }
    }
}

/// A ZIP's members, in order: name and bytes.
fn zip_members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut out).unwrap();
            (f.name().to_string(), out)
        })
        .collect()
}

#[tokio::test]
async fn a_broken_png_mid_stream_gets_the_whole_decodes_problem() {
    let app = spawn_app().await;
    let (w, h) = (256, 300);
    let flat = rgb_png(&pixels(w, h), w, h, false);
    let mut flipped = flat.clone();
    let at = flat.len() / 2;
    flipped[at] ^= 0x5a;
    let picture = json!({"preset": "gaussian", "size": 5, "channels": "each", "padding": "same"});
    // A tensor output is decoded whole, before the convolution.
    let tensor = json!({"preset": "gaussian", "size": 5, "channels": "each", "padding": "same",
                        "output": {"format": "json"}});
    for bad in [
        flat[..flat.len() / 2].to_vec(),
        flat[..flat.len() - 16].to_vec(),
        flipped,
    ] {
        let (s1, _, _, b1) = answer(&app, &bad, &picture).await;
        let (s2, _, _, b2) = answer(&app, &bad, &tensor).await;
        assert_eq!((s1, s2), (415, 415));
        let (mut p1, mut p2): (Value, Value) = (
            serde_json::from_slice(&b1).unwrap(),
            serde_json::from_slice(&b2).unwrap(),
        );
        p1["request_id"] = Value::Null;
        p2["request_id"] = Value::Null;
        assert_eq!(p1, p2);
        assert_eq!(p1["pointer"], "/parts/image/0");
    }
}
