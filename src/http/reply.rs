//! What a computing request answers: the [`Reply`] and its one header builder, the media
//! types, and the tensor encodings (JSON, `.npy`). Pictures are encoded in [`super::images`].

use std::time::Instant;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ndarray::Array4;
use serde::Serialize;

use super::negotiate::Timings;
use crate::error::{ApiError, ProblemKind};
use crate::spec::ShapeReport;

/// Media type of NumPy files.
pub const NPY: &str = "application/x-npy";
/// Media type of JSON.
pub const JSON: &str = "application/json";
/// Media type of PNG pictures.
pub const PNG: &str = "image/png";
/// Media type of ZIP archives.
pub const ZIP: &str = "application/zip";
/// Media type of TIFF files (float32 feature maps).
pub const TIFF: &str = "image/tiff";
/// Media type of WebP pictures.
pub const WEBP: &str = "image/webp";

/// A reply computed on the pool: media type, body, extra headers.
pub struct Reply {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Additional headers (`Server-Timing`, `X-Conv-Shape`, …).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The stages, also handed to the metrics middleware as a response extension.
    pub timings: Timings,
}

impl Reply {
    /// A computed result with the headers every computing response carries:
    /// `Server-Timing` (the stages recorded so far, `encode` included), `X-Conv-Shape`
    /// (`n,c,h,w` of the output) and `Vary: accept`.
    ///
    /// # Errors
    /// 500 if a header value cannot be built (it always can).
    pub fn computed(
        content_type: &'static str,
        body: Vec<u8>,
        shape: [usize; 4],
        timings: Timings,
    ) -> Result<Self, ApiError> {
        let headers = vec![
            (HeaderName::from_static("server-timing"), timings.header()),
            (
                HeaderName::from_static("x-conv-shape"),
                HeaderValue::from_str(&shape.map(|d| d.to_string()).join(","))
                    .map_err(ApiError::internal)?,
            ),
            (header::VARY, HeaderValue::from_static("accept")),
        ];
        Ok(Self {
            content_type,
            body,
            headers,
            timings,
        })
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((HeaderName::from_static(name), value));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::OK, self.body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        res.extensions_mut().insert(self.timings);
        res
    }
}

/// 415 for a content type an endpoint does not take.
pub fn unsupported(got: Option<&str>, want: &str) -> ApiError {
    ApiError::unsupported_media(format!(
        "Content-Type must be {want}, got {}",
        got.unwrap_or("nothing")
    ))
    .at("/headers/content-type")
}

/// Output format of a tensor result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorFormat {
    /// JSON tensor response.
    Json,
    /// `.npy` file.
    Npy,
    /// Float32 TIFF, one page per map, the report in the first page's description
    /// ([`crate::codec::tiff_out`]).
    Tiff,
}

/// Encodes a tensor result as JSON, npy or float32 TIFF, refusing non-finite values in JSON.
///
/// # Errors
/// 422 `output-not-finite` when JSON cannot carry the result.
pub fn tensor_reply(
    out: &Array4<f32>,
    report: &ShapeReport,
    format: TensorFormat,
    mut timings: Timings,
) -> Result<Reply, ApiError> {
    let t = Instant::now();
    let data = out.as_slice().expect("outputs are contiguous");
    let shape: [usize; 4] = report.output_shape;
    let nonfinite = data.iter().filter(|v| !v.is_finite()).count();
    let (content_type, body) = match format {
        TensorFormat::Npy => (NPY, crate::npy::write_npy_f32(&shape, data)),
        TensorFormat::Tiff => {
            let mut manifest = serde_json::to_value(report).map_err(ApiError::internal)?;
            manifest["shape"] = serde_json::json!(shape);
            let maps: Vec<&[f32]> = data.chunks_exact(shape[2] * shape[3]).collect();
            let body = crate::codec::encode_tiff(&maps, shape[1], shape[2], shape[3], manifest)
                .map_err(ApiError::internal)?;
            (TIFF, body)
        }
        TensorFormat::Json => {
            if nonfinite > 0 {
                let first = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
                return Err(ApiError::new(ProblemKind::OutputNotFinite,
                    format!("{nonfinite} output value(s) overflow float32 (first at flat index {first}); JSON cannot carry Inf/NaN: scale the inputs down or ask for `Accept: application/x-npy`"),
                )
                .with("count", serde_json::json!(nonfinite))
                .with("first_index", serde_json::json!(first)));
            }
            #[derive(Serialize)]
            struct Body<'a> {
                shape: [usize; 4],
                datatype: &'static str,
                data: &'a [f32],
                #[serde(flatten)]
                report: &'a ShapeReport,
            }
            let body = serde_json::to_vec(&Body {
                shape,
                datatype: "FP32",
                data,
                report,
            })
            .map_err(ApiError::internal)?;
            (JSON, body)
        }
    };
    timings.record("encode", t);
    let reply = Reply::computed(content_type, body, shape, timings)?;
    Ok(if nonfinite > 0 {
        reply.with_header("x-conv-nonfinite", HeaderValue::from(nonfinite))
    } else {
        reply
    })
}
