//! The HTTP surface: router, shared state, middleware. Handlers stay thin: extract →
//! validate cheaply → run on the [`ComputePool`] → respond.

pub mod conv;
pub mod health;
pub mod images;
pub mod negotiate;
pub mod spec;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::{Limits, Settings};
use crate::error::ApiError;
use crate::worker::ComputePool;

/// State shared by all handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Where CPU work runs.
    pub pool: ComputePool,
    /// Request limits.
    pub limits: Arc<Limits>,
    /// Set when shutdown begins (readiness turns false).
    pub shutting_down: Arc<AtomicBool>,
}

impl AppState {
    /// Builds the state (and the compute pool) from settings.
    ///
    /// # Errors
    /// If the compute threads cannot be started.
    pub fn new(settings: &Settings) -> Result<Self, rayon::ThreadPoolBuildError> {
        Ok(Self {
            pool: ComputePool::new(&settings.compute)?,
            limits: Arc::new(settings.limits.clone()),
            shutting_down: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// Every route with its methods, as served; the OpenAPI test compares this list to
/// `openapi.yaml`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.yaml"),
    ("GET", "/v1/limits"),
    ("POST", "/v1/conv2d"),
    ("POST", "/v1/conv2d/shape"),
    ("POST", "/v1/convolve"),
    ("GET", "/v1/kernels"),
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The application router with all middleware.
pub fn app(state: AppState) -> Router {
    let body_limit = usize::try_from(state.limits.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.yaml", get(health::openapi))
        .route("/v1/limits", get(health::limits))
        .route("/v1/conv2d", post(conv::conv2d))
        .route("/v1/conv2d/shape", post(conv::conv2d_shape))
        .route("/v1/convolve", post(images::convolve))
        .route("/v1/kernels", get(images::kernels))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Handlers read bodies themselves against the configured limit (with a problem
        // body on overflow); this outer limit only stops extractors from buffering more.
        .layer(DefaultBodyLimit::max(body_limit.saturating_add(1)))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::any())
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
                    HeaderName::from_static("x-conv-nonfinite"),
                    X_REQUEST_ID,
                ])
                .max_age(Duration::from_secs(3600)),
        )
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
                    tracing::info_span!("request", method = %req.method(), route, request_id = id)
                })
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {msg}")).into_response()
}
