//! `POST /v1/conv2d`: tensors in, tensor out.
//!
//! Bodies: `application/json` ([`crate::spec::tensor::ConvRequest`]) or
//! `multipart/form-data` with `.npy` parts `input`, `weight`, optional `bias`, and a `spec`
//! part holding the remaining JSON members. Output: JSON (default) or `.npy`
//! (`Accept: application/x-npy`).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use ndarray::Array4;

use super::budget::{read_body, ReadBody};
use super::job::compute;
use super::multipart::RawMultipart;
use super::negotiate::{content_type, negotiate, Timings};
use super::reply::{tensor_reply, unsupported, Reply, TensorFormat, JSON, NPY};
use super::AppState;
use crate::config::Limits;
use crate::error::ApiError;
use crate::spec::tensor::NpyParts;
use crate::spec::StackSpec;

/// A tensor request's body, read but not parsed (parsing runs on the pool).
enum Body {
    Json(ReadBody),
    Multipart(RawMultipart),
}

impl Body {
    /// Parses the body into the input and its layers; the body's bytes (and their
    /// reservation) are released before the compute.
    fn parse(self, limits: &Limits) -> Result<(Array4<f32>, StackSpec), ApiError> {
        match self {
            Self::Json(body) => Ok(crate::spec::tensor::from_json(&body.bytes, limits)?),
            Self::Multipart(raw) => {
                let parts = npy_parts(&raw)?;
                Ok(parts.borrowed().into_spec(limits)?)
            }
        }
    }
}

/// `POST /v1/conv2d`.
pub async fn conv2d(State(app): State<AppState>, req: Request) -> Result<Reply, ApiError> {
    let format = tensor_format(req.headers())?;
    if let Err(e) = app.pool.check_room() {
        return Err(super::budget::drain(req, e).await);
    }
    app.pool.prewarm();
    let limits = app.limits.clone();
    let body = match content_type(req.headers()).as_deref() {
        Some("application/json") => Body::Json(read_body(req, limits.max_body_bytes).await?),
        Some("multipart/form-data") => {
            Body::Multipart(super::multipart::read(req, limits.max_body_bytes).await?)
        }
        other => {
            return Err(unsupported(
                other,
                "application/json or multipart/form-data",
            ))
        }
    };
    app.pool
        .run(move |cancel| {
            let mut timings = Timings::default();
            let t = Instant::now();
            let (input, stack) = body.parse(&limits)?;
            timings.record("parse", t);
            let (n, c, h, w) = input.dim();
            let plan = crate::spec::plan([n, c, h, w], stack, &limits)?;
            compute(input, plan, cancel, timings, |out, report, timings| {
                tensor_reply(out, report, format, timings)
            })
        })
        .await
}

fn tensor_format(headers: &HeaderMap) -> Result<TensorFormat, ApiError> {
    Ok(match negotiate(headers, &[JSON, NPY])? {
        Some(NPY) => TensorFormat::Npy,
        _ => TensorFormat::Json,
    })
}

/// The named parts of a multipart tensor request, slices of its body.
#[derive(Default)]
struct OwnedParts {
    input: Option<Bytes>,
    weight: Option<Bytes>,
    bias: Option<Bytes>,
    spec: Option<Bytes>,
}

impl OwnedParts {
    fn borrowed(&self) -> NpyParts<'_> {
        NpyParts {
            input: self.input.as_deref(),
            weight: self.weight.as_deref(),
            bias: self.bias.as_deref(),
            spec: self.spec.as_deref(),
        }
    }
}

/// Splits the body into its named parts (on the pool: it scans the body).
fn npy_parts(raw: &RawMultipart) -> Result<OwnedParts, ApiError> {
    let mut parts = OwnedParts::default();
    for field in raw.parts()? {
        let name = field.name;
        let slot = match name.as_str() {
            "input" => &mut parts.input,
            "weight" => &mut parts.weight,
            "bias" => &mut parts.bias,
            "spec" => &mut parts.spec,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown part `{other}`; parts are input, weight, bias (.npy) and spec (JSON)"
                ))
                .at(format!("/parts/{other}")))
            }
        };
        if slot.replace(field.data).is_some() {
            return Err(ApiError::bad_request(format!("part `{name}` given twice"))
                .at(format!("/parts/{name}")));
        }
    }
    Ok(parts)
}
