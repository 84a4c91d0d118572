//! The work of a computing request with a tensor output on the pool, written once for the
//! tensor and image APIs: run the planned stack ([`crate::spec::plan()`]) whole, encode.
//! (Image requests with a picture output go through [`crate::pipeline`] instead.)

use std::time::Instant;

use ndarray::Array4;

use super::negotiate::Timings;
use super::reply::Reply;
use crate::conv::{buffers, plan_layers, run_planned_stack, CancelToken};
use crate::error::ApiError;
use crate::spec::{Plan, ShapeReport};
use crate::worker::cancelled;

/// Convolves `input` by `plan` (recording the `conv` stage with the algorithms that ran),
/// and encodes the output with `encode`. The input and output buffers go back to the
/// buffer cache.
///
/// # Errors
/// 503 if cancelled; `encode`'s.
pub fn compute(
    input: Array4<f32>,
    plan: Plan,
    cancel: &CancelToken,
    mut timings: Timings,
    encode: impl FnOnce(&Array4<f32>, &ShapeReport, Timings) -> Result<Reply, ApiError>,
) -> Result<Reply, ApiError> {
    // Each layer planned once, with its weights (a direct layer becomes separable when its
    // weights are rank-1): the report says what runs.
    let plans = plan_layers(&plan.layers, &plan.geoms);
    let report = ShapeReport::with_plans(&plan.geoms, &plan.activations, &plans);
    let t = Instant::now();
    let out = run_planned_stack(input.view(), &plan.layers, &plan.geoms, &plans, cancel);
    drop(plan);
    if out.is_ok() {
        let algos: Vec<&str> = plans.iter().map(|(p, _)| p.algorithm.as_str()).collect();
        timings.record_described("conv", t, algos.join("+"));
    }
    buffers::recycle(input);
    let out = out.map_err(|_| cancelled())?;
    let reply = encode(&out, &report, timings);
    buffers::recycle(out);
    reply
}
