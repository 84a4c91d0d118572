//! `POST /v1/conv2d/shape`: shapes in, the plan out, nothing computed.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::budget::read_body;
use super::negotiate::content_type;
use super::reply::unsupported;
use super::AppState;
use crate::codec::{BitDepth, Grid, Normalize};
use crate::conv::Conv2dGeometry;
use crate::error::ApiError;
use crate::pipeline;
use crate::spec::ShapeReport;

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
    let report = plan.report();
    let memory = memory(&plan.geoms, &report, app.pool.threads());
    let mut body = serde_json::to_value(&report).map_err(ApiError::internal)?;
    body["memory"] = memory;
    Ok(axum::Json(body).into_response())
}

/// What a job of these shapes would hold: as a tensor request (float32 input, and the
/// largest layer's padded input and output), and as an image request with a picture
/// output (8-bit samples in, an 8-bit gray montage out, [`pipeline::estimate_of`]).
fn memory(geoms: &[Conv2dGeometry], report: &ShapeReport, threads: usize) -> serde_json::Value {
    let algos: Vec<_> = report.layers.iter().map(|l| l.algorithm).collect();
    let weight_bytes = geoms
        .iter()
        .map(|g| 4 * (g.weight_shape().iter().product::<usize>() + g.c_out) as u64)
        .sum();
    let shape = pipeline::Shape {
        geoms,
        algos: &algos,
        weight_bytes,
    };
    let [n, c, h, w] = report.input_shape;
    let [_, oc, oh, ow] = report.output_shape;
    let grid = Grid {
        n,
        c: oc,
        h: oh,
        w: ow,
        k: 1,
    };
    let decoded = (n * c * h * w) as u64;
    let picture = pipeline::estimate_of(
        &shape,
        decoded,
        grid,
        false,
        (Normalize::Minmax, BitDepth::Eight),
        threads,
    );
    serde_json::json!({
        "tensor_bytes": 4 * pipeline::tensor_floats(geoms) + weight_bytes,
        "picture": picture,
    })
}
