//! 32-bit float TIFF read with the `tiff` crate directly: `image` refuses float gray
//! ("color type Unknown(32)"), and one path for every float layout keeps one set of rules.
//!
//! Accepted: `SampleFormat = 3` (IEEE float) with 32 bits per sample, gray, gray+alpha,
//! RGB or RGBA, chunky (interleaved) layout, any compression the `tiff` crate reads
//! (none, LZW, Deflate, PackBits). The values enter exactly as stored. Only the first page
//! is read. The Orientation tag (274) is read like the EXIF one.

use std::io::Cursor;

use image::metadata::Orientation;
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::Tag;
use tiff::{ColorType, TiffError};

use super::{CodecError, DecodeLimits};

/// `SampleFormat` value of IEEE floating point samples.
const IEEE_FP: u16 = 3;

/// True when `bytes` is a TIFF whose first page holds floating-point samples.
pub(crate) fn is_float(bytes: &[u8]) -> bool {
    let Ok(mut d) = Decoder::new(Cursor::new(bytes)) else {
        return false;
    };
    matches!(
        d.find_tag_unsigned_vec::<u16>(Tag::SampleFormat),
        Ok(Some(f)) if f.contains(&IEEE_FP)
    )
}

/// A float TIFF whose header has been read.
pub(crate) struct FloatTiff<'a> {
    dec: Decoder<Cursor<&'a [u8]>>,
    /// Stored width and height.
    pub width: u32,
    pub height: u32,
    /// Samples per pixel in the file (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
    pub samples: usize,
    /// The Orientation tag (1 when absent or invalid).
    pub orientation: Orientation,
}

impl<'a> FloatTiff<'a> {
    /// Reads the header under `limits` (the `tiff` crate's buffers are bounded by the
    /// decoded-bytes budget).
    ///
    /// # Errors
    /// [`CodecError::Unsupported`] for float samples other than 32-bit gray/RGB(A);
    /// [`CodecError::Corrupt`] for a malformed header.
    pub(crate) fn open(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Self, CodecError> {
        let budget = usize::try_from(limits.max_alloc_bytes).unwrap_or(usize::MAX);
        let mut l = Limits::default();
        l.decoding_buffer_size = budget;
        l.intermediate_buffer_size = budget;
        let mut dec = Decoder::new(Cursor::new(bytes))
            .map_err(|e| tiff_error(e, limits))?
            .with_limits(l);
        let (width, height) = dec.dimensions().map_err(|e| tiff_error(e, limits))?;
        let samples = match dec.colortype().map_err(|e| tiff_error(e, limits))? {
            ColorType::Gray(32) => 1,
            ColorType::GrayA(32) => 2,
            ColorType::RGB(32) => 3,
            ColorType::RGBA(32) => 4,
            other => {
                return Err(CodecError::Unsupported(format!(
                    "float TIFF of colour type {other:?}: float samples must be 32-bit gray, gray+alpha, RGB or RGBA"
                )))
            }
        };
        let orientation = dec
            .find_tag_unsigned::<u8>(Tag::Orientation)
            .ok()
            .flatten()
            .and_then(Orientation::from_exif)
            .unwrap_or(Orientation::NoTransforms);
        Ok(Self {
            dec,
            width,
            height,
            samples,
            orientation,
        })
    }

    /// Bytes of the decoded samples (`w · h · samples · 4`).
    pub(crate) fn decoded_bytes(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * self.samples as u64 * 4
    }

    /// Decodes the first page: interleaved `f32`, [`Self::samples`] per pixel.
    ///
    /// # Errors
    /// [`CodecError::TooLarge`] (`decoded_bytes`) over the budget, [`CodecError::Corrupt`]
    /// for truncated data, [`CodecError::Unsupported`] for a layout the crate cannot read.
    pub(crate) fn read(mut self, limits: &DecodeLimits) -> Result<Vec<f32>, CodecError> {
        let total = self.decoded_bytes();
        if total > limits.max_alloc_bytes {
            return Err(CodecError::TooLarge {
                what: "decoded_bytes",
                limit: limits.max_alloc_bytes,
                actual: total,
            });
        }
        match self.dec.read_image().map_err(|e| tiff_error(e, limits))? {
            DecodingResult::F32(v) if v.len() as u64 * 4 == total => Ok(v),
            DecodingResult::F32(v) => Err(CodecError::Corrupt(format!(
                "float TIFF gave {} samples, expected {}",
                v.len(),
                total / 4
            ))),
            _ => Err(CodecError::Unsupported(
                "float TIFF samples must be 32-bit".into(),
            )),
        }
    }
}

/// Maps a `tiff` error onto [`CodecError`].
fn tiff_error(e: TiffError, limits: &DecodeLimits) -> CodecError {
    match e {
        TiffError::LimitsExceeded => CodecError::TooLarge {
            what: "decoded_bytes",
            limit: limits.max_alloc_bytes,
            actual: limits.max_alloc_bytes.saturating_add(1),
        },
        TiffError::UnsupportedError(u) => CodecError::Unsupported(format!("TIFF: {u}")),
        other => CodecError::Corrupt(format!("TIFF: {other}")),
    }
}
