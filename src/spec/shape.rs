//! The spec of `POST /v1/conv2d/shape`: shapes only, planned without the compute limits.

use serde::Deserialize;

use super::json::from_slice;
use super::layer::{one_or_layers, Dialect, LayerSpec, OneOrLayers, Refusal, StackSpec};
use super::params::{params_from, ParamsJson};
use super::{invalid, SpecError};

const EXACTLY_ONE: Refusal = Refusal::invalid(
    "give exactly one of `weight_shape` or a non-empty `layers`",
    "/weight_shape",
);

/// The words of the shape endpoint: its members are `*_shape`, and a planning error is
/// not numbered by layer.
pub static SHAPE: Dialect = Dialect {
    top: "",
    layers: "/layers",
    weight: "weight_shape",
    bias: "bias_shape",
    input: "/input_shape",
    numbered: false,
    missing: Some(EXACTLY_ONE),
    both: EXACTLY_ONE,
    beside: Refusal::invalid(
        "with `layers`, give bias_shape and parameters inside each layer",
        "/layers",
    ),
    empty: EXACTLY_ONE,
};

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
    /// The [`super::ParamsJson`] members.
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
    /// The [`super::ParamsJson`] members.
    #[serde(flatten)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Parses a shape request into the input shape and its layers.
///
/// # Errors
/// 400/422 for JSON that is malformed or does not fit, 422 for a shape that is not of the
/// right rank or negative, or for the layers (see [`one_or_layers`]).
pub fn from_json(bytes: &[u8]) -> Result<([usize; 4], StackSpec), SpecError> {
    let r: ShapeRequest = from_slice(bytes, "")?;
    let input = dims::<4>(&r.input_shape, "input_shape", "/input_shape")?;
    let has_kernel = r.weight_shape.is_some();
    let has_members = r.bias_shape.is_some() || !r.params.is_empty();
    let top = (r.weight_shape, r.bias_shape, r.params);
    // Every layer's shapes and members first, then every layer's parameter values (the
    // order in which the refusals have always come).
    let shapes: Vec<Shapes> = match one_or_layers(top, has_kernel, has_members, r.layers, &SHAPE)? {
        OneOrLayers::One(base, (w, b, params)) => {
            let w = w.ok_or_else(|| SpecError::Internal("no weight_shape".into()))?;
            let members = ["input_shape", "weight_shape", "bias_shape", "layers"];
            vec![layer(base, &w, b.as_deref(), params, &members)?]
        }
        OneOrLayers::Layers(layers) => layers
            .into_iter()
            .map(|(base, l)| {
                let members = ["weight_shape", "bias_shape"];
                layer(
                    base,
                    &l.weight_shape,
                    l.bias_shape.as_deref(),
                    l.params,
                    &members,
                )
            })
            .collect::<Result<_, _>>()?,
    };
    let layers = shapes
        .into_iter()
        .map(|(base, w, b, params)| LayerSpec::from_shapes(base, w, b, &params))
        .collect::<Result<_, _>>()?;
    Ok((
        input,
        StackSpec {
            dialect: &SHAPE,
            layers,
        },
    ))
}

/// One layer's pointer, weight shape, bias length and parameters as sent.
type Shapes = (String, [usize; 4], Option<usize>, ParamsJson);

fn layer(
    base: String,
    weight: &[i64],
    bias: Option<&[i64]>,
    params: serde_json::Map<String, serde_json::Value>,
    members: &[&str],
) -> Result<Shapes, SpecError> {
    let weight = dims::<4>(weight, "weight_shape", &format!("{base}/weight_shape"))?;
    let bias = bias
        .map(|b| dims::<1>(b, "bias_shape", &format!("{base}/bias_shape")).map(|[n]| n))
        .transpose()?;
    let params = params_from(params, &base, members)?;
    Ok((base, weight, bias, params))
}

fn dims<const N: usize>(v: &[i64], what: &str, at: &str) -> Result<[usize; N], SpecError> {
    let arr: [i64; N] = v
        .try_into()
        .map_err(|_| invalid(format!("{what} must have {N} dimensions, got {}", v.len())).at(at))?;
    if let Some(bad) = arr.iter().find(|&&d| d < 0) {
        return Err(invalid(format!("{what} has a negative dimension {bad}")).at(at));
    }
    Ok(arr.map(|d| d as usize))
}
