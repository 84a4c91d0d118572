//! openapi.yaml's examples against the real server (issue #12, "Docs that cannot drift").
//!
//! A walk (`walk.rs`) finds every object of the document that holds `example` or
//! `examples`, and each must be claimed by a check (here and in `checks.rs`), else
//! `every_openapi_example_is_sent_or_checked` fails:
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

mod checks;
mod walk;

use std::collections::BTreeSet;

use convd::error::ProblemKind;
use serde_json::{json, Value};

use crate::docs_support::{same, same_shape};
use crate::helpers::{spawn_app, spawn_app_with};
use checks::{
    check_answer_schema_example, check_header_example, check_metrics_example,
    check_problem_example, convolve, provoke, same_problem, send_schema_example,
};
use walk::{
    collect_schema_examples, esc, example_sites, examples_of, openapi, resolve, send, MEDIA_JSON,
    MEDIA_PROBLEM,
};

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
