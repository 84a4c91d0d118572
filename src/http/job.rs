//! The work of a computing request with a tensor output on the pool, written once for the
//! tensor and image APIs: run the planned stack ([`crate::spec::plan()`]) whole, encode.
//! (Image requests with a picture output go through [`crate::pipeline`] instead.)

use std::time::Instant;

use ndarray::Array4;

use super::negotiate::Timings;
use super::reply::Reply;
use crate::conv::{buffers, run_stack, CancelToken};
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
    let mut report = plan.report();
    let t = Instant::now();
    let out = run_stack(input.view(), &plan.layers, &plan.geoms, cancel);
    drop(plan);
    if let Ok((_, plans)) = &out {
        let algos: Vec<&str> = plans.iter().map(|p| p.algorithm.as_str()).collect();
        timings.record_described("conv", t, algos.join("+"));
    }
    buffers::recycle(input);
    let (out, plans) = out.map_err(|_| cancelled())?;
    // The plans that ran (a direct layer becomes separable when its weights are rank-1).
    for (summary, p) in report.layers.iter_mut().zip(&plans) {
        summary.algorithm = p.algorithm;
        summary.algorithm_reason.clone_from(&p.reason);
    }
    let reply = encode(&out, &report, timings);
    buffers::recycle(out);
    reply
}
