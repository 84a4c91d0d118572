//! One layer as a request gives it, checked on its own ([`LayerSpec`]), a stack of them
//! ([`StackSpec`]), and
//! the one resolver of "one layer at the top level, or `layers`" ([`one_or_layers`]).

use ndarray::{Array1, Array4};

use super::params::ParamsJson;
use super::{invalid, SpecError};
use crate::conv::{Activation, Conv2dParams};
use crate::tensor::Tensor;

/// A layer's weights.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// The weights, `[c_out, c_in/groups, k_h, k_w]`.
    Array(Array4<f32>),
    /// Their shape only (`/v1/conv2d/shape`).
    Shape([usize; 4]),
}

/// A layer's bias.
#[derive(Debug, Clone, PartialEq)]
pub enum Bias {
    /// The bias, `[c_out]`.
    Array(Array1<f32>),
    /// Its length only (`/v1/conv2d/shape`).
    Len(usize),
}

/// One layer of a request, checked on its own (its parameters resolved, its weights 4-D,
/// its bias 1-D); [`super::plan()`] checks it against the shape flowing in.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// JSON Pointer of the layer in the request (`""`, `/layers/3`, `/parts/spec`, …): the
    /// prefix of every error about it.
    pub base: String,
    /// The weights.
    pub weights: Weights,
    /// The bias, if any.
    pub bias: Option<Bias>,
    /// Stride, padding, dilation, groups, padding mode.
    pub params: Conv2dParams,
    /// Applied to the layer's output.
    pub activation: Activation,
}

impl LayerSpec {
    /// A layer from tensors as sent: the parameters resolved, then the weights shaped
    /// 4-D, then the bias 1-D (in this order, so the first member at fault is named).
    ///
    /// # Errors
    /// [`SpecError::Invalid`] at `base/<member>`, the members named in `dialect`'s words.
    pub fn from_tensors(
        base: String,
        weight: Tensor,
        bias: Option<Tensor>,
        params: &ParamsJson,
        dialect: &Dialect,
    ) -> Result<Self, SpecError> {
        let (params, activation) = params.resolve(&base)?;
        let Some(shape) = weight.shape_n::<4>() else {
            return Err(invalid(format!(
                "weight must be 4-D [c_out, c_in/groups, k_h, k_w], got shape {:?}",
                weight.shape
            ))
            .at(format!("{base}/{}", dialect.weight)));
        };
        let bias = match bias {
            None => None,
            Some(b) if b.shape.len() == 1 => Some(Bias::Array(Array1::from_vec(b.data))),
            Some(b) => {
                return Err(invalid(format!(
                    "bias must be a flat list of c_out numbers, got shape {:?}",
                    b.shape
                ))
                .at(format!("{base}/{}", dialect.bias)))
            }
        };
        let weight = Array4::from_shape_vec(shape, weight.data)
            .map_err(|e| SpecError::Internal(e.to_string()))?;
        Ok(Self {
            base,
            weights: Weights::Array(weight),
            bias,
            params,
            activation,
        })
    }

    /// A layer from shapes (`/v1/conv2d/shape`), its parameters resolved.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] at `base/<parameter>`.
    pub fn from_shapes(
        base: String,
        weight: [usize; 4],
        bias: Option<usize>,
        params: &ParamsJson,
    ) -> Result<Self, SpecError> {
        let (params, activation) = params.resolve(&base)?;
        Ok(Self {
            base,
            weights: Weights::Shape(weight),
            bias: bias.map(Bias::Len),
            params,
            activation,
        })
    }

    /// `[c_out, c_in/groups, k_h, k_w]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        match &self.weights {
            Weights::Array(w) => {
                let (o, i, h, w) = w.dim();
                [o, i, h, w]
            }
            Weights::Shape(s) => *s,
        }
    }

    /// `c_out` of the bias, if any.
    pub fn bias_len(&self) -> Option<usize> {
        self.bias.as_ref().map(|b| match b {
            Bias::Array(b) => b.len(),
            Bias::Len(n) => *n,
        })
    }
}

/// The layers of one request, in order, and the API's words for them.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSpec {
    /// How the request names things.
    pub dialect: &'static Dialect,
    /// At least one layer.
    pub layers: Vec<LayerSpec>,
}

/// A refusal of the top-level/`layers` resolver: message, pointer, and whether it is 400
/// (a missing multipart part) rather than 422.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// For the caller.
    pub detail: &'static str,
    /// The member at fault.
    pub pointer: &'static str,
    /// 400 rather than 422.
    pub malformed: bool,
}

impl Refusal {
    /// A 422 refusal.
    pub const fn invalid(detail: &'static str, pointer: &'static str) -> Self {
        Self {
            detail,
            pointer,
            malformed: false,
        }
    }

    fn error(&self) -> SpecError {
        if self.malformed {
            SpecError::malformed(self.detail, self.pointer)
        } else {
            SpecError::invalid(self.detail, self.pointer)
        }
    }
}

/// How one API names a layer's members and words the top-level/`layers` refusals: each
/// API's pointers and messages stay its own while the rules are written once.
#[derive(Debug, PartialEq, Eq)]
pub struct Dialect {
    /// Pointer of a layer given at the top level (`""`, or `/parts/spec`).
    pub top: &'static str,
    /// Pointer prefix of the entries of `layers` (`/layers` → `/layers/0`, …).
    pub layers: &'static str,
    /// What the request calls the weights: `weight`, `kernel`, `weight_shape`.
    pub weight: &'static str,
    /// What it calls the bias: `bias`, `bias_shape`.
    pub bias: &'static str,
    /// Where an impossible input shape points (`/input`, `/parts/input`, `/input_shape`):
    /// the request's input, whichever layer finds it impossible.
    pub input: &'static str,
    /// Whether a planning error in a stack of several layers names its layer
    /// (`layer 1: …`).
    pub numbered: bool,
    /// Neither a top-level layer nor `layers`; `None` when the top level is the layer
    /// anyway (its own checks then name what is missing).
    pub missing: Option<Refusal>,
    /// Both a top-level layer and `layers`.
    pub both: Refusal,
    /// `layers` with layer members (bias, parameters) beside it at the top level.
    pub beside: Refusal,
    /// An empty `layers`.
    pub empty: Refusal,
}

/// A request's layers: the top level, or the entries of `layers` with their pointers.
#[derive(Debug, PartialEq)]
pub enum OneOrLayers<T, L> {
    /// The top level is the one layer, at this pointer.
    One(String, T),
    /// The entries of `layers`, each with its pointer.
    Layers(Vec<(String, L)>),
}

/// The one rule for "one layer at the top level, or `layers`": `top` is the top level,
/// `has_kernel` whether it names weights (`weight`, `weight_shape`, `kernel`, `preset`, a
/// `weight` part), `has_members` whether it holds other layer members (bias, parameters).
///
/// # Errors
/// The dialect's refusal when both or neither are given, when layer members stand beside
/// `layers`, or when `layers` is empty.
pub fn one_or_layers<T, L>(
    top: T,
    has_kernel: bool,
    has_members: bool,
    layers: Option<Vec<L>>,
    dialect: &Dialect,
) -> Result<OneOrLayers<T, L>, SpecError> {
    match layers {
        None => match &dialect.missing {
            Some(missing) if !has_kernel => Err(missing.error()),
            _ => Ok(OneOrLayers::One(dialect.top.to_string(), top)),
        },
        Some(_) if has_kernel => Err(dialect.both.error()),
        Some(_) if has_members => Err(dialect.beside.error()),
        Some(layers) if layers.is_empty() => Err(dialect.empty.error()),
        Some(layers) => Ok(OneOrLayers::Layers(
            layers
                .into_iter()
                .enumerate()
                .map(|(i, l)| (format!("{}/{i}", dialect.layers), l))
                .collect(),
        )),
    }
}
