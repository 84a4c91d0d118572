//! A PNG decoded row by row into a buffer that strips read while it fills (issue #14).
//!
//! [`open`] splits one PNG into a [`RowDecoder`] (the only writer) and the [`StreamRows`]
//! it fills: the whole image's samples, laid out as [`Pixels`] holds them, with a
//! watermark, the number of rows decoded so far. The decoder writes row `y` only while
//! `y` is at the watermark, then raises it (`Release`); readers ([`StreamRows::rows`])
//! read only rows below it (`Acquire`), sleeping on a condition variable until the rows
//! they need are there. Rows below the watermark are never written again, so a reader and
//! the writer never touch the same row. A decode error, a cancel or an abandoned render
//! wakes every sleeper and fails it ([`Unavailable`]): nothing waits for rows that will
//! not come.
//!
//! The samples are bit for bit those of [`super::decode_pixels`], whose PNG path is the
//! `image` crate's: the same `png` decoder settings (`Transformations::EXPAND`, the
//! allocation limit, text chunks read), rows read as `next_frame` reads them, the rest of
//! the image data read after the last row (so truncated or corrupt data fails the same
//! way, with the same message), 16-bit samples from big endian, and the conversion to the
//! held layout done by `image`'s own per-pixel conversions (`ConvertBuffer`) one row at a
//! time. Files this does not apply to are left to the whole decode (`open` gives `None`):
//! other formats, interlaced (Adam7) and animated PNGs, and an EXIF orientation that
//! turns or flips the image.

use std::io::Cursor;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use image::buffer::ConvertBuffer;
use image::error::{DecodingError, LimitError, LimitErrorKind, ParameterError, ParameterErrorKind};
use image::metadata::Orientation;
use image::{ImageBuffer, ImageError, ImageFormat, Luma, LumaA, Rgb, Rgba};

use super::{
    check_dimensions, map_image_error, CodecError, DecodeLimits, DecodeOptions, Layout, Pixels,
    SampleSlice, SampleType, Samples,
};
use crate::conv::CancelToken;
use shared::Shared;

mod shared;

/// Opens `bytes` for streaming: the decoder and the rows it fills, or `None` when the file
/// is not a PNG this module streams (see the module docs; decode it whole).
///
/// The header is read under `limits` exactly as [`super::decode_pixels`] reads it, and
/// the samples buffer (`W · H · spp` samples of 1 or 2 bytes, as [`super::Header`]
/// counts them) is allocated here, whole.
///
/// # Errors
/// As [`super::decode_pixels`] for the header and the allocation limit.
pub fn open<B: AsRef<[u8]>>(
    bytes: B,
    opts: &DecodeOptions,
    limits: &DecodeLimits,
) -> Result<Option<(RowDecoder<B>, StreamRows)>, CodecError> {
    if !bytes.as_ref().starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(None);
    }
    let src = super::open(bytes.as_ref(), opts.orientation, limits)?;
    if src.format != "png" || src.orientation != Orientation::NoTransforms {
        return Ok(None);
    }
    let (w, h) = (src.width, src.height);
    check_dimensions(w, h, limits)?;
    let lay = Layout::of(src.gray, src.sample, opts.color);
    drop(src);
    // `image::codecs::png::PngDecoder::with_limits`, as `super::open` made it.
    let max_bytes = usize::try_from(limits.max_alloc_bytes).unwrap_or(usize::MAX);
    let mut decoder =
        png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: max_bytes });
    decoder.set_ignore_text_chunk(false);
    decoder
        .read_header_info()
        .map_err(|e| map_image_error(from_png(e), limits, None))?;
    decoder.set_transformations(png::Transformations::EXPAND);
    let reader = decoder
        .read_info()
        .map_err(|e| map_image_error(from_png(e), limits, None))?;
    let info = reader.info();
    if info.interlaced || info.animation_control.is_some() {
        return Ok(None);
    }
    let (color, bits) = reader.output_color_type();
    let source = match color {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Ok(None),
    };
    let wide = match bits {
        png::BitDepth::Eight => false,
        png::BitDepth::Sixteen => true,
        _ => return Ok(None),
    };
    // Only gray sources are held as one sample per pixel (`Layout::of`).
    if lay.spp == 1 && source > 2 {
        return Ok(None);
    }
    // `from_image`'s second guard: the decoder's output buffer under the allocation limit.
    let (wu, hu) = (w as usize, h as usize);
    let total = u64::from(w) * u64::from(h) * (source * if wide { 2 } else { 1 }) as u64;
    let mut full = image::Limits::no_limits();
    full.max_alloc = Some(limits.max_alloc_bytes);
    full.reserve(total)
        .map_err(|e| map_image_error(e, limits, Some(total)))?;
    let n = wu * hu * lay.spp;
    let buf = if wide {
        Buf::U16(Shared::new(vec![0u16; n]))
    } else {
        Buf::U8(Shared::new(vec![0u8; n]))
    };
    let meta = Pixels {
        width: wu,
        height: hu,
        channels: lay.channels,
        format: "png",
        samples: Samples::U8(Vec::new()),
        samples_per_pixel: lay.spp,
        luma: lay.luma,
        scale: opts.scale,
        lut: std::array::from_fn(|v| v as f32 * opts.scale),
    };
    let line = reader.output_line_size(w).ok_or_else(|| {
        map_image_error(from_png(png::DecodingError::LimitsExceeded), limits, None)
    })?;
    let rows = StreamRows {
        meta,
        buf,
        decoded: AtomicUsize::new(0),
        wanted: AtomicUsize::new(usize::MAX),
        state: Mutex::new(End::Running),
        woken: Condvar::new(),
        writer: AtomicBool::new(false),
        abandoned: AtomicBool::new(false),
    };
    let decoder = RowDecoder {
        reader,
        source,
        wide,
        spp: lay.spp,
        line,
        limits: *limits,
        total,
    };
    Ok(Some((decoder, rows)))
}

/// Why a [`RowDecoder`] stopped before the end.
#[derive(Debug)]
pub enum Stop {
    /// The data is corrupt or truncated: the error the whole decode gives.
    Failed(CodecError),
    /// The job's [`CancelToken`] fired.
    Cancelled,
    /// [`StreamRows::abandon`] was called: nobody reads the rows any more.
    Abandoned,
}

/// The rows a reader waited for will never come: the decoder stopped ([`Stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The writing half of a streamed PNG: decodes its rows, in order, into [`StreamRows`].
/// It must be [`run`](RowDecoder::run): the readers of its rows wait for it.
#[must_use = "the readers of the rows wait until the decoder runs"]
pub struct RowDecoder<B: AsRef<[u8]>> {
    reader: png::Reader<Cursor<B>>,
    /// Samples per pixel the `png` decoder gives (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
    source: usize,
    /// 16-bit samples.
    wide: bool,
    /// Samples per pixel held.
    spp: usize,
    /// Bytes of a decoded row.
    line: usize,
    limits: DecodeLimits,
    /// Bytes of the whole decoded image in the decoder's layout (for limit errors).
    total: u64,
}

impl<B: AsRef<[u8]>> std::fmt::Debug for RowDecoder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowDecoder")
            .field("source", &self.source)
            .field("wide", &self.wide)
            .field("spp", &self.spp)
            .finish_non_exhaustive()
    }
}

impl<B: AsRef<[u8]>> RowDecoder<B> {
    /// Decodes every row of the image into `rows` (the rows [`open`] returned with this
    /// decoder), raising its watermark after each, then reads the rest of the image data.
    /// Polls `cancel` and [`StreamRows::abandon`] between rows. Never calls into rayon.
    ///
    /// On any stop (and if it unwinds) every reader waiting for a row not yet decoded
    /// is woken and fails.
    ///
    /// # Errors
    /// [`Stop`].
    ///
    /// # Panics
    /// If called a second time on the same `rows` (one writer per buffer).
    pub fn run(mut self, rows: &StreamRows, cancel: &CancelToken) -> Result<(), Stop> {
        assert!(
            !rows.writer.swap(true, Ordering::AcqRel),
            "one decoder per buffer"
        );
        // Fails the rows if this returns early or unwinds; disarmed on success.
        struct FailOnDrop<'a>(&'a StreamRows, bool);
        impl Drop for FailOnDrop<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.finish(End::Failed);
                }
            }
        }
        let mut guard = FailOnDrop(rows, true);
        self.decode(rows, cancel)?;
        guard.1 = false;
        rows.finish(End::Done);
        Ok(())
    }

    #[allow(unsafe_code)] // the rows written, each at the watermark (SAFETY below)
    fn decode(&mut self, rows: &StreamRows, cancel: &CancelToken) -> Result<(), Stop> {
        let (w, h) = (rows.meta.width, rows.meta.height);
        let held = w * self.spp;
        let mut line = vec![0u8; self.line];
        let mut wide = vec![0u16; w * self.source];
        // Rows the decoder gives already in the held layout are read in place.
        let direct = self.source == self.spp && !self.wide;
        for y in 0..h {
            if cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            if rows.abandoned.load(Ordering::Relaxed) {
                return Err(Stop::Abandoned);
            }
            let span = y * held..(y + 1) * held;
            match &rows.buf {
                Buf::U8(s) => {
                    // SAFETY: row `y` is at the watermark (`rows.decoded == y`: this, the
                    // only writer, raised it to `y` after the previous row), so no reader
                    // reads it ([`StreamRows::rows`] reads below the watermark only) and
                    // no other reference to it exists; the span is inside the buffer.
                    let dst = unsafe { s.slice_mut(span) };
                    if direct {
                        self.read(dst)?;
                    } else {
                        self.read(&mut line)?;
                        into_layout8(self.source, self.spp, &line, w, dst);
                    }
                }
                Buf::U16(s) => {
                    self.read(&mut line)?;
                    for (v, b) in wide.iter_mut().zip(line.chunks_exact(2)) {
                        *v = u16::from_be_bytes([b[0], b[1]]);
                    }
                    // SAFETY: as for 8-bit rows above.
                    let dst = unsafe { s.slice_mut(span) };
                    into_layout16(self.source, self.spp, &wide, w, dst);
                }
            }
            rows.publish(y + 1);
        }
        // What `next_frame` does after the last row: the rest of the image data.
        match self.reader.read_row(&mut line) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(Stop::Failed(CodecError::Corrupt(
                "more rows than the header declares".into(),
            ))),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The next row into `out` (its first [`Self::line`] bytes).
    fn read(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        match self.reader.read_row(out) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Stop::Failed(CodecError::Corrupt(
                "fewer rows than the header declares".into(),
            ))),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A `png` error as the whole decode reports it.
    fn failed(&self, e: png::DecodingError) -> Stop {
        Stop::Failed(map_image_error(from_png(e), &self.limits, Some(self.total)))
    }
}

/// `image`'s `ImageError::from_png` (not public), so that errors read the same.
fn from_png(err: png::DecodingError) -> ImageError {
    match err {
        png::DecodingError::IoError(err) => ImageError::IoError(err),
        err @ png::DecodingError::Format(_) => {
            ImageError::Decoding(DecodingError::new(ImageFormat::Png.into(), err))
        }
        err @ png::DecodingError::Parameter(_) => ImageError::Parameter(ParameterError::from_kind(
            ParameterErrorKind::Generic(err.to_string()),
        )),
        png::DecodingError::LimitsExceeded => {
            ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory))
        }
    }
}

/// One decoded row, `k` samples per pixel (1 L, 2 LA, 3 RGB, 4 RGBA), into `spp` per pixel
/// as `DynamicImage::into_luma8` / `into_rgb8` / `into_rgba8` convert it.
fn into_layout8(k: usize, spp: usize, src: &[u8], w: usize, dst: &mut [u8]) {
    macro_rules! to {
        ($from:ident, $to:ident) => {{
            let row = ImageBuffer::<$from<u8>, &[u8]>::from_raw(w as u32, 1, &src[..w * k])
                .expect("a whole row");
            let out: ImageBuffer<$to<u8>, Vec<u8>> = row.convert();
            dst.copy_from_slice(out.as_raw());
        }};
    }
    match (k, spp) {
        (k, spp) if k == spp => dst.copy_from_slice(&src[..w * k]),
        (2, 1) => to!(LumaA, Luma),
        (1, 3) => to!(Luma, Rgb),
        (2, 3) => to!(LumaA, Rgb),
        (4, 3) => to!(Rgba, Rgb),
        (1, 4) => to!(Luma, Rgba),
        (2, 4) => to!(LumaA, Rgba),
        (3, 4) => to!(Rgb, Rgba),
        _ => unreachable!("{k} samples into {spp}: refused by `open`"),
    }
}

/// [`into_layout8`] for 16-bit samples (`into_luma16` / `into_rgb16` / `into_rgba16`).
fn into_layout16(k: usize, spp: usize, src: &[u16], w: usize, dst: &mut [u16]) {
    macro_rules! to {
        ($from:ident, $to:ident) => {{
            let row =
                ImageBuffer::<$from<u16>, &[u16]>::from_raw(w as u32, 1, src).expect("a whole row");
            let out: ImageBuffer<$to<u16>, Vec<u16>> = row.convert();
            dst.copy_from_slice(out.as_raw());
        }};
    }
    match (k, spp) {
        (k, spp) if k == spp => dst.copy_from_slice(src),
        (2, 1) => to!(LumaA, Luma),
        (1, 3) => to!(Luma, Rgb),
        (2, 3) => to!(LumaA, Rgb),
        (4, 3) => to!(Rgba, Rgb),
        (1, 4) => to!(Luma, Rgba),
        (2, 4) => to!(LumaA, Rgba),
        (3, 4) => to!(Rgb, Rgba),
        _ => unreachable!("{k} samples into {spp}: refused by `open`"),
    }
}

/// How the decoder ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Running,
    Done,
    Failed,
}

/// The reading half of a streamed PNG: the image's samples as they are decoded (see the
/// module docs), read as float planes by [`StreamRows::rows`].
pub struct StreamRows {
    /// Size, channels, layout and scale; its own `samples` are empty.
    meta: Pixels,
    buf: Buf,
    /// Rows decoded: `0..decoded` are final.
    decoded: AtomicUsize,
    /// The fewest rows a sleeping reader waits for (`usize::MAX`: none sleeps).
    wanted: AtomicUsize,
    state: Mutex<End>,
    woken: Condvar,
    /// A decoder has started writing.
    writer: AtomicBool,
    abandoned: AtomicBool,
}

impl std::fmt::Debug for StreamRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRows")
            .field("width", &self.meta.width)
            .field("height", &self.meta.height)
            .field("channels", &self.meta.channels)
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

impl StreamRows {
    /// Width `W` in pixels.
    pub fn width(&self) -> usize {
        self.meta.width
    }

    /// Height `H` in pixels.
    pub fn height(&self) -> usize {
        self.meta.height
    }

    /// Channels `C` of the float planes.
    pub fn channels(&self) -> usize {
        self.meta.channels
    }

    /// Bytes held by the samples (what [`super::Header::decoded_bytes`] counts).
    pub fn bytes(&self) -> usize {
        match &self.buf {
            Buf::U8(s) => s.len,
            Buf::U16(s) => 2 * s.len,
        }
    }

    /// The type the samples are held in.
    pub fn sample(&self) -> SampleType {
        match self.buf {
            Buf::U8(_) => SampleType::U8,
            Buf::U16(_) => SampleType::U16,
        }
    }

    /// Rows decoded so far.
    pub fn decoded(&self) -> usize {
        self.decoded.load(Ordering::Acquire)
    }

    /// Rows `rows` as [`Pixels::rows`] gives them (`out` is `[C, rows.len(), W]`),
    /// waiting until the decoder has written them.
    ///
    /// # Errors
    /// [`Unavailable`] if the decoder stopped before them; `out` is left untouched.
    ///
    /// # Panics
    /// If `rows` is beyond the image or `out.len() != C · rows.len() · W`.
    #[allow(unsafe_code)] // the rows read, below the watermark (SAFETY below)
    pub fn rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<(), Unavailable> {
        let (w, k) = (self.meta.width, self.meta.samples_per_pixel);
        assert!(rows.end <= self.meta.height, "rows {rows:?}");
        assert_eq!(
            out.len(),
            self.meta.channels * rows.len() * w,
            "planes of {rows:?}"
        );
        self.wait_for(rows.end)?;
        let span = rows.start * w * k..rows.end * w * k;
        // SAFETY (both arms): every row in `span` is below the watermark (`wait_for`,
        // whose `Acquire` load pairs with the decoder's `Release` store after writing
        // them), and the decoder never writes a row below the watermark again; so these
        // samples are initialised and nobody mutates them while the slice lives.
        let src = match &self.buf {
            Buf::U8(s) => SampleSlice::U8(unsafe { s.slice(span) }),
            Buf::U16(s) => SampleSlice::U16(unsafe { s.slice(span) }),
        };
        self.meta.convert_rows(src, out);
        Ok(())
    }

    /// Whether the decoder stopped before the end (an error, a cancel, abandoned): rows
    /// not decoded yet will never come.
    pub fn stopped(&self) -> bool {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) == End::Failed
    }

    /// Tells the decoder nobody reads the rows any more: it stops at the next row with
    /// [`Stop::Abandoned`] (a render that failed; the decode need not go on).
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    /// The whole image, once the decoder is done (the buffer moves into the `Pixels`).
    ///
    /// # Errors
    /// [`Unavailable`] if the decoder did not finish.
    pub fn into_pixels(self) -> Result<Pixels, Unavailable> {
        let end = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if end != End::Done {
            return Err(Unavailable);
        }
        let samples = match self.buf {
            Buf::U8(s) => Samples::U8(s.into_vec()),
            Buf::U16(s) => Samples::U16(s.into_vec()),
        };
        // Field by field (not `..self.meta`): `Pixels` may own a drop of its own.
        let m = &self.meta;
        Ok(Pixels {
            width: m.width,
            height: m.height,
            channels: m.channels,
            format: m.format,
            samples,
            samples_per_pixel: m.samples_per_pixel,
            luma: m.luma,
            scale: m.scale,
            lut: m.lut,
        })
    }

    /// Waits until rows `0..end` are decoded.
    fn wait_for(&self, end: usize) -> Result<(), Unavailable> {
        if self.decoded.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.decoded.load(Ordering::SeqCst) >= end {
                return Ok(());
            }
            if *state != End::Running {
                return Err(Unavailable);
            }
            // Registered before the check below, under the lock: either the decoder's
            // `publish` sees `wanted` (and wakes us, after we sleep: it takes the lock),
            // or the check sees its rows (both sides `SeqCst`).
            self.wanted.fetch_min(end, Ordering::SeqCst);
            if self.decoded.load(Ordering::SeqCst) >= end {
                return Ok(());
            }
            state = self
                .woken
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Raises the watermark to `rows` and wakes the readers that wait for no more.
    fn publish(&self, rows: usize) {
        self.decoded.store(rows, Ordering::SeqCst);
        if self.wanted.load(Ordering::SeqCst) <= rows {
            let _state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            // The woken readers register again if they still wait.
            self.wanted.store(usize::MAX, Ordering::SeqCst);
            self.woken.notify_all();
        }
    }

    /// Records how the decoder ended and wakes every reader.
    fn finish(&self, end: End) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = end;
        self.wanted.store(usize::MAX, Ordering::SeqCst);
        self.woken.notify_all();
    }
}

/// The samples buffer, in the type the file stores.
enum Buf {
    U8(Shared<u8>),
    U16(Shared<u16>),
}

#[cfg(test)]
pub(crate) mod tests;
