//! The HTTP surface: router, shared state; the middleware stack is in [`middleware`].
//!
//! Handlers stay thin: extract (the body read whole, [`budget::read_body`] or
//! [`multipart::read`]) → on the [`ComputePool`]: parse and plan ([`crate::spec`]) → run
//! ([`job::compute`]) → encode ([`reply`]). One handler module per resource: [`tensor`]
//! (`/v1/conv2d`), [`shape`] (`/v1/conv2d/shape`), [`images`] (`/v1/convolve`,
//! `/v1/kernels`, `/v1/formats`), [`health`] (`/healthz`, `/readyz`), [`about`] (`/openapi.yaml`,
//! `/v1/limits`), [`playground`], [`observe`] (`/metrics`).

pub mod about;
pub mod auth;
pub mod budget;
pub mod health;
pub mod images;
pub mod job;
pub mod middleware;
pub mod multipart;
pub mod negotiate;
pub mod observe;
pub mod playground;
pub mod reply;
pub mod shape;
pub mod tensor;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;

use crate::config::{Limits, ServerSettings, Settings};
use crate::error::{ApiError, ProblemKind};
use crate::metrics::Metrics;
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
    /// This instance's metrics registry.
    pub metrics: Metrics,
    /// `[server]`: API keys, CORS origins.
    pub server: Arc<ServerSettings>,
    /// The request bodies in flight and their rules.
    pub admission: budget::Admission,
    /// What the accept loop did (open, refused, evicted, timed-out connections).
    pub connections: Arc<crate::serve::ConnStats>,
}

impl AppState {
    /// Builds the state (and the compute pool) from settings.
    ///
    /// # Errors
    /// If the compute threads cannot be started.
    pub fn new(settings: &Settings) -> Result<Self, rayon::ThreadPoolBuildError> {
        let metrics = Metrics::new();
        Ok(Self {
            pool: ComputePool::new(&settings.compute)?.with_metrics(metrics.clone()),
            limits: Arc::new(settings.limits.clone()),
            shutting_down: Arc::new(AtomicBool::new(false)),
            metrics,
            server: Arc::new(settings.server.clone()),
            admission: budget::Admission {
                budget: budget::BodyBudget::new(settings.limits.max_inflight_body_bytes),
                rules: budget::BodyRules {
                    max_bytes: settings.limits.max_body_bytes,
                    grace: std::time::Duration::from_secs(settings.server.body_read_timeout_secs),
                    min_rate: settings.server.body_min_bytes_per_sec,
                    retry_after_secs: settings.compute.retry_after_secs,
                },
            },
            connections: Arc::default(),
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
    ("GET", "/v1/formats"),
    ("GET", "/"),
    ("GET", "/samples/{name}"),
    ("GET", "/metrics"),
];

/// The application router with all middleware.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.yaml", get(about::openapi))
        .route("/v1/limits", get(about::limits))
        .route("/v1/conv2d", post(tensor::conv2d))
        .route("/v1/conv2d/shape", post(shape::conv2d_shape))
        .route("/v1/convolve", post(images::convolve))
        .route("/v1/kernels", get(images::kernels))
        .route("/v1/formats", get(images::formats))
        .route("/", get(playground::index))
        .route("/samples/{name}", get(playground::sample))
        .route("/metrics", get(observe::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    middleware::apply(router, &state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ProblemKind::NotFound,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ProblemKind::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}
