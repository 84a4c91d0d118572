//! Observation: the metrics middleware, the request id in problem bodies, `GET /metrics`.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use tower_http::request_id::RequestId;

use super::negotiate::Timings;
use super::AppState;
use crate::error::{ProblemKind, PROBLEM_JSON};
use crate::metrics::Metrics;

/// Media type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Problem bodies are a few hundred bytes; anything bigger is passed through untouched.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// `GET /metrics`: every series in the Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let body = app.metrics.render(app.pool.gauges());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        body,
    )
        .into_response()
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Adds `n` bytes of every data frame that passes to `counter`.
fn counted(body: Body, counter: metrics::Counter) -> Body {
    Body::new(body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counter.increment(data.len() as u64);
        }
        frame
    }))
}

/// Middleware: requests by route/method/status, latency, bytes in and out, the stages the
/// handler timed, and rejections by reason. The route is the router's template (bounded
/// label values); anything the router did not match is `unmatched`.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = method_label(req.method());
    let req = req.map(|b| counted(b, metrics.request_bytes(&route)));
    let res = next.run(req).await;
    metrics.request(&route, method, res.status().as_u16(), start.elapsed());
    if let Some(t) = res.extensions().get::<Timings>() {
        for &(stage, ms) in t.stages() {
            metrics.stage(stage, ms / 1e3);
        }
    }
    if let Some(&kind) = res.extensions().get::<ProblemKind>() {
        metrics.rejected(kind.reason(), kind.slug());
    }
    let out = metrics.response_bytes(&route);
    res.map(|b| counted(b, out))
}

/// Middleware: adds `request_id` (the `x-request-id` value) to every problem+json body, so
/// that a user reporting an error hands over the id that finds its log lines.
pub async fn problem_request_id(req: Request, next: Next) -> Response {
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(|id| id.header_value().clone())
        .or_else(|| req.headers().get("x-request-id").cloned());
    let res = next.run(req).await;
    let Some(id) = id.and_then(|v| v.to_str().ok().map(str::to_owned)) else {
        return res;
    };
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !is_problem {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await {
        Ok(b) => b,
        // Too big or a failing stream: not one of ours; nothing sensible to add.
        Err(_) => return parts.into_response(),
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut m)) => {
            m.insert("request_id".into(), Value::String(id));
            serde_json::to_vec(&m).map_or(bytes, Bytes::from)
        }
        _ => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
