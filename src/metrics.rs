//! Prometheus metrics, one registry per application instance.
//!
//! # Why no global recorder
//! The `metrics` facade normally records into one process-wide recorder. The tests start
//! many servers in one process, and a global recorder would mix their numbers (and can be
//! installed only once). So every [`Metrics`] owns its own [`PrometheusRecorder`] and
//! records through it with [`metrics::with_local_recorder`], which routes the facade's
//! macros to that recorder for the duration of a *synchronous* closure on the current
//! thread. No closure here awaits, so the thread-local scope is always right; the
//! `Counter`/`Histogram` handles the macros return hold their own `Arc` to the storage and
//! may be kept and used anywhere afterwards (the body byte counters do that).
//!
//! # Series
//! | name | type | labels |
//! |---|---|---|
//! | `convd_http_requests_total` | counter | `route`, `method`, `status` |
//! | `convd_http_request_duration_seconds` | histogram | `route` (until response headers) |
//! | `convd_http_request_bytes_total`, `convd_http_response_bytes_total` | counter | `route` |
//! | `convd_stage_duration_seconds` | histogram | `stage`: `queue_wait`, `parse`, `decode`, `conv`, `encode` |
//! | `convd_rejected_requests_total` | counter | `reason` (coarse), `problem` (the problem type) |
//! | `convd_queue_depth`, `convd_queue_capacity` | gauge | jobs waiting for a slot / allowed to |
//! | `convd_busy_workers`, `convd_workers` | gauge | jobs running / running slots |
//! | `convd_compute_threads` | gauge | rayon threads |
//!
//! Label values are bounded: routes are the router's templates (`unmatched` for anything
//! else), methods are the standard ones (`OTHER` otherwise), problems are static slugs.
//!
//! This module knows nothing of HTTP types; `http::observe` feeds it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Histogram buckets in seconds: 1 ms … 60 s covers a tiny shape query to a deadline-long job.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram samples pile up in the recorder until drained; drain at least this often even
/// when nobody scrapes, so memory stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The compute pool's occupancy, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct PoolGauges {
    /// Jobs waiting for a running slot.
    pub queued: usize,
    /// Jobs running.
    pub running: usize,
    /// Jobs allowed to wait.
    pub queue_capacity: usize,
    /// Running slots.
    pub workers: usize,
    /// Rayon threads.
    pub threads: usize,
}

/// One instance's metrics registry (cheap to clone).
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    born: Instant,
    /// Milliseconds since `born` of the last upkeep.
    last_upkeep_ms: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with the series described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let m = Self {
            recorder: Arc::new(recorder),
            handle,
            born: Instant::now(),
            last_upkeep_ms: Arc::new(AtomicU64::new(0)),
        };
        m.with(|| {
            use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
            describe_counter!("convd_http_requests_total", "HTTP requests answered");
            describe_histogram!(
                "convd_http_request_duration_seconds",
                Unit::Seconds,
                "time from request to response headers"
            );
            describe_counter!(
                "convd_http_request_bytes_total",
                Unit::Bytes,
                "request body bytes read"
            );
            describe_counter!(
                "convd_http_response_bytes_total",
                Unit::Bytes,
                "response body bytes sent"
            );
            describe_histogram!(
                "convd_stage_duration_seconds",
                Unit::Seconds,
                "time per stage of a computing request"
            );
            describe_counter!(
                "convd_rejected_requests_total",
                "requests answered with a problem, by reason"
            );
            describe_gauge!("convd_queue_depth", "jobs waiting for a running slot");
            describe_gauge!("convd_queue_capacity", "jobs allowed to wait (queue_depth)");
            describe_gauge!("convd_busy_workers", "jobs running on the compute pool");
            describe_gauge!("convd_workers", "running slots of the compute pool");
            describe_gauge!("convd_compute_threads", "threads of the compute pool");
        });
        m
    }

    /// Runs `f` with this instance's recorder as the facade's recorder (see the module doc).
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder as &dyn Recorder, f)
    }

    /// Records one answered request.
    pub fn request(&self, route: &str, method: &'static str, status: u16, latency: Duration) {
        self.with(|| {
            metrics::counter!(
                "convd_http_requests_total",
                "route" => route.to_owned(),
                "method" => method,
                "status" => status.to_string()
            )
            .increment(1);
            metrics::histogram!("convd_http_request_duration_seconds", "route" => route.to_owned())
                .record(latency.as_secs_f64());
        });
        self.maybe_upkeep();
    }

    /// Records a refusal or failure: `reason` is coarse (`overloaded`, `deadline`, `limit`,
    /// `invalid`, …), `problem` the problem type slug.
    pub fn rejected(&self, reason: &'static str, problem: &'static str) {
        self.with(|| {
            metrics::counter!("convd_rejected_requests_total", "reason" => reason, "problem" => problem)
                .increment(1);
        });
    }

    /// Records the duration of one stage (`queue_wait`, `parse`, `decode`, `conv`, `encode`).
    pub fn stage(&self, stage: &'static str, seconds: f64) {
        self.with(|| {
            metrics::histogram!("convd_stage_duration_seconds", "stage" => stage).record(seconds);
        });
    }

    /// The request body byte counter of `route`, to increment as the body is read.
    pub fn request_bytes(&self, route: &str) -> Counter {
        self.with(
            || metrics::counter!("convd_http_request_bytes_total", "route" => route.to_owned()),
        )
    }

    /// The response body byte counter of `route`, to increment as the body is sent.
    pub fn response_bytes(&self, route: &str) -> Counter {
        self.with(
            || metrics::counter!("convd_http_response_bytes_total", "route" => route.to_owned()),
        )
    }

    /// Sets the pool gauges and renders everything in the Prometheus text format 0.0.4.
    pub fn render(&self, pool: PoolGauges) -> String {
        self.with(|| {
            metrics::gauge!("convd_queue_depth").set(pool.queued as f64);
            metrics::gauge!("convd_queue_capacity").set(pool.queue_capacity as f64);
            metrics::gauge!("convd_busy_workers").set(pool.running as f64);
            metrics::gauge!("convd_workers").set(pool.workers as f64);
            metrics::gauge!("convd_compute_threads").set(pool.threads as f64);
        });
        self.handle.render()
    }

    /// Drains histogram samples into their buckets when the last upkeep is old.
    fn maybe_upkeep(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.last_upkeep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= UPKEEP_EVERY.as_millis() as u64
            && self
                .last_upkeep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.handle.run_upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> PoolGauges {
        PoolGauges {
            queued: 2,
            running: 1,
            queue_capacity: 8,
            workers: 1,
            threads: 1,
        }
    }

    #[test]
    fn two_instances_keep_separate_numbers() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.request("/v1/conv2d", "POST", 200, Duration::from_millis(3));
        a.request("/v1/conv2d", "POST", 200, Duration::from_millis(3));
        let ra = a.render(gauges());
        let rb = b.render(gauges());
        assert!(
            ra.contains(
                r#"convd_http_requests_total{route="/v1/conv2d",method="POST",status="200"} 2"#
            ),
            "{ra}"
        );
        assert!(!rb.contains("convd_http_requests_total{"), "{rb}");
    }

    #[test]
    fn histograms_have_buckets_and_gauges_show_the_pool() {
        let m = Metrics::new();
        m.stage("conv", 0.02);
        m.request("/healthz", "GET", 200, Duration::from_micros(300));
        let r = m.render(gauges());
        assert!(
            r.contains(r#"convd_stage_duration_seconds_bucket{stage="conv",le="0.025"} 1"#),
            "{r}"
        );
        assert!(
            r.contains("convd_http_request_duration_seconds_bucket"),
            "{r}"
        );
        assert!(r.contains("convd_queue_depth 2"), "{r}");
        assert!(r.contains("convd_busy_workers 1"), "{r}");
    }

    #[test]
    fn byte_counters_work_after_the_recorder_scope_ends() {
        let m = Metrics::new();
        let c = m.response_bytes("/v1/conv2d");
        c.increment(10);
        c.increment(5);
        let r = m.render(gauges());
        assert!(
            r.contains(r#"convd_http_response_bytes_total{route="/v1/conv2d"} 15"#),
            "{r}"
        );
    }
}
