//! A picture job over one PNG whose rows go into the strips as they are decoded (issue
//! #14): the decoder fills [`StreamRows`] on the job's thread while the other pool threads
//! compute and render the strips whose input rows (halo included) are already there.
//!
//! # Scheduling, and why it cannot deadlock
//!
//! [`run_streamed`] is `rayon::join(decode, render)` on the job's pool thread `T`. `join`
//! pushes `render` on `T`'s deque and runs `decode` inline on `T`; an idle (or waiting)
//! thread steals `render`, whose parallel loop splits depth first, so strips go roughly in
//! order, top first. A strip whose input rows are not decoded yet blocks its thread on
//! [`StreamRows`]'s condition variable (not a rayon wait: that thread runs nothing else
//! meanwhile) until the decoder publishes them or stops. When `decode` ends, `T` helps with
//! the strips left, as any thread waiting in `join` does.
//!
//! A blocked strip of job `X` waits only for `X`'s decoder, and that decoder always
//! finishes:
//! - it runs inline on the thread that called `join` for `X`, from the moment `join` is
//!   entered (nothing runs on that thread between pushing `render` and calling `decode`),
//!   so it has started before any strip of `X` exists (strips exist only inside `render`);
//! - it never calls into rayon (the `png` decoder and the row conversion are plain code)
//!   and never waits on anything, so nothing is ever stacked above it on its thread, and
//!   whatever lies below it on that stack (other jobs' frames a waiting thread picked up)
//!   is simply suspended until it returns; in particular a blocked strip of `X` can never
//!   sit below `X`'s own decoder on one thread;
//! - it polls the job's cancel token and the render's [`StreamRows::abandon`] between rows,
//!   and on an error, a cancel or a panic (a drop guard) it wakes every waiting strip,
//!   which then fails instead of waiting.
//!
//! So every wait ends; with several jobs on a 2-thread pool a thread may sit blocked while
//! other jobs queue, but only for as long as a running decoder takes. (Checked by a test
//! running several streamed jobs at once on a 2-thread pool.)
//!
//! With [`Picture::png`] the PNG is encoded as the strips are rendered: a strip's rows,
//! once written, go to [`crate::codec::png_strips::PngStream`], and the thread that
//! writes the last row a PNG strip needs filters and compresses it there and then. That
//! adds no wait: it never waits for rows (a PNG strip is compressed only once they are
//! all in) nor calls into rayon, and its locks are held only to file rows or write
//! finished strips. A render that stops leaves PNG strips uncompressed, never waiting.
//! This is where the overlap pays: while the decoder holds one thread and a strip waits
//! for rows, the other thread compresses the strips already rendered.
//!
//! Memory: the samples buffer is allocated whole, as the whole decode's is, so
//! [`super::estimate`] stays an upper bound; rows already used are not released.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{JobError, Picture};
use crate::codec::decode::stream::{RowDecoder, Stop, StreamRows};
use crate::codec::{Rendered, Strips};
use crate::conv::strip::{RowSource, StripStack};
use crate::conv::{buffers, CancelToken};

/// When the stages of a streamed job happened.
#[derive(Debug, Clone, Copy)]
pub struct StreamTimes {
    /// When the decoder stopped (the last row written and the image data read, or the
    /// error).
    pub decoded: Instant,
    /// When the render started (about when decoding did: they run side by side).
    pub render_started: Instant,
    /// When the render ended.
    pub rendered: Instant,
}

/// The picture of one image streamed from `decoder` into `rows` (the pair
/// [`crate::codec::decode::stream::open`] gave), computed by `stack` in strips of
/// `picture.strip_rows` output rows and rendered as [`super::run`] renders (same
/// pictures bit for bit). `until_decoded` is dropped as soon as the decoder stops (the
/// request body and its budget reservation, say).
///
/// # Errors
/// [`JobError::Decode`] with the whole decode's error for corrupt or truncated data (even
/// if every strip was already rendered), [`JobError::Cancelled`], or the render's error.
pub fn run_streamed<B: AsRef<[u8]> + Send, K: Send>(
    (decoder, rows): (RowDecoder<B>, &StreamRows),
    stack: &StripStack<'_>,
    picture: &Picture,
    cancel: &CancelToken,
    until_decoded: K,
) -> (Result<Rendered, JobError>, StreamTimes) {
    debug_assert_eq!(picture.grid.n, 1, "one image");
    let ((decoded, decoded_at), (rendered, render_started)) = rayon::join(
        move || {
            let r = decoder.run(rows, cancel);
            let at = Instant::now();
            drop(until_decoded);
            (r, at)
        },
        || {
            let started = Instant::now();
            let strips = Streamed {
                stack,
                rows,
                cancel,
            };
            // Abandons the rows (stopping the decoder) unless the render succeeds: on an
            // error and on a panic alike.
            struct AbandonUnlessDone<'a>(&'a StreamRows, bool);
            impl Drop for AbandonUnlessDone<'_> {
                fn drop(&mut self) {
                    if !self.1 {
                        self.0.abandon();
                    }
                }
            }
            let mut guard = AbandonUnlessDone(rows, false);
            let r = picture.render(&strips);
            guard.1 = r.is_ok();
            drop(guard);
            (r, started)
        },
    );
    let times = StreamTimes {
        decoded: decoded_at,
        render_started,
        rendered: Instant::now(),
    };
    let result = match decoded {
        Err(Stop::Failed(e)) => Err(JobError::Decode(e)),
        Err(Stop::Cancelled) => Err(JobError::Cancelled),
        Ok(()) | Err(Stop::Abandoned) => rendered,
    };
    (result, times)
}

/// The strips of a streamed job.
struct Streamed<'a, 'b> {
    stack: &'a StripStack<'b>,
    rows: &'a StreamRows,
    cancel: &'a CancelToken,
}

/// The decoded rows as the stack's source, noting rows that will never come (their
/// planes stay as given: zeros).
struct Source<'a> {
    rows: &'a StreamRows,
    missing: AtomicBool,
}

impl RowSource for Source<'_> {
    fn rows(&self, rows: Range<usize>, out: &mut [f32]) {
        if self.rows.rows(rows, out).is_err() {
            self.missing.store(true, Ordering::Relaxed);
        }
    }
}

impl Strips for Streamed<'_, '_> {
    type Error = JobError;

    fn strip(&self, image: usize, rows: Range<usize>) -> Result<Vec<f32>, JobError> {
        debug_assert_eq!(image, 0, "one image");
        // The decoder stopped: `run_streamed` reports why (this error is not kept).
        if self.rows.stopped() {
            return Err(JobError::Cancelled);
        }
        let source = Source {
            rows: self.rows,
            missing: AtomicBool::new(false),
        };
        let out = self.stack.run(&source, rows, self.cancel)?;
        let out = out.into_raw_vec_and_offset().0;
        if source.missing.load(Ordering::Relaxed) {
            buffers::give(out);
            return Err(JobError::Cancelled);
        }
        Ok(out)
    }

    fn done(&self, strip: Vec<f32>) {
        buffers::give(strip);
    }
}

#[cfg(test)]
mod tests;
