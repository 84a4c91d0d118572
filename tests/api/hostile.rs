//! Hostile input against the real server: every case gets its documented 4xx and a
//! problem+json body (with the request id), and afterwards the server still answers a
//! correct request correctly.

use serde_json::{json, Value};

use crate::helpers::{
    expect_small_answer, fixture, png_claiming, small_request, spawn_app, spawn_app_with, TestApp,
};

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 8, y as u8 * 10, 99]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

async fn convolve_image(app: &TestApp, image: Vec<u8>) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("x"),
        )
        .text("spec", r#"{"preset": "identity"}"#);
    app.client
        .post(app.url("/v1/convolve"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn post(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Asserts the problem, its type and that it names its request id.
async fn refused(res: reqwest::Response, status: u16, kind: &str, case: &str) -> Value {
    match check(res, status, kind).await {
        Ok(body) => body,
        Err(e) => panic!("{case}: {e}"),
    }
}

/// The problem body if `res` is the problem expected, else what is wrong with it.
async fn check(res: reqwest::Response, status: u16, kind: &str) -> Result<Value, String> {
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let got = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let ok = got == status
        && ct.as_deref() == Some("application/problem+json")
        && body["status"] == status
        && body["type"] == format!("urn:convd:problem:{kind}")
        && body["detail"].as_str().is_some_and(|d| !d.is_empty())
        && body["request_id"] == id.as_str();
    if ok {
        Ok(body)
    } else {
        Err(format!("want {status} {kind}, got {got} {ct:?} {text}"))
    }
}

fn with(extra: Value) -> Value {
    let mut req = small_request();
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    req
}

#[tokio::test]
async fn broken_and_lying_images_are_refused() {
    let app = spawn_app().await;
    let png = std::fs::read(fixture("images/camera.png")).unwrap();
    let jpeg = encoded(image::ImageFormat::Jpeg);
    let webp = encoded(image::ImageFormat::WebP);
    // Sanity: the intact files work.
    for good in [&png, &jpeg, &webp] {
        assert_eq!(convolve_image(&app, good.clone()).await.status(), 200);
    }
    let mut corrupt_png = png.clone();
    for b in &mut corrupt_png[60..400] {
        *b ^= 0x5a;
    }
    // A JPEG's entropy-coded data decodes (as garbage) whatever it holds, so corrupt the
    // markers and tables after the SOI instead.
    let mut corrupt_jpeg = jpeg.clone();
    for b in &mut corrupt_jpeg[2..200] {
        *b = 0x00;
    }
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "truncated png",
            png[..png.len() / 2].to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            "png header only",
            png[..16].to_vec(),
            415,
            "unsupported-media-type",
        ),
        ("corrupt png", corrupt_png, 415, "unsupported-media-type"),
        (
            "truncated jpeg",
            jpeg[..jpeg.len() / 2].to_vec(),
            415,
            "unsupported-media-type",
        ),
        ("corrupt jpeg", corrupt_jpeg, 415, "unsupported-media-type"),
        (
            "truncated webp",
            webp[..webp.len() / 2].to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            "png bomb 100000²",
            png_claiming(100_000, 100_000, 0),
            413,
            "limit-exceeded",
        ),
        (
            "png 1×1000000 (side)",
            png_claiming(1, 1_000_000, 0),
            413,
            "limit-exceeded",
        ),
        (
            "png 0×0",
            png_claiming(0, 0, 0),
            415,
            "unsupported-media-type",
        ),
        (
            "text as an image",
            b"hello, I am not a picture".to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            "empty image part",
            Vec::new(),
            415,
            "unsupported-media-type",
        ),
    ];
    let mut failures = Vec::new();
    for (case, bytes, status, kind) in cases {
        match check(convolve_image(&app, bytes).await, status, kind).await {
            Ok(body) if body["pointer"] == "/parts/image/0" => {}
            Ok(body) => failures.push(format!("{case}: pointer {}", body["pointer"])),
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    expect_small_answer(app.conv2d(&small_request()).await).await;
}

#[tokio::test]
async fn wrong_content_types_and_malformed_multipart_are_refused() {
    let app = spawn_app().await;
    let json = serde_json::to_vec(&small_request()).unwrap();
    // (case, path, content type, body, status, problem type)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("text/plain", "/v1/conv2d", "text/plain", json.clone(), 415, "unsupported-media-type"),
        ("form-urlencoded", "/v1/conv2d", "application/x-www-form-urlencoded", json.clone(), 415, "unsupported-media-type"),
        ("json to convolve", "/v1/convolve", "application/json", json.clone(), 415, "unsupported-media-type"),
        ("multipart to shape", "/v1/conv2d/shape", "multipart/form-data; boundary=x", b"--x--\r\n".to_vec(), 415, "unsupported-media-type"),
        ("image/png to conv2d", "/v1/conv2d", "image/png", b"\x89PNG".to_vec(), 415, "unsupported-media-type"),
        ("multipart without boundary", "/v1/convolve", "multipart/form-data", b"--x\r\n".to_vec(), 400, "malformed-request"),
        ("npy multipart without boundary", "/v1/conv2d", "multipart/form-data", b"--x\r\n".to_vec(), 400, "malformed-request"),
        (
            "unterminated part",
            "/v1/convolve",
            "multipart/form-data; boundary=XyZ",
            b"--XyZ\r\ncontent-disposition: form-data; name=\"spec\"\r\n\r\n{\"preset\":\"identity\"}".to_vec(),
            400,
            "malformed-request",
        ),
        (
            "unterminated npy part",
            "/v1/conv2d",
            "multipart/form-data; boundary=XyZ",
            b"--XyZ\r\ncontent-disposition: form-data; name=\"input\"\r\n\r\n\x93NUMPY".to_vec(),
            400,
            "malformed-request",
        ),
        (
            "part without headers",
            "/v1/convolve",
            "multipart/form-data; boundary=XyZ",
            b"--XyZ\r\n\r\n\r\n--XyZ--\r\n".to_vec(),
            400,
            "malformed-request",
        ),
    ];
    for (case, path, ct, body, status, kind) in cases {
        refused(post(&app, path, ct, body).await, status, kind, case).await;
    }
    let no_ct = app
        .client
        .post(app.url("/v1/conv2d"))
        .body(json)
        .send()
        .await
        .unwrap();
    refused(no_ct, 415, "unsupported-media-type", "no content type").await;
    expect_small_answer(app.conv2d(&small_request()).await).await;
}

#[tokio::test]
async fn hostile_json_is_refused() {
    let app = spawn_app().await;
    let raw: Vec<(&str, String, u16, &str)> = vec![
        (
            "100k nested [",
            "[".repeat(100_000),
            400,
            "malformed-request",
        ),
        (
            "100k nested input",
            format!(r#"{{"input": {}"#, "[".repeat(100_000)),
            400,
            "malformed-request",
        ),
        (
            "NaN",
            r#"{"input": [[[[NaN]]]], "weight": [[[[1]]]]}"#.into(),
            400,
            "malformed-request",
        ),
        (
            "Infinity",
            r#"{"input": [[[[Infinity]]]], "weight": [[[[1]]]]}"#.into(),
            400,
            "malformed-request",
        ),
        // Beyond f64 the JSON parser itself gives up: a 400 (with the pointer).
        (
            "1e999",
            r#"{"input": [[[[1e999]]]], "weight": [[[[1]]]]}"#.into(),
            400,
            "malformed-request",
        ),
        (
            "3.5e38 overflows f32",
            r#"{"input": [[[[3.5e38]]]], "weight": [[[[1]]]]}"#.into(),
            422,
            "invalid-spec",
        ),
        (
            "truncated",
            r#"{"input": [[[[1,2"#.into(),
            400,
            "malformed-request",
        ),
        ("empty body", String::new(), 400, "malformed-request"),
        ("not an object", "[1,2,3]".into(), 422, "invalid-spec"),
        (
            "trailing garbage",
            r#"{"input": [[[[1]]]], "weight": [[[[1]]]]} xx"#.into(),
            400,
            "malformed-request",
        ),
        (
            "invalid utf-8",
            "{\"input\": \"\u{fffd}\"}".replace('\u{fffd}', "\u{0}"),
            400,
            "malformed-request",
        ),
    ];
    let mut failures = Vec::new();
    for (case, body, status, kind) in raw {
        let res = post(&app, "/v1/conv2d", "application/json", body.into_bytes()).await;
        if let Err(e) = check(res, status, kind).await {
            failures.push(format!("{case}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let bad_utf8 = b"{\"input\": \"\xff\xfe\"}".to_vec();
    let res = post(&app, "/v1/conv2d", "application/json", bad_utf8).await;
    refused(res, 400, "malformed-request", "invalid utf-8 bytes").await;
    expect_small_answer(app.conv2d(&small_request()).await).await;
}

#[tokio::test]
async fn impossible_parameters_are_refused_with_a_pointer() {
    let app = spawn_app().await;
    let big = 9_223_372_036_854_775_807i64; // 2^63 − 1
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "string in numbers",
            with(json!({"input": [[[[1, "2"]]]]})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "bool in numbers",
            with(json!({"weight": [[[[true]]]]})),
            422,
            "invalid-spec",
            "/weight",
        ),
        (
            "null in numbers",
            with(json!({"input": [[[[1, null]]]]})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "stride 0",
            with(json!({"stride": 0})),
            422,
            "invalid-spec",
            "/stride",
        ),
        (
            "stride -1",
            with(json!({"stride": -1})),
            422,
            "invalid-spec",
            "/stride",
        ),
        (
            "stride 1e30",
            with(json!({"stride": 1e30})),
            422,
            "invalid-spec",
            "/stride",
        ),
        (
            "stride 2^63",
            serde_json::from_str(&small_request().to_string().replacen(
                '{',
                r#"{"stride": 9223372036854775808,"#,
                1,
            ))
            .unwrap(),
            422,
            "invalid-spec",
            "/stride",
        ),
        (
            "stride 1.5",
            with(json!({"stride": 1.5})),
            422,
            "invalid-spec",
            "/stride",
        ),
        (
            "stride [1,2,3]",
            with(json!({"stride": [1, 2, 3]})),
            422,
            "invalid-spec",
            "/stride",
        ),
        (
            "padding -1",
            with(json!({"padding": -1})),
            422,
            "invalid-spec",
            "/padding",
        ),
        (
            "padding 1e30",
            with(json!({"padding": 1e30})),
            422,
            "invalid-spec",
            "/padding",
        ),
        (
            "padding 2^63-1",
            with(json!({"padding": big})),
            422,
            "invalid-spec",
            "/padding",
        ),
        (
            "padding 2^40",
            with(json!({"padding": 1u64 << 40})),
            422,
            "limit-exceeded",
            "",
        ),
        (
            "padding 2^40 stride 2^40",
            with(json!({"padding": 1u64 << 40, "stride": 1u64 << 40})),
            422,
            "limit-exceeded",
            "/padding",
        ),
        (
            "padding [1,2,3]",
            with(json!({"padding": [1, 2, 3]})),
            422,
            "invalid-spec",
            "/padding",
        ),
        (
            "padding \"full\"",
            with(json!({"padding": "full"})),
            422,
            "invalid-spec",
            "/padding",
        ),
        (
            "reflect padding ≥ input",
            with(json!({"padding": 3, "padding_mode": "reflect"})),
            422,
            "invalid-spec",
            "/padding",
        ),
        (
            "dilation 0",
            with(json!({"dilation": 0})),
            422,
            "invalid-spec",
            "/dilation",
        ),
        (
            "dilation 1e30",
            with(json!({"dilation": 1e30})),
            422,
            "invalid-spec",
            "/dilation",
        ),
        // The message names the dilated kernel size; the pointer the kernel.
        (
            "dilation 2^63-1",
            with(json!({"dilation": big})),
            422,
            "invalid-spec",
            "/weight",
        ),
        (
            "dilation 2^62 same",
            with(json!({"dilation": 1u64 << 62, "padding": "same"})),
            422,
            "limit-exceeded",
            "/padding",
        ),
        (
            "dilation 2^20 same",
            with(json!({"dilation": 1u64 << 20, "padding": "same"})),
            422,
            "limit-exceeded",
            "/padding",
        ),
        (
            "kernel larger than input",
            with(json!({"weight": [[[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]]]})),
            422,
            "invalid-spec",
            "/weight",
        ),
        (
            "channels mismatch",
            with(json!({"weight": [[[[1]], [[1]]]]})),
            422,
            "invalid-spec",
            "/weight",
        ),
        (
            "groups 2 on 1 channel",
            with(json!({"groups": 2})),
            422,
            "invalid-spec",
            "/groups",
        ),
        (
            "groups 0",
            with(json!({"groups": 0})),
            422,
            "invalid-spec",
            "/groups",
        ),
        (
            "groups -3",
            with(json!({"groups": -3})),
            422,
            "invalid-spec",
            "/groups",
        ),
        (
            "groups 2^63-1",
            with(json!({"groups": big})),
            422,
            "invalid-spec",
            "/groups",
        ),
        (
            "bias of wrong length",
            with(json!({"bias": [1, 2]})),
            422,
            "invalid-spec",
            "/bias",
        ),
        (
            "empty input",
            with(json!({"input": []})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "empty innermost",
            with(json!({"input": [[[[]]]]})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "empty weight",
            with(json!({"weight": [[[[]]]]})),
            422,
            "invalid-spec",
            "/weight",
        ),
        (
            "ragged input",
            with(json!({"input": [[[[1, 2, 3], [4, 5]]]]})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "ragged depth",
            with(json!({"input": [[[[1, 2], [[3], 4]]]]})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "3-D input",
            with(json!({"input": [[[1, 2], [3, 4]]]})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "shape/data mismatch",
            with(json!({"input": {"shape": [1, 1, 2, 2], "data": [1, 2, 3]}})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "shape overflowing usize",
            with(json!({"input": {"shape": [big, big, 2, 2], "data": [1]}})),
            422,
            "invalid-spec",
            "/input",
        ),
        (
            "unknown field",
            with(json!({"strides": 2})),
            422,
            "invalid-spec",
            "/strides",
        ),
        (
            "empty layers",
            json!({"input": [[[[1]]]], "layers": []}),
            422,
            "invalid-spec",
            "/layers",
        ),
        (
            "huge strides in a stack",
            json!({"input": [[[[1]]]], "layers": [
            {"weight": [[[[1]]]], "stride": big}, {"weight": [[[[1]]]], "stride": big},
            {"weight": [[[[1]]]], "stride": big}]}),
            200,
            "",
            "",
        ),
    ];
    let mut failures = Vec::new();
    for (case, body, status, kind, pointer) in cases {
        let res = app.conv2d(&body).await;
        if status == 200 {
            if res.status() != 200 {
                failures.push(format!("{case}: {}", res.text().await.unwrap()));
            }
            continue;
        }
        match check(res, status, kind).await {
            Ok(problem) => {
                let got = problem["pointer"].as_str().unwrap_or("");
                if !got.starts_with(pointer) {
                    failures.push(format!("{case}: pointer {got}, want {pointer}: {problem}"));
                }
            }
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    expect_small_answer(app.conv2d(&small_request()).await).await;
}

#[tokio::test]
async fn budget_and_size_bombs_are_refused_before_any_work() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 1 << 20).await;
    // 16 layers of 64×64 kernels with "same" padding on a 600×600 map: 2.4·10¹⁰ MACs.
    let k = vec![vec![0.0; 64]; 64];
    let layers: Vec<Value> = (0..16)
        .map(|_| json!({"weight": [[k]], "padding": "same"}))
        .collect();
    let body =
        json!({"input": {"shape": [1, 1, 600, 600], "data": vec![0; 360_000]}, "layers": layers});
    let problem = refused(
        app.conv2d(&body).await,
        422,
        "limit-exceeded",
        "compute budget",
    )
    .await;
    assert!(problem["actual"].as_u64().unwrap() > problem["limit"].as_u64().unwrap());

    let shape = json!({"input_shape": [1, 1, 100_000, 100_000], "weight_shape": [1, 1, 3, 3]});
    let res = app.conv2d_shape(&shape).await;
    assert_eq!(
        res.status(),
        200,
        "planning a huge job is free: {}",
        res.text().await.unwrap()
    );

    let over = vec![b' '; (1 << 20) + 10];
    let res = post(&app, "/v1/conv2d", "application/json", over.clone()).await;
    refused(res, 413, "limit-exceeded", "body over the limit").await;
    // The same without Content-Length (chunked): the limit holds while reading.
    let head = chunked_post(&app, "/v1/conv2d", &over).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    let images = (0..17).fold(reqwest::multipart::Form::new(), |f, _| {
        f.part("image", reqwest::multipart::Part::bytes(vec![0u8; 10]))
    });
    let res = app
        .client
        .post(app.url("/v1/convolve"))
        .multipart(images.text("spec", "{}"))
        .send()
        .await
        .unwrap();
    refused(res, 413, "limit-exceeded", "too many images").await;
    expect_small_answer(app.conv2d(&small_request()).await).await;
}

/// Sends `body` chunked (no Content-Length) over a raw connection; returns the response.
async fn chunked_post(app: &TestApp, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 * 1024) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        // The server may answer 413 and close before reading everything.
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_json_points_at_the_document_with_line_and_column() {
    let app = spawn_app().await;
    for (body, pointer) in [
        ("{\"input\": [1, 2,, 3]}", "/input/2"),
        ("{{", ""),
        ("nope", ""),
    ] {
        let res = app
            .client
            .post(app.url("/v1/conv2d"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let p = crate::helpers::expect_problem(res, 400).await;
        assert_eq!(p["pointer"].as_str().unwrap_or(""), pointer, "{body}: {p}");
        assert!(!p["pointer"].as_str().unwrap_or("").contains('?'), "{p}");
        assert!(p["detail"].as_str().unwrap().contains("line 1"), "{p}");
    }
}
