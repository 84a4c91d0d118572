//! The convolution core: pure functions over ndarray tensors. Knows nothing of HTTP.
//!
//! - [`params`]: validated parameters and the output-size rule ([`Conv2dGeometry`]).
//! - [`reference`]: the naive oracle, kept forever.
//! - [`fast`]: the serving implementation (register-blocked, SIMD-dispatched, parallel on
//!   the current rayon pool), proven equal to the oracle by property tests.
//! - [`stack`]: layers applied in order, receptive field, jump and MACs.
//! - [`presets`]: named kernels (Sobel, Gaussian, …).
//! - [`buffers`]: large output buffers reused between requests.
//!
//! All tensors are float32 NCHW: input `[n, c_in, h, w]`, weight
//! `[c_out, c_in/groups, k_h, k_w]`, bias `[c_out]`, output `[n, c_out, out_h, out_w]`.

pub mod buffers;
pub mod fast;
pub mod gemm;
pub mod params;
pub mod presets;
pub mod reference;
pub mod separable;
pub mod stack;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use fast::conv2d_fast;
pub use params::{Activation, Conv2dGeometry, Conv2dParams, Padding, PaddingMode, SpecError};
pub use reference::conv2d_reference;
pub use stack::{plan_stack, receptive_fields, run_stack, Conv2dLayer, LayerError, ReceptiveField};

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, choosing the fastest exact path:
/// shifted GEMMs for many-channel stride-1 layers ([`gemm`]), two 1-D passes for separable
/// kernels ([`separable`]), else the register-blocked direct kernel ([`fast`]). Runs on the
/// current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires.
pub fn conv2d(
    input: ndarray::ArrayView4<'_, f32>,
    weight: ndarray::ArrayView4<'_, f32>,
    bias: Option<ndarray::ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<ndarray::Array4<f32>, Cancelled> {
    if gemm::eligible(geom) {
        return gemm::conv2d_gemm(input, weight, bias, geom, cancel);
    }
    match separable::plan(weight, geom) {
        Some(p) => p.run(input, bias, geom, cancel),
        None => conv2d_fast(input, weight, bias, geom, cancel),
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
