//! The convolution core: pure functions over ndarray tensors. Knows nothing of HTTP.
//!
//! - [`params`]: validated parameters and the output-size rule ([`Conv2dGeometry`]).
//! - [`reference`]: the naive oracle, kept forever.
//! - [`direct`]: the serving implementation, parallel on the current rayon pool, proven
//!   equal to the oracle by property tests.
//! - [`stack`]: layers applied in order, receptive field, jump and MACs.
//! - [`presets`]: named kernels (Sobel, Gaussian, …).
//!
//! All tensors are float32 NCHW: input `[n, c_in, h, w]`, weight
//! `[c_out, c_in/groups, k_h, k_w]`, bias `[c_out]`, output `[n, c_out, out_h, out_w]`.

pub mod direct;
pub mod params;
pub mod presets;
pub mod reference;
pub mod stack;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use direct::conv2d_direct;
pub use params::{Activation, Conv2dGeometry, Conv2dParams, Padding, PaddingMode, SpecError};
pub use reference::conv2d_reference;
pub use stack::{plan_stack, receptive_fields, run_stack, Conv2dLayer, LayerError, ReceptiveField};

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
