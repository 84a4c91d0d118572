//! The strip writer fed with rows as they are finished (issue #14: "let the encoder take
//! rows as they come"): a picture being rendered hands each band of rows to
//! [`PngStream::put`] when it is written, in any order, and a strip is filtered and
//! compressed as soon as its rows and the row above it are all in, on the thread that
//! handed in the last of them. The strips are joined in order as the ones before them
//! are written, so the file is byte for byte [`super::encode_png_strips`]'s: same strip
//! partition ([`STRIP_BYTES`](super::STRIP_BYTES) of rows), same filter rule (a strip's
//! first row against the previous strip's last row), same joint.
//!
//! # Why nothing waits
//!
//! Nothing in here blocks on work that another thread still has to do: a strip is
//! compressed by whichever thread completes it, inline, and never waits for a row; the two
//! locks are held only to file a band or a finished strip (and to write the strips that
//! are next in order, a copy and a CRC), never across a compression or a call into rayon.
//! So no rayon thread can sit blocked while the work it waits for is queued behind it. If
//! a band never comes (the render failed, was cancelled or panicked) its strips are simply
//! never compressed: the writer is dropped with the job, and [`PngStream::finish`] refuses
//! a picture whose strips are not all written.
//!
//! # Memory
//!
//! A strip in flight on each thread (its filtered rows, two rows swapped into PNG byte
//! order for 16-bit pictures, its compressed stream), as in [`super::working_bytes`];
//! and the compressed strips that wait for an earlier one (a render's parallel loop runs
//! its halves side by side, so up to about half the file waits). Waiting strips and the
//! file written so far are parts of one file: together they stay within the encoded
//! size that [`crate::pipeline::Estimate`] bounds, but they are held while the picture is
//! rendered, so a job that encodes this way counts the file alongside the render.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{compress_strip, CodecError, Joint, PngRows, Strip};

/// A PNG of `rows` written into a `Vec` strip by strip as its rows are handed in.
pub struct PngStream<'a, 'w> {
    rows: PngRows,
    per_strip: usize,
    /// Per strip, the rows it still waits for: its own and the one above it.
    waiting: Vec<AtomicUsize>,
    /// The rows handed in, as bands by first row.
    bands: Mutex<BTreeMap<usize, &'a [u8]>>,
    out: Mutex<Queue<'w>>,
}

/// The file and the compressed strips waiting for an earlier one, by index.
struct Queue<'w> {
    joint: Joint<&'w mut Vec<u8>>,
    pending: BTreeMap<usize, Strip>,
}

impl<'a, 'w> PngStream<'a, 'w> {
    /// Starts a PNG of `rows` in strips of about `strip_bytes` (as
    /// [`super::encode_png_strips`] cuts them) in `out`, writing its header.
    ///
    /// # Errors
    /// [`CodecError::Encode`] for an empty picture or a layout that is not a PNG one.
    pub fn new(
        out: &'w mut Vec<u8>,
        rows: PngRows,
        strip_bytes: usize,
    ) -> Result<Self, CodecError> {
        let height = rows.height as usize;
        if rows.stride() == 0 || height == 0 {
            return Err(CodecError::Encode(format!(
                "an empty picture ({}x{height})",
                rows.width
            )));
        }
        let per_strip = rows.per_strip(strip_bytes);
        let count = height.div_ceil(per_strip);
        let mut stream = Self {
            rows,
            per_strip,
            waiting: Vec::new(),
            bands: Mutex::new(BTreeMap::new()),
            out: Mutex::new(Queue {
                joint: Joint::start(out, rows, count)?,
                pending: BTreeMap::new(),
            }),
        };
        stream.waiting = (0..count)
            .map(|s| AtomicUsize::new(stream.needs(s).len()))
            .collect();
        Ok(stream)
    }

    /// Rows of strip `s`.
    fn own(&self, s: usize) -> Range<usize> {
        let height = self.rows.height as usize;
        s * self.per_strip..((s + 1) * self.per_strip).min(height)
    }

    /// Rows strip `s` needs: its own and the one above it.
    fn needs(&self, s: usize) -> Range<usize> {
        let own = self.own(s);
        own.start.saturating_sub(1)..own.end
    }

    /// Hands in the finished rows `first..` that `band` holds (whole rows), and
    /// compresses (on this thread) every strip they complete. Rows may come in any order,
    /// each once.
    ///
    /// # Errors
    /// [`CodecError::Encode`] for rows outside the picture or handed in twice, or if a
    /// strip cannot be compressed or written.
    pub fn put(&self, first: usize, band: &'a [u8]) -> Result<(), CodecError> {
        let stride = self.rows.stride();
        let height = self.rows.height as usize;
        let end = first + band.len() / stride;
        if !band.len().is_multiple_of(stride) || end > height {
            return Err(CodecError::Encode(format!(
                "{} bytes from row {first} are not rows of {stride} in {height}",
                band.len()
            )));
        }
        if band.is_empty() {
            return Ok(());
        }
        self.bands
            .lock()
            .map_err(|_| poisoned())?
            .insert(first, band);
        // Row `end − 1` lies in strip `(end − 1) / per_strip`, and is the row above the
        // next strip when it is that strip's last.
        let last = (end / self.per_strip).min(self.waiting.len() - 1);
        for s in first / self.per_strip..=last {
            let needs = self.needs(s);
            let overlap = needs.end.min(end).saturating_sub(needs.start.max(first));
            if overlap == 0 {
                continue;
            }
            // AcqRel: the thread that takes a strip to zero sees every band filed before
            // the other threads' decrements (the bands' lock orders them too).
            let before = self.waiting[s].fetch_sub(overlap, Ordering::AcqRel);
            if before < overlap {
                return Err(CodecError::Encode(format!("row {first} handed in twice")));
            }
            if before == overlap {
                self.compress(s)?;
            }
        }
        Ok(())
    }

    /// Compresses strip `s`, all of whose rows are in, and writes the strips that are
    /// next in order.
    fn compress(&self, s: usize) -> Result<(), CodecError> {
        let stride = self.rows.stride();
        let needs = self.needs(s);
        let rows: Vec<&'a [u8]> = {
            let bands = self.bands.lock().map_err(|_| poisoned())?;
            needs
                .clone()
                .map(|y| {
                    let (&top, band) = bands.range(..=y).next_back().ok_or_else(|| missing(y))?;
                    band.get((y - top) * stride..(y - top + 1) * stride)
                        .ok_or_else(|| missing(y))
                })
                .collect::<Result<_, _>>()?
        };
        let row = |y: usize| rows[y - needs.start];
        let strip = compress_strip(&row, self.rows, self.own(s))?;
        let mut out = self.out.lock().map_err(|_| poisoned())?;
        let Queue { joint, pending } = &mut *out;
        pending.insert(s, strip);
        while let Some(strip) = pending.remove(&joint.written) {
            joint.push(strip)?;
        }
        Ok(())
    }

    /// Ends the file (the checksum and `IEND`).
    ///
    /// # Errors
    /// [`CodecError::Encode`] if a strip is not written (rows never handed in) or the PNG
    /// writer fails.
    pub fn finish(self) -> Result<(), CodecError> {
        let out = self.out.into_inner().map_err(|_| poisoned())?;
        out.joint.finish()
    }
}

fn poisoned() -> CodecError {
    CodecError::Encode("a PNG strip writer panicked".into())
}

fn missing(y: usize) -> CodecError {
    CodecError::Encode(format!("row {y} of a complete strip is missing"))
}

#[cfg(test)]
mod tests;
