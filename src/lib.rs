//! convd: an HTTP microservice that runs standard 2-D convolution (the deep-learning kind:
//! cross-correlation, NCHW, float32, semantics of `torch.nn.functional.conv2d`) on tensors
//! and images.
//!
//! # Layout
//! - [`conv`]: the pure compute core (params, reference oracle, algorithm plan and its
//!   algorithms, stacks, presets).
//! - [`tensor`], [`npy`]: tensors from JSON and NumPy files.
//! - [`codec`]: image decode (limits, colour → tensor) and encode (PNG, montage, zip).
//! - [`worker`]: the [`ComputePool`](worker::ComputePool), the only place CPU work runs.
//! - [`spec`]: request specs → one validated plan (shapes and budgets), for every API; pure.
//! - [`http`]: router, thin handlers (extract → parse → plan → run on the pool → encode),
//!   content negotiation, body budgets.
//! - [`error`]: the one error type, rendered as `application/problem+json`.
//! - [`serve`]: the accept loop (connection cap, header and idle timeouts).
//! - [`config`], [`telemetry`]: settings and logging; [`metrics`]: the Prometheus registry.
//!
//! [`run`] serves a bound listener until a shutdown future resolves, so tests bind port 0.

pub mod codec;
pub mod config;
pub mod conv;
pub mod error;
pub mod http;
pub mod metrics;
pub mod npy;
pub mod pipeline;
pub mod serve;
pub mod spec;
pub mod telemetry;
pub mod tensor;
pub mod worker;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Settings;
use crate::http::AppState;

/// Request-body bytes read since the last `malloc_trim` that make the next quiet second
/// trim again.
const TRIM_AFTER_BYTES: u64 = 64 << 20;

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for up to `shutdown_grace_secs`.
///
/// # Errors
/// If the compute pool cannot start or the listener fails.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(&settings).map_err(std::io::Error::other)?;
    // Gives cached buffers back to the OS once they have been idle (see conv::buffers),
    // and the allocator's free memory once the server is quiet after a burst of bodies
    // (see serve::tune_malloc).
    let (budget, pool) = (state.admission.budget.clone(), state.pool.clone());
    let trimmer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut trimmed_at = 0u64;
        loop {
            tick.tick().await;
            let buffers = pool.buffers().clone();
            if buffers.cached_bytes() > 0 {
                let _ = tokio::task::spawn_blocking(move || buffers.trim_idle()).await;
            }
            let total = budget.total();
            if total - trimmed_at >= TRIM_AFTER_BYTES
                && budget.used() == 0
                && pool.admitted_jobs() == 0
            {
                trimmed_at = total;
                let _ = tokio::task::spawn_blocking(serve::trim).await;
            }
        }
    });
    let _trimmer = AbortOnDrop(trimmer);
    let flag = state.shutting_down.clone();
    let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
    let signal = async move {
        shutdown.await;
        flag.store(true, Ordering::Relaxed);
        tracing::info!("shutdown: draining in-flight requests");
    };
    let limits = settings.server.conn_limits().capped_by_file_limit();
    let stats = state.connections.clone();
    serve::serve(listener, http::app(state), limits, stats, signal, grace).await
}

/// Aborts a background task when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
