//! One layer as a request gives it ([`LayerSpec`]), a stack of them ([`StackSpec`]), and
//! the one resolver of "one layer at the top level, or `layers`" ([`one_or_layers`]).

use super::params::ParamsJson;
use super::SpecError;
use crate::tensor::Tensor;

/// Where a layer's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// A tensor as sent (JSON or `.npy`, or an image kernel made 4-D), shaped by the plan.
    Tensor(Tensor),
    /// Its shape only (`/v1/conv2d/shape`): `[c_out, c_in/groups, k_h, k_w]`.
    Shape([usize; 4]),
}

/// A layer's bias.
#[derive(Debug, Clone, PartialEq)]
pub enum Bias {
    /// A tensor as sent, 1-D `[c_out]` once the plan checked it.
    Tensor(Tensor),
    /// Its length only (`/v1/conv2d/shape`).
    Len(usize),
}

/// One layer of a request, before the plan: its weights, its bias, its parameters as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// JSON Pointer of the layer in the request (`""`, `/layers/3`, `/parts/spec`, …): the
    /// prefix of every error about it.
    pub base: String,
    /// The weights.
    pub weights: Weights,
    /// The bias, if any.
    pub bias: Option<Bias>,
    /// Stride, padding, dilation, groups, padding mode, activation, as sent.
    pub params: ParamsJson,
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
    /// Where an impossible input shape points: `None` for `<layer>/input`.
    pub input: Option<&'static str>,
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
