//! `POST /v1/convolve` (images in, feature maps out) and `GET /v1/kernels` (presets).
//!
//! Multipart parts: one or more `image` (format sniffed from the bytes; several images form
//! a batch and must share their size) and one `spec` (JSON). The spec names the kernel —
//! `kernel` (2-D `kh×kw` or 4-D `[c_out][c_in/groups][kh][kw]`) or `preset` plus its
//! parameters as extra members — and takes every tensor-API parameter, `layers`, `color`,
//! `scale`, `channels`, and `output`.
//!
//! How a 2-D kernel meets `C` input channels: `channels: "sum"` (default) repeats it over
//! the channels into one output map (weight `[1, C, kh, kw]`, the textbook's `np.repeat`);
//! `channels: "each"` filters every channel on its own (weight `[C, 1, kh, kw]`,
//! `groups = C`), so a colour picture stays in colour.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::Json;
use ndarray::Array4;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::budget::Reservation;
use super::conv::{
    tensor_reply, unsupported, ConvJob, Reply, ShapeReport, TensorFormat, JSON, NPY,
};
use super::negotiate::{content_type, negotiate, Timings};
use super::spec::{params_from, pending_layer, PendingLayer};
use super::AppState;
use crate::codec::{self, BitDepth, CodecError, ColorMode, DecodeLimits, Normalize, PngSpeed};
use crate::config::Limits;
use crate::conv::buffers;
use crate::conv::presets::{build_preset, catalogue, PresetError, PRESET_NAMES};
use crate::error::{parse_json, ApiError};
use crate::tensor::Tensor;

const PNG: &str = "image/png";
const ZIP: &str = "application/zip";
/// Members of a layer spec that are convolution parameters (the rest are preset parameters).
const PARAM_KEYS: &[&str] = &[
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
    "activation",
];

/// `GET /v1/kernels`: every preset with its parameters, defaults and default weights.
pub async fn kernels() -> Json<Value> {
    Json(json!({ "kernels": catalogue() }))
}

/// How a 2-D kernel is applied to several input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Repeat over the channels and sum into one map.
    #[default]
    Sum,
    /// Filter each channel separately (depthwise).
    Each,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Picture(s).
    Png,
    /// Tensor JSON.
    Json,
    /// float32 `.npy`.
    Npy,
    /// One PNG per map plus `manifest.json`.
    Zip,
}

/// `spec.output`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    format: Option<Format>,
    #[serde(default)]
    normalize: Normalize,
    bit_depth: Option<u8>,
    compression: Option<Compression>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Compression {
    Fast,
    Small,
}

/// One layer of an image spec: a kernel (array or preset) plus parameters.
#[derive(Debug, Deserialize)]
struct KernelSpec {
    kernel: Option<Tensor>,
    preset: Option<String>,
    #[serde(default)]
    bias: Option<Tensor>,
    channels: Option<Channels>,
    /// Convolution parameters and preset parameters.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The `spec` part.
#[derive(Debug, Deserialize)]
struct ImageSpec {
    color: Option<ColorMode>,
    scale: Option<f64>,
    output: Option<OutputSpec>,
    layers: Option<Vec<KernelSpec>>,
    #[serde(flatten)]
    top: KernelSpec,
}

/// `POST /v1/convolve`.
pub async fn convolve(State(app): State<AppState>, req: Request) -> Result<Reply, ApiError> {
    let accepted = negotiate(req.headers(), &[PNG, JSON, NPY, ZIP])?;
    let ct = content_type(req.headers());
    if ct.as_deref() != Some("multipart/form-data") {
        return Err(unsupported(ct.as_deref(), "multipart/form-data"));
    }
    if let Err(e) = app.pool.check_room() {
        return Err(super::budget::drain(req, e).await);
    }
    let raw = super::multipart::read(req, app.limits.max_body_bytes).await?;
    let limits = app.limits.clone();
    app.pool
        .run(move |cancel| {
            let mut timings = Timings::default();
            let t = Instant::now();
            // The reservation is held with the image bytes, until they are decoded (see
            // http::budget).
            let (images, spec, reservation) = image_parts(raw, &limits)?;
            let spec: ImageSpec = parse_json(&spec, "/parts/spec")?;
            let color = spec.color.unwrap_or_default();
            let scale = spec.scale.unwrap_or(1.0);
            if !(scale.is_finite() && scale > 0.0) {
                return Err(ApiError::invalid_spec("scale must be a finite number > 0")
                    .at("/parts/spec/scale"));
            }
            let output = spec.output.unwrap_or_default();
            let format = output.format.unwrap_or(match accepted {
                Some(JSON) => Format::Json,
                Some(NPY) => Format::Npy,
                Some(ZIP) => Format::Zip,
                _ => Format::Png,
            });
            let depth = match output.bit_depth {
                None | Some(8) => BitDepth::Eight,
                Some(16) => BitDepth::Sixteen,
                Some(d) => {
                    return Err(ApiError::invalid_spec(format!(
                        "bit_depth must be 8 or 16, got {d}"
                    ))
                    .at("/parts/spec/output/bit_depth"))
                }
            };
            let speed = match output.compression {
                Some(Compression::Small) => PngSpeed::Small,
                _ => PngSpeed::Fast,
            };
            let input = decode_batch(&images, color, scale as f32, &limits)?;
            drop(images);
            drop(reservation);
            timings.record("decode", t);
            let c_in = input.shape()[1];
            let (layers, each) = build_layers(spec.top, spec.layers, c_in)?;
            let job = ConvJob { input, layers };
            let (out, report) = job.run(&limits, cancel, &mut timings)?;
            let reply = match format {
                Format::Json => tensor_reply(&out, &report, TensorFormat::Json, timings, None),
                Format::Npy => tensor_reply(&out, &report, TensorFormat::Npy, timings, None),
                Format::Png | Format::Zip => {
                    let rgb = each && c_in == 3 && report.output_shape[..2] == [1, 3];
                    picture_reply(
                        &out,
                        &report,
                        format,
                        rgb,
                        output.normalize,
                        depth,
                        speed,
                        timings,
                    )
                }
            };
            buffers::recycle(out);
            reply
        })
        .await
}

/// The image parts and the spec part (on the pool: it splits the body).
fn image_parts(
    raw: super::multipart::RawMultipart,
    limits: &Limits,
) -> Result<(Vec<Bytes>, Bytes, Option<Reservation>), ApiError> {
    let parts = raw.parts()?;
    let reservation = raw.body.reservation;
    let mut images = Vec::new();
    let mut spec = None;
    for part in parts {
        let name = part.name;
        if name == "image" && images.len() as u64 >= limits.max_images {
            return Err(ApiError::over_limit(
                StatusCode::PAYLOAD_TOO_LARGE,
                "image parts",
                limits.max_images,
                images.len() as u64 + 1,
            )
            .at("/parts/image"));
        }
        match name.as_str() {
            "image" => images.push(part.data),
            "spec" if spec.is_none() => spec = Some(part.data),
            "spec" => {
                return Err(ApiError::bad_request("part `spec` given twice").at("/parts/spec"))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown part `{other}`; parts are `image` (one or more) and `spec`"
                ))
                .at(format!("/parts/{other}")))
            }
        }
    }
    let spec =
        spec.ok_or_else(|| ApiError::bad_request("missing part `spec` (JSON)").at("/parts/spec"))?;
    if images.is_empty() {
        return Err(
            ApiError::bad_request("missing part `image`: send one or more images")
                .at("/parts/image"),
        );
    }
    Ok((images, spec, reservation))
}

fn codec_error(e: CodecError, i: usize) -> ApiError {
    let at = format!("/parts/image/{i}");
    match e {
        CodecError::TooLarge {
            what,
            limit,
            actual,
        } => ApiError::over_limit(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("image {what}"),
            limit,
            actual,
        )
        .at(at),
        CodecError::Empty => ApiError::invalid_spec(format!("image {i} has no pixels")).at(at),
        CodecError::Encode(m) => ApiError::internal(m),
        other => ApiError::unsupported_media(format!("image {i}: {other}")).at(at),
    }
}

/// Decodes the batch into `[n, c, h, w]`, refusing mixed sizes.
fn decode_batch(
    images: &[Bytes],
    color: ColorMode,
    scale: f32,
    limits: &Limits,
) -> Result<Array4<f32>, ApiError> {
    let dl = DecodeLimits {
        max_width: limits.max_image_side,
        max_height: limits.max_image_side,
        max_pixels: limits.max_image_pixels,
        max_alloc_bytes: limits.max_image_pixels.saturating_mul(16),
    };
    let mut data = Vec::new();
    let mut first: Option<(usize, usize, usize)> = None;
    for (i, bytes) in images.iter().enumerate() {
        let img = codec::decode_image(bytes, color, scale, &dl).map_err(|e| codec_error(e, i))?;
        let dims = (img.channels, img.height, img.width);
        match first {
            None => {
                let total = (img.data.len() as u64).saturating_mul(images.len() as u64);
                if total > limits.max_tensor_elements {
                    return Err(ApiError::over_limit(StatusCode::PAYLOAD_TOO_LARGE, "input elements", limits.max_tensor_elements, total).at("/parts/image"));
                }
                if images.len() > 1 {
                    data = buffers::take(img.data.len() * images.len());
                }
                first = Some(dims);
            }
            Some(f) if f != dims => {
                return Err(ApiError::invalid_spec(format!(
                    "images in a batch must share size and channels: image 0 is {}×{} with {} channel(s), image {i} is {}×{} with {} channel(s)",
                    f.2, f.1, f.0, dims.2, dims.1, dims.0
                ))
                .at(format!("/parts/image/{i}")))
            }
            Some(_) => {}
        }
        if images.len() == 1 {
            data = img.data; // no copy for the common single image
        } else {
            data.extend_from_slice(&img.data);
            buffers::give(img.data);
        }
    }
    let (c, h, w) = first.expect("at least one image");
    Array4::from_shape_vec((images.len(), c, h, w), data).map_err(ApiError::internal)
}

/// Builds the layers; returns whether the first layer filters channels separately.
fn build_layers(
    top: KernelSpec,
    layers: Option<Vec<KernelSpec>>,
    c_in: usize,
) -> Result<(Vec<PendingLayer>, bool), ApiError> {
    let specs: Vec<(String, KernelSpec)> = match layers {
        None => vec![("/parts/spec".to_string(), top)],
        Some(mut layers) => {
            if top.kernel.is_some()
                || top.preset.is_some()
                || top.bias.is_some()
                || !top.rest.is_empty()
            {
                return Err(ApiError::invalid_spec(
                    "with `layers`, give kernels and parameters inside each layer (a top-level `channels` is the default of the layers that do not give their own)",
                )
                .at("/parts/spec/layers"));
            }
            // A top-level `channels` applies to every layer without its own.
            for l in &mut layers {
                l.channels = l.channels.or(top.channels);
            }
            if layers.is_empty() {
                return Err(
                    ApiError::invalid_spec("`layers` must hold at least one layer")
                        .at("/parts/spec/layers"),
                );
            }
            layers
                .into_iter()
                .enumerate()
                .map(|(i, l)| (format!("/parts/spec/layers/{i}"), l))
                .collect()
        }
    };
    let first_each = specs[0].1.channels == Some(Channels::Each);
    let mut channels = c_in;
    let mut out = Vec::with_capacity(specs.len());
    for (base, spec) in specs {
        let layer = kernel_layer(spec, channels, &base)?;
        channels = layer.layer.weight.shape()[0];
        out.push(layer);
    }
    Ok((out, first_each))
}

/// One layer: resolves the kernel (array or preset) against `c_in` flowing in.
fn kernel_layer(spec: KernelSpec, c_in: usize, base: &str) -> Result<PendingLayer, ApiError> {
    let (mut params, preset_params): (Map<String, Value>, Map<String, Value>) = spec
        .rest
        .into_iter()
        .partition(|(k, _)| PARAM_KEYS.contains(&k.as_str()));
    let kernel = match (spec.kernel, spec.preset) {
        (Some(k), None) => {
            if let Some(k) = preset_params.keys().next() {
                return Err(ApiError::invalid_spec(format!("unknown field `{k}`"))
                    .at(format!("{base}/{k}")));
            }
            k
        }
        (None, Some(name)) => {
            let k = build_preset(&name, &preset_params).map_err(|e| preset_error(e, base))?;
            Tensor {
                shape: vec![k.k_h, k.k_w],
                data: k.weights,
            }
        }
        (Some(_), Some(_)) => {
            return Err(
                ApiError::invalid_spec("give either `kernel` or `preset`, not both")
                    .at(format!("{base}/preset")),
            )
        }
        (None, None) if preset_params.contains_key("weight") => {
            return Err(ApiError::invalid_spec(
                "the image API takes the kernel as `kernel` (2-D, or 4-D like the tensor API's `weight`) or a `preset`; `weight` is the tensor API's name",
            )
            .at(format!("{base}/weight")))
        }
        (None, None) => {
            return Err(
                ApiError::invalid_spec("missing `kernel` or `preset`").at(format!("{base}/kernel"))
            )
        }
    };
    let channels = spec.channels.unwrap_or_default();
    let (weight, groups) = match kernel.shape.as_slice() {
        &[k_h, k_w] => match channels {
            Channels::Sum => (
                Tensor {
                    shape: vec![1, c_in, k_h, k_w],
                    data: kernel.data.repeat(c_in),
                },
                1,
            ),
            Channels::Each => (
                Tensor {
                    shape: vec![c_in, 1, k_h, k_w],
                    data: kernel.data.repeat(c_in),
                },
                c_in,
            ),
        },
        [_, _, _, _] => {
            if spec.channels.is_some() {
                return Err(ApiError::invalid_spec(
                    "`channels` applies to 2-D kernels only; a 4-D kernel states its channels",
                )
                .at(format!("{base}/channels")));
            }
            (kernel, 0)
        }
        other => {
            return Err(ApiError::invalid_spec(format!(
            "kernel must be 2-D [kh][kw] or 4-D [c_out][c_in/groups][kh][kw], got shape {other:?}"
        ))
            .at(format!("{base}/kernel")))
        }
    };
    if groups > 1 {
        if params.contains_key("groups") {
            return Err(ApiError::invalid_spec(
                "`groups` is implied by `channels: each` for a 2-D kernel",
            )
            .at(format!("{base}/groups")));
        }
        params.insert("groups".into(), json!(groups));
    }
    let c_out = weight.shape[0];
    // One bias value for a per-channel (`each`) 2-D kernel applies to every channel.
    let bias = spec.bias.map(|b| {
        if b.shape == [1] && c_out > 1 && channels == Channels::Each {
            Tensor {
                shape: vec![c_out],
                data: vec![b.data[0]; c_out],
            }
        } else {
            b
        }
    });
    let params = params_from(params, base)?;
    let mut layer = pending_layer(weight, bias, &params, base.to_string())?;
    layer.weight_field = "kernel";
    Ok(layer)
}

fn preset_error(e: PresetError, base: &str) -> ApiError {
    match e {
        PresetError::Unknown { .. } => ApiError::invalid_spec(e.to_string())
            .at(format!("{base}/preset"))
            .with("known", json!(PRESET_NAMES)),
        PresetError::BadParam { ref param, .. } | PresetError::UnknownParam { ref param, .. } => {
            let at = format!("{base}/{param}");
            ApiError::invalid_spec(e.to_string()).at(at)
        }
    }
}

/// PNG (single, RGB or montage) or ZIP of per-map PNGs.
#[allow(clippy::too_many_arguments)]
fn picture_reply(
    out: &Array4<f32>,
    report: &ShapeReport,
    format: Format,
    rgb: bool,
    normalize: Normalize,
    depth: BitDepth,
    speed: PngSpeed,
    mut timings: Timings,
) -> Result<Reply, ApiError> {
    let t = Instant::now();
    let [n, c, h, w] = report.output_shape;
    let data = out.as_slice().expect("contiguous");
    let maps: Vec<&[f32]> = data.chunks_exact(h * w).collect();
    let enc = |e: CodecError| ApiError::internal(e);
    let (content_type, body, ranges) = match format {
        Format::Zip => {
            let manifest = json!({
                "shape": report.output_shape,
                "input_shape": report.input_shape,
                "normalize": normalize,
                "bit_depth": if depth == BitDepth::Sixteen { 16 } else { 8 },
                "layers": report.layers,
                "receptive_field": report.receptive_field,
                "macs": report.macs,
            });
            let body = codec::encode_zip(&maps, n, c, h, w, normalize, depth, speed, manifest)
                .map_err(enc)?;
            (ZIP, body, None)
        }
        _ => {
            let (body, ranges) = if maps.len() == 1 || rgb {
                codec::encode_png(&maps, h, w, normalize, depth, speed).map_err(enc)?
            } else {
                codec::encode_montage(&maps, n, c, h, w, normalize, depth, speed).map_err(enc)?
            };
            (PNG, body, Some(ranges))
        }
    };
    timings.record("encode", t);
    let mut headers = vec![
        (HeaderName::from_static("server-timing"), timings.header()),
        (
            HeaderName::from_static("x-conv-shape"),
            HeaderValue::from_str(&format!("{n},{c},{h},{w}")).map_err(ApiError::internal)?,
        ),
        (header::VARY, HeaderValue::from_static("accept")),
    ];
    if let Some(ranges) = ranges {
        let v = ranges
            .iter()
            .map(|r| format!("{}:{}", r.lo, r.hi))
            .collect::<Vec<_>>()
            .join(",");
        headers.push((
            HeaderName::from_static("x-conv-range"),
            HeaderValue::from_str(&v).map_err(ApiError::internal)?,
        ));
    }
    Ok(Reply {
        content_type,
        body,
        headers,
        timings,
    })
}
