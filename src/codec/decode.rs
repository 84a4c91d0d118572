//! Decoding of encoded image bytes (PNG, JPEG, WebP, GIF, BMP, TIFF) into
//! float32 CHW planes, upright and at the precision the file holds.
//!
//! The format is sniffed from the leading magic bytes only; file names and
//! content types are never consulted. Header dimensions are checked against
//! [`DecodeLimits`] before any pixel buffer is allocated, and the decoder
//! itself runs under an [`image::Limits`] (or `tiff::decoder::Limits`) budget as a
//! second guard.
//!
//! **Numeric ranges.** Samples keep the type the file stores them in, and every float
//! value is `sample · scale`:
//! - 8-bit files (every format): `0..=255`, as before;
//! - 16-bit PNG and TIFF (gray, gray+alpha, RGB, RGBA): `0..=65535`, as Pillow and NumPy
//!   read them (`scale: 1/65535` gives `0..1`); all 16 bits are kept;
//! - 32-bit float TIFF (gray, gray+alpha, RGB, RGBA; read by [`float_tiff`]): the stored
//!   values exactly (negative and fractional ones included), times `scale` (1 by default).
//!
//! **Orientation.** With [`OrientationMode::Exif`] (the default) the EXIF Orientation tag
//! (JPEG APP1, PNG eXIf, WebP EXIF, TIFF tag 274) is applied before anything else, as
//! browsers do, so [`Pixels`] and [`Header`] are upright (orientations 5–8 swap width and
//! height; the limits apply to the upright sides). [`OrientationMode::Ignore`] keeps the
//! stored order, as Pillow's `Image.open` does. See [`orient`] for the table.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use rayon::prelude::*;

use super::CodecError;

mod float_tiff;
mod orient;
mod planes;
pub mod stream;

/// Requested channel layout of the decoded planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// Grayscale sources (L, LA, L16, LA16, float gray) give 1 channel, everything else
    /// 3 channels RGB. Alpha is always dropped.
    #[default]
    Auto,
    /// 1 channel. 8-bit RGB: Pillow's `convert('L')`,
    /// `(R*19595 + G*38470 + B*7471 + 0x8000) >> 16`; 16-bit RGB: the same integer formula
    /// on the 16-bit samples (a value in `0..=65535`); float RGB:
    /// `0.299*R + 0.587*G + 0.114*B` in f32. Grayscale sources pass through unchanged.
    Gray,
    /// 3 channels R, G, B (grayscale is replicated, alpha dropped).
    Rgb,
    /// 4 channels R, G, B, A (opaque sources get A = 255, 65535 or 1.0 by sample type).
    Rgba,
}

/// Whether the EXIF Orientation tag is applied (spec member `orientation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OrientationMode {
    /// Apply the tag (all 8 values) before anything else, as browsers do.
    #[default]
    Exif,
    /// Keep the stored pixel order (what Pillow's `Image.open` gives).
    Ignore,
}

/// How an image is decoded: channels, orientation and the factor applied to samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// Channel layout of the planes.
    pub color: ColorMode,
    /// Whether the EXIF Orientation tag is applied.
    pub orientation: OrientationMode,
    /// Every float value is the sample times this ([`probe`] ignores it).
    pub scale: f32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            color: ColorMode::Auto,
            orientation: OrientationMode::Exif,
            scale: 1.0,
        }
    }
}

/// The type a file stores its samples in, kept by [`Pixels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleType {
    /// 8-bit unsigned, `0..=255`.
    U8,
    /// 16-bit unsigned, `0..=65535`.
    U16,
    /// 32-bit IEEE float, as stored.
    F32,
}

impl SampleType {
    /// Bytes per sample.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::F32 => 4,
        }
    }
}

/// Size limits enforced while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Maximum (upright) image width in pixels.
    pub max_width: u32,
    /// Maximum (upright) image height in pixels.
    pub max_height: u32,
    /// Maximum `width * height` in pixels.
    pub max_pixels: u64,
    /// Maximum bytes the image decoder may allocate (its own output buffer
    /// included; the f32 planes returned are not counted).
    pub max_alloc_bytes: u64,
}

/// Decoded image as float32 CHW planes.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// Number of channels `C` (1, 3 or 4).
    pub channels: usize,
    /// Height `H` in pixels.
    pub height: usize,
    /// Width `W` in pixels.
    pub width: usize,
    /// CHW, row-major: `data[c*H*W + y*W + x]`, length `C*H*W`.
    pub data: Vec<f32>,
    /// Sniffed source format, e.g. `"png"`.
    pub format: &'static str,
}

/// What an image's header says, read before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Upright width in pixels.
    pub width: usize,
    /// Upright height in pixels.
    pub height: usize,
    /// Channels of the float planes the image gives in the requested [`ColorMode`].
    pub channels: usize,
    /// Bytes of the decoded samples the image is held in while it is convolved.
    pub decoded_bytes: u64,
    /// Sniffed source format, e.g. `"png"`.
    pub format: &'static str,
    /// The type the samples are held in.
    pub sample: SampleType,
}

/// Interleaved samples in the type the file stores them in.
#[derive(Debug)]
enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
    F32(Vec<f32>),
}

/// Interleaved samples borrowed: rows of [`Pixels`], or the decoded rows of a PNG being
/// streamed ([`stream`]).
#[derive(Debug, Clone, Copy)]
enum SampleSlice<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    F32(&'a [f32]),
}

/// A decoded image, upright, held as the samples the decoder gave (8-bit, 16-bit or
/// float), until its rows are turned into float planes ([`Pixels::rows`], the one
/// conversion point).
#[derive(Debug)]
pub struct Pixels {
    /// Width `W` in pixels.
    pub width: usize,
    /// Height `H` in pixels.
    pub height: usize,
    /// Channels `C` of the float planes (1, 3 or 4).
    pub channels: usize,
    /// Sniffed source format, e.g. `"png"`.
    pub format: &'static str,
    /// Interleaved samples, `samples_per_pixel` per pixel, row-major.
    samples: Samples,
    samples_per_pixel: usize,
    /// The luma of RGB samples into one channel ([`ColorMode::Gray`]).
    luma: bool,
    scale: f32,
    /// `v as f32 · scale` for every 8-bit value.
    lut: [f32; 256],
}

impl Pixels {
    /// Bytes held by the samples.
    pub fn bytes(&self) -> usize {
        match &self.samples {
            Samples::U8(s) => s.len(),
            Samples::U16(s) => s.len() * 2,
            Samples::F32(s) => s.len() * 4,
        }
    }

    /// The type the samples are held in.
    pub fn sample(&self) -> SampleType {
        match self.samples {
            Samples::U8(_) => SampleType::U8,
            Samples::U16(_) => SampleType::U16,
            Samples::F32(_) => SampleType::F32,
        }
    }

    /// Rows `rows` of every channel as float planes: `out` is `[C, rows.len(), W]`,
    /// row-major, each value the sample (or its luma, see [`ColorMode::Gray`]) times the
    /// scale.
    ///
    /// # Panics
    /// If `rows` is beyond the image or `out.len() != C · rows.len() · W`.
    pub fn rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let (w, k) = (self.width, self.samples_per_pixel);
        let n = rows.len() * w;
        assert_eq!(out.len(), self.channels * n, "planes of {rows:?}");
        let span = rows.start * w * k..rows.end * w * k;
        let src = match &self.samples {
            Samples::U8(s) => SampleSlice::U8(&s[span]),
            Samples::U16(s) => SampleSlice::U16(&s[span]),
            Samples::F32(s) => SampleSlice::F32(&s[span]),
        };
        self.convert_rows(src, out);
    }

    /// Interleaved samples `src` (whole rows of this image's layout) as float planes
    /// `[C, rows, W]` into `out`, as [`Pixels::rows`] gives them.
    fn convert_rows(&self, src: SampleSlice<'_>, out: &mut [f32]) {
        let n = out.len() / self.channels;
        let (k, luma, scale) = (self.samples_per_pixel, self.luma, self.scale);
        match src {
            SampleSlice::U8(s) if k == 3 && !luma => {
                let (r, rest) = out.split_at_mut(n);
                let (g, b) = rest.split_at_mut(n);
                planes::rgb8_to_planes(s, r, g, b, scale);
            }
            SampleSlice::U8(s) => {
                let lut = &self.lut;
                convert(
                    s,
                    out,
                    k,
                    n,
                    luma,
                    |v| lut[usize::from(v)],
                    |p| lut[usize::from(pillow_luma(p[0], p[1], p[2]))],
                )
            }
            SampleSlice::U16(s) => convert(
                s,
                out,
                k,
                n,
                luma,
                |v| f32::from(v) * scale,
                |p| f32::from(pillow_luma16(p[0], p[1], p[2])) * scale,
            ),
            SampleSlice::F32(s) => convert(
                s,
                out,
                k,
                n,
                luma,
                |v| v * scale,
                |p| float_luma(p[0], p[1], p[2]) * scale,
            ),
        }
    }

    /// The whole image as float planes `[C, H, W]` (rows converted in parallel chunks on
    /// the current rayon pool, into a reused buffer).
    pub fn planes(&self) -> Vec<f32> {
        let plane = self.width * self.height;
        let mut data = crate::conv::buffers::take(self.channels * plane);
        data.resize(self.channels * plane, 0.0);
        let band = (CHUNK / self.width).max(1);
        if self.channels == 1 {
            data.par_chunks_mut(band * self.width)
                .enumerate()
                .for_each(|(i, out)| {
                    let y = i * band;
                    self.rows(y..y + out.len() / self.width, out);
                });
        } else {
            // Channel by channel is not how `rows` writes; convert bands into a scratch
            // and scatter them into the planes.
            let bands: Vec<(usize, Vec<f32>)> = (0..self.height.div_ceil(band))
                .into_par_iter()
                .map(|i| {
                    let rows = i * band..((i + 1) * band).min(self.height);
                    let mut out = vec![0.0; self.channels * rows.len() * self.width];
                    self.rows(rows, &mut out);
                    (i, out)
                })
                .collect();
            for (i, out) in bands {
                let rows = out.len() / self.channels;
                for (c, part) in out.chunks_exact(rows).enumerate() {
                    let at = c * plane + i * band * self.width;
                    data[at..at + rows].copy_from_slice(part);
                }
            }
        }
        data
    }
}

/// Interleaved samples (`k` per pixel, `n` pixels) into `[C, n]` planes: the luma of
/// three samples, or each sample.
fn convert<T: Copy>(
    src: &[T],
    out: &mut [f32],
    k: usize,
    n: usize,
    luma: bool,
    value: impl Fn(T) -> f32,
    luma_of: impl Fn(&[T]) -> f32,
) {
    if luma {
        for (o, p) in out.iter_mut().zip(src.chunks_exact(3)) {
            *o = luma_of(p);
        }
    } else if k == 1 {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = value(v);
        }
    } else {
        for (c, plane) in out.chunks_exact_mut(n).enumerate() {
            for (o, p) in plane.iter_mut().zip(src.chunks_exact(k)) {
                *o = value(p[c]);
            }
        }
    }
}

/// Pixels per parallel task of the conversion to floats.
const CHUNK: usize = 1 << 16;

/// Reads the header of `bytes`: format, upright size (per `opts.orientation`), the
/// channels `opts.color` gives and the bytes the samples will take, checked against
/// `limits`; nothing is decoded.
///
/// # Errors
/// As [`decode_pixels`], except [`CodecError::Corrupt`] for data past the header.
pub fn probe(
    bytes: &[u8],
    opts: &DecodeOptions,
    limits: &DecodeLimits,
) -> Result<Header, CodecError> {
    let src = open(bytes, opts.orientation, limits)?;
    let (w, h) = orient::upright(src.width, src.height, src.orientation);
    check_dimensions(w, h, limits)?;
    let lay = Layout::of(src.gray, src.sample, opts.color);
    Ok(Header {
        width: w as usize,
        height: h as usize,
        channels: lay.channels,
        decoded_bytes: u64::from(w) * u64::from(h) * (lay.spp * src.sample.size()) as u64,
        format: src.format,
        sample: src.sample,
    })
}

/// Decodes `bytes` into [`Pixels`]: upright (per `opts.orientation`), the samples in the
/// type the file holds (8-bit, 16-bit or float, converted to the layout `opts.color`
/// needs), to be turned into float planes row by row.
///
/// Each float value is the sample multiplied by `opts.scale` (the ranges are in the
/// module doc). Animated GIFs yield their first frame.
///
/// # Errors
///
/// - [`CodecError::Unsupported`] if the magic bytes are not PNG, JPEG, WebP,
///   GIF, BMP or TIFF (or the decoder rejects a feature of the file);
/// - [`CodecError::Empty`] if the header declares a zero width or height;
/// - [`CodecError::TooLarge`] if width, height, pixel count or decoder
///   allocation exceed `limits` (checked from the header, before decoding);
/// - [`CodecError::Corrupt`] if the data is truncated or malformed.
pub fn decode_pixels(
    bytes: &[u8],
    opts: &DecodeOptions,
    limits: &DecodeLimits,
) -> Result<Pixels, CodecError> {
    let src = open(bytes, opts.orientation, limits)?;
    let (sw, sh, o) = (src.width, src.height, src.orientation);
    let (w, h) = orient::upright(sw, sh, o);
    check_dimensions(w, h, limits)?;
    let lay = Layout::of(src.gray, src.sample, opts.color);
    let samples = match src.decoder {
        Source::Image(decoder) => from_image(decoder, sw, sh, &lay, limits)?,
        Source::FloatTiff(t) => {
            let k = t.samples;
            Samples::F32(relayout_float(&t.read(limits)?, k, lay.spp))
        }
    };
    let (sw, sh, k) = (sw as usize, sh as usize, lay.spp);
    let samples = match samples {
        Samples::U8(s) => Samples::U8(orient::orient(s, sw, sh, k, o)),
        Samples::U16(s) => Samples::U16(orient::orient(s, sw, sh, k, o)),
        Samples::F32(s) => Samples::F32(orient::orient(s, sw, sh, k, o)),
    };
    Ok(Pixels {
        width: w as usize,
        height: h as usize,
        channels: lay.channels,
        format: src.format,
        samples,
        samples_per_pixel: lay.spp,
        luma: lay.luma,
        scale: opts.scale,
        lut: std::array::from_fn(|v| v as f32 * opts.scale),
    })
}

/// Decodes `bytes` into float32 CHW planes: [`decode_pixels`], then every row.
///
/// # Errors
/// As [`decode_pixels`].
pub fn decode_image(
    bytes: &[u8],
    opts: &DecodeOptions,
    limits: &DecodeLimits,
) -> Result<DecodedImage, CodecError> {
    let px = decode_pixels(bytes, opts, limits)?;
    Ok(DecodedImage {
        channels: px.channels,
        height: px.height,
        width: px.width,
        data: px.planes(),
        format: px.format,
    })
}

/// The decoder that reads a file: `image`'s, or the `tiff` crate's for float TIFF.
enum Source<'a> {
    Image(Box<dyn ImageDecoder + 'a>),
    FloatTiff(Box<float_tiff::FloatTiff<'a>>),
}

/// A file whose header has been read.
struct Opened<'a> {
    decoder: Source<'a>,
    format: &'static str,
    /// Stored width and height.
    width: u32,
    height: u32,
    /// The orientation to apply (`NoTransforms` when ignored or absent).
    orientation: Orientation,
    /// Whether the source is grayscale ([`ColorMode::Auto`] gives 1 channel).
    gray: bool,
    sample: SampleType,
}

/// The samples [`Pixels`] holds for a source in a [`ColorMode`].
struct Layout {
    /// Samples per pixel held.
    spp: usize,
    /// Three RGB samples held, one luma channel given.
    luma: bool,
    /// Channels of the float planes.
    channels: usize,
}

impl Layout {
    fn of(gray: bool, _sample: SampleType, color: ColorMode) -> Self {
        let (spp, luma, channels) = match color {
            ColorMode::Auto | ColorMode::Gray if gray => (1, false, 1),
            ColorMode::Gray => (3, true, 1),
            ColorMode::Auto | ColorMode::Rgb => (3, false, 3),
            ColorMode::Rgba => (4, false, 4),
        };
        Self {
            spp,
            luma,
            channels,
        }
    }
}

/// Opens `bytes` and reads its header (and orientation, unless `mode` ignores it), under
/// the allocation budget only (so that the dimensions can be read and reported precisely
/// by [`check_dimensions`]).
fn open<'a>(
    bytes: &'a [u8],
    mode: OrientationMode,
    limits: &DecodeLimits,
) -> Result<Opened<'a>, CodecError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    let format = match reader.format() {
        Some(f) => format_name(f).ok_or_else(|| {
            CodecError::Unsupported(format!(
                "{} images are not accepted",
                f.extensions_str().first().copied().unwrap_or("unknown")
            ))
        })?,
        None => {
            return Err(CodecError::Unsupported(
                "unrecognised magic bytes (expected png, jpeg, webp, gif, bmp or tiff)".into(),
            ))
        }
    };
    let wanted = |o: Orientation| match mode {
        OrientationMode::Exif => o,
        OrientationMode::Ignore => Orientation::NoTransforms,
    };
    if format == "tiff" && float_tiff::is_float(bytes) {
        let t = float_tiff::FloatTiff::open(bytes, limits)?;
        return Ok(Opened {
            format,
            width: t.width,
            height: t.height,
            orientation: wanted(t.orientation),
            gray: t.samples <= 2,
            sample: SampleType::F32,
            decoder: Source::FloatTiff(Box::new(t)),
        });
    }
    let mut alloc_only = image::Limits::no_limits();
    alloc_only.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = reader;
    reader.limits(alloc_only);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, limits, None))?;
    let (width, height) = decoder.dimensions();
    // A tag that cannot be read is no tag: browsers show such files as stored.
    let orientation = match mode {
        OrientationMode::Exif => decoder.orientation().unwrap_or(Orientation::NoTransforms),
        OrientationMode::Ignore => Orientation::NoTransforms,
    };
    let source = decoder.color_type();
    Ok(Opened {
        decoder: Source::Image(Box::new(decoder)),
        format,
        width,
        height,
        orientation,
        gray: is_gray(source),
        sample: sample_type(source),
    })
}

/// Decodes with `image` into the layout `lay`, keeping the source's sample type.
fn from_image(
    mut decoder: Box<dyn ImageDecoder + '_>,
    w: u32,
    h: u32,
    lay: &Layout,
    limits: &DecodeLimits,
) -> Result<Samples, CodecError> {
    // Second guard: the decoder's own limits (on the stored sides), with the output buffer
    // reserved first exactly as `ImageReader::decode` does.
    let total = decoder.total_bytes();
    let mut full = image::Limits::no_limits();
    full.max_image_width = Some(limits.max_width.max(limits.max_height));
    full.max_image_height = Some(limits.max_width.max(limits.max_height));
    full.max_alloc = Some(limits.max_alloc_bytes);
    full.reserve(total)
        .map_err(|e| map_image_error(e, limits, Some(total)))?;
    decoder
        .set_limits(full)
        .map_err(|e| map_image_error(e, limits, Some(total)))?;
    let source = decoder.color_type();
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, limits, Some(total)))?;
    debug_assert_eq!((img.width(), img.height()), (w, h));
    Ok(match (sample_type(source), lay.spp) {
        (SampleType::U8, 1) => Samples::U8(img.into_luma8().into_raw()),
        (SampleType::U8, 3) => Samples::U8(img.into_rgb8().into_raw()),
        (SampleType::U8, _) => Samples::U8(img.into_rgba8().into_raw()),
        (SampleType::U16, 1) => Samples::U16(img.into_luma16().into_raw()),
        (SampleType::U16, 3) => Samples::U16(img.into_rgb16().into_raw()),
        (SampleType::U16, _) => Samples::U16(img.into_rgba16().into_raw()),
        (SampleType::F32, 1) => Samples::F32(img.to_luma32f().into_raw()),
        (SampleType::F32, 3) => Samples::F32(img.into_rgb32f().into_raw()),
        (SampleType::F32, _) => Samples::F32(img.into_rgba32f().into_raw()),
    })
}

/// Float samples, `k` per pixel in the file (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA), in
/// the layout of `spp` samples per pixel: alpha dropped, gray replicated, missing alpha 1.
fn relayout_float(src: &[f32], k: usize, spp: usize) -> Vec<f32> {
    if k == spp {
        return src.to_vec();
    }
    let gray = k <= 2;
    let alpha = |p: &[f32]| if k == 2 || k == 4 { p[k - 1] } else { 1.0 };
    let mut out = Vec::with_capacity(src.len() / k * spp);
    for p in src.chunks_exact(k) {
        match (spp, gray) {
            (1, _) => out.push(p[0]),
            (3, true) => out.extend([p[0], p[0], p[0]]),
            (3, false) => out.extend_from_slice(&p[..3]),
            (_, true) => out.extend([p[0], p[0], p[0], alpha(p)]),
            (_, false) => out.extend([p[0], p[1], p[2], alpha(p)]),
        }
    }
    out
}

/// The sample type `image` decodes a colour type into.
fn sample_type(c: ColorType) -> SampleType {
    match c {
        ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16 => SampleType::U16,
        ColorType::Rgb32F | ColorType::Rgba32F => SampleType::F32,
        _ => SampleType::U8,
    }
}

/// Returns the short name of an accepted format, `None` for everything else.
fn format_name(f: ImageFormat) -> Option<&'static str> {
    Some(match f {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => return None,
    })
}

/// Checks header dimensions (pixels) against `limits` before decoding.
fn check_dimensions(w: u32, h: u32, limits: &DecodeLimits) -> Result<(), CodecError> {
    if w == 0 || h == 0 {
        return Err(CodecError::Empty);
    }
    if w > limits.max_width {
        return Err(CodecError::TooLarge {
            what: "width",
            limit: limits.max_width.into(),
            actual: w.into(),
        });
    }
    if h > limits.max_height {
        return Err(CodecError::TooLarge {
            what: "height",
            limit: limits.max_height.into(),
            actual: h.into(),
        });
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(CodecError::TooLarge {
            what: "pixels",
            limit: limits.max_pixels,
            actual: pixels,
        });
    }
    Ok(())
}

/// Maps an `image` error onto [`CodecError`].
///
/// `decoded_bytes` is the decoder's output size when known; a limit error
/// raised before it is known reports `limit + 1` as a lower bound.
fn map_image_error(e: ImageError, limits: &DecodeLimits, decoded_bytes: Option<u64>) -> CodecError {
    match e {
        ImageError::Limits(_) => CodecError::TooLarge {
            what: "decoded_bytes",
            limit: limits.max_alloc_bytes,
            actual: decoded_bytes.unwrap_or_else(|| limits.max_alloc_bytes.saturating_add(1)),
        },
        ImageError::Unsupported(u) => CodecError::Unsupported(u.to_string()),
        other => CodecError::Corrupt(other.to_string()),
    }
}

/// True for source colour types that [`ColorMode::Auto`] keeps as 1 channel.
fn is_gray(c: ColorType) -> bool {
    matches!(
        c,
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    )
}

/// Pillow's ITU-R 601-2 luma transform on one 8-bit RGB pixel.
fn pillow_luma(r: u8, g: u8, b: u8) -> u8 {
    let l = (u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16;
    // The weights sum to 65536, so `l <= 255` always holds.
    u8::try_from(l).unwrap_or(u8::MAX)
}

/// Pillow's integer weights on one 16-bit RGB pixel: `0..=65535`, no bit lost to an 8-bit
/// intermediate.
fn pillow_luma16(r: u16, g: u16, b: u16) -> u16 {
    let l = (u64::from(r) * 19595 + u64::from(g) * 38470 + u64::from(b) * 7471 + 0x8000) >> 16;
    // The weights sum to 65536, so `l <= 65535` always holds.
    u16::try_from(l).unwrap_or(u16::MAX)
}

/// ITU-R 601-2 luma of one float RGB pixel, in f32.
fn float_luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod fidelity_tests;
