//! The compute gate: bounded admission, a bounded queue, a dedicated rayon pool, deadlines.
//!
//! Handlers never decode, convolve or encode on the async runtime. They hand a closure to
//! [`ComputePool::run`], which
//! 1. admits the job only if fewer than `running + queue_depth` jobs are admitted (else 503
//!    with `Retry-After` at once: never an unbounded queue);
//! 2. waits (asynchronously) for one of `running` slots: that wait is the queue;
//! 3. runs the closure through `spawn_blocking` inside the dedicated rayon pool, carrying the
//!    request's tracing span; the permits move into the blocking closure, so a slot is freed
//!    only when the work really stops;
//! 4. enforces the deadline: past it the caller gets 504 and the job's [`CancelToken`] fires,
//!    which the compute loops poll between row bands. Dropping the future (the client went
//!    away) fires the token too.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::ComputeSettings;
use crate::conv::buffers::BufferCache;
use crate::conv::CancelToken;
use crate::error::{ApiError, ProblemKind};
use crate::metrics::{Metrics, PoolGauges};

mod affinity;

/// Cancels its token when dropped: a request future dropped mid-flight stops its job.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The one place CPU work runs.
#[derive(Clone)]
pub struct ComputePool {
    pool: Arc<rayon::ThreadPool>,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    capacity: usize,
    running_slots: usize,
    deadline: Duration,
    retry_after_secs: u64,
    /// Where the queue wait is recorded, if anywhere.
    metrics: Option<Metrics>,
    /// The large-buffer cache of this pool's threads.
    buffers: BufferCache,
    /// Set while [`prewarm`](Self::prewarm)'s spinners run.
    warming: Arc<AtomicBool>,
    /// Jobs started so far: a prewarm ends when the next one starts.
    started: Arc<AtomicU64>,
}

impl ComputePool {
    /// Builds the rayon pool (`convd-compute-N` threads) and the semaphores.
    ///
    /// # Errors
    /// If the threads cannot be spawned.
    pub fn new(s: &ComputeSettings) -> Result<Self, rayon::ThreadPoolBuildError> {
        let threads = s.resolved_threads();
        let buffers = BufferCache::new(
            usize::try_from(s.buffer_cache_bytes).unwrap_or(usize::MAX),
            Duration::from_secs(s.buffer_cache_idle_secs),
        );
        let pins = affinity::plan(s.pin_threads, threads, affinity::allowed_cpus());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("convd-compute-{i}"))
            .start_handler({
                let buffers = buffers.clone();
                let pins = pins.clone();
                move |i| {
                    buffers.install_on_current_thread();
                    if let Some(cpu) = pins.as_ref().map(|p| p[i]) {
                        if !affinity::pin_current_thread(cpu) {
                            tracing::warn!(thread = i, cpu, "compute thread could not be pinned");
                        }
                    }
                }
            })
            .build()?;
        tracing::info!(threads, pinned_to_cpus = ?pins, "compute pool started");
        let running = s.resolved_running_jobs().max(1);
        let capacity = running + s.queue_depth;
        Ok(Self {
            pool: Arc::new(pool),
            admitted: Arc::new(Semaphore::new(capacity)),
            running: Arc::new(Semaphore::new(running)),
            capacity,
            running_slots: running,
            deadline: s.deadline(),
            retry_after_secs: s.retry_after_secs.max(1),
            metrics: None,
            buffers,
            warming: Arc::new(AtomicBool::new(false)),
            started: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The large-buffer cache this pool's threads use (see [`crate::conv::buffers`]).
    pub fn buffers(&self) -> &BufferCache {
        &self.buffers
    }

    /// Records each job's queue wait (stage `queue_wait`) into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Occupancy for the metrics gauges.
    pub fn gauges(&self) -> PoolGauges {
        let admitted = self.admitted_jobs();
        let running = self.running_jobs();
        PoolGauges {
            queued: admitted.saturating_sub(running),
            running,
            queue_capacity: self.capacity - self.running_slots,
            workers: self.running_slots,
            threads: self.threads(),
        }
    }

    /// Threads in the rayon pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Jobs admitted now (running or waiting).
    pub fn admitted_jobs(&self) -> usize {
        self.capacity - self.admitted.available_permits()
    }

    /// Jobs running now.
    pub fn running_jobs(&self) -> usize {
        self.running_slots - self.running.available_permits()
    }

    /// Whether another job would be admitted.
    pub fn has_room(&self) -> bool {
        self.admitted.available_permits() > 0
    }

    /// Refuses at once (503) when no job would be admitted, so that a request is turned away
    /// before its body is read: under overload, bodies of refused requests then cost no
    /// memory. [`run`](Self::run) still enforces admission for real.
    ///
    /// # Errors
    /// 503 `overloaded` with `Retry-After`.
    pub fn check_room(&self) -> Result<(), ApiError> {
        if self.has_room() {
            Ok(())
        } else {
            Err(ApiError::overloaded(self.retry_after_secs))
        }
    }

    /// Wakes the pool's threads ahead of a job, while its request body is still arriving:
    /// called by the compute handlers once a request is admitted, and by [`Self::run`]
    /// when a job ends, so that the next request of a burst finds them awake too (as ONNX
    /// Runtime's and OpenMP's threads spin after a call). Measured in the peer harness,
    /// alternating builds on Zen 5: SqueezeNet's 1×1 took 31 µs against 37–51 without,
    /// CIFAR's 3×3 19 against 20–28, MobileNet's stem 78–80 against 89–90.
    ///
    /// On an idle pool every thread sleeps, and on this VM waking one (a halted vCPU)
    /// took 0.1–0.9 ms: first for the thread that takes the job, then for the others when
    /// the convolution forks, so that a layer's first bands ran on one core. Here each
    /// thread runs a spinner ([`spin_while`]: pending pool work first, else `sched_yield`)
    /// until the next job starts or [`PREWARM_MAX`] passes, so the wake-ups overlap the
    /// upload. Nothing happens while jobs run (their threads are awake) or while another
    /// prewarm's spinners still run.
    pub fn prewarm(&self) {
        if self.running_jobs() > 0 || self.warming.swap(true, Ordering::AcqRel) {
            return;
        }
        let (warming, started) = (self.warming.clone(), self.started.clone());
        let before = started.load(Ordering::Acquire);
        let left = Arc::new(AtomicUsize::new(self.threads()));
        self.pool.spawn_broadcast(move |_| {
            spin_while(|| started.load(Ordering::Acquire) == before, PREWARM_MAX);
            if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                warming.store(false, Ordering::Release);
            }
        });
    }

    /// Runs `job` on the pool under admission control and the deadline.
    ///
    /// # Errors
    /// 503 when full, 504 past the deadline, 500 if the job panicked, or the job's own error.
    pub async fn run<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&CancelToken) -> Result<T, ApiError> + Send + 'static,
    {
        let admit = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded(self.retry_after_secs))?;
        let token = CancelToken::new();
        let _cancel_on_drop = CancelOnDrop(token.clone());
        let work = async {
            let queued_at = Instant::now();
            let slot = self
                .running
                .clone()
                .acquire_owned()
                .await
                .map_err(ApiError::internal)?;
            if let Some(m) = &self.metrics {
                m.stage("queue_wait", queued_at.elapsed().as_secs_f64());
            }
            let span = tracing::Span::current();
            let pool = self.pool.clone();
            let t = token.clone();
            let started = self.started.clone();
            // Alone on the pool: its other threads are asleep, and waking one when the
            // convolution forks cost 0.1–0.9 ms on this VM (a halted vCPU). Keep them awake
            // for the job instead (`KeepAwake`); with other jobs running they are awake.
            let alone = self.running.available_permits() + 1 == self.running_slots;
            let result = tokio::task::spawn_blocking(move || {
                let _permits = (admit, slot);
                pool.install(|| {
                    // Entered on the pool thread that runs the job, so its logs carry the
                    // request's span.
                    let _entered = span.enter();
                    started.fetch_add(1, Ordering::AcqRel);
                    let _awake = alone.then(KeepAwake::start);
                    job(&t)
                })
            })
            .await
            .map_err(|e| ApiError::internal(format!("compute job failed: {e}")));
            // The next request of a burst finds the threads awake (`prewarm`).
            self.prewarm();
            result?
        };
        match tokio::time::timeout(self.deadline, work).await {
            Ok(result) => result,
            Err(_) => {
                token.cancel();
                Err(ApiError::deadline(self.deadline.as_millis() as u64))
            }
        }
    }
}

/// Keeps the pool's other threads awake while one job runs, so that the job's parallel
/// loops start on every core at once instead of waiting for sleeping threads to wake.
///
/// Started on the job's thread, it broadcasts a task to every pool thread that runs
/// pending pool work (`rayon::yield_now`) until the job ends (this guard drops) or
/// [`KEEP_AWAKE_MAX`] passes; on the job's own thread the task returns at once, so it can
/// never hold up the job. Idle spinning costs at most that long on an otherwise idle core.
struct KeepAwake(Arc<AtomicBool>);

/// Longest a kept-awake thread spins without work.
const KEEP_AWAKE_MAX: Duration = Duration::from_millis(20);
/// Longest a prewarmed thread spins without work before its job starts (an upload that
/// takes longer pays the wake-up, which is then small next to it).
const PREWARM_MAX: Duration = Duration::from_millis(10);

impl KeepAwake {
    fn start() -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let owner = rayon::current_thread_index();
        let flag = done.clone();
        // One copy per thread, queued on that thread: a task spawned into the shared
        // queues could be taken by the job's own thread (it returns at once there) and
        // leave the other asleep.
        rayon::spawn_broadcast(move |ctx| {
            if Some(ctx.index()) != owner {
                spin_while(|| !flag.load(Ordering::Relaxed), KEEP_AWAKE_MAX);
            }
        });
        Self(done)
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs pending pool work (`rayon::yield_now`) while `go()` holds, returning early after
/// `idle_max` without work. Between looks it yields the CPU to the OS (`sched_yield`), so
/// that the threads writing a response or reading the next request run at once on a core
/// that only spins: the core stays awake, and costs nobody else their turn.
fn spin_while(go: impl Fn() -> bool, idle_max: Duration) {
    let mut idle_since = Instant::now();
    while go() {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = Instant::now(),
            _ if idle_since.elapsed() > idle_max => return,
            _ => std::thread::yield_now(),
        }
    }
}

/// Error for a job that saw its token fire (its caller has already gone or timed out).
pub fn cancelled() -> ApiError {
    ApiError::new(ProblemKind::Cancelled, "the computation was cancelled")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rayon::prelude::*;

    use super::*;

    #[test]
    fn kept_awake_threads_do_the_jobs_work_and_let_go_when_it_ends() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for _ in 0..50 {
            let ran = AtomicUsize::new(0);
            pool.install(|| {
                let _awake = KeepAwake::start();
                // Parallel work while the other thread sits in `yield_now`: it must run.
                (0..64).into_par_iter().for_each(|_| {
                    ran.fetch_add(1, Ordering::Relaxed);
                });
            });
            assert_eq!(ran.load(Ordering::Relaxed), 64);
        }
        // The spinners end with their jobs, not after KEEP_AWAKE_MAX of idling: 50 short
        // jobs and a join that needs both threads finish well within 50 × that.
        let start = Instant::now();
        for _ in 0..50 {
            pool.install(|| {
                let _awake = KeepAwake::start();
            });
            pool.install(|| rayon::join(|| (), || ()));
        }
        assert!(
            start.elapsed() < KEEP_AWAKE_MAX * 10,
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn prewarmed_threads_let_go_when_a_job_starts_or_their_time_is_up() {
        let mut settings = crate::config::defaults().compute;
        settings.threads = 2;
        let pool = ComputePool::new(&settings).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let settle = |pool: &ComputePool| {
            let start = Instant::now();
            while pool.warming.load(Ordering::Acquire) {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "spinners never ended"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Without a job the spinners give up after PREWARM_MAX.
        pool.prewarm();
        settle(&pool);
        // A job ends them, and it runs its parallel work on the warmed threads.
        for _ in 0..20 {
            pool.prewarm();
            let sum = rt
                .block_on(pool.run(|_| Ok((0..1000u64).into_par_iter().sum::<u64>())))
                .unwrap();
            assert_eq!(sum, 499_500);
            settle(&pool);
        }
        // A busy pool is not prewarmed (its threads are awake).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let busy = pool.clone();
        let job = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(busy.run(move |_| {
                rx.recv().unwrap();
                Ok(())
            }))
        });
        while pool.running_jobs() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        settle(&pool);
        pool.prewarm();
        assert!(!pool.warming.load(Ordering::Acquire));
        tx.send(()).unwrap();
        job.join().unwrap().unwrap();
    }
}
