//! The playground page at `GET /` and its sample pictures.

use crate::helpers::{expect_problem, spawn_app};

#[tokio::test]
async fn the_page_is_html_with_the_form_and_a_strict_csp() {
    let app = spawn_app().await;
    let res = app.get("/").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "img-src 'self' blob: data:",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    let html = res.text().await.unwrap();
    for needle in [
        "<form id=\"controls\"",
        "id=\"layers\"",
        "id=\"result-img\"",
        "/v1/convolve",
        "data-sample=\"camera.png\"",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
}

#[tokio::test]
async fn every_sample_the_page_offers_is_served_as_png() {
    let app = spawn_app().await;
    let html = app.get("/").await.text().await.unwrap();
    let samples: Vec<&str> = html
        .split("data-sample=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    assert!(samples.len() >= 2, "{samples:?}");
    for name in samples {
        let res = app.get(&format!("/samples/{name}")).await;
        assert_eq!(res.status(), 200, "{name}");
        assert_eq!(res.headers()["content-type"], "image/png", "{name}");
        let bytes = res.bytes().await.unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
    }
}

#[tokio::test]
async fn an_unknown_sample_is_a_404_problem() {
    let app = spawn_app().await;
    let body = expect_problem(app.get("/samples/nope.png").await, 404).await;
    assert!(body["detail"].as_str().unwrap().contains("camera.png"));
}
