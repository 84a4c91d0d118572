//! Pure image codec layer: turns encoded image bytes into float32 CHW planes
//! and float maps back into PNG / WebP / montage / ZIP bytes (`encode`, `webp`, with the
//! colour rule of `layout`) or raw float32 TIFF (`tiff_out`).
//!
//! Nothing in here knows about HTTP; callers map [`CodecError`] onto their own
//! error responses. Decoding sniffs the format from magic bytes only and checks
//! header dimensions against [`DecodeLimits`] before any pixel buffer is
//! allocated. Encoding normalises each float map independently into 8- or
//! 16-bit pixels (see [`normalize_map`]).

pub mod decode;
pub mod encode;
pub mod layout;
pub mod png_strips;
pub(crate) mod simd;
pub mod tiff_out;
pub mod webp;

pub use decode::{
    decode_image, decode_pixels, probe, ColorMode, DecodeLimits, DecodeOptions, DecodedImage,
    Header, OrientationMode, Pixels, SampleType,
};
pub use encode::{
    encode_montage, encode_montage_webp, encode_png, encode_zip, kept_floats, normalize_map,
    render, zip_rendered, zip_tiffs, Band, BitDepth, Canvas, Grid, MapRange, MapStats, Normalize,
    PngSpeed, Quantizer, Rendered, Strips, Target, WholeMaps, ZipInner, MONTAGE_GAP,
};
pub use layout::{tile_layout, PictureColor, TileLayout};
pub use png_strips::{encode_png_strips, PngRows};
pub use tiff_out::encode_tiff;
pub use webp::encode_webp;

/// Errors produced by the codec layer.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a supported image format (sniffed from magic bytes
    /// only), or the format is recognised but uses a feature the decoder does
    /// not support.
    #[error("unsupported image format: {0}")]
    Unsupported(String),
    /// The format was recognised but decoding failed (truncated or corrupt data).
    #[error("corrupt image data: {0}")]
    Corrupt(String),
    /// An image dimension or size exceeds a limit. `what` names the quantity
    /// (e.g. `"width"`, `"pixels"`, `"decoded_bytes"`), `limit` is the
    /// configured maximum and `actual` the value found.
    #[error("image too large: {what} is {actual}, limit is {limit}")]
    TooLarge {
        /// Which quantity exceeded its limit.
        what: &'static str,
        /// The configured maximum.
        limit: u64,
        /// The value found in the input.
        actual: u64,
    },
    /// The image has zero width or zero height.
    #[error("image has zero width or height")]
    Empty,
    /// Encoding the output failed (invalid shapes, PNG or ZIP writer error).
    #[error("image encoding failed: {0}")]
    Encode(String),
}
