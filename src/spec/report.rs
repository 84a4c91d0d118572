//! What shapes alone say about a planned stack: per layer and in total, as sent in tensor
//! responses, the ZIP manifest, and `/v1/conv2d/shape`.

use serde::Serialize;

use crate::conv::{
    receptive_fields, Activation, Conv2dAlgo, Conv2dGeometry, PaddingMode, ReceptiveField,
};

/// What shapes alone say about one layer.
#[derive(Debug, Serialize)]
pub struct LayerSummary {
    /// `[n, c_in, h, w]` flowing in.
    pub input_shape: [usize; 4],
    /// `[c_out, c_in/groups, k_h, k_w]`.
    pub weight_shape: [usize; 4],
    /// `[n, c_out, out_h, out_w]`.
    pub output_shape: [usize; 4],
    /// Resolved `[top, bottom, left, right]`.
    pub padding: [usize; 4],
    /// `[s_h, s_w]`.
    pub stride: [usize; 2],
    /// `[d_h, d_w]`.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Padding mode.
    pub padding_mode: PaddingMode,
    /// Activation after the layer.
    pub activation: Activation,
    /// `[d_h·(k_h−1)+1, d_w·(k_w−1)+1]`.
    pub effective_kernel: [usize; 2],
    /// Cumulative receptive field `[h, w]` after this layer, in input pixels.
    pub receptive_field: [u64; 2],
    /// Cumulative jump (product of strides) `[h, w]`.
    pub jump: [u64; 2],
    /// Multiply-accumulates of this layer.
    pub macs: u64,
    /// The algorithm that runs (or, in `/v1/conv2d/shape`, would run) this layer.
    pub algorithm: Conv2dAlgo,
    /// Why the plan chose it, with the cost model's estimates.
    pub algorithm_reason: String,
}

/// Summaries of a planned stack, with activations.
pub fn summarize(geoms: &[Conv2dGeometry], activations: &[Activation]) -> Vec<LayerSummary> {
    summarize_with(geoms, activations, |_, g| crate::conv::plan::plan(g))
}

/// [`summarize`] with each layer's algorithm plan from `plan_of(index, geometry)`.
fn summarize_with(
    geoms: &[Conv2dGeometry],
    activations: &[Activation],
    plan_of: impl Fn(usize, &Conv2dGeometry) -> crate::conv::Conv2dPlan,
) -> Vec<LayerSummary> {
    receptive_fields(geoms)
        .into_iter()
        .zip(geoms)
        .zip(activations)
        .enumerate()
        .map(|(i, ((ReceptiveField { size, jump }, g), &activation))| {
            let p = plan_of(i, g);
            LayerSummary {
                input_shape: g.input_shape(),
                weight_shape: g.weight_shape(),
                output_shape: g.output_shape(),
                padding: g.padding,
                stride: g.stride,
                dilation: g.dilation,
                groups: g.groups,
                padding_mode: g.padding_mode,
                activation,
                effective_kernel: g.effective_kernel(),
                receptive_field: size,
                jump,
                macs: g.macs(),
                algorithm: p.algorithm,
                algorithm_reason: p.reason,
            }
        })
        .collect()
}

/// The shape description shared by tensor responses and `/v1/conv2d/shape`.
#[derive(Debug, Serialize)]
pub struct ShapeReport {
    /// `[n, c_in, h, w]`.
    pub input_shape: [usize; 4],
    /// Final `[n, c_out, out_h, out_w]`.
    pub output_shape: [usize; 4],
    /// Resolved padding: `[t, b, l, r]` for one layer, one such list per layer for a stack.
    pub padding: serde_json::Value,
    /// Receptive field of the whole stack `[h, w]`.
    pub receptive_field: [u64; 2],
    /// Jump of the whole stack `[h, w]`.
    pub jump: [u64; 2],
    /// Total multiply-accumulates.
    pub macs: u64,
    /// Per layer.
    pub layers: Vec<LayerSummary>,
}

impl ShapeReport {
    /// Builds the report of a planned stack, each layer's algorithm planned from its shape.
    pub fn new(geoms: &[Conv2dGeometry], activations: &[Activation]) -> Self {
        Self::from_summaries(summarize(geoms, activations))
    }

    /// Builds the report of a planned stack whose layers were planned with their weights
    /// (`plans`, one per layer: [`crate::conv::plan_layers`]).
    pub fn with_plans(
        geoms: &[Conv2dGeometry],
        activations: &[Activation],
        plans: &[crate::conv::LayerPlan],
    ) -> Self {
        assert_eq!(geoms.len(), plans.len());
        Self::from_summaries(summarize_with(geoms, activations, |i, _| {
            plans[i].0.clone()
        }))
    }

    fn from_summaries(layers: Vec<LayerSummary>) -> Self {
        let last = layers.last().expect("a stack has at least one layer");
        let padding = if layers.len() == 1 {
            serde_json::json!(last.padding)
        } else {
            serde_json::json!(layers.iter().map(|l| l.padding).collect::<Vec<_>>())
        };
        Self {
            input_shape: layers[0].input_shape,
            output_shape: last.output_shape,
            padding,
            receptive_field: last.receptive_field,
            jump: last.jump,
            macs: layers.iter().fold(0u64, |a, l| a.saturating_add(l.macs)),
            layers,
        }
    }
}
