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
use rayon::prelude::*;

use crate::codec::webp::WEBP_MAX_SIDE;
use crate::codec::{
    self, BitDepth, CodecError, DecodeLimits, DecodeOptions, Grid, Header, Pixels, PngSpeed,
    Rendered, Target, ZipInner,
};
use crate::config::Limits;
use crate::conv::buffers;
use crate::conv::presets::catalogue_within;
use crate::error::ApiError;
use crate::pipeline;
use crate::spec::image::{Format, ImageSpec, Output};
use crate::spec::ShapeReport;
use crate::worker::cancelled;

/// `GET /v1/kernels`: every preset with its parameters, defaults and default weights; sides
/// go up to the configured `max_kernel_side`.
pub async fn kernels(State(app): State<AppState>) -> Json<Value> {
    let max_side = usize::try_from(app.limits.max_kernel_side).unwrap_or(usize::MAX);
    Json(json!({ "kernels": catalogue_within(max_side) }))
}

/// `GET /v1/formats`: what `POST /v1/convolve` reads and writes, with the sample types,
/// numeric ranges and options of each format (the discoverable form of README's table).
pub async fn formats() -> Json<Value> {
    Json(formats_catalogue())
}

/// The catalogue `GET /v1/formats` answers.
pub fn formats_catalogue() -> Value {
    json!({
        "input": [
            {"format": "png", "samples": ["uint8", "uint16"], "orientation": "eXIf chunk"},
            {"format": "jpeg", "samples": ["uint8"], "orientation": "EXIF (APP1)"},
            {"format": "webp", "samples": ["uint8"], "orientation": "EXIF chunk"},
            {"format": "tiff", "samples": ["uint8", "uint16", "float32"], "orientation": "Orientation tag"},
            {"format": "gif", "samples": ["uint8"], "orientation": null},
            {"format": "bmp", "samples": ["uint8"], "orientation": null},
        ],
        "sample_ranges": {
            "uint8": "0..255, times scale",
            "uint16": "0..65535, times scale (every bit kept)",
            "float32": "the stored values, times scale",
        },
        "output": [
            {"format": "png", "media_type": PNG, "kind": "picture", "bit_depths": [8, 16], "options": ["normalize", "bit_depth", "compression", "color"]},
            {"format": "webp", "media_type": WEBP, "kind": "picture", "bit_depths": [8], "options": ["normalize", "color"]},
            {"format": "zip", "media_type": ZIP, "kind": "picture", "bit_depths": [8, 16], "options": ["normalize", "bit_depth", "compression", "zip_format"], "zip_formats": ["png", "webp", "tiff"]},
            {"format": "tiff", "media_type": TIFF, "kind": "tensor", "samples": "float32", "options": []},
            {"format": "json", "media_type": JSON, "kind": "tensor", "samples": "float32", "options": []},
            {"format": "npy", "media_type": NPY, "kind": "tensor", "samples": "float32", "options": []},
        ],
        "options": {
            "color": ["auto", "gray", "rgb", "rgba"],
            "orientation": ["exif", "ignore"],
            "channels": ["sum", "each"],
            "output.normalize": ["minmax", "clamp", "abs"],
            "output.color": ["auto", "gray"],
            "output.compression": ["fast", "small"],
        },
        "limits": "pictures: max_image_pixels, max_image_side and max_job_bytes; tensors (json, npy, tiff, a zip of tiff): also max_tensor_elements and max_output_elements (GET /v1/limits)",
    })
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
    app.pool.prewarm();
    let raw = super::multipart::read(req, app.limits.max_body_bytes).await?;
    let limits = app.limits.clone();
    let threads = app.pool.threads();
    app.pool
        .run(move |cancel| {
            let mut timings = Timings::default();
            let t = Instant::now();
            // The reservation is held with the image bytes, until they are decoded (see
            // http::budget).
            // The whole body (spec and framing included): the parts are slices of it.
            let body_bytes = raw.body.bytes.len() as u64;
            let (images, spec_bytes, reservation) = image_parts(raw, &limits)?;
            let spec = ImageSpec::from_json(&spec_bytes)?;
            // The spec's bytes share the body's buffer: dropped with the images, the body
            // is freed once they are decoded.
            drop(spec_bytes);
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
            let dl = decode_limits(&limits);
            let opts = spec.decode_options();
            // Every refusal is decided from the headers, before anything is decoded.
            let head = probe_batch(&images, &opts, &dl)?;
            let [n, c_in, h, w] = head.shape;
            let max_side = usize::try_from(limits.max_kernel_side).unwrap_or(usize::MAX);
            let stack = spec.stack(c_in, max_side)?;
            // Raw floats (JSON, .npy, float TIFF, a ZIP of TIFFs) are whole tensors, under
            // the tensor limits; pictures run in strips under their memory estimate.
            let raw = match format {
                Format::Json => Some(TensorFormat::Json),
                Format::Npy => Some(TensorFormat::Npy),
                Format::Tiff => Some(TensorFormat::Tiff),
                _ => None,
            };
            let tiff_zip = format == Format::Zip && output.zip_format == Some(ZipInner::Tiff);
            if raw.is_some() || tiff_zip {
                let elements = head
                    .shape
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64));
                if elements > limits.max_tensor_elements {
                    return Err(ApiError::over_limit(
                        "input elements",
                        limits.max_tensor_elements,
                        elements,
                    )
                    .at("/parts/image"));
                }
                let plan = crate::spec::plan(head.shape, stack, &limits)?;
                let input = decode_batch(&images, &opts, &dl)?;
                drop(images);
                drop(reservation);
                timings.record("decode", t);
                return compute(
                    input,
                    plan,
                    cancel,
                    timings,
                    |out, report, timings| match raw {
                        Some(tensor) => tensor_reply(out, report, tensor, timings),
                        None => tiff_zip_reply(out, report, timings),
                    },
                );
            }
            let plan = crate::spec::plan_picture(head.shape, stack, &limits)?;
            let [_, c, oh, ow] = plan.geoms.last().expect("a layer").output_shape();
            let layout = codec::tile_layout(n, c, c_in, output.color);
            let grid = Grid {
                n,
                c,
                h: oh,
                w: ow,
                k: layout.channels,
            };
            let zip_webp = format == Format::Zip && output.zip_format == Some(ZipInner::Webp);
            if format == Format::Webp || zip_webp {
                let (pw, ph) = if zip_webp { (ow, oh) } else { grid.size() };
                for (what, side) in [("webp_width", pw), ("webp_height", ph)] {
                    if side > WEBP_MAX_SIDE {
                        return Err(
                            ApiError::over_limit(what, WEBP_MAX_SIDE as u64, side as u64)
                                .at("/parts/spec/output/format"),
                        );
                    }
                }
            }
            let per_map = format == Format::Zip;
            let (estimate, stack, plans) = pipeline::estimate(
                &plan.layers,
                &plan.geoms,
                &head.decoded,
                grid,
                per_map,
                (output.normalize, output.depth),
                threads,
            );
            if estimate.total_bytes > limits.max_job_bytes {
                return Err(ApiError::over_limit(
                    "job memory estimate (bytes)",
                    limits.max_job_bytes,
                    estimate.total_bytes,
                )
                .at("/parts/image"));
            }
            let mut report = plan.report();
            for (summary, p) in report.layers.iter_mut().zip(&plans) {
                summary.algorithm = p.algorithm;
                summary.algorithm_reason.clone_from(&p.reason);
            }
            // The description names the algorithms, as for tensors (clients read it); the
            // strips are in the estimate (`X-Conv-Memory`, the ZIP manifest).
            let algos: Vec<&str> = plans.iter().map(|p| p.algorithm.as_str()).collect();
            let how = algos.join("+");
            let job_error = |e| match e {
                pipeline::JobError::Cancelled => cancelled(),
                pipeline::JobError::Codec(e) => ApiError::internal(e),
                pipeline::JobError::Decode(e) => codec_error(e, 0),
            };
            // One PNG run in strips is decoded row by row into them, the strips running
            // alongside (pipeline::run_streamed), if the job still fits `max_job_bytes`
            // with its body held until the last row; anything else is decoded whole first.
            let streamed_estimate = estimate.with_streamed_body(body_bytes);
            let streamed = match (&stack, images.as_slice()) {
                (Some(stack), [png]) if streamed_estimate.total_bytes <= limits.max_job_bytes => {
                    codec::decode::stream::open(png.clone(), &opts, &dl)
                        .map_err(|e| codec_error(e, 0))?
                        .map(|s| (s, stack))
                }
                _ => None,
            };
            let estimate = if streamed.is_some() {
                streamed_estimate
            } else {
                estimate
            };
            // The fast PNG of a streamed job is encoded as its rows are rendered (the
            // encoder runs alongside the render: codec::png_strips::PngStream), if the job
            // still fits `max_job_bytes` holding the file during the render; else after
            // it. Streamed jobs only: there a pool thread waits for the decoder's rows,
            // and the strips fill that time (12 MP PNG: 164 → 145 ms); a job decoded
            // whole keeps both threads busy rendering, and interleaving the compression
            // with the convolution measured slower (12 MP JPEG: 117-127 → 125-144 ms,
            // the convolution kernel's own time 2.7× in `perf`).
            let overlapped = estimate.with_overlapped_encode();
            let png = (streamed.is_some()
                && format == Format::Png
                && output.speed == PngSpeed::Fast
                && overlapped.total_bytes <= limits.max_job_bytes)
                .then_some(codec::png_strips::STRIP_BYTES);
            let estimate = if png.is_some() { overlapped } else { estimate };
            let picture = pipeline::Picture {
                grid,
                per_map,
                mode: output.normalize,
                depth: output.depth,
                strip_rows: estimate.strip_rows,
                png,
            };
            let rendered = if let Some(((decoder, rows), stack)) = streamed {
                let (rendered, at) = pipeline::run_streamed(
                    (decoder, &rows),
                    stack,
                    &picture,
                    cancel,
                    // The body and its reservation go when the last row is decoded.
                    (images, reservation),
                );
                // The stages overlap: `conv` starts with the decoding (openapi.yaml).
                timings.record_span("decode", t, at.decoded);
                timings.describe_last("streamed".into());
                timings.record_span("conv", at.render_started, at.rendered);
                timings.describe_last(how);
                rendered.map_err(job_error)?
            } else {
                let pixels = decode_all(&images, &opts, &dl)?;
                drop(images);
                drop(reservation);
                timings.record("decode", t);
                debug_assert!(pixels
                    .iter()
                    .all(|p| [p.channels, p.height, p.width] == [c_in, h, w]));
                let t = Instant::now();
                let rendered = pipeline::run(
                    &pixels,
                    stack.as_ref(),
                    (&plan.layers, &plan.geoms),
                    &picture,
                    cancel,
                )
                .map_err(job_error)?;
                drop(pixels);
                timings.record_described("conv", t, how);
                rendered
            };
            picture_reply(rendered, &report, format, output, &estimate, timings)
        })
        .await
}

/// Raw feature maps as a ZIP of float32 TIFFs (whole tensor, no normalisation).
fn tiff_zip_reply(
    out: &Array4<f32>,
    report: &ShapeReport,
    mut timings: Timings,
) -> Result<Reply, ApiError> {
    let t = Instant::now();
    let [_, c, h, w] = report.output_shape;
    let data = out.as_slice().expect("contiguous");
    let maps: Vec<&[f32]> = data.chunks_exact(h * w).collect();
    let manifest = json!({
        "shape": report.output_shape,
        "input_shape": report.input_shape,
        "layers": report.layers,
        "receptive_field": report.receptive_field,
        "macs": report.macs,
    });
    let body = codec::zip_tiffs(&maps, c, h, w, manifest).map_err(ApiError::internal)?;
    timings.record("encode", t);
    Reply::computed(ZIP, body, report.output_shape, timings)
}

/// The limits decoders run under.
fn decode_limits(limits: &Limits) -> DecodeLimits {
    DecodeLimits {
        max_width: limits.max_image_side,
        max_height: limits.max_image_side,
        max_pixels: limits.max_image_pixels,
        max_alloc_bytes: limits.max_image_pixels.saturating_mul(16),
    }
}

/// What the headers of a batch say: its `[n, c, h, w]` and each image's decoded bytes.
struct BatchHead {
    shape: [usize; 4],
    decoded: Vec<u64>,
}

/// Reads every image's header (nothing decoded), refusing an image over the limits and a
/// batch of mixed sizes.
fn probe_batch(
    images: &[Bytes],
    opts: &DecodeOptions,
    dl: &DecodeLimits,
) -> Result<BatchHead, ApiError> {
    let mut first: Option<Header> = None;
    let mut decoded = Vec::with_capacity(images.len());
    for (i, bytes) in images.iter().enumerate() {
        let head = codec::probe(bytes, opts, dl).map_err(|e| codec_error(e, i))?;
        match first {
            None => first = Some(head),
            Some(f) if (f.channels, f.height, f.width) != (head.channels, head.height, head.width) => {
                return Err(ApiError::invalid_spec(format!(
                    "images in a batch must share size and channels: image 0 is {}×{} with {} channel(s), image {i} is {}×{} with {} channel(s)",
                    f.width, f.height, f.channels, head.width, head.height, head.channels
                ))
                .at(format!("/parts/image/{i}")))
            }
            Some(_) => {}
        }
        decoded.push(head.decoded_bytes);
    }
    let f = first.expect("at least one image");
    Ok(BatchHead {
        shape: [images.len(), f.channels, f.height, f.width],
        decoded,
    })
}

/// Decodes every image of a batch (on the pool, one task per image).
fn decode_all(
    images: &[Bytes],
    opts: &DecodeOptions,
    dl: &DecodeLimits,
) -> Result<Vec<Pixels>, ApiError> {
    images
        .par_iter()
        .enumerate()
        .map(|(i, b)| codec::decode_pixels(b, opts, dl).map_err(|e| codec_error(e, i)))
        .collect()
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

/// Decodes the batch into float planes `[n, c, h, w]` (sizes checked by [`probe_batch`]).
fn decode_batch(
    images: &[Bytes],
    opts: &DecodeOptions,
    dl: &DecodeLimits,
) -> Result<Array4<f32>, ApiError> {
    let pixels = decode_all(images, opts, dl)?;
    let (c, h, w) = (pixels[0].channels, pixels[0].height, pixels[0].width);
    let data = if pixels.len() == 1 {
        pixels[0].planes()
    } else {
        let mut data = buffers::take(pixels.len() * c * h * w);
        for p in &pixels {
            let part = p.planes();
            data.extend_from_slice(&part);
            buffers::give(part);
        }
        data
    };
    Array4::from_shape_vec((pixels.len(), c, h, w), data).map_err(ApiError::internal)
}

/// The rendered picture(s) as a PNG or WebP (one tile or a montage, gray or colour tiles
/// by `codec::tile_layout`), or a ZIP of per-map PNGs or WebPs.
fn picture_reply(
    rendered: Rendered,
    report: &ShapeReport,
    format: Format,
    output: Output,
    estimate: &pipeline::Estimate,
    mut timings: Timings,
) -> Result<Reply, ApiError> {
    let Output {
        normalize,
        depth,
        speed,
        ..
    } = output;
    let t = Instant::now();
    let enc = |e: CodecError| ApiError::internal(e);
    let with_conv = rendered.png.is_some();
    let (content_type, body, ranges) = match (format, rendered.target) {
        (Format::Zip, target) => {
            let manifest = json!({
                "shape": report.output_shape,
                "input_shape": report.input_shape,
                "normalize": normalize,
                "bit_depth": if depth == BitDepth::Sixteen { 16 } else { 8 },
                "layers": report.layers,
                "receptive_field": report.receptive_field,
                "macs": report.macs,
                "memory": estimate,
            });
            let rendered = Rendered { target, ..rendered };
            let inner = output.zip_format.unwrap_or_default();
            let (body, ranges) = codec::zip_rendered(
                rendered,
                report.output_shape[1],
                normalize,
                speed,
                inner,
                manifest,
            )
            .map_err(enc)?;
            (ZIP, body, ranges)
        }
        (Format::Webp, Target::One(canvas)) => (WEBP, canvas.webp().map_err(enc)?, rendered.ranges),
        (_, Target::One(canvas)) => match rendered.png {
            // Encoded as it was rendered: the `encode` stage is only the handing over.
            Some(png) => (PNG, png, rendered.ranges),
            None => (PNG, canvas.png(speed).map_err(enc)?, rendered.ranges),
        },
        (_, Target::PerMap(_)) => return Err(ApiError::internal("one picture per map for a PNG")),
    };
    if with_conv {
        // Encoded during `conv` (openapi.yaml): this is only the hand-over.
        timings.record_described("encode", t, "with_conv".into());
    } else {
        timings.record("encode", t);
    }
    let reply = Reply::computed(content_type, body, report.output_shape, timings)?;
    let v = ranges
        .iter()
        .map(|r| format!("{}:{}", r.lo, r.hi))
        .collect::<Vec<_>>()
        .join(",");
    Ok(reply
        .with_header(
            "x-conv-range",
            HeaderValue::from_str(&v).map_err(ApiError::internal)?,
        )
        .with_header("x-conv-memory", HeaderValue::from(estimate.total_bytes)))
}
