//! The accept loop: connections with timeouts and a cap, in place of `axum::serve`.
//!
//! `axum::serve` accepts every connection and keeps it as long as the client likes: 19,900
//! idle connections stayed open, one byte under the process's file limit. Here:
//! - **Header read timeout** (`header_read_timeout_secs`): a connection that has not sent a
//!   complete request head that long after it opened is closed (hyper's own timer, plus
//!   the watchdog below for the time before the first byte).
//! - **Keep-alive idle timeout** (`keepalive_idle_secs`): a connection with no request in
//!   flight for that long after its last response is closed.
//! - **A cap on open connections** (`max_connections`, and never above the file limit less
//!   a reserve for the process's own files). At the cap, a new connection closes the
//!   connection that has been idle longest; only when every connection is busy is the new
//!   one refused. So a flood of idle connections cannot lock out `/healthz` or a client,
//!   and running jobs are never cut.
//! - **Accept errors** (out of file descriptors, …) are logged at most once a second and
//!   followed by a short pause, never a busy loop.
//!
//! Body timeouts are per request, in [`crate::http::budget`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::Service;

/// Connection settings, resolved (see `[server]` in `config/default.toml`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time to send a complete request head, from the connection's start.
    pub header_read_timeout: Duration,
    /// Time a connection may stay with no request in flight after a response.
    pub keepalive_idle: Duration,
}

/// File descriptors kept for the process itself (logs, the pool, image files, …) when
/// the connection cap is derived from the file limit.
pub const FD_RESERVE: u64 = 256;

impl ConnLimits {
    /// `max_connections` lowered to the soft file limit less [`FD_RESERVE`].
    pub fn capped_by_file_limit(mut self) -> Self {
        if let Some(nofile) = file_limit() {
            let room =
                usize::try_from(nofile.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
            if room < self.max_connections {
                tracing::warn!(
                    max_connections = self.max_connections,
                    file_limit = nofile,
                    using = room,
                    "max_connections lowered below the process's file limit"
                );
                self.max_connections = room;
            }
        }
        self
    }
}

/// The soft `RLIMIT_NOFILE`, where the platform has one.
#[allow(unsafe_code)]
fn file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        // `rlim_t` is u64 on Linux, not on every unix.
        #[allow(clippy::unnecessary_cast)]
        let cur = lim.rlim_cur as u64;
        (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Connections the kernel may hold completed but not yet accepted. Tokio's default of
/// 1024 overflowed under 3,000 simultaneous connects: the overflow was acknowledged to the
/// clients but never reached the server, so no timeout could close it.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (`host:port`, resolved) with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`.
///
/// # Errors
/// If the address does not resolve or cannot be bound.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("`{addr}` resolves to no address"))))
}

/// Makes glibc give memory back after a burst (Linux with glibc; elsewhere nothing).
///
/// After 120 concurrent 60 MB bodies the process kept 2.5–3.4 GiB resident while idle:
/// - glibc's heaps return free space only at their top, past the trim threshold (which
///   glibc raises along with its mmap threshold after large frees), never from the
///   middle, so a few live blocks pinned gigabytes of freed bodies;
/// - each thread that allocates under contention gets its own arena (up to 8 per core),
///   each holding its own free memory.
///
/// Here the thresholds are fixed where glibc's dynamic ones end up anyway (blocks of 32
/// MiB and more mmapped, so returned when freed; heaps trimmed past 64 MiB free at the
/// top), arenas are capped at 4 per core, and [`trim`] hands every arena's free pages
/// back once the server is quiet after a burst. A lower mmap threshold (1 MiB) was tried
/// first: every 1080p image buffer then came from fresh pages, and the image pipeline
/// lost 30 % of its throughput to page faults.
#[allow(unsafe_code)]
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: mallopt only sets allocator parameters; called before the runtime
        // starts its threads.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(4 * cores).unwrap_or(64));
        }
    }
}

/// Returns the free memory of every malloc arena to the OS (glibc's `malloc_trim`; a
/// no-op elsewhere). Called by the server once it is quiet after a burst of requests.
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One open connection, as the cap and the watchdog see it.
#[derive(Debug)]
struct Conn {
    /// Requests being handled.
    in_flight: AtomicUsize,
    /// Requests started so far.
    requests: AtomicU64,
    /// Milliseconds since `epoch` of the last request start or response.
    last_activity: AtomicU64,
    /// Set once the connection was asked to close to make room.
    evicted: AtomicBool,
    /// Asks the connection to close (at the cap).
    close: Notify,
    /// Wakes the watchdog when a response is done (its idle clock restarts).
    activity: Notify,
}

impl Conn {
    fn touch(&self, epoch: Instant) {
        let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(ms, Ordering::Relaxed);
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, Arc<Conn>>,
}

/// Counts of what the accept loop did, for tests and logs.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused at the cap (all busy).
    pub refused: AtomicU64,
    /// Idle connections closed to make room.
    pub evicted: AtomicU64,
    /// Connections closed by the header-read or keep-alive timeout.
    pub timed_out: AtomicU64,
    /// Connections open now.
    pub open: AtomicUsize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes idle connections,
/// lets the others finish their requests for up to `grace`, and returns.
///
/// # Errors
/// Never at present (accept errors are logged and retried); the type leaves room.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let epoch = Instant::now();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accept failed; pausing before the next accept");
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = {
            let mut reg = registry.lock().expect("registry lock");
            if reg.conns.len() >= limits.max_connections && !evict_idlest(&reg) {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
            if reg.conns.len() >= limits.max_connections {
                stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
            reg.next_id += 1;
            let id = reg.next_id;
            let conn = Arc::new(Conn {
                in_flight: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                last_activity: AtomicU64::new(0),
                evicted: AtomicBool::new(false),
                close: Notify::new(),
                activity: Notify::new(),
            });
            conn.touch(epoch);
            reg.conns.insert(id, conn.clone());
            (id, conn)
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (app, registry, stats, stop) = (
            app.clone(),
            registry.clone(),
            stats.clone(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            let (id, conn) = conn;
            run_connection(stream, app, conn, limits, epoch, &stats, stop).await;
            registry.lock().expect("registry lock").conns.remove(&id);
            stats.open.fetch_sub(1, Ordering::Relaxed);
            tracing::trace!(%peer, "connection closed");
        });
    }
    // Shutdown: no more accepts; every connection closes once its requests are answered.
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + grace;
    while stats.open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = stats.open.load(Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(
            connections = left,
            grace_secs = grace.as_secs(),
            "shutdown grace period over; dropping remaining connections"
        );
    }
    Ok(())
}

/// Asks the connection idle longest (no request in flight) to close; false if every
/// connection is busy.
fn evict_idlest(reg: &Registry) -> bool {
    let idlest = reg
        .conns
        .values()
        .filter(|c| c.in_flight.load(Ordering::Relaxed) == 0 && !c.evicted.load(Ordering::Relaxed))
        .min_by_key(|c| c.last_activity.load(Ordering::Relaxed));
    match idlest {
        Some(c) => {
            // Marked so that the next accept picks another one while this one closes.
            c.evicted.store(true, Ordering::Relaxed);
            c.close.notify_one();
            true
        }
        None => false,
    }
}

/// Serves one connection with the watchdog: closes it when it has been idle too long,
/// when the cap wants its slot, or at shutdown (after its requests are answered).
async fn run_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    conn: Arc<Conn>,
    limits: ConnLimits,
    epoch: Instant,
    stats: &ConnStats,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn({
        let conn = conn.clone();
        move |req: Request<hyper::body::Incoming>| {
            let mut app = app.clone();
            let conn = conn.clone();
            conn.in_flight.fetch_add(1, Ordering::Relaxed);
            conn.requests.fetch_add(1, Ordering::Relaxed);
            conn.touch(epoch);
            async move {
                let res = app.call(req.map(axum::body::Body::new)).await;
                conn.touch(epoch);
                conn.in_flight.fetch_sub(1, Ordering::Relaxed);
                conn.activity.notify_one();
                res
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut connection = pin!(connection);
    let mut closing = false;
    loop {
        let idle_limit = if conn.requests.load(Ordering::Relaxed) == 0 {
            limits.header_read_timeout
        } else {
            limits.keepalive_idle
        };
        let last = Duration::from_millis(conn.last_activity.load(Ordering::Relaxed));
        let check_at = (epoch + last + idle_limit).max(Instant::now() + Duration::from_millis(50));
        tokio::select! {
            _ = connection.as_mut() => return,
            () = conn.activity.notified(), if !closing => {}
            () = conn.close.notified(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            r = stop.changed(), if !closing => {
                if r.is_err() || *stop.borrow() {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(check_at), if !closing => {
                let idle = conn.in_flight.load(Ordering::Relaxed) == 0;
                let last = conn.last_activity.load(Ordering::Relaxed);
                if idle && epoch.elapsed() >= Duration::from_millis(last) + idle_limit {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep(Duration::from_secs(1)), if closing => {
                // A connection still open a second after it was asked to close, with no
                // request in flight, is mid-head or stalled: drop it.
                if conn.in_flight.load(Ordering::Relaxed) == 0 {
                    return;
                }
            }
        }
    }
}
