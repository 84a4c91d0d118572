//! The image API's spec (the `spec` part of `POST /v1/convolve`).
//!
//! The spec names the kernel — `kernel` (2-D `kh×kw` or 4-D `[c_out][c_in/groups][kh][kw]`)
//! or `preset` plus its parameters as extra members — and takes every tensor-API parameter,
//! `layers`, `color`, `scale`, `channels`, and `output`.
//!
//! How a 2-D kernel meets `C` input channels: `channels: "sum"` (default) repeats it over
//! the channels into one output map (weight `[1, C, kh, kw]`, the textbook's `np.repeat`);
//! `channels: "each"` filters every channel on its own (weight `[C, 1, kh, kw]`,
//! `groups = C`), so a colour picture stays in colour.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::json::from_slice;
use super::layer::{one_or_layers, Dialect, LayerSpec, OneOrLayers, Refusal, StackSpec};
use super::params::{params_from, PARAM_NAMES};
use super::{invalid, SpecError};
use crate::codec::{
    BitDepth, ColorMode, DecodeOptions, Normalize, OrientationMode, PictureColor, PngSpeed,
    ZipInner,
};
use crate::conv::presets::{build_preset_within, PresetError};
use crate::tensor::Tensor;

const INSIDE_EACH_LAYER: Refusal = Refusal::invalid(
    "with `layers`, give kernels and parameters inside each layer (a top-level `channels` is the default of the layers that do not give their own)",
    "/parts/spec/layers",
);

/// The words of the image spec: the weights are the `kernel`, and a top level without one
/// is still the layer (whose own check names what is missing).
pub static IMAGE: Dialect = Dialect {
    top: "/parts/spec",
    layers: "/parts/spec/layers",
    weight: "kernel",
    bias: "bias",
    input: "/parts/image",
    numbered: true,
    missing: None,
    both: INSIDE_EACH_LAYER,
    beside: INSIDE_EACH_LAYER,
    empty: Refusal::invalid(
        "`layers` must hold at least one layer",
        "/parts/spec/layers",
    ),
};

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
    /// One file per map (PNG, WebP or float TIFF: `zip_format`) plus `manifest.json`.
    Zip,
    /// Float32 TIFF of the raw maps, one page per map (a tensor format, like `npy`).
    Tiff,
    /// Lossless WebP, the pixels of the 8-bit PNG.
    Webp,
}

/// `spec.output` as sent.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    format: Option<Format>,
    #[serde(default)]
    normalize: Normalize,
    bit_depth: Option<u8>,
    compression: Option<Compression>,
    #[serde(default)]
    color: PictureColor,
    zip_format: Option<ZipInner>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Compression {
    Fast,
    Small,
}

/// `spec.output`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// The format asked for in the spec (else `Accept` decides).
    pub format: Option<Format>,
    /// How maps become pixels.
    pub normalize: Normalize,
    /// 8 or 16 bits per sample.
    pub depth: BitDepth,
    /// PNG compression effort.
    pub speed: PngSpeed,
    /// Colour or gray tiles in pictures (see [`crate::codec::layout`]).
    pub color: PictureColor,
    /// The format of each map in a ZIP (`None`: PNG).
    pub zip_format: Option<ZipInner>,
}

impl Output {
    /// Checks the settings against the `format` chosen (by the spec or by `Accept`).
    ///
    /// # Errors
    /// 422 for `bit_depth: 16` with WebP (8-bit only, in a ZIP too), and for a
    /// `zip_format` with a format other than ZIP.
    pub fn check(&self, format: Format) -> Result<(), SpecError> {
        let webp = format == Format::Webp
            || (format == Format::Zip && self.zip_format == Some(ZipInner::Webp));
        if webp && self.depth == BitDepth::Sixteen {
            return Err(
                invalid("WebP is 8 bits per sample: use bit_depth 8, or PNG for 16 bits")
                    .at("/parts/spec/output/bit_depth"),
            );
        }
        if self.zip_format.is_some() && format != Format::Zip {
            return Err(invalid(format!(
                "zip_format applies to the ZIP output only, the output is {format:?}; add \"format\": \"zip\""
            ))
            .at("/parts/spec/output/zip_format"));
        }
        Ok(())
    }
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

/// The `spec` part as sent. The top-level layer's members are spelled out (those of
/// [`KernelSpec`]) rather than a flattened `KernelSpec`: serde's flatten buffers the members
/// it does not know and deserializes them again without their path, so a bad cell of a
/// top-level `kernel` pointed at `/parts/spec` instead of at the cell (issue #12). Only the
/// parameters, checked later with their own pointers, are left to `rest`.
#[derive(Debug, Deserialize)]
struct ImageJson {
    color: Option<ColorMode>,
    orientation: Option<OrientationMode>,
    scale: Option<f64>,
    output: Option<OutputJson>,
    layers: Option<Vec<KernelSpec>>,
    kernel: Option<Tensor>,
    preset: Option<String>,
    #[serde(default)]
    bias: Option<Tensor>,
    channels: Option<Channels>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The `spec` part, its scalars validated; the layers wait for the decoded input's channels
/// ([`ImageSpec::stack`]).
#[derive(Debug)]
pub struct ImageSpec {
    /// How pixels become channels.
    pub color: ColorMode,
    /// Pixel values are multiplied by this (finite, > 0).
    pub scale: f32,
    /// Whether the EXIF Orientation tag is applied.
    pub orientation: OrientationMode,
    /// The output settings.
    pub output: Output,
    top: KernelSpec,
    layers: Option<Vec<KernelSpec>>,
}

impl ImageSpec {
    /// Parses the `spec` part and checks `scale` and `output`.
    ///
    /// # Errors
    /// 400/422 for JSON that is malformed or does not fit; 422 for a `scale` that is not a
    /// finite number > 0 or a `bit_depth` other than 8 or 16.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let spec: ImageJson = from_slice(bytes, "/parts/spec")?;
        let scale = spec.scale.unwrap_or(1.0);
        if !(scale.is_finite() && scale > 0.0) {
            return Err(invalid("scale must be a finite number > 0").at("/parts/spec/scale"));
        }
        let output = spec.output.unwrap_or_default();
        let depth = match output.bit_depth {
            None | Some(8) => BitDepth::Eight,
            Some(16) => BitDepth::Sixteen,
            Some(d) => {
                return Err(invalid(format!("bit_depth must be 8 or 16, got {d}"))
                    .at("/parts/spec/output/bit_depth"))
            }
        };
        let speed = match output.compression {
            Some(Compression::Small) => PngSpeed::Small,
            _ => PngSpeed::Fast,
        };
        Ok(Self {
            color: spec.color.unwrap_or_default(),
            scale: scale as f32,
            orientation: spec.orientation.unwrap_or_default(),
            output: Output {
                format: output.format,
                normalize: output.normalize,
                depth,
                speed,
                color: output.color,
                zip_format: output.zip_format,
            },
            top: KernelSpec {
                kernel: spec.kernel,
                preset: spec.preset,
                bias: spec.bias,
                channels: spec.channels,
                rest: spec.rest,
            },
            layers: spec.layers,
        })
    }

    /// How the images are decoded: `color`, `orientation` and `scale`.
    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            color: self.color,
            orientation: self.orientation,
            scale: self.scale,
        }
    }

    /// The layers over an input of `c_in` channels, preset sides bounded by `max_side`
    /// (the server's `max_kernel_side`, the bound of a `kernel` too). (Whether maps make a
    /// colour picture is decided from the shapes alone: [`crate::codec::layout`].)
    ///
    /// # Errors
    /// 422 for the layers (see [`one_or_layers`]), an unknown preset or preset parameter,
    /// a kernel that is neither 2-D nor 4-D, `channels` with a 4-D kernel, or `groups`
    /// beside `channels: each`.
    pub fn stack(self, c_in: usize, max_side: usize) -> Result<StackSpec, SpecError> {
        let top = self.top;
        let has_kernel = top.kernel.is_some() || top.preset.is_some();
        let has_members = top.bias.is_some() || !top.rest.is_empty();
        let default_channels = top.channels;
        let specs = match one_or_layers(top, has_kernel, has_members, self.layers, &IMAGE)? {
            OneOrLayers::One(base, top) => vec![(base, top)],
            // A top-level `channels` applies to every layer without its own.
            OneOrLayers::Layers(mut layers) => {
                for (_, l) in &mut layers {
                    l.channels = l.channels.or(default_channels);
                }
                layers
            }
        };
        let mut channels = c_in;
        let mut layers = Vec::with_capacity(specs.len());
        for (base, spec) in specs {
            let layer = kernel_layer(spec, channels, base, max_side)?;
            channels = layer.weight_shape()[0];
            layers.push(layer);
        }
        Ok(StackSpec {
            dialect: &IMAGE,
            layers,
        })
    }
}

/// One layer: resolves the kernel (array or preset) against `c_in` flowing in.
fn kernel_layer(
    spec: KernelSpec,
    c_in: usize,
    base: String,
    max_side: usize,
) -> Result<LayerSpec, SpecError> {
    let (mut params, preset_params): (Map<String, Value>, Map<String, Value>) = spec
        .rest
        .into_iter()
        .partition(|(k, _)| PARAM_NAMES.contains(&k.as_str()));
    let kernel = match (spec.kernel, spec.preset) {
        (Some(k), None) => {
            // Worded as for a preset (which lists what it takes), so that `format` beside
            // a kernel and beside a preset get the same answer.
            if let Some(k) = preset_params.keys().next() {
                return Err(invalid(format!(
                    "a `kernel` does not take parameter `{k}`; it takes: no parameters{}",
                    misplaced(k)
                ))
                .at(format!("{base}/{k}")));
            }
            k
        }
        (None, Some(name)) => {
            let k = build_preset_within(&name, &preset_params, max_side)
                .map_err(|e| preset_error(e, &base))?;
            Tensor {
                shape: vec![k.k_h, k.k_w],
                data: k.weights,
            }
        }
        (Some(_), Some(_)) => {
            return Err(invalid("give either `kernel` or `preset`, not both")
                .at(format!("{base}/preset")))
        }
        (None, None) if preset_params.contains_key("weight") => {
            return Err(invalid(
                "the image API takes the kernel as `kernel` (2-D, or 4-D like the tensor API's `weight`) or a `preset`; `weight` is the tensor API's name",
            )
            .at(format!("{base}/weight")))
        }
        (None, None) => {
            return Err(invalid("missing `kernel` or `preset`").at(format!("{base}/kernel")))
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
                return Err(invalid(
                    "`channels` applies to 2-D kernels only; a 4-D kernel states its channels",
                )
                .at(format!("{base}/channels")));
            }
            (kernel, 0)
        }
        other => {
            return Err(invalid(format!(
            "kernel must be 2-D [kh][kw] or 4-D [c_out][c_in/groups][kh][kw], got shape {other:?}"
        ))
            .at(format!("{base}/kernel")))
        }
    };
    if groups > 1 {
        if params.contains_key("groups") {
            return Err(
                invalid("`groups` is implied by `channels: each` for a 2-D kernel")
                    .at(format!("{base}/groups")),
            );
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
    let params = params_from(params, &base, &[])?;
    LayerSpec::from_tensors(base, weight, bias, &params, &IMAGE)
}

fn preset_error(e: PresetError, base: &str) -> SpecError {
    match e {
        PresetError::Unknown { .. } => SpecError::UnknownPreset {
            detail: e.to_string(),
            pointer: format!("{base}/preset"),
        },
        PresetError::UnknownParam { ref param, .. } => {
            let at = format!("{base}/{param}");
            invalid(format!("{e}{}", misplaced(param))).at(at)
        }
        PresetError::BadParam { ref param, .. } => {
            let at = format!("{base}/{param}");
            invalid(e.to_string()).at(at)
        }
    }
}

/// Where a member that a layer does not take belongs, when it is a member of the spec
/// elsewhere (`format` beside a kernel is an output setting).
fn misplaced(member: &str) -> String {
    match member {
        "format" | "normalize" | "bit_depth" | "compression" | "zip_format" => {
            format!(" (`{member}` goes in `output`: {{\"output\": {{\"{member}\": …}}}})")
        }
        "color" | "scale" | "orientation" | "output" => {
            format!(" (`{member}` goes at the top level of the spec, not in a layer)")
        }
        "weight" => " (`weight` is the tensor API's name of the kernel)".to_string(),
        _ => String::new(),
    }
}
