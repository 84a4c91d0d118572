//! Request specs shared by the tensor and image endpoints: JSON shapes → validated layers.
//!
//! A layer is described by `weight`, optional `bias`, and the parameters `stride`,
//! `padding`, `dilation`, `groups`, `padding_mode`, `activation`, all optional with
//! PyTorch's defaults. Short forms are accepted: `stride: 2` = `[2, 2]`; `padding: 1` =
//! `[1, 1, 1, 1]`, `[ph, pw]` = `[ph, ph, pw, pw]`, `[top, bottom, left, right]`,
//! `"same"`, `"valid"`. Values arrive as signed integers so that negatives get a precise
//! refusal rather than a type error.

use std::fmt;

use ndarray::{Array1, Array4};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::conv::{
    Activation, Conv2dGeometry, Conv2dLayer, Conv2dParams, LayerError, Padding, PaddingMode,
};
use crate::error::{parse_value, ApiError};
use crate::tensor::Tensor;

/// One integer or a list of integers, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ints(pub Vec<i64>);

impl<'de> Deserialize<'de> for Ints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ints;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a list of integers")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ints, E> {
                Ok(Ints(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ints, E> {
                i64::try_from(v)
                    .map(|v| Ints(vec![v]))
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ints, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<i64>()? {
                    if out.len() == 8 {
                        return Err(de::Error::invalid_length(9, &"at most 4 integers"));
                    }
                    out.push(v);
                }
                Ok(Ints(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Padding as sent: integers or `"same"` / `"valid"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaddingJson {
    /// 1, 2 or 4 integers.
    Ints(Vec<i64>),
    /// `"same"`.
    Same,
    /// `"valid"`.
    Valid,
}

impl<'de> Deserialize<'de> for PaddingJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PaddingJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"an integer, [ph, pw], [top, bottom, left, right], "same" or "valid""#,
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PaddingJson, E> {
                match v.to_ascii_lowercase().as_str() {
                    "same" => Ok(PaddingJson::Same),
                    "valid" => Ok(PaddingJson::Valid),
                    _ => Err(E::unknown_variant(v, &["same", "valid"])),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PaddingJson, E> {
                Ok(PaddingJson::Ints(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PaddingJson, E> {
                Ints::deserialize(de::value::U64Deserializer::new(v))
                    .map(|i| PaddingJson::Ints(i.0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PaddingJson, A::Error> {
                Ints::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(|i| PaddingJson::Ints(i.0))
            }
        }
        d.deserialize_any(V)
    }
}

/// The parameters of a layer, apart from its tensors; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsJson {
    /// `s` or `[s_h, s_w]`, default 1.
    pub stride: Option<Ints>,
    /// See the module doc; default 0.
    pub padding: Option<PaddingJson>,
    /// `d` or `[d_h, d_w]`, default 1.
    pub dilation: Option<Ints>,
    /// Default 1.
    pub groups: Option<i64>,
    /// Default `zeros`.
    pub padding_mode: Option<PaddingMode>,
    /// Default `none`.
    pub activation: Option<Activation>,
}

/// One layer of a `layers` list: tensors plus the [`ParamsJson`] fields.
#[derive(Debug, Clone, Deserialize)]
pub struct LayerJson {
    /// `[c_out, c_in/groups, k_h, k_w]`.
    pub weight: Tensor,
    /// `[c_out]` or `null`.
    #[serde(default)]
    pub bias: Option<Tensor>,
    /// The remaining fields, checked as [`ParamsJson`] (unknown ones refused).
    #[serde(flatten)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Checks the parameter fields left over beside tensors/shapes as a [`ParamsJson`].
///
/// # Errors
/// 422 naming an unknown or mistyped field.
pub fn params_from(
    rest: serde_json::Map<String, serde_json::Value>,
    base: &str,
) -> Result<ParamsJson, ApiError> {
    parse_value(serde_json::Value::Object(rest), base)
}

fn pair(field: &'static str, v: &Option<Ints>, base: &str) -> Result<[usize; 2], ApiError> {
    let at = || format!("{base}/{field}");
    let vals = match v {
        None => return Ok([1, 1]),
        Some(Ints(v)) => v,
    };
    let [a, b] = match vals.as_slice() {
        [a] => [*a, *a],
        [a, b] => [*a, *b],
        _ => {
            return Err(ApiError::invalid_spec(format!(
                "{field} must be one integer or [{field}_h, {field}_w], got {} values",
                vals.len()
            ))
            .at(at()))
        }
    };
    if a < 1 || b < 1 {
        return Err(
            ApiError::invalid_spec(format!("{field} must be ≥ 1, got [{a}, {b}]")).at(at()),
        );
    }
    Ok([a as usize, b as usize])
}

impl ParamsJson {
    /// Validates the scalar parameters (no shapes needed) into [`Conv2dParams`].
    ///
    /// # Errors
    /// 422 with the pointer `base/field`.
    pub fn resolve(&self, base: &str) -> Result<(Conv2dParams, Activation), ApiError> {
        let stride = pair("stride", &self.stride, base)?;
        let dilation = pair("dilation", &self.dilation, base)?;
        let padding = match &self.padding {
            None => Padding::default(),
            Some(PaddingJson::Same) => Padding::Same,
            Some(PaddingJson::Valid) => Padding::Valid,
            Some(PaddingJson::Ints(v)) => {
                if let Some(neg) = v.iter().find(|&&p| p < 0) {
                    return Err(
                        ApiError::invalid_spec(format!("padding must be ≥ 0, got {neg}"))
                            .at(format!("{base}/padding")),
                    );
                }
                let p: Vec<usize> = v.iter().map(|&p| p as usize).collect();
                Padding::Explicit(match p.as_slice() {
                    [a] => [*a; 4],
                    [h, w] => [*h, *h, *w, *w],
                    [t, b, l, r] => [*t, *b, *l, *r],
                    _ => {
                        return Err(ApiError::invalid_spec(format!(
                            "padding must be an integer, [ph, pw] or [top, bottom, left, right]; got {} values",
                            p.len()
                        ))
                        .at(format!("{base}/padding")))
                    }
                })
            }
        };
        let groups = match self.groups {
            None => 1,
            Some(g) if g >= 1 => g as usize,
            Some(g) => {
                return Err(
                    ApiError::invalid_spec(format!("groups must be ≥ 1, got {g}"))
                        .at(format!("{base}/groups")),
                )
            }
        };
        Ok((
            Conv2dParams {
                stride,
                dilation,
                padding,
                groups,
                padding_mode: self.padding_mode.unwrap_or_default(),
            },
            self.activation.unwrap_or_default(),
        ))
    }
}

/// A layer whose tensors are shaped and whose scalar parameters are valid; shapes against
/// the input are checked by [`crate::conv::plan_stack`].
#[derive(Debug, Clone)]
pub struct PendingLayer {
    /// JSON Pointer prefix of this layer (`""` or `/layers/3`).
    pub base: String,
    /// What the request calls the weight (`weight`, or `kernel` in image specs).
    pub weight_field: &'static str,
    /// The layer.
    pub layer: Conv2dLayer,
}

/// Shapes and validates a weight/bias pair and parameters into a layer.
///
/// # Errors
/// 422 naming the field: weight not 4-D, bias not 1-D.
pub fn pending_layer(
    weight: Tensor,
    bias: Option<Tensor>,
    params: &ParamsJson,
    base: String,
) -> Result<PendingLayer, ApiError> {
    let (p, activation) = params.resolve(&base)?;
    let Some(wshape) = weight.shape_n::<4>() else {
        return Err(ApiError::invalid_spec(format!(
            "weight must be 4-D [c_out, c_in/groups, k_h, k_w], got shape {:?}",
            weight.shape
        ))
        .at(format!("{base}/weight")));
    };
    let bias = match bias {
        None => None,
        Some(b) if b.shape.len() == 1 => Some(Array1::from_vec(b.data)),
        Some(b) => {
            return Err(ApiError::invalid_spec(format!(
                "bias must be a flat list of c_out numbers, got shape {:?}",
                b.shape
            ))
            .at(format!("{base}/bias")))
        }
    };
    let weight = Array4::from_shape_vec(wshape, weight.data).map_err(ApiError::internal)?;
    Ok(PendingLayer {
        base,
        weight_field: "weight",
        layer: Conv2dLayer {
            weight,
            bias,
            params: p,
            activation,
        },
    })
}

/// Turns a shape-planning failure into a 422 pointing into the request.
pub fn layer_error(e: LayerError, layers: &[PendingLayer]) -> ApiError {
    let (base, weight_field) = layers
        .get(e.layer)
        .map_or(("", "weight"), |l| (l.base.as_str(), l.weight_field));
    let field = if e.error.field == "weight" {
        weight_field
    } else {
        e.error.field
    };
    let prefix = if layers.len() > 1 {
        format!("layer {}: ", e.layer)
    } else {
        String::new()
    };
    ApiError::invalid_spec(format!("{prefix}{}", e.error.reason)).at(format!("{base}/{field}"))
}

/// Plans a stack of pending layers over an input shape.
///
/// # Errors
/// 422 for the first impossible layer.
pub fn plan(input: [usize; 4], layers: &[PendingLayer]) -> Result<Vec<Conv2dGeometry>, ApiError> {
    let specs: Vec<_> = layers
        .iter()
        .map(|l| {
            let w = l.layer.weight.shape();
            (
                [w[0], w[1], w[2], w[3]],
                l.layer.bias.as_ref().map(|b| b.len()),
                l.layer.params,
            )
        })
        .collect();
    crate::conv::plan_stack(input, &specs).map_err(|e| layer_error(e, layers))
}

/// The layers of a request: either `layers: [...]` or one layer at the top level.
///
/// # Errors
/// 422 when both or neither are given, or when a layer is invalid.
pub fn collect_layers(
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    top: ParamsJson,
    layers: Option<Vec<LayerJson>>,
) -> Result<Vec<PendingLayer>, ApiError> {
    match (weight, layers) {
        (Some(w), None) => Ok(vec![pending_layer(w, bias, &top, String::new())?]),
        (None, Some(layers)) => {
            if bias.is_some() || top != ParamsJson::default() {
                return Err(ApiError::invalid_spec(
                    "with `layers`, give bias and parameters inside each layer, not at the top level",
                )
                .at("/layers"));
            }
            if layers.is_empty() {
                return Err(
                    ApiError::invalid_spec("`layers` must hold at least one layer").at("/layers"),
                );
            }
            layers
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    let base = format!("/layers/{i}");
                    let params = params_from(l.params, &base)?;
                    pending_layer(l.weight, l.bias, &params, base)
                })
                .collect()
        }
        (Some(_), Some(_)) => {
            Err(ApiError::invalid_spec("give either `weight` or `layers`, not both").at("/layers"))
        }
        (None, None) => Err(ApiError::invalid_spec("missing `weight` (or `layers`)").at("/weight")),
    }
}
