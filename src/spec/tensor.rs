//! The tensor API's specs (`POST /v1/conv2d`): the JSON body, or the `.npy` parts and the
//! JSON `spec` part of a multipart body. Both become an input array and a [`StackSpec`].

use ndarray::Array4;
use serde::Deserialize;

use super::json::from_slice;
use super::layer::{one_or_layers, Dialect, LayerSpec, OneOrLayers, Refusal, StackSpec};
use super::params::{params_from, Ints, PaddingJson, ParamsJson};
use super::plan::input_array;
use super::{invalid, malformed, SpecError};
use crate::config::Limits;
use crate::conv::{Activation, PaddingMode};
use crate::npy::NpyError;
use crate::tensor::Tensor;

/// Layer members beside `layers` (in the JSON body, or in a multipart `spec`).
const LAYERS_BESIDE: &str =
    "with `layers`, give bias and parameters inside each layer, not at the top level";
/// An empty `layers`.
const LAYERS_EMPTY: &str = "`layers` must hold at least one layer";

/// The words of the JSON body.
pub static JSON: Dialect = Dialect {
    top: "",
    layers: "/layers",
    weight: "weight",
    bias: "bias",
    input: "/input",
    numbered: true,
    missing: Some(Refusal::invalid(
        "missing `weight` (or `layers`)",
        "/weight",
    )),
    both: Refusal::invalid("give either `weight` or `layers`, not both", "/layers"),
    beside: Refusal::invalid(LAYERS_BESIDE, "/layers"),
    empty: Refusal::invalid(LAYERS_EMPTY, "/layers"),
};

/// The words of a multipart body: every member of the `spec` part points into it
/// (`/parts/spec/stride`, `/parts/spec/layers/1/weight`), the input at its part.
pub static MULTIPART: Dialect = Dialect {
    top: "/parts/spec",
    layers: "/parts/spec/layers",
    weight: "weight",
    bias: "bias",
    input: "/parts/input",
    numbered: true,
    missing: Some(Refusal {
        detail: "missing part `weight` (.npy)",
        pointer: "/parts/weight",
        malformed: true,
    }),
    both: Refusal::invalid(
        "give either a `weight` part or `layers` in spec, not both",
        "/parts/spec/layers",
    ),
    beside: Refusal::invalid(LAYERS_BESIDE, "/parts/spec/layers"),
    empty: Refusal::invalid(LAYERS_EMPTY, "/parts/spec/layers"),
};

/// The JSON body of `POST /v1/conv2d`.
///
/// The parameters are spelled out rather than a flattened [`ParamsJson`]: serde's flatten
/// would buffer the whole body (the `input` tensor included) before deserializing it, which
/// defeats the streaming tensor parser and loses the pointers inside the tensors. A unit
/// test keeps these members, [`ParamsJson`] and [`super::PARAM_NAMES`] in step.
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

/// One layer of a `layers` list: tensors plus the [`ParamsJson`] members.
#[derive(Debug, Clone, Deserialize)]
pub struct LayerJson {
    /// `[c_out, c_in/groups, k_h, k_w]`.
    pub weight: Tensor,
    /// `[c_out]` or `null`.
    #[serde(default)]
    pub bias: Option<Tensor>,
    /// The remaining members, checked as [`ParamsJson`] (unknown ones refused).
    #[serde(flatten)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Parses the JSON body of `POST /v1/conv2d` into the input and its layers.
///
/// # Errors
/// 400/422 for JSON that is malformed or does not fit, 413/422 for an input over the limit
/// or not 4-D, 422 for the layers (see [`one_or_layers`]).
pub fn from_json(bytes: &[u8], limits: &Limits) -> Result<(Array4<f32>, StackSpec), SpecError> {
    from_slice::<ConvRequest>(bytes, "")?.into_spec(limits)
}

impl ConvRequest {
    /// Shapes the input and collects the layers (top-level members or `layers`).
    ///
    /// # Errors
    /// As [`from_json`], after parsing.
    pub fn into_spec(self, limits: &Limits) -> Result<(Array4<f32>, StackSpec), SpecError> {
        let input = input_array(self.input, limits, "/input")?;
        let top = ParamsJson {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            padding_mode: self.padding_mode,
            activation: self.activation,
        };
        let has_members = self.bias.is_some() || top != ParamsJson::default();
        let has_kernel = self.weight.is_some();
        let layers = match one_or_layers(
            (self.weight, self.bias, top),
            has_kernel,
            has_members,
            self.layers,
            &JSON,
        )? {
            OneOrLayers::One(base, (weight, bias, params)) => {
                let weight = weight.ok_or_else(|| SpecError::Internal("no weight".into()))?;
                vec![LayerSpec::from_tensors(base, weight, bias, &params, &JSON)?]
            }
            OneOrLayers::Layers(layers) => layers_of(layers, &JSON)?,
        };
        Ok((
            input,
            StackSpec {
                dialect: &JSON,
                layers,
            },
        ))
    }
}

/// The entries of a `layers` list, each checked on its own, in order.
fn layers_of(
    layers: Vec<(String, LayerJson)>,
    dialect: &Dialect,
) -> Result<Vec<LayerSpec>, SpecError> {
    layers
        .into_iter()
        .map(|(base, l)| {
            let params = params_from(l.params, &base, &["weight", "bias"])?;
            LayerSpec::from_tensors(base, l.weight, l.bias, &params, dialect)
        })
        .collect()
}

/// The named parts of a multipart tensor request, as bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NpyParts<'a> {
    /// `input` (.npy).
    pub input: Option<&'a [u8]>,
    /// `weight` (.npy).
    pub weight: Option<&'a [u8]>,
    /// `bias` (.npy), read only with a `weight` part.
    pub bias: Option<&'a [u8]>,
    /// `spec` (JSON): parameters or `layers`.
    pub spec: Option<&'a [u8]>,
}

/// The JSON `spec` part of a multipart tensor request: parameters or `layers`.
#[derive(Debug, Default, Deserialize)]
struct MultipartSpec {
    layers: Option<Vec<LayerJson>>,
    #[serde(flatten)]
    params: serde_json::Map<String, serde_json::Value>,
}

impl NpyParts<'_> {
    /// Reads the parts into the input and its layers.
    ///
    /// # Errors
    /// 400 for a missing or malformed part, 413 for a part over the element limit, 422 for
    /// an impossible spec.
    pub fn into_spec(self, limits: &Limits) -> Result<(Array4<f32>, StackSpec), SpecError> {
        let input = self
            .input
            .ok_or_else(|| malformed("missing part `input` (.npy)").at("/parts/input"))?;
        let input = input_array(npy_tensor(input, "input", limits)?, limits, "/parts/input")?;
        let spec: MultipartSpec = match self.spec {
            Some(s) => from_slice(s, "/parts/spec")?,
            None => MultipartSpec::default(),
        };
        let params = params_from(spec.params, "/parts/spec", &["layers"])?;
        let has_members = params != ParamsJson::default();
        let has_kernel = self.weight.is_some();
        let layers = match one_or_layers(params, has_kernel, has_members, spec.layers, &MULTIPART)?
        {
            OneOrLayers::One(base, params) => {
                let weight = self
                    .weight
                    .ok_or_else(|| SpecError::Internal("no weight part".into()))?;
                let weight = npy_tensor(weight, "weight", limits)?;
                let bias = self
                    .bias
                    .map(|b| npy_tensor(b, "bias", limits))
                    .transpose()?;
                vec![LayerSpec::from_tensors(
                    base, weight, bias, &params, &MULTIPART,
                )?]
            }
            OneOrLayers::Layers(layers) => layers_of(layers, &MULTIPART)?,
        };
        Ok((
            input,
            StackSpec {
                dialect: &MULTIPART,
                layers,
            },
        ))
    }
}

/// Reads one `.npy` part as a tensor.
///
/// # Errors
/// 400 for a malformed file, 413 for one over the element limit, 422 for a value that is
/// not finite in float32; at `/parts/<part>`.
pub fn npy_tensor(bytes: &[u8], part: &str, limits: &Limits) -> Result<Tensor, SpecError> {
    let at = format!("/parts/{part}");
    crate::npy::read_npy(bytes, limits.max_tensor_elements)
        .map(|(shape, data)| Tensor { shape, data })
        .map_err(|e| match e {
            NpyError::TooLarge { limit, actual } => {
                SpecError::over_limit("tensor elements", limit, actual, at, true)
            }
            NpyError::NonFinite { .. } => invalid(format!("part `{part}`: {e}")).at(at),
            other => malformed(format!("part `{part}` is not a usable .npy file: {other}")).at(at),
        })
}
