//! openapi.yaml's examples against the real server (issue #12, "Docs that cannot drift").
//!
//! A walk finds every object of the document that holds `example` or `examples`, and each
//! must be claimed by a check here, else `every_openapi_example_is_sent_or_checked` fails:
//! - **request bodies** of an operation are sent (JSON as it is; multipart built part by
//!   part). The status expected is the one whose response holds an example of the same
//!   name, else 200; a 2xx example of that name must be the very body the server sends;
//! - **schema examples** are sent inside a minimal request (`send_schema_example`) or
//!   compared with what the server sends (`check_answer_schema_example`);
//! - **GET responses** are fetched and compared;
//! - **problems**: `type` is a `ProblemKind` whose status is the example's `status` and the
//!   code it is documented under, `title` that status's reason phrase; the ones a plain
//!   request provokes (`provoke`) are provoked and must match member for member;
//! - **headers and parameters** are compared with the headers the server sends.

use std::collections::BTreeSet;

use convd::error::ProblemKind;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use crate::docs_support::{same, same_shape};
use crate::helpers::{fixture, npy_f32, spawn_app, spawn_app_with, TestApp};

const MEDIA_JSON: &str = "application/json";
const MEDIA_MULTIPART: &str = "multipart/form-data";
const MEDIA_PROBLEM: &str = "application/problem+json";

fn openapi() -> Value {
    let doc: serde_yaml::Value = serde_yaml::from_str(include_str!("../../openapi.yaml")).unwrap();
    serde_json::to_value(doc).unwrap()
}

/// JSON Pointer escaping of one reference token.
fn esc(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Follows `$ref`s: the pointer of the object reached and the object.
fn resolve<'a>(doc: &'a Value, at: String, v: &'a Value) -> (String, &'a Value) {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let p = r.trim_start_matches('#').to_string();
            let target = doc.pointer(&p).unwrap_or_else(|| panic!("dangling {r}"));
            resolve(doc, p, target)
        }
        None => (at, v),
    }
}

/// Every pointer of an object holding `example`/`examples`; the library of named examples
/// (`/components/examples`) counts entry by entry, since each must be used somewhere.
fn example_sites(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if at == "/components" {
                for name in m["examples"].as_object().unwrap().keys() {
                    out.insert(format!("/components/examples/{}", esc(name)));
                }
            } else if m.contains_key("example") || m.contains_key("examples") {
                out.insert(at.to_string());
            }
            for (k, x) in m {
                // Example values hold no examples; the library is counted above.
                if k != "example" && k != "examples" {
                    example_sites(x, &format!("{at}/{}", esc(k)), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                example_sites(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The `(name, value)` examples of a media type, header or parameter object (`""` for a
/// lone `example`), claiming the named examples it refers to.
fn examples_of(doc: &Value, obj: &Value, claimed: &mut BTreeSet<String>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(v) = obj.get("example") {
        out.push((String::new(), v.clone()));
    }
    match obj.get("examples") {
        Some(Value::Object(m)) => {
            for (name, e) in m {
                let (at, e) = resolve(doc, String::new(), e);
                if !at.is_empty() {
                    claimed.insert(at);
                }
                out.push((name.clone(), e["value"].clone()));
            }
        }
        Some(Value::Array(a)) => out.extend(a.iter().map(|v| (String::new(), v.clone()))),
        _ => {}
    }
    out
}

/// A `.npy` part from a nested JSON array of numbers (its nesting gives the shape).
fn npy_of(v: &Value) -> Vec<u8> {
    let mut shape = Vec::new();
    let mut x = v;
    while let Value::Array(a) = x {
        shape.push(a.len());
        x = &a[0];
    }
    let mut data = Vec::new();
    crate::helpers::flatten(v, &mut data);
    npy_f32(&shape, &data)
}

/// A multipart body from an example object: `image` names pictures of
/// `tests/fixtures/images` (one or a list), arrays become `.npy` parts, anything else a
/// JSON text part.
fn multipart_of(example: &Value) -> Form {
    let mut form = Form::new();
    for (name, v) in example
        .as_object()
        .expect("a multipart example is an object")
    {
        match (name.as_str(), v) {
            ("image", _) => {
                let files = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
                for f in files {
                    let f = f.as_str().expect("image parts name fixture pictures");
                    let bytes = std::fs::read(fixture(&format!("images/{f}"))).unwrap();
                    form = form.part("image", Part::bytes(bytes).file_name(f.to_string()));
                }
            }
            (_, Value::Array(_)) => form = form.part(name.clone(), Part::bytes(npy_of(v))),
            (_, Value::String(s)) => form = form.text(name.clone(), s.clone()),
            _ => form = form.text(name.clone(), v.to_string()),
        }
    }
    form
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    media: &str,
    body: &Value,
) -> reqwest::Response {
    let req = match method {
        "post" => app.client.post(app.url(path)),
        "get" => app.client.get(app.url(path)),
        m => panic!("no request builder for {m}"),
    };
    let req = match media {
        MEDIA_JSON => req.json(body),
        MEDIA_MULTIPART => req.multipart(multipart_of(body)),
        m => panic!("no body builder for {m}"),
    };
    req.send().await.unwrap()
}

async fn convolve(app: &TestApp, image: Vec<u8>, spec: &Value) -> reqwest::Response {
    let form = Form::new()
        .text("spec", spec.to_string())
        .part("image", Part::bytes(image).file_name("x.png"));
    app.client
        .post(app.url("/v1/convolve"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn camera() -> Vec<u8> {
    std::fs::read(fixture("images/camera.png")).unwrap()
}

/// A schema's example sent inside the smallest request that carries it (200 expected).
async fn send_schema_example(app: &TestApp, schema: &str, ex: &Value) -> Option<reqwest::Response> {
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
fn check_problem_example(at: &str, code: &str, ex: &Value) {
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
fn same_problem(shown: &Value, mut sent: Value, at: &str) {
    let mut shown = shown.clone();
    shown.as_object_mut().unwrap().remove("request_id");
    sent.as_object_mut().unwrap().remove("request_id");
    same(&shown, &sent, at).unwrap();
}

/// The request that provokes a documented problem, by `(response, example name)`.
async fn provoke(
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

#[tokio::test]
async fn every_openapi_example_is_sent_or_checked() {
    let doc = openapi();
    let mut sites = BTreeSet::new();
    example_sites(&doc, "", &mut sites);
    let mut claimed = BTreeSet::new();
    let app = spawn_app().await;
    let keyed = spawn_app_with(|s| {
        s.server.api_keys = vec![convd::config::ApiKey("docs-test-key-0123456789".into())]
    })
    .await;

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let here = format!("/paths/{}/{method}", esc(path));
            // Parameters: the request id is echoed.
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (at, p) = resolve(&doc, String::new(), p);
                for (_, ex) in examples_of(&doc, p, &mut claimed) {
                    assert_eq!(
                        p["name"], "X-Request-Id",
                        "{at}: no check for this parameter"
                    );
                    let res = app
                        .client
                        .get(app.url("/healthz"))
                        .header("x-request-id", ex.as_str().unwrap())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.headers()["x-request-id"], ex.as_str().unwrap(), "{at}");
                    claimed.insert(at.clone());
                }
            }
            let responses = op["responses"].as_object().unwrap();
            // Request bodies: sent, with the status (and body) of the example of the same name.
            for (media, m) in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                let at = format!("{here}/requestBody/content/{}", esc(media));
                for (name, ex) in examples_of(&doc, m, &mut claimed) {
                    let mut expected = ("200".to_string(), None);
                    for (code, r) in responses {
                        let (_, r) = resolve(&doc, String::new(), r);
                        for rm in r["content"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(_, v)| v)
                        {
                            if let Some(e) = rm["examples"].get(&name) {
                                expected = (
                                    code.clone(),
                                    Some(resolve(&doc, String::new(), e).1["value"].clone()),
                                );
                            }
                        }
                    }
                    let res = send(&app, method, path, media, &ex).await;
                    let status = res.status().as_u16().to_string();
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    assert_eq!(status, expected.0, "{at} example `{name}`: {body}");
                    if let Some(want) = expected.1 {
                        same(&want, &body, &format!("{at} `{name}`")).unwrap();
                    }
                    claimed.insert(at.clone());
                }
            }
            // Responses.
            for (code, r) in responses {
                let (rat, r) = resolve(&doc, format!("{here}/responses/{code}"), r);
                for (h, hv) in r["headers"].as_object().into_iter().flatten() {
                    let (hat, hv) = resolve(&doc, format!("{rat}/headers/{}", esc(h)), hv);
                    if examples_of(&doc, hv, &mut claimed).is_empty() {
                        continue;
                    }
                    check_header_example(&app, h, &hv["example"])
                        .await
                        .unwrap_or_else(|e| panic!("{hat}: {e}"));
                    claimed.insert(hat);
                }
                for (media, m) in r["content"].as_object().into_iter().flatten() {
                    let at = format!("{rat}/content/{}", esc(media));
                    for (name, ex) in examples_of(&doc, m, &mut claimed) {
                        if media == MEDIA_PROBLEM {
                            check_problem_example(&at, code, &ex);
                            if let Some(res) = provoke(&app, &keyed, &at, &name).await {
                                assert_eq!(
                                    res.status().as_u16().to_string(),
                                    *code,
                                    "{at} `{name}`"
                                );
                                let got = res.json().await.unwrap();
                                same_problem(&ex, got, &format!("{at} `{name}` provoked"));
                            }
                        } else if method == "get" && media == MEDIA_JSON {
                            let live: Value = app.get(path).await.json().await.unwrap();
                            if code == "200" && path != "/readyz" {
                                same(&ex, &live, &at).unwrap();
                            } else {
                                // Readiness counts depend on load and the configured threads.
                                same_shape(&ex, &live, &at).unwrap();
                            }
                        } else if path == "/metrics" {
                            check_metrics_example(&app, ex.as_str().unwrap())
                                .await
                                .unwrap_or_else(|e| panic!("{at}: {e}"));
                        } else if method == "post" && name.is_empty() {
                            panic!("{at}: a response example with no request example of its name");
                        } else if path == "/v1/convolve" && name == "textbook" {
                            // The textbook as a picture: a 3×3 gray PNG holding 1..9.
                            let img = image::GrayImage::from_fn(3, 3, |x, y| {
                                image::Luma([(1 + x + 3 * y) as u8])
                            });
                            let mut png = std::io::Cursor::new(Vec::new());
                            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
                            let spec = json!({"kernel": [[0, 1], [2, 3]], "bias": [1], "output": {"format": "json"}});
                            let res = convolve(&app, png.into_inner(), &spec).await;
                            assert_eq!(res.status(), 200, "{at}");
                            same(&ex, &res.json().await.unwrap(), &at).unwrap();
                        } else if !op["requestBody"]["content"]
                            .as_object()
                            .is_some_and(|c| c.values().any(|m| m["examples"].get(&name).is_some()))
                        {
                            panic!("{at} `{name}`: no request sends this example");
                        }
                        claimed.insert(at.clone());
                    }
                }
            }
        }
    }

    // Problems no operation lists (404, 405: any path, any method).
    for (name, r) in doc["components"]["responses"].as_object().unwrap() {
        let at = format!(
            "/components/responses/{}/content/{}",
            esc(name),
            esc(MEDIA_PROBLEM)
        );
        if claimed.contains(&at) {
            continue;
        }
        for (ex_name, ex) in examples_of(&doc, &r["content"][MEDIA_PROBLEM], &mut claimed) {
            let code = ex["status"].to_string();
            check_problem_example(&at, &code, &ex);
            let res = provoke(&app, &keyed, &at, &ex_name).await;
            let res =
                res.unwrap_or_else(|| panic!("{at}: listed by no operation and not provoked"));
            assert_eq!(res.status().as_u16().to_string(), code, "{at}");
            same_problem(&ex, res.json().await.unwrap(), &at);
            claimed.insert(at.clone());
        }
    }

    for (schema, s) in doc["components"]["schemas"].as_object().unwrap() {
        let mut found = Vec::new();
        let at = format!("/components/schemas/{}", esc(schema));
        collect_schema_examples(s, &at, &mut found);
        for (site, ex) in found {
            let name = site
                .rsplit('/')
                .find(|t| *t != "examples")
                .unwrap_or_default()
                .to_string();
            let owner = if site == at {
                schema.as_str()
            } else {
                site.split('/').nth(3).unwrap()
            };
            if let Some(res) = send_schema_example(&app, owner, &ex).await {
                let status = res.status();
                assert_eq!(status, 200, "{site}: {ex} → {}", res.text().await.unwrap());
            } else {
                check_answer_schema_example(&app, &site, &name, &ex)
                    .await
                    .unwrap_or_else(|e| panic!("{site}: {e}"));
            }
            claimed.insert(site);
        }
    }

    let unclaimed: Vec<_> = sites.difference(&claimed).collect();
    assert!(
        unclaimed.is_empty(),
        "examples no test sends or checks: {unclaimed:#?}"
    );
}

/// `(pointer, example)` of every example inside one schema.
fn collect_schema_examples(v: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    if let Value::Object(m) = v {
        if let Some(e) = m.get("example") {
            out.push((at.to_string(), e.clone()));
        }
        for e in m
            .get("examples")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push((at.to_string(), e.clone()));
        }
        for (k, x) in m {
            match x {
                _ if k == "example" || k == "examples" => {}
                Value::Array(a) => {
                    for (i, y) in a.iter().enumerate() {
                        collect_schema_examples(y, &format!("{at}/{}/{i}", esc(k)), out);
                    }
                }
                _ => collect_schema_examples(x, &format!("{at}/{}", esc(k)), out),
            }
        }
    }
}

/// Examples of schemas the server answers with (not sent): compared with real answers.
async fn check_answer_schema_example(
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
async fn check_header_example(app: &TestApp, header: &str, ex: &Value) -> Result<(), String> {
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
        "X-Conv-Range" => convolve(app, camera(), &json!({"preset": "sobel_x"})).await,
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
async fn check_metrics_example(app: &TestApp, ex: &str) -> Result<(), String> {
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

#[tokio::test]
async fn the_problem_schema_names_every_problem_kind_and_its_status() {
    let doc = openapi();
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    let described = problem["type"]["description"]
        .as_str()
        .unwrap()
        .replace('\n', " ");
    let statuses = problem["status"]["enum"].as_array().unwrap();
    for kind in ProblemKind::ALL {
        let status = kind.status().as_u16();
        let shown = match kind {
            ProblemKind::LimitExceeded => format!("`{}` (413, 422)", kind.slug()),
            k => format!("`{}` ({status})", k.slug()),
        };
        assert!(
            described.contains(&shown),
            "Problem.type does not say {shown}"
        );
        assert!(
            statuses.contains(&json!(status)),
            "Problem.status lacks {status}"
        );
    }
}
