//! The checks that claim openapi.yaml's examples: requests that carry or provoke them,
//! and comparisons with what the server sends.

use convd::error::ProblemKind;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use super::walk::{npy_of, MEDIA_JSON};
use crate::docs_support::same;
pub use crate::helpers::convolve;
use crate::helpers::{fixture, TestApp};

fn camera() -> Vec<u8> {
    std::fs::read(fixture("images/camera.png")).unwrap()
}

/// A schema's example sent inside the smallest request that carries it (200 expected).
pub async fn send_schema_example(
    app: &TestApp,
    schema: &str,
    ex: &Value,
) -> Option<reqwest::Response> {
    let textbook =
        json!({"input": [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]], "weight": [[[[0, 1], [2, 3]]]]});
    let with = |k: &str, v: &Value| {
        let mut b = textbook.clone();
        b[k] = v.clone();
        b
    };
    Some(match schema {
        "ConvRequest" => app.conv2d(ex).await,
        "Tensor4" | "TensorObject" => app.conv2d(&with("input", ex)).await,
        "BiasTensor" => app.conv2d(&with("bias", ex)).await,
        "Padding" => app.conv2d(&with("padding", ex)).await,
        "ConvolveSpec" => convolve(app, camera(), ex).await,
        "ImageKernel" => convolve(app, camera(), &json!({"kernel": ex})).await,
        _ => return None,
    })
}

/// The problem kind of a `type` URI.
fn kind_of(ty: &str) -> Option<ProblemKind> {
    let slug = ty.strip_prefix("urn:convd:problem:")?;
    ProblemKind::ALL.into_iter().find(|k| k.slug() == slug)
}

/// `type`, `status` and `title` of a problem example agree with `ProblemKind`, and with the
/// response code it is documented under.
pub fn check_problem_example(at: &str, code: &str, ex: &Value) {
    let ty = ex["type"].as_str().unwrap_or_default();
    let kind = kind_of(ty).unwrap_or_else(|| panic!("{at}: `{ty}` is no ProblemKind"));
    let status = ex["status"].as_u64().unwrap() as u16;
    let allowed = match kind {
        ProblemKind::LimitExceeded => vec![413, 422],
        k => vec![k.status().as_u16()],
    };
    assert!(allowed.contains(&status), "{at}: {ty} is never {status}");
    assert_eq!(code, status.to_string(), "{at}: documented under {code}");
    let reason = reqwest::StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason();
    assert_eq!(ex["title"].as_str(), reason, "{at}: title");
    assert!(
        !ex["detail"].as_str().unwrap_or_default().is_empty(),
        "{at}: detail"
    );
}

/// A provoked problem is the documented one, member for member; `request_id` differs
/// from request to request (examples may leave it out).
pub fn same_problem(shown: &Value, mut sent: Value, at: &str) {
    let mut shown = shown.clone();
    shown.as_object_mut().unwrap().remove("request_id");
    sent.as_object_mut().unwrap().remove("request_id");
    same(&shown, &sent, at).unwrap();
}

/// The request that provokes a documented problem, by `(response, example name)`.
pub async fn provoke(
    app: &TestApp,
    keyed: &TestApp,
    site: &str,
    name: &str,
) -> Option<reqwest::Response> {
    let post = |path: &str| app.client.post(app.url(path));
    let textbook =
        json!({"input": [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]], "weight": [[[[0, 1], [2, 3]]]]});
    let response = match site.strip_prefix("/components/responses/") {
        Some(rest) => rest.split('/').next().unwrap(),
        None => "paths",
    };
    let req = match (response, name) {
        ("Unauthorized", _) => keyed.client.post(keyed.url("/v1/conv2d")).json(&textbook),
        ("BadRequest", "syntax") => post("/v1/conv2d")
            .header("content-type", MEDIA_JSON)
            .body(r#"{"input": [[[[1, 2, 3]  "#),
        ("BadRequest", "missingPart") => post("/v1/conv2d")
            .multipart(Form::new().part("weight", Part::bytes(npy_of(&textbook["weight"])))),
        ("NotFound", _) => app.client.get(app.url("/nope")),
        ("MethodNotAllowed", _) => app.client.get(app.url("/v1/conv2d")),
        ("NotAcceptable", _) => post("/v1/conv2d")
            .header("accept", "text/html")
            .json(&textbook),
        ("UnsupportedMediaType", "contentType") => post("/v1/conv2d")
            .header("content-type", "text/plain")
            .body("x"),
        ("UnsupportedMediaType", "image") => post("/v1/convolve").multipart(
            Form::new()
                .text("spec", r#"{"preset": "box"}"#)
                .part("image", Part::bytes(camera()))
                .part("image", Part::bytes(b"not a picture".to_vec())),
        ),
        ("UnprocessableEntity", "invalidSpec") => post("/v1/conv2d").json(&json!({
            "input": textbook["input"],
            "layers": [{"weight": [[[[1]]]]}, {"weight": [[[[1]]]], "stride": [0, 0]}]})),
        ("UnprocessableEntity", "limit") => post("/v1/conv2d").json(&json!({
            "input": {"shape": [1, 1, 65, 65], "data": vec![0; 65 * 65]},
            "weight": {"shape": [1, 1, 65, 65], "data": vec![0; 65 * 65]}})),
        ("UnprocessableEntity", "outputNotFinite") => post("/v1/conv2d").json(&json!({
            "input": [[[[3e38, 3e38]]]], "weight": [[[[2]]]]})),
        ("UnprocessableEntity", "unknownPreset") => {
            return Some(convolve(app, camera(), &json!({"preset": "sobel"})).await)
        }
        ("paths", _) if site.contains("samples") => app.client.get(app.url("/samples/nope.png")),
        _ => return None,
    };
    Some(req.send().await.unwrap())
}

/// Examples of schemas the server answers with (not sent): compared with real answers.
pub async fn check_answer_schema_example(
    app: &TestApp,
    site: &str,
    name: &str,
    ex: &Value,
) -> Result<(), String> {
    match (site, name) {
        (_, "Limits") => same(ex, &app.get("/v1/limits").await.json().await.unwrap(), site),
        (_, "type") => kind_of(ex.as_str().unwrap())
            .map(|_| ())
            .ok_or("no such ProblemKind".into()),
        (_, "title") => ProblemKind::ALL
            .iter()
            .any(|k| k.status().canonical_reason() == ex.as_str())
            .then_some(())
            .ok_or("no ProblemKind has this reason phrase".into()),
        (_, "pointer") => {
            let res = app.conv2d(&json!({"input": [[[[1]]]], "layers": [{"weight": [[[[1]]]]}, {"weight": [[[[1]]]], "stride": 0}]})).await;
            let got: Value = res.json().await.unwrap();
            (got["pointer"] == *ex)
                .then_some(())
                .ok_or(format!("the server says {got}"))
        }
        (_, "request_id") => check_header_example(app, "X-Request-Id", ex).await,
        (_, "name") if site.contains("ZipManifest") => {
            let res = convolve(
                app,
                camera(),
                &json!({"preset": "sobel_x", "output": {"format": "zip"}}),
            )
            .await;
            let zip = res.bytes().await.unwrap();
            let needle = ex.as_str().unwrap().as_bytes();
            zip.windows(needle.len())
                .any(|w| w == needle)
                .then_some(())
                .ok_or("not in a ZIP answer".into())
        }
        _ => Err("no check for this schema example: add one".into()),
    }
}

/// A documented header example against the header the server sends.
pub async fn check_header_example(app: &TestApp, header: &str, ex: &Value) -> Result<(), String> {
    let textbook =
        json!({"input": [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]], "weight": [[[[0, 1], [2, 3]]]]});
    let ex = match ex {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let res = match header {
        "X-Request-Id" => app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", &ex)
            .send()
            .await
            .unwrap(),
        "X-Conv-Range" | "X-Conv-Memory" => {
            convolve(app, camera(), &json!({"preset": "sobel_x"})).await
        }
        "X-Conv-Nonfinite" => {
            let req = app
                .client
                .post(app.url("/v1/conv2d"))
                .header("accept", "application/x-npy");
            req.json(&json!({"input": [[[[3e38, 3e38, 3e38]]]], "weight": [[[[2]]]]}))
                .send()
                .await
                .unwrap()
        }
        "Content-Security-Policy" => app.get("/").await,
        "Retry-After" => {
            return (ex
                == convd::config::defaults()
                    .compute
                    .retry_after_secs
                    .to_string())
            .then_some(())
            .ok_or("not the default retry_after_secs".into())
        }
        _ => app.conv2d(&textbook).await,
    };
    let got = res
        .headers()
        .get(header)
        .ok_or(format!("no {header} sent"))?
        .to_str()
        .unwrap()
        .to_string();
    // The same format: equal, or equal once every number is blanked out.
    let blank = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_digit() || c == '.' || c == '-' {
                    '0'
                } else {
                    c
                }
            })
            .collect::<String>()
            .split('0')
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("0")
    };
    let got_stages = |s: &str| {
        s.split(", ")
            .map(|st| st.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let ok = match header {
        "X-Request-Id" | "X-Conv-Shape" | "Vary" | "Content-Security-Policy" => got == ex,
        "Server-Timing" => {
            got_stages(&got) == got_stages(&ex)
                && blank(&got).replace("gemm_im2col", "direct") == blank(&ex)
        }
        _ => blank(&got) == blank(&ex),
    };
    ok.then_some(())
        .ok_or(format!("the server sends `{got}`, the example says `{ex}`"))
}

/// The metrics example: its `# TYPE` lines and the series of its samples are in `/metrics`.
pub async fn check_metrics_example(app: &TestApp, ex: &str) -> Result<(), String> {
    app.conv2d(&json!({"input": [[[[1]]]], "weight": [[[[1]]]]}))
        .await;
    let live = app.get("/metrics").await.text().await.unwrap();
    for line in ex.lines() {
        let series = if line.starts_with('#') {
            line
        } else {
            line.rsplit_once(' ').unwrap().0
        };
        if !live.lines().any(|l| l.starts_with(series)) {
            return Err(format!("no `{series}` in /metrics"));
        }
    }
    Ok(())
}
