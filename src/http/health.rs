//! Liveness and readiness: `GET /healthz`, `GET /readyz`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while jobs would be admitted; 503 when the queue is full or shutdown
/// has begun.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let shutting_down = app.shutting_down.load(Ordering::Relaxed);
    let room = app.pool.has_room();
    let body = json!({
        "status": if !shutting_down && room { "ready" } else { "not ready" },
        "shutting_down": shutting_down,
        "queue_full": !room,
        "admitted_jobs": app.pool.admitted_jobs(),
        "running_jobs": app.pool.running_jobs(),
        "threads": app.pool.threads(),
    });
    let status = if shutting_down || !room {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}
