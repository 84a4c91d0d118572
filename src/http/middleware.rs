//! The middleware stack around every route, in one function so that tests can wrap their
//! own routes (a panicking handler) in exactly what the service runs.
//!
//! Outermost first, as a request meets them:
//! 1. request id: generated unless the client sent `x-request-id`;
//! 2. tracing: one span and log line per request, carrying the id;
//! 3. the id copied onto the response;
//! 4. metrics (sees every final status, 401s, 413s and panics included);
//! 5. `request_id` added to problem bodies;
//! 6. security headers (each only if the handler did not set its own, so a page can choose
//!    its CSP or caching);
//! 7. CORS from `cors_allow_origins` (answers preflights before the key check);
//! 8. panics → opaque 500 problem, cause logged inside the request's span;
//! 9. API keys;
//! 10. the body budget: 413 from `Content-Length`, 503 when the bytes in flight are full,
//!     the minimum rate (see [`super::budget`]);
//! 11. the body limit for extractors.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use tracing::Level;

use super::auth::{require_key, ApiKeys};
use super::observe::{problem_request_id, track};
use super::AppState;
use crate::error::ApiError;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers every response carries unless its handler set them.
const SECURITY_HEADERS: &[(HeaderName, &str)] = &[
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    // Nothing of convd is meant to be framed: no clickjacking of the playground.
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    (header::REFERRER_POLICY, "no-referrer"),
    // API responses are per request (and may hold a caller's data): never cache them.
    (header::CACHE_CONTROL, "no-store"),
];

/// The allowed origins: `["*"]` = any, else exactly those listed (validated at load).
fn allow_origin(origins: &[String]) -> AllowOrigin {
    if origins.iter().any(|o| o == "*") {
        return AllowOrigin::any();
    }
    AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
}

/// Wraps `router` in the service's middleware (see the module doc for the order).
pub fn apply(router: Router, state: &AppState) -> Router {
    let body_limit = usize::try_from(state.limits.max_body_bytes).unwrap_or(usize::MAX);
    let keys = Arc::new(ApiKeys::from_settings(&state.server));
    let mut router = router
        // Handlers read bodies themselves against the configured limit (with a problem
        // body on overflow); this outer limit only stops extractors from buffering more.
        .layer(DefaultBodyLimit::max(body_limit.saturating_add(1)))
        .layer(axum::middleware::from_fn_with_state(
            state.admission.clone(),
            super::budget::admit_body,
        ))
        .layer(axum::middleware::from_fn_with_state(keys, require_key))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            CorsLayer::new()
                .allow_origin(allow_origin(&state.server.cors_allow_origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::ACCEPT,
                    header::AUTHORIZATION,
                    X_REQUEST_ID,
                ])
                .expose_headers([
                    HeaderName::from_static("server-timing"),
                    HeaderName::from_static("x-conv-shape"),
                    HeaderName::from_static("x-conv-range"),
                    HeaderName::from_static("x-conv-memory"),
                    HeaderName::from_static("x-conv-nonfinite"),
                    header::RETRY_AFTER,
                    X_REQUEST_ID,
                ])
                .max_age(Duration::from_secs(3600)),
        );
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name.clone(),
            HeaderValue::from_static(value),
        ));
    }
    router
        .layer(axum::middleware::from_fn(problem_request_id))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            track,
        ))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or(req.uri().path(), |m| m.as_str())
                        .to_owned();
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    // Health probes arrive every few seconds from every orchestrator:
                    // their spans (and so their response lines) are debug level.
                    if matches!(route.as_str(), "/healthz" | "/readyz") {
                        tracing::debug_span!("request", method = %req.method(), route, request_id = id)
                    } else {
                        tracing::info_span!("request", method = %req.method(), route, request_id = id)
                    }
                })
                .on_request(())
                .on_response(
                    |res: &axum::response::Response, latency: std::time::Duration, span: &tracing::Span| {
                        if !span.is_disabled() {
                            DefaultOnResponse::new()
                                .level(Level::INFO)
                                .latency_unit(tower_http::LatencyUnit::Micros)
                                .on_response(res, latency, span);
                        }
                    },
                ),
        )
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
}

/// A panic becomes an opaque 500; the message is logged (inside the request's span, so
/// with its request id), never sent.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {msg}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn state(tweak: impl FnOnce(&mut crate::config::Settings)) -> AppState {
        let mut s = crate::config::defaults();
        s.compute.threads = 1;
        tweak(&mut s);
        AppState::new(&s).unwrap()
    }

    async fn json(res: Response) -> serde_json::Value {
        let b = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_an_opaque_500_with_the_request_id() {
        let app = apply(
            Router::new().route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("secret detail");
                    }
                    "unreachable"
                }),
            ),
            &state(|_| {}),
        );
        let req = Request::builder()
            .uri("/boom")
            .header("x-request-id", "req-42")
            .body(Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers()["x-request-id"], "req-42");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(res.headers()["cache-control"], "no-store");
        let body = json(res).await;
        assert_eq!(body["request_id"], "req-42");
        assert_eq!(body["type"], "urn:convd:problem:internal");
        assert!(!body.to_string().contains("secret detail"), "{body}");
    }

    #[tokio::test]
    async fn a_generated_request_id_is_in_the_problem_body_and_the_header() {
        let app = super::super::app(state(|_| {}));
        let req = Request::builder().uri("/nope").body(Body::empty()).unwrap();
        let res = app.oneshot(req).await.unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(json(res).await["request_id"], id.as_str());
    }

    #[tokio::test]
    async fn security_headers_are_set_but_a_handler_may_choose_its_own() {
        let router = Router::new().route("/plain", get(|| async { "ok" })).route(
            "/page",
            get(|| async { ([(header::CACHE_CONTROL, "max-age=60")], "page") }),
        );
        let app = apply(router, &state(|_| {}));
        let get = |p: &str| Request::builder().uri(p).body(Body::empty()).unwrap();
        let res = app.clone().oneshot(get("/plain")).await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-security-policy"], "frame-ancestors 'none'");
        assert_eq!(h["cache-control"], "no-store");
        let res = app.oneshot(get("/page")).await.unwrap();
        assert_eq!(res.headers()["cache-control"], "max-age=60");
    }

    #[tokio::test]
    async fn cors_allows_only_the_configured_origins() {
        let app = apply(
            Router::new().route("/x", get(|| async { "ok" })),
            &state(|s| s.server.cors_allow_origins = vec!["https://ok.example".into()]),
        );
        let from = |origin: &str| {
            Request::builder()
                .uri("/x")
                .header("origin", origin)
                .body(Body::empty())
                .unwrap()
        };
        let res = app
            .clone()
            .oneshot(from("https://ok.example"))
            .await
            .unwrap();
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://ok.example"
        );
        let res = app.oneshot(from("https://evil.example")).await.unwrap();
        assert!(!res.headers().contains_key("access-control-allow-origin"));
    }

    #[tokio::test]
    async fn readiness_turns_503_once_shutdown_begins() {
        let st = state(|_| {});
        let app = super::super::app(st.clone());
        let get = || {
            Request::builder()
                .uri("/readyz")
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(app.clone().oneshot(get()).await.unwrap().status(), 200);
        st.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let res = app.oneshot(get()).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(json(res).await["shutting_down"], true);
    }
}
