//! A [`StackSpec`] over an input shape → a [`Plan`]: every layer shaped against the shape
//! flowing into it, and every budget checked, before any compute allocation.

use ndarray::Array4;

use super::layer::{Bias, StackSpec, Weights};
use super::report::ShapeReport;
use super::{invalid, SpecError};
use crate::config::Limits;
use crate::conv::{plan_stack, Activation, Conv2dGeometry, Conv2dLayer, LayerError};
use crate::tensor::Tensor;

/// A planned stack: one geometry per layer, and the layers to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Resolved shapes, padding, stride, … of each layer.
    pub geoms: Vec<Conv2dGeometry>,
    /// The activation after each layer.
    pub activations: Vec<Activation>,
    /// The layers with their weights, one per geometry; empty when the stack was given by
    /// shapes only (`/v1/conv2d/shape`).
    pub layers: Vec<Conv2dLayer>,
}

impl Plan {
    /// What the shapes say about the stack (see [`ShapeReport`]).
    pub fn report(&self) -> ShapeReport {
        ShapeReport::new(&self.geoms, &self.activations)
    }
}

/// Plans `stack` over `input` (`[n, c_in, h, w]`) and checks it against `limits`; the
/// weights move from the spec into the plan's layers.
///
/// # Errors
/// [`plan_shapes`]'s errors, then [`SpecError::OverLimit`] (422) for the first budget the
/// stack exceeds; [`SpecError::Internal`] for a stack given by shapes.
pub fn plan(input: [usize; 4], stack: StackSpec, limits: &Limits) -> Result<Plan, SpecError> {
    plan_bounded(input, stack, limits, true)
}

/// [`plan`] for a job whose output is a picture: the element limits, meant for tensors,
/// do not apply (the job is bounded by its pixels and its memory estimate instead,
/// [`crate::pipeline::estimate`]); layers, kernel sides, channels and the compute budget
/// do.
///
/// # Errors
/// As [`plan`].
pub fn plan_picture(
    input: [usize; 4],
    stack: StackSpec,
    limits: &Limits,
) -> Result<Plan, SpecError> {
    plan_bounded(input, stack, limits, false)
}

fn plan_bounded(
    input: [usize; 4],
    stack: StackSpec,
    limits: &Limits,
    elements: bool,
) -> Result<Plan, SpecError> {
    let mut plan = plan_shapes(input, &stack)?;
    check_limits(limits, &plan.geoms, &stack, elements)?;
    for layer in stack.layers {
        let Weights::Array(weight) = layer.weights else {
            return Err(SpecError::Internal("a layer to run has no weights".into()));
        };
        let bias = match layer.bias {
            Some(Bias::Array(b)) => Some(b),
            _ => None,
        };
        plan.layers.push(Conv2dLayer {
            weight,
            bias,
            params: layer.params,
            activation: layer.activation,
        });
    }
    Ok(plan)
}

/// Plans `stack` over `input` without the budgets: [`plan_stack`] (`Conv2dGeometry::new`)
/// shapes each layer against the shape flowing into it. The plan's `layers` stay empty.
///
/// # Errors
/// [`SpecError::Invalid`] for the first impossible layer, pointing at its member.
pub fn plan_shapes(input: [usize; 4], stack: &StackSpec) -> Result<Plan, SpecError> {
    let specs: Vec<_> = stack
        .layers
        .iter()
        .map(|l| (l.weight_shape(), l.bias_len(), l.params))
        .collect();
    let geoms = plan_stack(input, &specs).map_err(|e| geometry_error(e, stack))?;
    Ok(Plan {
        geoms,
        activations: stack.layers.iter().map(|l| l.activation).collect(),
        layers: Vec::new(),
    })
}

/// A shape-planning failure as a refusal pointing into the request, in its own words.
fn geometry_error(e: LayerError, stack: &StackSpec) -> SpecError {
    let d = stack.dialect;
    let base = stack.layers.get(e.layer).map_or("", |l| l.base.as_str());
    let pointer = match e.error.field {
        // Only the request's input can have a zero-sized dimension (a planned layer's
        // output has none), so "input" is the input the client sent, not a member of the
        // layer.
        "input" => d.input.to_string(),
        "weight" => format!("{base}/{}", d.weight),
        "bias" => format!("{base}/{}", d.bias),
        field => format!("{base}/{field}"),
    };
    let prefix = if d.numbered && stack.layers.len() > 1 {
        format!("layer {}: ", e.layer)
    } else {
        String::new()
    };
    invalid(format!("{prefix}{}", e.error.reason)).at(pointer)
}

/// Checks a planned stack against the configured limits (before any compute allocation).
fn check_limits(
    limits: &Limits,
    geoms: &[Conv2dGeometry],
    stack: &StackSpec,
    elements: bool,
) -> Result<(), SpecError> {
    let over = |what: &str, limit: u64, actual: u64, at: String| {
        SpecError::over_limit(what, limit, actual, at, false)
    };
    // Each layer's pointer prefix and what its request calls the weight (`kernel` in an
    // image spec), so that a limit points at the member the client sent.
    let base = |i: usize| {
        stack
            .layers
            .get(i)
            .map_or(String::new(), |l| l.base.clone())
    };
    let weight = stack.dialect.weight;
    if geoms.len() as u64 > limits.max_layers {
        let first = base(0);
        let at = first
            .strip_suffix("/0")
            .map_or_else(|| format!("{first}/layers"), str::to_string);
        return Err(over("layers", limits.max_layers, geoms.len() as u64, at));
    }
    let mut macs = 0u64;
    for (i, g) in geoms.iter().enumerate() {
        let base = base(i);
        let side = g.k_h.max(g.k_w) as u64;
        if side > limits.max_kernel_side {
            return Err(over(
                "kernel side",
                limits.max_kernel_side,
                side,
                format!("{base}/{weight}"),
            ));
        }
        // The compute reads the padded input (in bands, but a band spans the padded
        // width), so padding is bounded like an output: a huge `padding`, or `"same"` with
        // a huge dilation, must not turn into a huge allocation behind a tiny output.
        let [top, bottom, left, right] = g.padding.map(|p| p as u64);
        let padded = (g.n as u64)
            .saturating_mul(g.c_in as u64)
            .saturating_mul((g.h as u64).saturating_add(top).saturating_add(bottom))
            .saturating_mul((g.w as u64).saturating_add(left).saturating_add(right));
        if elements && padded > limits.max_output_elements {
            return Err(over(
                "padded input elements",
                limits.max_output_elements,
                padded,
                format!("{base}/padding"),
            ));
        }
        let channels = g.c_in.max(g.c_out) as u64;
        if channels > limits.max_channels {
            return Err(over(
                "channels",
                limits.max_channels,
                channels,
                format!("{base}/{weight}"),
            ));
        }
        if elements && g.output_len() > limits.max_output_elements {
            return Err(over(
                "output elements",
                limits.max_output_elements,
                g.output_len(),
                base,
            ));
        }
        macs = macs.saturating_add(g.macs());
    }
    if macs > limits.max_macs {
        return Err(over(
            "multiply-accumulates (compute budget)",
            limits.max_macs,
            macs,
            String::new(),
        ));
    }
    Ok(())
}

/// Shapes an input tensor as NCHW and checks its size limit.
///
/// # Errors
/// [`SpecError::OverLimit`] (sent, 413) over `max_tensor_elements`, [`SpecError::Invalid`]
/// if not 4-D; both at `pointer`.
pub fn input_array(t: Tensor, limits: &Limits, pointer: &str) -> Result<Array4<f32>, SpecError> {
    if t.len() as u64 > limits.max_tensor_elements {
        return Err(SpecError::over_limit(
            "input elements",
            limits.max_tensor_elements,
            t.len() as u64,
            pointer,
            true,
        ));
    }
    if t.shape_n::<4>().is_none() {
        return Err(invalid(format!(
            "input must be 4-D [n, c_in, h, w], got shape {:?}",
            t.shape
        ))
        .at(pointer));
    }
    array4(t)
}

/// A 4-D tensor as an array (its rank checked by the caller).
fn array4(t: Tensor) -> Result<Array4<f32>, SpecError> {
    let shape = t
        .shape_n::<4>()
        .ok_or_else(|| SpecError::Internal(format!("shape {:?} is not 4-D", t.shape)))?;
    Array4::from_shape_vec(shape, t.data).map_err(|e| SpecError::Internal(e.to_string()))
}
