//! `POST /v1/conv2d/shape`: shapes in, the plan out, nothing computed.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::budget::read_body;
use super::negotiate::content_type;
use super::reply::unsupported;
use super::AppState;
use crate::error::ApiError;

/// Largest body of `POST /v1/conv2d/shape` (it carries shapes, not tensors).
pub const SHAPE_BODY_BYTES: u64 = 64 * 1024;

/// `POST /v1/conv2d/shape`: plan only, without the compute limits (nothing is allocated).
pub async fn conv2d_shape(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let ct = content_type(req.headers());
    if ct.as_deref() != Some("application/json") {
        return Err(unsupported(ct.as_deref(), "application/json"));
    }
    // Shapes only: a small body, parsed on the async runtime without the pool; the cap keeps
    // that parse cheap whatever max_body_bytes is.
    let body = read_body(req, SHAPE_BODY_BYTES.min(app.limits.max_body_bytes)).await?;
    let (input, stack) = crate::spec::shape::from_json(&body.bytes)?;
    let plan = crate::spec::plan_shapes(input, &stack)?;
    Ok(axum::Json(plan.report()).into_response())
}
