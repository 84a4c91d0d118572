//! Request specs → one validated plan, for every API: the tensor API's JSON body and its
//! multipart `spec`, the shape endpoint, and the image API's `spec` part. Pure: no HTTP
//! types, unit-tested without a server (`tests.rs`).
//!
//! The path of a spec, whatever the API:
//! 1. [`json`] deserialises the body once (the tensor parser streams numbers into one
//!    `Vec<f32>`), every error carrying the JSON Pointer of the member at fault.
//! 2. Each API's module ([`tensor`], [`shape`], [`image`]) turns its members into one
//!    [`StackSpec`], through the one resolver of "top-level layer or `layers`"
//!    ([`one_or_layers`]), worded in the API's [`Dialect`]. Each [`LayerSpec`] is checked on
//!    its own as it is made, in order: its [`ParamsJson`] resolved into `Conv2dParams`, its
//!    weights 4-D (or a shape), its bias 1-D (or a length).
//! 3. [`plan()`] shapes every layer against the shape flowing into it
//!    ([`crate::conv::plan_stack`] → `Conv2dGeometry::new`) and checks every budget (layers,
//!    kernel side, channels, padded input, output elements, MACs) before any compute
//!    allocation. [`plan_shapes`] is the same without the budgets (`/v1/conv2d/shape`).
//!
//! Every refusal is a [`SpecError`] holding its pointer; `ApiError: From<SpecError>` (in
//! [`crate::error`]) is the one place it becomes a problem response.

pub mod image;
pub mod json;
mod layer;
mod params;
mod plan;
mod report;
pub mod shape;
pub mod tensor;
#[cfg(test)]
mod tests;

pub use layer::{
    one_or_layers, Bias, Dialect, LayerSpec, OneOrLayers, Refusal, StackSpec, Weights,
};
pub use params::{Ints, PaddingJson, ParamsJson, PARAM_NAMES};
pub use plan::{input_array, plan, plan_picture, plan_shapes, Plan};
pub use report::{LayerSummary, ShapeReport};

/// A refused spec: what is wrong and the JSON Pointer of the member at fault, down to the
/// element (`/input/0/0/0/1`). A multipart request's pointers start with `/parts/<name>`
/// (`/parts/spec/layers/1/stride`, `/parts/spec/kernel/1/2`, `/parts/input`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not well-formed: JSON syntax, a missing or unreadable part (400).
    #[error("{detail} (at `{pointer}`)")]
    Malformed {
        /// For the caller.
        detail: String,
        /// The member at fault.
        pointer: String,
    },
    /// Well-formed but impossible: shapes, parameters, types (422).
    #[error("{detail} (at `{pointer}`)")]
    Invalid {
        /// For the caller.
        detail: String,
        /// The member at fault.
        pointer: String,
    },
    /// No preset of this name (422; the problem lists the known ones).
    #[error("{detail} (at `{pointer}`)")]
    UnknownPreset {
        /// For the caller.
        detail: String,
        /// The member at fault (`…/preset`).
        pointer: String,
    },
    /// Over a configured limit: 413 for what was sent (`sent`), 422 for what the spec implies.
    #[error("{what} is {actual}, over the limit of {limit} (at `{pointer}`)")]
    OverLimit {
        /// The limit's name in the problem (`input elements`, `kernel side`, …).
        what: String,
        /// The configured limit.
        limit: u64,
        /// What the request asks for.
        actual: u64,
        /// The member at fault.
        pointer: String,
        /// Whether the excess was sent (a tensor) rather than implied (an output).
        sent: bool,
    },
    /// A bug: a tensor whose data does not fill its shape (500).
    #[error("internal: {0}")]
    Internal(String),
}

impl SpecError {
    /// 422 at `pointer`.
    pub fn invalid(detail: impl Into<String>, pointer: impl Into<String>) -> Self {
        Self::Invalid {
            detail: detail.into(),
            pointer: pointer.into(),
        }
    }

    /// 400 at `pointer`.
    pub fn malformed(detail: impl Into<String>, pointer: impl Into<String>) -> Self {
        Self::Malformed {
            detail: detail.into(),
            pointer: pointer.into(),
        }
    }

    /// Over a limit, at `pointer`.
    pub fn over_limit(
        what: &str,
        limit: u64,
        actual: u64,
        pointer: impl Into<String>,
        sent: bool,
    ) -> Self {
        Self::OverLimit {
            what: what.to_string(),
            limit,
            actual,
            pointer: pointer.into(),
            sent,
        }
    }

    /// The JSON Pointer of the member at fault (`None` for an internal error).
    pub fn pointer(&self) -> Option<&str> {
        match self {
            Self::Malformed { pointer, .. }
            | Self::Invalid { pointer, .. }
            | Self::UnknownPreset { pointer, .. }
            | Self::OverLimit { pointer, .. } => Some(pointer),
            Self::Internal(_) => None,
        }
    }
}

/// A refusal waiting for its pointer, so that a check reads `invalid("…").at(pointer)`.
#[must_use]
pub(crate) struct Refused {
    detail: String,
    malformed: bool,
}

impl Refused {
    /// The error, pointing at `pointer`.
    pub(crate) fn at(self, pointer: impl Into<String>) -> SpecError {
        if self.malformed {
            SpecError::malformed(self.detail, pointer)
        } else {
            SpecError::invalid(self.detail, pointer)
        }
    }
}

/// 422 (see [`Refused::at`]).
pub(crate) fn invalid(detail: impl Into<String>) -> Refused {
    Refused {
        detail: detail.into(),
        malformed: false,
    }
}

/// 400 (see [`Refused::at`]).
pub(crate) fn malformed(detail: impl Into<String>) -> Refused {
    Refused {
        detail: detail.into(),
        malformed: true,
    }
}
