//! Request bodies under a byte budget and a minimum rate: what keeps a burst of large
//! uploads from taking the pod's memory, and a trickled upload from holding a connection.
//!
//! - **Budget.** All request bodies being read or held at once may total at most
//!   `max_inflight_body_bytes`. A request with a `Content-Length` reserves it before any
//!   body byte is read; when it does not fit, the request gets 503 + `Retry-After` at once.
//!   A chunked body reserves as its frames arrive, and fails with 503 when the budget is
//!   full. A `Content-Length` over `max_body_bytes` gets 413 at once, without reading.
//! - **Held until the memory goes.** The [`Reservation`] travels with the request (an
//!   extension) and the body; the handler takes it with the bytes it read
//!   ([`ReadBody`]) and drops it when it drops them, not when the response is sent.
//! - **Rate.** A body must arrive within `body_read_timeout_secs` plus one second per
//!   `body_min_bytes_per_sec` received: a client sending a byte every few seconds gets 408
//!   and its connection is closed.
//!
//! The budget counts bytes, not requests: 256 MiB admits four 60 MB bodies at once and
//! turns the rest away before reading them, so a burst of 120 such bodies stays within a
//! pod's memory.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::{ApiError, ProblemKind};
use std::future::Future;

/// The bytes of request bodies in flight, against a maximum. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    max: u64,
    used: AtomicU64,
    /// Bytes ever reserved (to tell a burst happened).
    total: AtomicU64,
}

impl BodyBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            inner: Arc::new(BudgetInner {
                max,
                used: AtomicU64::new(0),
                total: AtomicU64::new(0),
            }),
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The maximum.
    pub fn max(&self) -> u64 {
        self.inner.max
    }

    /// Bytes reserved since start, over all requests.
    pub fn total(&self) -> u64 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or None when they do not fit.
    pub fn reserve(&self, bytes: u64) -> Option<Reservation> {
        let r = Reservation {
            inner: Arc::new(ReservationInner {
                budget: self.clone(),
                bytes: AtomicU64::new(0),
            }),
        };
        r.grow(bytes).then_some(r)
    }

    fn try_add(&self, bytes: u64) -> bool {
        let ok = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&u| u <= self.inner.max)
            })
            .is_ok();
        if ok {
            self.inner.total.fetch_add(bytes, Ordering::Relaxed);
        }
        ok
    }
}

/// Bytes reserved from a [`BodyBudget`], given back when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Reservation {
    inner: Arc<ReservationInner>,
}

#[derive(Debug)]
struct ReservationInner {
    budget: BodyBudget,
    bytes: AtomicU64,
}

impl Reservation {
    /// Adds `bytes` to the reservation; false (and nothing reserved) when they do not fit.
    pub fn grow(&self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let ok = self.inner.budget.try_add(bytes);
        if ok {
            self.inner.bytes.fetch_add(bytes, Ordering::AcqRel);
        }
        ok
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Acquire)
    }
}

impl Drop for ReservationInner {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        self.budget.inner.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// How fast a body must arrive, and how large it may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// `max_body_bytes`.
    pub max_bytes: u64,
    /// Time every body gets, whatever its size.
    pub grace: Duration,
    /// Bytes per second a body must average beyond the grace.
    pub min_rate: u64,
    /// Seconds a 503 suggests waiting.
    pub retry_after_secs: u64,
}

/// What went wrong while reading a body; handlers map it to a status with [`body_error`].
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body came slower than the minimum rate.
    #[error("the request body arrived too slowly: {received} bytes in {elapsed_ms} ms (at least {min_rate} bytes/s after {grace_secs} s)")]
    TooSlow {
        /// Bytes received.
        received: u64,
        /// Since the body started.
        elapsed_ms: u128,
        /// `body_min_bytes_per_sec`.
        min_rate: u64,
        /// `body_read_timeout_secs`.
        grace_secs: u64,
    },
    /// A chunked body outgrew `max_body_bytes`.
    #[error("request body bytes is over the limit of {limit}")]
    TooLarge {
        /// `max_body_bytes`.
        limit: u64,
    },
    /// A chunked body did not fit the bytes in flight.
    #[error("the server is reading too many request bodies at once; retry later")]
    Busy {
        /// Seconds to suggest in `Retry-After`.
        retry_after_secs: u64,
    },
}

/// The problem for a body that could not be read: 408, 413 or 503 for a [`BodyError`]
/// anywhere in `e`'s source chain, else `None` (the caller's own mapping applies).
pub fn body_error(e: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyError>() {
            return Some(match b {
                BodyError::TooSlow { .. } => {
                    ApiError::new(ProblemKind::BodyTooSlow, b.to_string()).closing()
                }
                BodyError::TooLarge { limit } => {
                    ApiError::over_limit("request body bytes", *limit, limit + 1).closing()
                }
                BodyError::Busy { retry_after_secs } => busy(*retry_after_secs),
            });
        }
        cur = err.source();
    }
    None
}

fn busy(retry_after_secs: u64) -> ApiError {
    ApiError::new(
        ProblemKind::BodiesInFlight,
        "the server is reading too many request bodies at once; retry later",
    )
    .retry_after(retry_after_secs)
    .closing()
}

/// A request body with its [`Reservation`], the rate check and the size limit.
pub struct GuardedBody {
    inner: Body,
    reservation: Reservation,
    /// Bytes the reservation already covers (the `Content-Length`); beyond, it grows.
    covered: u64,
    received: u64,
    started: Instant,
    deadline: Pin<Box<Sleep>>,
    rules: BodyRules,
}

impl GuardedBody {
    fn new(inner: Body, reservation: Reservation, rules: BodyRules) -> Self {
        let started = Instant::now();
        Self {
            inner,
            covered: reservation.bytes(),
            reservation,
            received: 0,
            started,
            deadline: Box::pin(tokio::time::sleep_until(started + rules.grace)),
            rules,
        }
    }

    fn allowed_until(&self) -> Instant {
        let extra =
            Duration::from_secs_f64(self.received as f64 / self.rules.min_rate.max(1) as f64);
        self.started + self.rules.grace + extra
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.rules.max_bytes {
                        return Poll::Ready(Some(Err(axum::Error::new(BodyError::TooLarge {
                            limit: this.rules.max_bytes,
                        }))));
                    }
                    if this.received > this.covered {
                        if !this.reservation.grow(this.received - this.covered) {
                            return Poll::Ready(Some(Err(axum::Error::new(BodyError::Busy {
                                retry_after_secs: this.rules.retry_after_secs,
                            }))));
                        }
                        this.covered = this.received;
                    }
                    let until = this.allowed_until();
                    this.deadline.as_mut().reset(until);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(axum::Error::new(BodyError::TooSlow {
                        received: this.received,
                        elapsed_ms: this.started.elapsed().as_millis(),
                        min_rate: this.rules.min_rate,
                        grace_secs: this.rules.grace.as_secs(),
                    }))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// State of [`admit_body`].
#[derive(Debug, Clone)]
pub struct Admission {
    /// The budget shared by all requests.
    pub budget: BodyBudget,
    /// Size and rate rules.
    pub rules: BodyRules,
}

/// Middleware: admits a request's body under the budget (see the module doc) and puts
/// its [`Reservation`] in the request's extensions.
pub async fn admit_body(State(adm): State<Admission>, mut req: Request, next: Next) -> Response {
    let has_body = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let announced = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return ApiError::bad_request("Content-Length is not a number")
                    .closing()
                    .into_response()
            }
        },
    };
    if let Some(len) = announced.filter(|&l| l > adm.rules.max_bytes) {
        return ApiError::over_limit("request body bytes", adm.rules.max_bytes, len)
            .closing()
            .into_response();
    }
    let Some(reservation) = adm.budget.reserve(announced.unwrap_or(0)) else {
        return busy(adm.rules.retry_after_secs).into_response();
    };
    req.extensions_mut().insert(reservation.clone());
    let req = req.map(|b| Body::new(GuardedBody::new(b, reservation, adm.rules)));
    next.run(req).await
}

/// Bytes of a refused request's body that [`drain`] reads and discards.
pub const DRAIN_BYTES: u64 = 8 << 20;
/// Time [`drain`] gives them.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards the rest of a refused request's body (at most [`DRAIN_BYTES`] within
/// [`DRAIN_TIME`]) and returns `e`, so that the client reads the answer on a connection it
/// can reuse instead of a reset in the middle of its upload (wrk counted thousands of
/// write errors against 503s sent before a 1.8 MB image was read). A larger or slower body
/// is left unread and the answer closes the connection.
pub async fn drain(req: Request, e: ApiError) -> ApiError {
    use http_body_util::BodyExt;
    let mut body = req.into_body();
    let deadline = tokio::time::sleep(DRAIN_TIME);
    tokio::pin!(deadline);
    let mut read = 0u64;
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                None => return e,
                Some(Ok(f)) => {
                    read += f.data_ref().map_or(0, |d| d.len() as u64);
                    if read > DRAIN_BYTES {
                        return e.closing();
                    }
                }
                Some(Err(_)) => return e.closing(),
            },
            () = &mut deadline => return e.closing(),
        }
    }
}

/// A body read whole, with the reservation that counts it.
#[derive(Debug)]
pub struct ReadBody {
    /// The bytes.
    pub bytes: Bytes,
    /// Released when this is dropped.
    pub reservation: Option<Reservation>,
}

/// The request's reservation (when [`admit_body`] ran), to be held as long as the memory
/// read from its body.
pub fn take_reservation(req: &mut Request) -> Option<Reservation> {
    req.extensions_mut().remove::<Reservation>()
}

/// Reads a whole body, refusing more than `limit` bytes with 413.
///
/// # Errors
/// 413 over the limit, 400 if the body stream fails.
pub async fn read_body(mut req: Request, limit: u64) -> Result<ReadBody, ApiError> {
    use http_body_util::BodyExt;
    let reservation = take_reservation(&mut req);
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large =
        |actual: u64| ApiError::over_limit("request body bytes", limit, actual).closing();
    if let Some(len) = announced.filter(|&len| len > limit) {
        return Err(too_large(len));
    }
    // One buffer of the announced size: no growth by doubling, no second copy.
    let mut buf = Vec::with_capacity(usize::try_from(announced.unwrap_or(0)).unwrap_or(0));
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            body_error(&e).unwrap_or_else(|| {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            })
        })?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large(limit + 1));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(ReadBody {
        bytes: Bytes::from(buf),
        reservation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body whose frames come from a channel.
    struct Trickle(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[test]
    fn reservations_add_up_to_the_maximum_and_are_given_back_on_drop() {
        let b = BodyBudget::new(100);
        let r1 = b.reserve(60).unwrap();
        assert!(b.reserve(50).is_none());
        assert_eq!(b.used(), 60);
        let r2 = b.reserve(40).unwrap();
        assert!(!r2.grow(1));
        let r1b = r1.clone();
        drop(r1);
        assert_eq!(b.used(), 100, "a clone still holds it");
        drop(r1b);
        assert_eq!(b.used(), 40);
        assert!(r2.grow(60));
        drop(r2);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_fails_once_it_falls_behind_the_minimum_rate() {
        use http_body_util::BodyExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let body = Body::new(Trickle(rx));
        let rules = BodyRules {
            max_bytes: 1 << 20,
            grace: Duration::from_secs(2),
            min_rate: 10,
            retry_after_secs: 1,
        };
        let budget = BodyBudget::new(1 << 20);
        let guarded = GuardedBody::new(body, budget.reserve(0).unwrap(), rules);
        let feeder = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
            }
        });
        let err = guarded.collect().await.unwrap_err();
        let e = body_error(&err).expect("a body error");
        assert_eq!(e.status, axum::http::StatusCode::REQUEST_TIMEOUT);
        feeder.abort();
    }
}
