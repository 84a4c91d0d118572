//! What the service says about itself: `GET /openapi.yaml` (the API description) and
//! `GET /v1/limits` (the limits in force).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;

/// The OpenAPI 3.1 description, compiled in.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// `GET /v1/limits`: the limits in force.
pub async fn limits(State(app): State<AppState>) -> Json<crate::config::Limits> {
    Json((*app.limits).clone())
}

/// `GET /openapi.yaml`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}
