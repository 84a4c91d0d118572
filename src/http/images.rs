//! `POST /v1/convolve` (images in, feature maps out) and `GET /v1/kernels` (presets).
//!
//! Multipart parts: one or more `image` (format sniffed from the bytes; several images form
//! a batch and must share their size) and one `spec` (JSON, see [`crate::spec::image`]).
//! The handler splits the parts, parses the spec, decodes the images, and hands the stack
//! to [`super::job::compute`]; the result is a picture (PNG, montage, ZIP) or a tensor.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::Json;
use ndarray::Array4;
use serde_json::{json, Value};

use super::budget::Reservation;
use super::job::compute;
use super::negotiate::{content_type, negotiate, Timings};
use super::reply::{
    tensor_reply, unsupported, Reply, TensorFormat, JSON, NPY, PNG, TIFF, WEBP, ZIP,
};
use super::AppState;
use crate::codec::{self, BitDepth, CodecError, DecodeLimits, DecodeOptions};
use crate::config::Limits;
use crate::conv::buffers;
use crate::conv::presets::catalogue_within;
use crate::error::ApiError;
use crate::spec::image::{Format, ImageSpec, Output};
use crate::spec::ShapeReport;

/// `GET /v1/kernels`: every preset with its parameters, defaults and default weights; sides
/// go up to the configured `max_kernel_side`.
pub async fn kernels(State(app): State<AppState>) -> Json<Value> {
    let max_side = usize::try_from(app.limits.max_kernel_side).unwrap_or(usize::MAX);
    Json(json!({ "kernels": catalogue_within(max_side) }))
}

/// `POST /v1/convolve`.
pub async fn convolve(State(app): State<AppState>, req: Request) -> Result<Reply, ApiError> {
    let accepted = negotiate(req.headers(), &[PNG, JSON, NPY, ZIP, TIFF, WEBP])?;
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
            let spec = ImageSpec::from_json(&spec)?;
            let output = spec.output;
            let format = output.format.unwrap_or(match accepted {
                Some(JSON) => Format::Json,
                Some(NPY) => Format::Npy,
                Some(ZIP) => Format::Zip,
                Some(TIFF) => Format::Tiff,
                Some(WEBP) => Format::Webp,
                _ => Format::Png,
            });
            output.check(format)?;
            let input = decode_batch(&images, &spec.decode_options(), &limits)?;
            drop(images);
            drop(reservation);
            timings.record("decode", t);
            let c_in = input.shape()[1];
            let max_side = usize::try_from(limits.max_kernel_side).unwrap_or(usize::MAX);
            let stack = spec.stack(c_in, max_side)?;
            compute(
                input,
                stack,
                &limits,
                cancel,
                timings,
                |out, report, timings| match format {
                    Format::Json => tensor_reply(out, report, TensorFormat::Json, timings),
                    Format::Npy => tensor_reply(out, report, TensorFormat::Npy, timings),
                    Format::Tiff => tensor_reply(out, report, TensorFormat::Tiff, timings),
                    Format::Png | Format::Zip | Format::Webp => {
                        picture_reply(out, report, format, c_in, output, timings)
                    }
                },
            )
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
        } => ApiError::over_limit(&format!("image {what}"), limit, actual).at(at),
        CodecError::Empty => ApiError::invalid_spec(format!("image {i} has no pixels")).at(at),
        CodecError::Encode(m) => ApiError::internal(m),
        other => ApiError::unsupported_media(format!("image {i}: {other}")).at(at),
    }
}

/// Decodes the batch into `[n, c, h, w]`, refusing mixed sizes.
fn decode_batch(
    images: &[Bytes],
    opts: &DecodeOptions,
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
        let img = codec::decode_image(bytes, opts, &dl).map_err(|e| codec_error(e, i))?;
        let dims = (img.channels, img.height, img.width);
        match first {
            None => {
                let total = (img.data.len() as u64).saturating_mul(images.len() as u64);
                if total > limits.max_tensor_elements {
                    return Err(ApiError::over_limit("input elements", limits.max_tensor_elements, total).at("/parts/image"));
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

/// PNG or WebP (one tile or a montage, gray or colour tiles by `codec::tile_layout` over
/// `c_in` input channels) or ZIP of per-map files.
fn picture_reply(
    out: &Array4<f32>,
    report: &ShapeReport,
    format: Format,
    c_in: usize,
    output: Output,
    mut timings: Timings,
) -> Result<Reply, ApiError> {
    let Output {
        normalize,
        depth,
        speed,
        ..
    } = output;
    let t = Instant::now();
    let [n, c, h, w] = report.output_shape;
    let data = out.as_slice().expect("contiguous");
    let maps: Vec<&[f32]> = data.chunks_exact(h * w).collect();
    let layout = codec::tile_layout(n, c, c_in, output.color);
    // A picture over a format's side limit (WebP: 16383) is the request's limit, not a 500.
    let enc = |e: CodecError| match e {
        CodecError::TooLarge {
            what,
            limit,
            actual,
        } => ApiError::over_limit(what, limit, actual).at("/parts/spec/output/format"),
        e => ApiError::internal(e),
    };
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
            let inner = output.zip_format.unwrap_or_default();
            let (body, ranges) =
                codec::encode_zip(&maps, n, c, h, w, normalize, depth, speed, inner, manifest)
                    .map_err(enc)?;
            (ZIP, body, ranges)
        }
        Format::Webp => {
            let (body, ranges) =
                codec::encode_montage_webp(&maps, &layout, h, w, normalize).map_err(enc)?;
            (WEBP, body, ranges)
        }
        _ => {
            let (body, ranges) =
                codec::encode_montage(&maps, &layout, h, w, normalize, depth, speed)
                    .map_err(enc)?;
            (PNG, body, ranges)
        }
    };
    timings.record("encode", t);
    let reply = Reply::computed(content_type, body, report.output_shape, timings)?;
    if ranges.is_empty() {
        return Ok(reply); // raw float TIFFs in a ZIP: no pixel range
    }
    let v = ranges
        .iter()
        .map(|r| format!("{}:{}", r.lo, r.hi))
        .collect::<Vec<_>>()
        .join(",");
    Ok(reply.with_header(
        "x-conv-range",
        HeaderValue::from_str(&v).map_err(ApiError::internal)?,
    ))
}
