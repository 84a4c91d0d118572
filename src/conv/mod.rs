//! The convolution core: pure functions over ndarray tensors. Knows nothing of HTTP.
//!
//! - [`params`]: validated parameters and the output-size rule ([`Conv2dGeometry`]).
//! - [`reference`]: the naive oracle, kept forever.
//! - [`plan`]: the algorithm plan ([`Conv2dAlgo`]) and its cost model.
//! - The algorithms, each property-tested against the oracle: [`direct`] (in-place
//!   register tiles), [`phased`] (register tiles over padded, stride-phase-split rows),
//!   [`separable`] (rank-1 kernels as two 1-D passes), [`gemm`] (pointwise and im2col
//!   GEMMs), on the instruction-set dispatch of [`isa`] and the row layout of `phase`;
//!   with AVX-512 also [`igemm`] (the GEMM reading padded planes in place), [`winograd`]
//!   (3×3 at stride 1), [`chantile`] (vectors of output channels, for few input
//!   channels), [`chanwino`] and [`igwino`] (those two tiles with kernel rows as 1-D
//!   Winograd).
//! - [`stack`]: layers applied in order, receptive field, jump and MACs.
//! - [`presets`]: named kernels (Sobel, Gaussian, …); no algorithm depends on it.
//! - [`buffers`]: large output buffers reused between requests.
//!
//! All tensors are float32 NCHW: input `[n, c_in, h, w]`, weight
//! `[c_out, c_in/groups, k_h, k_w]`, bias `[c_out]`, output `[n, c_out, out_h, out_w]`.
//! Every algorithm runs on the current rayon pool and uses all of its threads, whatever
//! the batch size.

pub mod buffers;
pub mod chantile;
pub mod chanwino;
pub mod direct;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dwsplit;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dwtile;
pub mod gemm;
pub mod igemm;
pub mod igwino;
pub mod isa;
pub mod params;
pub(crate) mod phase;
pub mod phased;
pub mod plan;
pub mod presets;
pub mod reference;
#[cfg(target_arch = "x86_64")]
pub(crate) mod rowtile;
pub mod separable;
pub mod stack;
pub mod strip;
#[cfg(test)]
pub(crate) mod testutil;
pub mod winograd;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ndarray::{Array4, ArrayView1, ArrayView4};

pub use direct::conv2d_direct;
pub use params::{Activation, Conv2dGeometry, Conv2dParams, Padding, PaddingMode, SpecError};
pub use plan::{plan_with_weights, Conv2dAlgo, Conv2dPlan};
pub use reference::conv2d_reference;
pub use stack::{
    plan_layers, plan_stack, receptive_fields, run_planned_stack, run_stack, Conv2dLayer,
    LayerError, LayerPlan, ReceptiveField,
};

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]` with the algorithm the plan picks
/// ([`plan_with_weights`]); returns the output and the plan that ran.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires.
pub fn conv2d(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<(Array4<f32>, Conv2dPlan), Cancelled> {
    let (plan, separable) = plan_with_weights(geom, weight);
    let out = conv2d_planned(input, weight, bias, geom, &plan, separable.as_ref(), cancel)?;
    Ok((out, plan))
}

/// [`conv2d`] by a plan made beforehand: `plan` and `separable` from
/// [`plan_with_weights`] on this layer's geometry and weights.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires.
pub fn conv2d_planned(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    plan: &Conv2dPlan,
    separable: Option<&separable::SeparablePlan>,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    match separable {
        Some(s) => s.run(input, bias, geom, cancel),
        None => conv2d_with(plan.algorithm, input, weight, bias, geom, cancel),
    }
}

/// [`conv2d`] with a chosen algorithm (for benchmarks and tests).
///
/// # Errors
/// [`Cancelled`] if `cancel` fires.
///
/// # Panics
/// If `algo` does not [support](Conv2dAlgo::supports) the layer, or is
/// [`Conv2dAlgo::Separable`] and the weights are not rank-1.
pub fn conv2d_with(
    algo: Conv2dAlgo,
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    assert!(algo.supports(geom), "{algo} cannot run {geom:?}");
    match algo {
        Conv2dAlgo::Direct => conv2d_direct(input, weight, bias, geom, cancel),
        Conv2dAlgo::Phased => phased::conv2d_phased(input, weight, bias, geom, cancel),
        Conv2dAlgo::Separable => separable::plan(weight, geom)
            .expect("rank-1 weights")
            .run(input, bias, geom, cancel),
        Conv2dAlgo::GemmPointwise => {
            gemm::conv2d_gemm(input, weight, bias, geom, gemm::Lowering::Pointwise, cancel)
        }
        Conv2dAlgo::GemmIm2col => {
            gemm::conv2d_gemm(input, weight, bias, geom, gemm::Lowering::Im2col, cancel)
        }
        Conv2dAlgo::ImplicitGemm => igemm::conv2d_igemm(input, weight, bias, geom, cancel),
        Conv2dAlgo::ChannelTile => chantile::conv2d_chantile(input, weight, bias, geom, cancel),
        Conv2dAlgo::ChannelWinograd => chanwino::conv2d_chanwino(input, weight, bias, geom, cancel),
        Conv2dAlgo::Winograd => winograd::conv2d_winograd(input, weight, bias, geom, cancel),
        Conv2dAlgo::ImplicitWinograd => igwino::conv2d_igwino(input, weight, bias, geom, cancel),
    }
}

/// A flag the compute loops poll between row bands; set it to stop a computation early.
///
/// Cloning shares the flag. Used for deadlines and for clients that disconnect.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every computation holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The computation was stopped through its [`CancelToken`]; its partial output is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("computation cancelled")]
pub struct Cancelled;
