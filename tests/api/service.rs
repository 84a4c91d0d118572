//! Health, readiness, limits, OpenAPI, unknown routes.

use serde_json::Value;

use crate::helpers::{expect_problem, spawn_app};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["status"], "ready");
}

#[tokio::test]
async fn limits_are_reported() {
    let app = spawn_app().await;
    let b: Value = app.get("/v1/limits").await.json().await.unwrap();
    assert!(b["max_macs"].as_u64().unwrap() > 0);
    assert!(b["max_body_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problems() {
    let app = spawn_app().await;
    expect_problem(app.get("/nope").await, 404).await;
    expect_problem(app.get("/v1/conv2d").await, 405).await;
}

#[tokio::test]
async fn a_request_id_is_propagated() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes_the_router_serves() {
    let app = spawn_app().await;
    let res = app.get("/openapi.yaml").await;
    assert_eq!(res.status(), 200);
    let doc: serde_yaml::Value = serde_yaml::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(doc["openapi"].as_str().unwrap().get(..3), Some("3.1"));
    let mut in_spec = Vec::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let m = method.as_str().unwrap();
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                in_spec.push((m.to_uppercase(), path.as_str().unwrap().to_string()));
            }
        }
    }
    let mut served: Vec<(String, String)> = convd::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    in_spec.sort();
    served.sort();
    assert_eq!(in_spec, served);
    for (m, p) in &served {
        if m == "GET" {
            // A templated path is probed with a value that exists.
            let p = p.replace("{name}", "camera.png");
            assert_ne!(app.get(&p).await.status(), 404, "{p}");
        }
    }
}
