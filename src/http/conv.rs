//! `POST /v1/conv2d` (tensors in, tensor out) and `POST /v1/conv2d/shape` (shapes only).
//!
//! Bodies: `application/json` ([`ConvRequest`]) or `multipart/form-data` with `.npy` parts
//! `input`, `weight`, optional `bias`, and a `spec` part holding the remaining JSON fields.
//! Output: JSON (default) or `.npy` (`Accept: application/x-npy`).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ndarray::Array4;
use serde::{Deserialize, Serialize};

use super::budget::{ReadBody, Reservation};
use super::negotiate::{content_type, negotiate, Timings};
use super::spec::{
    collect_layers, params_from, pending_layer, plan, Ints, LayerJson, PaddingJson, ParamsJson,
    PendingLayer,
};
use super::AppState;
use crate::config::Limits;
use crate::conv::{
    buffers, receptive_fields, run_stack, Activation, Conv2dAlgo, Conv2dGeometry, Conv2dLayer,
    PaddingMode, ReceptiveField,
};
use crate::error::{parse_json, ApiError, ProblemKind};
use crate::tensor::Tensor;
use crate::worker::cancelled;

/// Media type of NumPy files.
pub const NPY: &str = "application/x-npy";
/// Media type of JSON.
pub const JSON: &str = "application/json";
/// Largest body of `POST /v1/conv2d/shape` (it carries shapes, not tensors).
pub const SHAPE_BODY_BYTES: u64 = 64 * 1024;

/// The JSON body of `POST /v1/conv2d`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvRequest {
    /// `[n, c_in, h, w]`.
    pub input: Tensor,
    /// `[c_out, c_in/groups, k_h, k_w]` (or use `layers`).
    pub weight: Option<Tensor>,
    /// `[c_out]` or `null`.
    #[serde(default)]
    pub bias: Option<Tensor>,
    /// See [`ParamsJson`].
    pub stride: Option<Ints>,
    /// See [`ParamsJson`].
    pub padding: Option<PaddingJson>,
    /// See [`ParamsJson`].
    pub dilation: Option<Ints>,
    /// See [`ParamsJson`].
    pub groups: Option<i64>,
    /// See [`ParamsJson`].
    pub padding_mode: Option<PaddingMode>,
    /// See [`ParamsJson`].
    pub activation: Option<Activation>,
    /// A stack of layers instead of `weight`/`bias`/parameters.
    pub layers: Option<Vec<LayerJson>>,
}

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

/// What shapes alone say about one layer.
#[derive(Debug, Serialize)]
pub struct LayerSummary {
    /// `[n, c_in, h, w]` flowing in.
    pub input_shape: [usize; 4],
    /// `[c_out, c_in/groups, k_h, k_w]`.
    pub weight_shape: [usize; 4],
    /// `[n, c_out, out_h, out_w]`.
    pub output_shape: [usize; 4],
    /// Resolved `[top, bottom, left, right]`.
    pub padding: [usize; 4],
    /// `[s_h, s_w]`.
    pub stride: [usize; 2],
    /// `[d_h, d_w]`.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Padding mode.
    pub padding_mode: PaddingMode,
    /// Activation after the layer.
    pub activation: Activation,
    /// `[d_h·(k_h−1)+1, d_w·(k_w−1)+1]`.
    pub effective_kernel: [usize; 2],
    /// Cumulative receptive field `[h, w]` after this layer, in input pixels.
    pub receptive_field: [u64; 2],
    /// Cumulative jump (product of strides) `[h, w]`.
    pub jump: [u64; 2],
    /// Multiply-accumulates of this layer.
    pub macs: u64,
    /// The algorithm that runs (or, in `/v1/conv2d/shape`, would run) this layer.
    pub algorithm: Conv2dAlgo,
    /// Why the plan chose it, with the cost model's estimates.
    pub algorithm_reason: String,
}

/// Summaries of a planned stack, with activations.
pub fn summarize(geoms: &[Conv2dGeometry], activations: &[Activation]) -> Vec<LayerSummary> {
    receptive_fields(geoms)
        .into_iter()
        .zip(geoms)
        .zip(activations)
        .map(|((ReceptiveField { size, jump }, g), &activation)| {
            let p = crate::conv::plan::plan(g);
            LayerSummary {
                input_shape: g.input_shape(),
                weight_shape: g.weight_shape(),
                output_shape: g.output_shape(),
                padding: g.padding,
                stride: g.stride,
                dilation: g.dilation,
                groups: g.groups,
                padding_mode: g.padding_mode,
                activation,
                effective_kernel: g.effective_kernel(),
                receptive_field: size,
                jump,
                macs: g.macs(),
                algorithm: p.algorithm,
                algorithm_reason: p.reason,
            }
        })
        .collect()
}

/// The shape description shared by tensor responses and `/v1/conv2d/shape`.
#[derive(Debug, Serialize)]
pub struct ShapeReport {
    /// `[n, c_in, h, w]`.
    pub input_shape: [usize; 4],
    /// Final `[n, c_out, out_h, out_w]`.
    pub output_shape: [usize; 4],
    /// Resolved padding: `[t, b, l, r]` for one layer, one such list per layer for a stack.
    pub padding: serde_json::Value,
    /// Receptive field of the whole stack `[h, w]`.
    pub receptive_field: [u64; 2],
    /// Jump of the whole stack `[h, w]`.
    pub jump: [u64; 2],
    /// Total multiply-accumulates.
    pub macs: u64,
    /// Per layer.
    pub layers: Vec<LayerSummary>,
}

impl ShapeReport {
    /// Builds the report of a planned stack.
    pub fn new(geoms: &[Conv2dGeometry], activations: &[Activation]) -> Self {
        let layers = summarize(geoms, activations);
        let last = layers.last().expect("a stack has at least one layer");
        let padding = if layers.len() == 1 {
            serde_json::json!(last.padding)
        } else {
            serde_json::json!(layers.iter().map(|l| l.padding).collect::<Vec<_>>())
        };
        Self {
            input_shape: layers[0].input_shape,
            output_shape: last.output_shape,
            padding,
            receptive_field: last.receptive_field,
            jump: last.jump,
            macs: layers.iter().fold(0u64, |a, l| a.saturating_add(l.macs)),
            layers,
        }
    }
}

/// Checks a planned stack against the configured limits (before any compute allocation).
///
/// # Errors
/// 413 / 422 with `limit` and `actual`.
pub fn check_limits(
    limits: &Limits,
    geoms: &[Conv2dGeometry],
    layers: &[PendingLayer],
) -> Result<(), ApiError> {
    let over = |what: &str, limit: u64, actual: u64, at: String| {
        ApiError::over_limit(StatusCode::UNPROCESSABLE_ENTITY, what, limit, actual).at(at)
    };
    // Each layer's pointer prefix and what its request calls the weight (`kernel` in an
    // image spec), so that a limit points at the member the client sent.
    let base = |i: usize| layers.get(i).map_or(String::new(), |l| l.base.clone());
    let weight = |i: usize| layers.get(i).map_or("weight", |l| l.weight_field);
    if geoms.len() as u64 > limits.max_layers {
        let first = base(0);
        let at = first
            .strip_suffix("/0")
            .map_or_else(|| format!("{first}/layers"), str::to_string);
        return Err(over("layers", limits.max_layers, geoms.len() as u64, at));
    }
    let mut macs = 0u64;
    for (i, g) in geoms.iter().enumerate() {
        let base = base(i);
        let side = g.k_h.max(g.k_w) as u64;
        if side > limits.max_kernel_side {
            return Err(over(
                "kernel side",
                limits.max_kernel_side,
                side,
                format!("{base}/{}", weight(i)),
            ));
        }
        // The compute reads the padded input (in bands, but a band spans the padded
        // width), so padding is bounded like an output: a huge `padding`, or `"same"` with
        // a huge dilation, must not turn into a huge allocation behind a tiny output.
        let [top, bottom, left, right] = g.padding.map(|p| p as u64);
        let padded = (g.n as u64)
            .saturating_mul(g.c_in as u64)
            .saturating_mul((g.h as u64).saturating_add(top).saturating_add(bottom))
            .saturating_mul((g.w as u64).saturating_add(left).saturating_add(right));
        if padded > limits.max_output_elements {
            return Err(over(
                "padded input elements",
                limits.max_output_elements,
                padded,
                format!("{base}/padding"),
            ));
        }
        let channels = g.c_in.max(g.c_out) as u64;
        if channels > limits.max_channels {
            return Err(over(
                "channels",
                limits.max_channels,
                channels,
                format!("{base}/{}", weight(i)),
            ));
        }
        if g.output_len() > limits.max_output_elements {
            return Err(over(
                "output elements",
                limits.max_output_elements,
                g.output_len(),
                base,
            ));
        }
        macs = macs.saturating_add(g.macs());
    }
    if macs > limits.max_macs {
        return Err(over(
            "multiply-accumulates (compute budget)",
            limits.max_macs,
            macs,
            String::new(),
        ));
    }
    Ok(())
}

/// Shapes the input tensor as NCHW and checks its size limit.
///
/// # Errors
/// 422 if not 4-D, 413 if over `max_tensor_elements`.
pub fn input_array(t: Tensor, limits: &Limits, pointer: &str) -> Result<Array4<f32>, ApiError> {
    if t.len() as u64 > limits.max_tensor_elements {
        return Err(ApiError::over_limit(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input elements",
            limits.max_tensor_elements,
            t.len() as u64,
        )
        .at(pointer));
    }
    let Some(shape) = t.shape_n::<4>() else {
        return Err(ApiError::invalid_spec(format!(
            "input must be 4-D [n, c_in, h, w], got shape {:?}",
            t.shape
        ))
        .at(pointer));
    };
    Array4::from_shape_vec(shape, t.data).map_err(ApiError::internal)
}

/// Output format of the tensor endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorFormat {
    /// JSON tensor response.
    Json,
    /// `.npy` file.
    Npy,
}

/// Validated work for the pool.
pub struct ConvJob {
    /// `[n, c_in, h, w]`.
    pub input: Array4<f32>,
    /// Layers with their pointer prefixes.
    pub layers: Vec<PendingLayer>,
}

impl ConvJob {
    /// Plans, checks limits, convolves; returns the output and the shape report.
    ///
    /// # Errors
    /// 422 for impossible specs or limits; 503 if cancelled.
    pub fn run(
        self,
        limits: &Limits,
        cancel: &crate::conv::CancelToken,
        timings: &mut Timings,
    ) -> Result<(Array4<f32>, ShapeReport), ApiError> {
        let shape = self.input.shape();
        let geoms = plan([shape[0], shape[1], shape[2], shape[3]], &self.layers)?;
        check_limits(limits, &geoms, &self.layers)?;
        let activations: Vec<Activation> = self.layers.iter().map(|l| l.layer.activation).collect();
        let mut report = ShapeReport::new(&geoms, &activations);
        let layers: Vec<Conv2dLayer> = self.layers.into_iter().map(|l| l.layer).collect();
        let t = std::time::Instant::now();
        let out = run_stack(self.input.view(), &layers, &geoms, cancel);
        if let Ok((_, plans)) = &out {
            let algos: Vec<&str> = plans.iter().map(|p| p.algorithm.as_str()).collect();
            timings.record_described("conv", t, algos.join("+"));
        }
        buffers::recycle(self.input);
        let (out, plans) = out.map_err(|_| cancelled())?;
        // The plans that ran (a direct layer becomes separable when its weights are rank-1).
        for (summary, p) in report.layers.iter_mut().zip(&plans) {
            summary.algorithm = p.algorithm;
            summary.algorithm_reason.clone_from(&p.reason);
        }
        Ok((out, report))
    }
}

/// Encodes a tensor result as JSON or npy, refusing non-finite values in JSON.
///
/// # Errors
/// 422 `output-not-finite` when JSON cannot carry the result.
pub fn tensor_reply(
    out: &Array4<f32>,
    report: &ShapeReport,
    format: TensorFormat,
    mut timings: Timings,
    extra: Option<(&str, serde_json::Value)>,
) -> Result<Reply, ApiError> {
    let t = Instant::now();
    let data = out.as_slice().expect("outputs are contiguous");
    let shape: [usize; 4] = report.output_shape;
    let nonfinite = data.iter().filter(|v| !v.is_finite()).count();
    let (content_type, body) = match format {
        TensorFormat::Npy => (NPY, crate::npy::write_npy_f32(&shape, data)),
        TensorFormat::Json => {
            if nonfinite > 0 {
                let first = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ProblemKind::OutputNotFinite,
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
                #[serde(flatten)]
                extra: serde_json::Map<String, serde_json::Value>,
            }
            let mut extra_map = serde_json::Map::new();
            if let Some((k, v)) = extra {
                extra_map.insert(k.to_string(), v);
            }
            let body = serde_json::to_vec(&Body {
                shape,
                datatype: "FP32",
                data,
                report,
                extra: extra_map,
            })
            .map_err(ApiError::internal)?;
            (JSON, body)
        }
    };
    timings.record("encode", t);
    let mut headers = vec![
        (HeaderName::from_static("server-timing"), timings.header()),
        (
            HeaderName::from_static("x-conv-shape"),
            HeaderValue::from_str(&shape.map(|d| d.to_string()).join(","))
                .map_err(ApiError::internal)?,
        ),
        (header::VARY, HeaderValue::from_static("accept")),
    ];
    if nonfinite > 0 {
        headers.push((
            HeaderName::from_static("x-conv-nonfinite"),
            HeaderValue::from(nonfinite),
        ));
    }
    Ok(Reply {
        content_type,
        body,
        headers,
        timings,
    })
}

/// Reads a whole body, refusing more than `limit` bytes with 413.
///
/// # Errors
/// 413 over the limit, 400 if the body stream fails.
pub async fn read_body(mut req: Request, limit: u64) -> Result<ReadBody, ApiError> {
    use http_body_util::BodyExt;
    let reservation = super::budget::take_reservation(&mut req);
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |actual: u64| {
        ApiError::over_limit(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body bytes",
            limit,
            actual,
        )
        .closing()
    };
    if let Some(len) = announced.filter(|&len| len > limit) {
        return Err(too_large(len));
    }
    // One buffer of the announced size: no growth by doubling, no second copy.
    let mut buf = Vec::with_capacity(usize::try_from(announced.unwrap_or(0)).unwrap_or(0));
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            super::budget::body_error(&e).unwrap_or_else(|| {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            })
        })?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large(limit + 1));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(ReadBody {
        bytes: Bytes::from(buf),
        reservation,
    })
}

fn tensor_format(headers: &HeaderMap) -> Result<TensorFormat, ApiError> {
    Ok(match negotiate(headers, &[JSON, NPY])? {
        Some(NPY) => TensorFormat::Npy,
        _ => TensorFormat::Json,
    })
}

/// `POST /v1/conv2d`.
pub async fn conv2d(State(app): State<AppState>, req: Request) -> Result<Reply, ApiError> {
    let format = tensor_format(req.headers())?;
    if let Err(e) = app.pool.check_room() {
        return Err(super::budget::drain(req, e).await);
    }
    let limits = app.limits.clone();
    match content_type(req.headers()).as_deref() {
        Some("application/json") => {
            let body = read_body(req, limits.max_body_bytes).await?;
            app.pool
                .run(move |cancel| {
                    let mut timings = Timings::default();
                    let t = Instant::now();
                    let r: ConvRequest = parse_json(&body.bytes, "")?;
                    drop(body);
                    let job = r.into_job(&limits)?;
                    timings.record("parse", t);
                    let (out, report) = job.run(&limits, cancel, &mut timings)?;
                    let reply = tensor_reply(&out, &report, format, timings, None);
                    buffers::recycle(out);
                    reply
                })
                .await
        }
        Some("multipart/form-data") => {
            let raw = super::multipart::read(req, limits.max_body_bytes).await?;
            app.pool
                .run(move |cancel| {
                    let mut timings = Timings::default();
                    let t = Instant::now();
                    let job = npy_parts(raw)?.into_job(&limits)?;
                    timings.record("parse", t);
                    let (out, report) = job.run(&limits, cancel, &mut timings)?;
                    let reply = tensor_reply(&out, &report, format, timings, None);
                    buffers::recycle(out);
                    reply
                })
                .await
        }
        other => Err(unsupported(
            other,
            "application/json or multipart/form-data",
        )),
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

impl ConvRequest {
    /// Shapes the input and collects the layers (top-level fields or `layers`).
    ///
    /// # Errors
    /// 413 / 422 for an input over the limit or not 4-D, or an invalid layer.
    pub fn into_job(self, limits: &Limits) -> Result<ConvJob, ApiError> {
        let input = input_array(self.input, limits, "/input")?;
        let top = ParamsJson {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            padding_mode: self.padding_mode,
            activation: self.activation,
        };
        let layers = collect_layers(self.weight, self.bias, top, self.layers)?;
        Ok(ConvJob { input, layers })
    }
}

/// The raw parts of a multipart tensor request.
pub struct NpyParts {
    input: Option<Bytes>,
    weight: Option<Bytes>,
    bias: Option<Bytes>,
    spec: Option<Bytes>,
    /// The body's bytes in flight, given back when the parts are dropped.
    _reservation: Option<Reservation>,
}

/// The named parts of a multipart tensor request (on the pool: it splits the body).
fn npy_parts(raw: super::multipart::RawMultipart) -> Result<NpyParts, ApiError> {
    let fields = raw.parts()?;
    let reservation = raw.body.reservation;
    let mut parts = NpyParts {
        input: None,
        weight: None,
        bias: None,
        spec: None,
        _reservation: reservation,
    };
    for field in fields {
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

/// Reads one `.npy` part as a tensor.
///
/// # Errors
/// 400 for a malformed file, 413 for one over the element limit.
pub fn npy_tensor(bytes: &[u8], part: &str, limits: &Limits) -> Result<Tensor, ApiError> {
    use crate::npy::NpyError;
    crate::npy::read_npy(bytes, limits.max_tensor_elements)
        .map(|(shape, data)| Tensor { shape, data })
        .map_err(|e| {
            match e {
                NpyError::TooLarge { limit, actual } => ApiError::over_limit(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "tensor elements",
                    limit,
                    actual,
                ),
                NpyError::NonFinite { .. } => ApiError::invalid_spec(format!("part `{part}`: {e}")),
                other => ApiError::bad_request(format!(
                    "part `{part}` is not a usable .npy file: {other}"
                )),
            }
            .at(format!("/parts/{part}"))
        })
}

impl NpyParts {
    fn into_job(self, limits: &Limits) -> Result<ConvJob, ApiError> {
        let input = self.input.ok_or_else(|| {
            ApiError::bad_request("missing part `input` (.npy)").at("/parts/input")
        })?;
        let input = input_array(npy_tensor(&input, "input", limits)?, limits, "/parts/input")?;
        let spec: MultipartSpec = match &self.spec {
            Some(s) => parse_json(s, "/parts/spec")?,
            None => MultipartSpec::default(),
        };
        let params = params_from(spec.params, "/parts/spec")?;
        let layers = match (self.weight, spec.layers) {
            (Some(w), None) => {
                let weight = npy_tensor(&w, "weight", limits)?;
                let bias = self
                    .bias
                    .map(|b| npy_tensor(&b, "bias", limits))
                    .transpose()?;
                vec![pending_layer(weight, bias, &params, "/parts/spec".into())?]
            }
            (None, Some(layers)) => collect_layers(None, None, params, Some(layers))?,
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_spec(
                    "give either a `weight` part or `layers` in spec, not both",
                )
                .at("/parts/spec/layers"))
            }
            (None, None) => {
                return Err(
                    ApiError::bad_request("missing part `weight` (.npy)").at("/parts/weight")
                )
            }
        };
        Ok(ConvJob { input, layers })
    }
}

/// The JSON `spec` part of a multipart tensor request: parameters or `layers`.
#[derive(Debug, Default, Deserialize)]
struct MultipartSpec {
    layers: Option<Vec<LayerJson>>,
    #[serde(flatten)]
    params: serde_json::Map<String, serde_json::Value>,
}

/// The body of `POST /v1/conv2d/shape`.
#[derive(Debug, Deserialize)]
pub struct ShapeRequest {
    /// `[n, c_in, h, w]`.
    pub input_shape: Vec<i64>,
    /// `[c_out, c_in/groups, k_h, k_w]` (or use `layers`).
    pub weight_shape: Option<Vec<i64>>,
    /// `[c_out]` when a bias is given.
    pub bias_shape: Option<Vec<i64>>,
    /// A stack of layers with shapes.
    pub layers: Option<Vec<ShapeLayer>>,
    /// The [`ParamsJson`] fields.
    #[serde(flatten)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// One layer of a shape request.
#[derive(Debug, Deserialize)]
pub struct ShapeLayer {
    /// `[c_out, c_in/groups, k_h, k_w]`.
    pub weight_shape: Vec<i64>,
    /// `[c_out]` when a bias is given.
    pub bias_shape: Option<Vec<i64>>,
    /// The [`ParamsJson`] fields.
    #[serde(flatten)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

fn dims<const N: usize>(v: &[i64], what: &str, at: &str) -> Result<[usize; N], ApiError> {
    let arr: [i64; N] = v.try_into().map_err(|_| {
        ApiError::invalid_spec(format!("{what} must have {N} dimensions, got {}", v.len())).at(at)
    })?;
    if let Some(bad) = arr.iter().find(|&&d| d < 0) {
        return Err(
            ApiError::invalid_spec(format!("{what} has a negative dimension {bad}")).at(at),
        );
    }
    Ok(arr.map(|d| d as usize))
}

/// `POST /v1/conv2d/shape`: plan only.
pub async fn conv2d_shape(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let ct = content_type(req.headers());
    if ct.as_deref() != Some("application/json") {
        return Err(unsupported(ct.as_deref(), "application/json"));
    }
    // Shapes only: a small body, parsed on the async runtime without the pool; the cap keeps
    // that parse cheap whatever max_body_bytes is.
    let body = read_body(req, SHAPE_BODY_BYTES.min(app.limits.max_body_bytes)).await?;
    let r: ShapeRequest = parse_json(&body.bytes, "")?;
    let input = dims::<4>(&r.input_shape, "input_shape", "/input_shape")?;
    let specs: Vec<(String, [usize; 4], Option<usize>, ParamsJson)> =
        match (r.weight_shape, r.layers) {
            (Some(w), None) => vec![(
                String::new(),
                dims::<4>(&w, "weight_shape", "/weight_shape")?,
                bias_len(&r.bias_shape, "/bias_shape")?,
                params_from(r.params, "")?,
            )],
            (None, Some(_)) if r.bias_shape.is_some() || !r.params.is_empty() => {
                return Err(ApiError::invalid_spec(
                    "with `layers`, give bias_shape and parameters inside each layer",
                )
                .at("/layers"))
            }
            (None, Some(layers)) if !layers.is_empty() => layers
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    let base = format!("/layers/{i}");
                    Ok((
                        base.clone(),
                        dims::<4>(
                            &l.weight_shape,
                            "weight_shape",
                            &format!("{base}/weight_shape"),
                        )?,
                        bias_len(&l.bias_shape, &format!("{base}/bias_shape"))?,
                        params_from(l.params, &base)?,
                    ))
                })
                .collect::<Result<_, ApiError>>()?,
            _ => {
                return Err(ApiError::invalid_spec(
                    "give exactly one of `weight_shape` or a non-empty `layers`",
                )
                .at("/weight_shape"))
            }
        };
    let mut resolved = Vec::with_capacity(specs.len());
    let mut activations = Vec::with_capacity(specs.len());
    for (base, w, b, p) in &specs {
        let (params, act) = p.resolve(base)?;
        resolved.push((*w, *b, params));
        activations.push(act);
    }
    let geoms = crate::conv::plan_stack(input, &resolved).map_err(|e| {
        let base = &specs[e.layer].0;
        let field = match e.error.field {
            "weight" => "weight_shape",
            "input" => "input_shape",
            "bias" => "bias_shape",
            f => f,
        };
        let pointer = if field == "input_shape" {
            "/input_shape".to_string()
        } else {
            format!("{base}/{field}")
        };
        ApiError::invalid_spec(e.error.reason).at(pointer)
    })?;
    Ok(axum::Json(ShapeReport::new(&geoms, &activations)).into_response())
}

fn bias_len(b: &Option<Vec<i64>>, at: &str) -> Result<Option<usize>, ApiError> {
    b.as_ref()
        .map(|b| dims::<1>(b, "bias_shape", at).map(|[n]| n))
        .transpose()
}
