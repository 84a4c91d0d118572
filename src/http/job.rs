//! The work of a computing request on the pool, written once for the tensor and image
//! APIs: plan the spec ([`crate::spec::plan()`]), run the stack, encode.

use std::time::Instant;

use ndarray::Array4;

use super::negotiate::Timings;
use super::reply::Reply;
use crate::config::Limits;
use crate::conv::{buffers, run_stack, CancelToken};
use crate::error::ApiError;
use crate::spec::{ShapeReport, StackSpec};
use crate::worker::cancelled;

/// Plans `stack` over `input` within `limits`, convolves (recording the `conv` stage with
/// the algorithms that ran), and encodes the output with `encode`. The input and output
/// buffers go back to the buffer cache.
///
/// # Errors
/// 413/422 for an impossible spec or one over the limits; 503 if cancelled; `encode`'s.
pub fn compute(
    input: Array4<f32>,
    stack: StackSpec,
    limits: &Limits,
    cancel: &CancelToken,
    mut timings: Timings,
    encode: impl FnOnce(&Array4<f32>, &ShapeReport, Timings) -> Result<Reply, ApiError>,
) -> Result<Reply, ApiError> {
    let (n, c, h, w) = input.dim();
    let plan = crate::spec::plan([n, c, h, w], stack, limits)?;
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
