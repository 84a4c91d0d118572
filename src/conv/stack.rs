//! A stack of convolution layers applied in order, and what shapes alone tell about it.
//!
//! The receptive field and jump (effective stride) of layer `l`, per axis, follow the
//! usual recurrence from `rf_0 = 1, jump_0 = 1`:
//!
//! ```text
//! rf_l   = rf_{l−1} + (d_l·(k_l − 1)) · jump_{l−1}
//! jump_l = jump_{l−1} · s_l
//! ```
//!
//! so two stacked 3×3 stride-1 layers see 5×5 input pixels, three see 7×7.

use ndarray::{Array1, Array4, ArrayView4};

use super::params::{Activation, Conv2dGeometry, Conv2dParams, SpecError};
use super::separable::SeparablePlan;
use super::{conv2d_planned, plan_with_weights, CancelToken, Cancelled, Conv2dPlan};

/// One layer: its tensors and parameters.
#[derive(Debug, Clone)]
pub struct Conv2dLayer {
    /// `[c_out, c_in/groups, k_h, k_w]`.
    pub weight: Array4<f32>,
    /// `[c_out]`, optional.
    pub bias: Option<Array1<f32>>,
    /// Stride, padding, dilation, groups, padding mode.
    pub params: Conv2dParams,
    /// Applied to this layer's output.
    pub activation: Activation,
}

/// A refused layer: which one (0-based) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layer {layer}: {error}")]
pub struct LayerError {
    /// Index of the layer at fault.
    pub layer: usize,
    /// What is wrong with it.
    pub error: SpecError,
}

/// Receptive field and jump after a layer, `[height, width]` in input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReceptiveField {
    /// Input pixels one output pixel depends on, per axis.
    pub size: [u64; 2],
    /// Input pixels between neighbouring output pixels (product of strides), per axis.
    pub jump: [u64; 2],
}

/// Resolves every layer of a stack against the shape flowing into it.
///
/// `input` is `[n, c_in, h, w]`; each layer is given as (weight shape, bias length, params).
///
/// # Errors
/// The first layer whose spec is impossible for the shape it receives.
pub fn plan_stack(
    input: [usize; 4],
    layers: &[([usize; 4], Option<usize>, Conv2dParams)],
) -> Result<Vec<Conv2dGeometry>, LayerError> {
    let mut shape = input;
    layers
        .iter()
        .enumerate()
        .map(|(layer, (weight, bias_len, params))| {
            let g = Conv2dGeometry::new(shape, *weight, *bias_len, params)
                .map_err(|error| LayerError { layer, error })?;
            shape = g.output_shape();
            Ok(g)
        })
        .collect()
}

/// Cumulative receptive field after each layer of a planned stack.
pub fn receptive_fields(geoms: &[Conv2dGeometry]) -> Vec<ReceptiveField> {
    let mut rf = ReceptiveField {
        size: [1, 1],
        jump: [1, 1],
    };
    geoms
        .iter()
        .map(|g| {
            let eff = g.effective_kernel();
            for (axis, &eff) in eff.iter().enumerate() {
                let grow = (eff as u64 - 1).saturating_mul(rf.jump[axis]);
                rf.size[axis] = rf.size[axis].saturating_add(grow);
                rf.jump[axis] = rf.jump[axis].saturating_mul(g.stride[axis] as u64);
            }
            rf
        })
        .collect()
}

/// One layer's algorithm plan from its shape and weights, and its separable factors when
/// the plan is [`Conv2dAlgo::Separable`](super::Conv2dAlgo::Separable).
pub type LayerPlan = (Conv2dPlan, Option<SeparablePlan>);

/// Plans every layer of a stack from its geometry and weights ([`plan_with_weights`]):
/// once per request, before the convolutions.
pub fn plan_layers(layers: &[Conv2dLayer], geoms: &[Conv2dGeometry]) -> Vec<LayerPlan> {
    assert_eq!(layers.len(), geoms.len());
    layers
        .iter()
        .zip(geoms)
        .map(|(l, g)| plan_with_weights(g, l.weight.view()))
        .collect()
}

/// Runs a planned stack: each layer's output (after its activation) feeds the next.
/// Returns the output and, per layer, the algorithm plan that ran it.
///
/// `geoms` must come from [`plan_stack`] for this input and these layers.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires.
pub fn run_stack(
    input: ArrayView4<'_, f32>,
    layers: &[Conv2dLayer],
    geoms: &[Conv2dGeometry],
    cancel: &CancelToken,
) -> Result<(Array4<f32>, Vec<Conv2dPlan>), Cancelled> {
    let plans = plan_layers(layers, geoms);
    let out = run_planned_stack(input, layers, geoms, &plans, cancel)?;
    Ok((out, plans.into_iter().map(|(p, _)| p).collect()))
}

/// [`run_stack`] by plans made beforehand ([`plan_layers`] on these layers and geometries).
///
/// # Errors
/// [`Cancelled`] if `cancel` fires.
pub fn run_planned_stack(
    input: ArrayView4<'_, f32>,
    layers: &[Conv2dLayer],
    geoms: &[Conv2dGeometry],
    plans: &[LayerPlan],
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    assert!(layers.len() == geoms.len() && geoms.len() == plans.len());
    let mut current: Option<Array4<f32>> = None;
    for ((layer, geom), (plan, separable)) in layers.iter().zip(geoms).zip(plans) {
        let x = current.as_ref().map_or(input.view(), |a| a.view());
        let mut y = conv2d_planned(
            x,
            layer.weight.view(),
            layer.bias.as_ref().map(|b| b.view()),
            geom,
            plan,
            separable.as_ref(),
            cancel,
        )?;
        if layer.activation == Activation::Relu {
            y.par_mapv_inplace(|v| v.max(0.0));
        }
        if let Some(previous) = current.replace(y) {
            super::buffers::give(previous.into_raw_vec_and_offset().0);
        }
    }
    Ok(current.unwrap_or_else(|| input.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_stacked_3x3_layers_see_5x5_and_three_see_7x7() {
        let p = Conv2dParams::default();
        let layers = vec![([1, 1, 3, 3], None, p); 3];
        let geoms = plan_stack([1, 1, 16, 16], &layers).unwrap();
        let rf = receptive_fields(&geoms);
        assert_eq!(rf[1].size, [5, 5]);
        assert_eq!(rf[2].size, [7, 7]);
        assert_eq!(geoms[2].output_shape(), [1, 1, 10, 10]);
    }

    #[test]
    fn strides_multiply_the_jump() {
        let p = Conv2dParams {
            stride: [2, 2],
            ..Default::default()
        };
        let geoms = plan_stack(
            [1, 1, 32, 32],
            &[([1, 1, 3, 3], None, p), ([1, 1, 3, 3], None, p)],
        )
        .unwrap();
        let rf = receptive_fields(&geoms);
        assert_eq!(rf[1].jump, [4, 4]);
        assert_eq!(rf[1].size, [7, 7]);
    }

    #[test]
    fn a_layer_that_does_not_fit_its_input_is_named() {
        let p = Conv2dParams::default();
        let e = plan_stack(
            [1, 1, 4, 4],
            &[([1, 1, 3, 3], None, p), ([1, 1, 3, 3], None, p)],
        )
        .unwrap_err();
        assert_eq!(e.layer, 1);
    }
}
