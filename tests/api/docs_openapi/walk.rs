//! Walking openapi.yaml: where its examples are, and requests built from them.

use std::collections::BTreeSet;

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{fixture, npy_f32, TestApp};

pub const MEDIA_JSON: &str = "application/json";
pub const MEDIA_MULTIPART: &str = "multipart/form-data";
pub const MEDIA_PROBLEM: &str = "application/problem+json";

pub fn openapi() -> Value {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../../openapi.yaml")).unwrap();
    serde_json::to_value(doc).unwrap()
}

/// JSON Pointer escaping of one reference token.
pub fn esc(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Follows `$ref`s: the pointer of the object reached and the object.
pub fn resolve<'a>(doc: &'a Value, at: String, v: &'a Value) -> (String, &'a Value) {
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
pub fn example_sites(v: &Value, at: &str, out: &mut BTreeSet<String>) {
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
pub fn examples_of(
    doc: &Value,
    obj: &Value,
    claimed: &mut BTreeSet<String>,
) -> Vec<(String, Value)> {
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
pub fn npy_of(v: &Value) -> Vec<u8> {
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
pub fn multipart_of(example: &Value) -> Form {
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

pub async fn send(
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

/// `(pointer, example)` of every example inside one schema.
pub fn collect_schema_examples(v: &Value, at: &str, out: &mut Vec<(String, Value)>) {
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
