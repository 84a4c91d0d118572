//! A PNG writer that filters and compresses strips of rows on every core of the pool.
//!
//! A picture of `height` rows of `stride` bytes (8-bit samples, or 16-bit samples in native
//! byte order as [`super::Canvas`] holds them) is cut into strips of about [`STRIP_BYTES`].
//! Each strip is, in parallel on the rayon pool:
//! 1. **filtered** row by row with the adaptive rule of libpng and the `png` crate: of the five
//!    PNG filters (None, Sub, Up, Average, Paeth), the one whose output has the smallest sum
//!    of `|byte as i8|`. A strip's first row is filtered against the previous strip's last
//!    row, so the filtered bytes are those of one whole-picture pass;
//! 2. **compressed** by fdeflate, the compressor that `png`'s fast setting uses, into a zlib
//!    stream of its own.
//!
//! The streams are then joined into the single zlib stream that a PNG's `IDAT` chunks hold.
//! fdeflate 0.3 writes `[zlib header: 2 bytes][one deflate block, BFINAL set][zero bits up to
//! a byte][Adler-32, big-endian]`, and its end-of-block code ends with a 1 bit. So for every
//! strip but the last:
//! - the block's BFINAL bit (bit 0 of byte 2) is cleared;
//! - the padding is the last byte's leading zeros. An empty stored block (3 zero header bits,
//!   zeros to the byte, `LEN = 0000`, `NLEN = FFFF`), the same marker as zlib's sync flush,
//!   brings the next strip's block onto a byte boundary. Its header bits fit in the padding
//!   when that holds three bits, or else take one more zero byte;
//! - every strip after the first drops its zlib header, and all drop their Adler-32. The
//!   stream's checksum is the strips' ones combined ([`adler32_combine`]).
//!
//! The layout is checked on each strip (the header bytes, BFINAL, a non-zero last byte), and
//! `fdeflate` is pinned to the version whose layout the tests decode. A stream that does not
//! have that layout is refused with [`CodecError::Encode`], never written.
//!
//! Measured on a 12 MP RGB picture (README, "Codecs"): the `image` crate's fast PNG encoder
//! takes about 95 ms on one core; this writer gives the same pixels, in a file of the same
//! size, in about half that on two.

use std::ops::Range;

use rayon::prelude::*;

use super::CodecError;

/// Raw bytes per strip: large enough that fdeflate's 53-byte block header and the 5-byte
/// joint cost nothing (< 0.01 %), small enough to spread a 1080p picture over both cores.
pub const STRIP_BYTES: usize = 1 << 20;

/// Strips compressed at once per pool thread before they are written out (see
/// [`encode_png_strips`]): enough to keep every thread busy through a group.
const GROUP_PER_THREAD: usize = 4;

/// The writer's own buffers at most, in bytes, for rows of `row_bytes` on a pool of
/// `threads`: on each thread a strip in flight (its filtered rows, and 16-bit rows swapped
/// into PNG order), and a group of compressed strips waiting to be written (fdeflate's
/// codes are at most 12 bits a byte: ≤ 1.5 × the strip, plus its headers).
pub fn working_bytes(row_bytes: usize, threads: usize) -> u64 {
    let strip = STRIP_BYTES.max(row_bytes) as u64 + row_bytes as u64 + 1024;
    let threads = threads.max(1) as u64;
    threads * 2 * strip + GROUP_PER_THREAD as u64 * threads * (strip * 3 / 2)
}

/// Sample layout of the rows to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngRows {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Samples per pixel: 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// Bits per sample: 8, or 16 with samples in native byte order.
    pub bits: u8,
}

impl PngRows {
    fn color(self) -> Result<png::ColorType, CodecError> {
        Ok(match self.channels {
            1 => png::ColorType::Grayscale,
            2 => png::ColorType::GrayscaleAlpha,
            3 => png::ColorType::Rgb,
            4 => png::ColorType::Rgba,
            c => return Err(CodecError::Encode(format!("{c} samples per pixel"))),
        })
    }

    fn depth(self) -> Result<png::BitDepth, CodecError> {
        match self.bits {
            8 => Ok(png::BitDepth::Eight),
            16 => Ok(png::BitDepth::Sixteen),
            b => Err(CodecError::Encode(format!("{b} bits per sample"))),
        }
    }

    /// Bytes per pixel (the distance of the Sub/Average/Paeth left neighbour).
    fn bpp(self) -> usize {
        usize::from(self.channels) * usize::from(self.bits / 8)
    }

    /// Bytes per row, without the filter byte.
    fn stride(self) -> usize {
        self.width as usize * self.bpp()
    }
}

/// Encodes `data` (`height` rows of `width × channels` samples) as a PNG whose rows are
/// filtered and compressed in strips of about `strip_bytes` on the rayon pool.
///
/// # Errors
/// [`CodecError::Encode`] if `data` does not hold the rows, the layout is not a PNG one, or
/// the PNG writer fails.
pub fn encode_png_strips(
    data: &[u8],
    rows: PngRows,
    strip_bytes: usize,
) -> Result<Vec<u8>, CodecError> {
    let stride = rows.stride();
    let height = rows.height as usize;
    if stride == 0 || height == 0 || stride.checked_mul(height) != Some(data.len()) {
        return Err(CodecError::Encode(format!(
            "{} bytes do not hold {height} rows of {stride}",
            data.len()
        )));
    }
    let per_strip = rows.per_strip(strip_bytes);
    let starts: Vec<usize> = (0..height).step_by(per_strip).collect();
    let row = |y: usize| &data[y * stride..][..stride];

    // Strips are compressed a group at a time and written before the next group starts,
    // so the compressed strips waiting to be joined never exceed one group, and the job
    // holds the picture, the PNG and a group (not the PNG twice).
    let group = GROUP_PER_THREAD * rayon::current_num_threads();
    let mut out = Vec::with_capacity(data.len() / 4 + 256);
    let mut joint = Joint::start(&mut out, rows, starts.len())?;
    for firsts in starts.chunks(group) {
        let strips: Vec<Strip> = firsts
            .par_iter()
            .map(|&y0| compress_strip(&row, rows, y0..(y0 + per_strip).min(height)))
            .collect::<Result<_, _>>()?;
        for strip in strips {
            joint.push(strip)?;
        }
    }
    joint.finish()?;
    Ok(out)
}

impl PngRows {
    /// Rows per strip of about `strip_bytes` (at least one row, at most the picture): the
    /// partition depends on nothing else, so the file does not depend on timing.
    fn per_strip(self, strip_bytes: usize) -> usize {
        (strip_bytes / self.stride().max(1)).clamp(1, (self.height as usize).max(1))
    }
}

/// The PNG being written: its header, then the strips' streams joined in order into the
/// `IDAT` chunks, then the checksum.
struct Joint<W: std::io::Write> {
    writer: png::Writer<W>,
    /// Strips written, and how many there are.
    written: usize,
    count: usize,
    /// Adler-32 of the filtered bytes written.
    adler: u32,
}

impl<W: std::io::Write> Joint<W> {
    /// Writes the header of a PNG of `rows` in `count` strips.
    fn start(out: W, rows: PngRows, count: usize) -> Result<Self, CodecError> {
        let mut encoder = png::Encoder::new(out, rows.width, rows.height);
        encoder.set_color(rows.color()?);
        encoder.set_depth(rows.depth()?);
        Ok(Self {
            writer: encoder.write_header().map_err(png_error)?,
            written: 0,
            count,
            adler: 1,
        })
    }

    /// Writes the next strip.
    fn push(&mut self, strip: Strip) -> Result<(), CodecError> {
        let i = self.written;
        self.adler = adler32_combine(self.adler, strip.adler, strip.raw_len);
        let body = joinable(strip.zlib, i == 0, i + 1 == self.count)?;
        self.writer
            .write_chunk(png::chunk::IDAT, &body)
            .map_err(png_error)?;
        self.written += 1;
        Ok(())
    }

    /// Writes the checksum and the end, once every strip is written.
    fn finish(mut self) -> Result<(), CodecError> {
        if self.written != self.count {
            return Err(CodecError::Encode(format!(
                "{} of {} strips written",
                self.written, self.count
            )));
        }
        self.writer
            .write_chunk(png::chunk::IDAT, &self.adler.to_be_bytes())
            .map_err(png_error)?;
        self.writer.finish().map_err(png_error)
    }
}

fn png_error(e: png::EncodingError) -> CodecError {
    CodecError::Encode(e.to_string())
}

/// One strip's zlib stream, with the Adler-32 and length of the filtered bytes it holds.
struct Strip {
    zlib: Vec<u8>,
    adler: u32,
    raw_len: u64,
}

/// Filters rows `ys` of a picture (`row(y)` is row `y`'s `stride` bytes, and row
/// `ys.start − 1` is the strip's `Up` neighbour) and compresses them into one zlib stream.
fn compress_strip<'a>(
    row: &dyn Fn(usize) -> &'a [u8],
    rows: PngRows,
    ys: Range<usize>,
) -> Result<Strip, CodecError> {
    let filtered = filter_rows(row, rows, ys);
    let error = |e: std::io::Error| CodecError::Encode(e.to_string());
    let mut compressor =
        fdeflate::Compressor::new(Vec::with_capacity(filtered.len() / 3 + 64)).map_err(error)?;
    compressor.write_data(&filtered).map_err(error)?;
    let zlib = compressor.finish().map_err(error)?;
    let tail: [u8; 4] = zlib
        .get(zlib.len().saturating_sub(4)..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| layout_error("no checksum"))?;
    Ok(Strip {
        adler: u32::from_be_bytes(tail),
        raw_len: filtered.len() as u64,
        zlib,
    })
}

/// Rows `ys` of a picture (`row(y)` as in [`compress_strip`]), each as its filter type
/// byte and filtered bytes.
fn filter_rows<'a>(row: &dyn Fn(usize) -> &'a [u8], rows: PngRows, ys: Range<usize>) -> Vec<u8> {
    let stride = rows.stride();
    // 16-bit rows are swapped into PNG byte order, a row at a time, into two buffers
    // (the row above and the current one) that take turns.
    let swap = rows.bits == 16 && cfg!(target_endian = "little");
    let mut bufs = [
        vec![0; if swap { stride } else { 0 }],
        vec![0; if swap { stride } else { 0 }],
    ];
    let zeros = vec![0; stride];
    let mut filtered = Vec::with_capacity(ys.len() * (stride + 1));
    let mut scratch = Filtered::new(stride);
    let mut above: Option<&'a [u8]> = ys.start.checked_sub(1).map(row);
    if swap {
        if let Some(a) = above {
            swap_into(a, &mut bufs[1]);
        }
    }
    for (i, y) in ys.enumerate() {
        let native = row(y);
        let (kind, bytes) = if swap {
            // bufs[i % 2] takes this row; bufs[(i + 1) % 2] holds the one above.
            let [b0, b1] = &mut bufs;
            let (current, previous) = if i % 2 == 0 { (b0, &*b1) } else { (b1, &*b0) };
            swap_into(native, current);
            let previous = if above.is_some() {
                &previous[..]
            } else {
                &zeros[..]
            };
            scratch.best(rows.bpp(), previous, current)
        } else {
            scratch.best(rows.bpp(), above.unwrap_or(&zeros), native)
        };
        filtered.push(kind);
        filtered.extend_from_slice(bytes);
        above = Some(native);
    }
    filtered
}

/// `out` = `native`'s 16-bit samples in PNG (big-endian) byte order.
fn swap_into(native: &[u8], out: &mut [u8]) {
    for (o, pair) in out.chunks_exact_mut(2).zip(native.chunks_exact(2)) {
        o.copy_from_slice(&[pair[1], pair[0]]);
    }
}

/// The zlib header fdeflate 0.3 writes (deflate, 32 KiB window, fastest).
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];

fn layout_error(what: &str) -> CodecError {
    CodecError::Encode(format!("unexpected fdeflate stream layout: {what}"))
}

/// Turns one strip's zlib stream into its part of the joined stream: the zlib header kept
/// on the first strip only, the Adler-32 dropped, and every strip but the last made
/// non-final and ended on a byte with an empty stored block.
fn joinable(mut zlib: Vec<u8>, first: bool, last: bool) -> Result<Vec<u8>, CodecError> {
    // Header, one block header byte, at least one more byte, the checksum.
    if zlib.len() < 2 + 2 + 4 || zlib[..2] != ZLIB_HEADER {
        return Err(layout_error("header"));
    }
    // BFINAL = 1, BTYPE = 2 (dynamic Huffman codes), least significant bits first.
    if zlib[2] & 0b111 != 0b101 {
        return Err(layout_error("block header"));
    }
    zlib.truncate(zlib.len() - 4);
    if !last {
        let end = zlib[zlib.len() - 1];
        if end == 0 {
            return Err(layout_error("last byte"));
        }
        zlib[2] &= !1;
        if end.leading_zeros() < 3 {
            zlib.push(0);
        }
        zlib.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
    }
    if !first {
        zlib.drain(..2);
    }
    Ok(zlib)
}

/// Adler-32 of `a ‖ b` from `adler(a)`, `adler(b)` and `b.len()` (the rule of zlib's
/// `adler32_combine`: `B` sums each byte once per position after it).
pub fn adler32_combine(adler_a: u32, adler_b: u32, len_b: u64) -> u32 {
    const MOD: u64 = 65521;
    let (a1, b1) = (u64::from(adler_a & 0xFFFF), u64::from(adler_a >> 16));
    let (a2, b2) = (u64::from(adler_b & 0xFFFF), u64::from(adler_b >> 16));
    let len = len_b % MOD;
    // adler(b) was started from A = 1, B = 0: shift by a's sums.
    let a = (a1 + a2 + MOD - 1) % MOD;
    let b = (b1 + b2 + len * a1 + MOD - len) % MOD;
    ((b << 16) | a) as u32
}

/// The four filtered candidates of a row (None is the row itself), kept between rows.
struct Filtered {
    rows: [Vec<u8>; 4],
}

impl Filtered {
    fn new(stride: usize) -> Self {
        Self {
            rows: std::array::from_fn(|_| vec![0; stride]),
        }
    }

    /// The PNG filter type and bytes of the candidate with the smallest `Σ |byte as i8|`
    /// (ties go to the lower type).
    fn best<'a>(&'a mut self, bpp: usize, previous: &[u8], current: &'a [u8]) -> (u8, &'a [u8]) {
        let [sub, up, avg, paeth] = &mut self.rows;
        // Each candidate is summed while it is in L1. (Summing inside the filter loops
        // measured 50 % slower: the loops no longer vectorise as well.)
        let mut sums = [signed_sum(current), 0, 0, 0, 0];
        filter_sub(bpp, current, sub);
        sums[1] = signed_sum(sub);
        filter_up(previous, current, up);
        sums[2] = signed_sum(up);
        filter_avg(bpp, previous, current, avg);
        sums[3] = signed_sum(avg);
        filter_paeth(bpp, previous, current, paeth);
        sums[4] = signed_sum(paeth);
        let mut best = (sums[0], 0);
        for (kind, &sum) in sums.iter().enumerate().skip(1) {
            if sum < best.0 {
                best = (sum, kind);
            }
        }
        match best.1 {
            0 => (0, current),
            k => (k as u8, &self.rows[k - 1]),
        }
    }
}

/// Bytes per block of the filter loops: fixed-size blocks that the compiler vectorises.
const BLOCK: usize = 32;

/// `Σ |byte as i8|`.
fn signed_sum(row: &[u8]) -> u64 {
    let mut blocks = row.chunks_exact(BLOCK);
    let mut sum = 0u64;
    for block in &mut blocks {
        // At most 32 × 128: no overflow in u32.
        let mut part = 0u32;
        for &b in block {
            part += cost(b);
        }
        sum += u64::from(part);
    }
    for &b in blocks.remainder() {
        sum += u64::from(cost(b));
    }
    sum
}

/// `|byte as i8|`, the adaptive rule's cost of one filtered byte.
#[inline(always)]
fn cost(b: u8) -> u32 {
    u32::from((b as i8).unsigned_abs())
}

/// Applies `f(x, a, b, c)` to every byte from `bpp` on, in blocks: `x` the byte, `a` the
/// byte `bpp` to its left, `b` the one above, `c` the one above-left.
#[inline(always)]
fn filter_body(
    bpp: usize,
    previous: &[u8],
    current: &[u8],
    out: &mut [u8],
    f: impl Fn(u8, u8, u8, u8) -> u8,
) {
    let len = current.len();
    if len <= bpp {
        return;
    }
    let mut o = out[bpp..].chunks_exact_mut(BLOCK);
    let mut x = current[bpp..].chunks_exact(BLOCK);
    let mut a = current[..len - bpp].chunks_exact(BLOCK);
    let mut b = previous[bpp..].chunks_exact(BLOCK);
    let mut c = previous[..len - bpp].chunks_exact(BLOCK);
    for ((((o, x), a), b), c) in (&mut o).zip(&mut x).zip(&mut a).zip(&mut b).zip(&mut c) {
        for i in 0..BLOCK {
            o[i] = f(x[i], a[i], b[i], c[i]);
        }
    }
    let tail = o
        .into_remainder()
        .iter_mut()
        .zip(x.remainder())
        .zip(a.remainder())
        .zip(b.remainder())
        .zip(c.remainder());
    for ((((o, &x), &a), &b), &c) in tail {
        *o = f(x, a, b, c);
    }
}

/// Sub: `x − a`, where `a` is the byte `bpp` to the left (0 before the row).
fn filter_sub(bpp: usize, current: &[u8], out: &mut [u8]) {
    let n = bpp.min(current.len());
    out[..n].copy_from_slice(&current[..n]);
    filter_body(bpp, current, current, out, |x, a, _, _| x.wrapping_sub(a));
}

/// Up: `x − b`, where `b` is the byte above.
fn filter_up(previous: &[u8], current: &[u8], out: &mut [u8]) {
    // Up is the body with no left neighbour.
    filter_body(0, previous, current, out, |x, _, b, _| x.wrapping_sub(b));
}

/// Average: `x − ⌊(a + b) / 2⌋`.
fn filter_avg(bpp: usize, previous: &[u8], current: &[u8], out: &mut [u8]) {
    let n = bpp.min(current.len());
    for i in 0..n {
        out[i] = current[i].wrapping_sub(previous[i] / 2);
    }
    // ⌊(a + b) / 2⌋ without widening.
    filter_body(bpp, previous, current, out, |x, a, b, _| {
        x.wrapping_sub((a & b) + ((a ^ b) >> 1))
    });
}

/// Paeth: `x − ` whichever of `a`, `b`, `c` (the byte above-left) is nearest `a + b − c`,
/// ties in that order.
fn filter_paeth(bpp: usize, previous: &[u8], current: &[u8], out: &mut [u8]) {
    let n = bpp.min(current.len());
    // With a = c = 0 the predictor is b.
    filter_up(&previous[..n], &current[..n], &mut out[..n]);
    filter_body(bpp, previous, current, out, |x, a, b, c| {
        x.wrapping_sub(paeth(a, b, c))
    });
}

/// The Paeth predictor in 8-bit arithmetic, as FPNGE computes it so that rows vectorise:
/// with `p = a + b − c`, `|p − a| = |b − c|` and `|p − b| = |a − c|`; and when `c` lies
/// between `a` and `b`, `|p − c| = ||b − c| − |a − c||`, while otherwise `|p − c|` exceeds
/// both others and cannot win (255 stands for it).
#[inline(always)]
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let pa = b.max(c) - b.min(c);
    let pb = a.max(c) - a.min(c);
    let pc = if (a < c) == (c < b) {
        pa.max(pb) - pa.min(pb)
    } else {
        255
    };
    let b_or_c = if pb <= pc { b } else { c };
    if pa <= pb && pa <= pc {
        a
    } else {
        b_or_c
    }
}

mod stream;

pub use stream::PngStream;

#[cfg(test)]
mod tests;
