//! Decoding of encoded image bytes (PNG, JPEG, WebP, GIF, BMP, TIFF) into
//! float32 CHW planes.
//!
//! The format is sniffed from the leading magic bytes only; file names and
//! content types are never consulted. Header dimensions are checked against
//! [`DecodeLimits`] before any pixel buffer is allocated, and the decoder
//! itself runs under an [`image::Limits`] budget as a second guard. Pixel
//! values are 8-bit intensities (16-bit and float sources are reduced to 8 bit
//! the way `image`'s `to_rgb8` / `to_luma8` do) multiplied by a caller-chosen
//! scale.

use std::io::Cursor;

use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use rayon::prelude::*;

use super::CodecError;

/// Requested channel layout of the decoded planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// Grayscale sources (L, LA, L16, LA16) give 1 channel, everything else
    /// 3 channels RGB. Alpha is always dropped.
    #[default]
    Auto,
    /// 1 channel, identical to Pillow's `convert('L')`:
    /// `(R*19595 + G*38470 + B*7471 + 0x8000) >> 16` on 8-bit RGB; 8-bit
    /// grayscale sources are passed through unchanged.
    Gray,
    /// 3 channels R, G, B (grayscale is replicated, alpha dropped).
    Rgb,
    /// 4 channels R, G, B, A (opaque sources get A = 255).
    Rgba,
}

/// Size limits enforced while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Maximum image width in pixels.
    pub max_width: u32,
    /// Maximum image height in pixels.
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
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels of the float planes the image gives in the requested [`ColorMode`].
    pub channels: usize,
    /// Bytes of the decoded samples the image is held in while it is convolved.
    pub decoded_bytes: u64,
    /// Sniffed source format, e.g. `"png"`.
    pub format: &'static str,
}

/// A decoded image, held as the 8-bit samples the decoder gave, until its rows are turned
/// into float planes ([`Pixels::rows`]).
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
    samples: Vec<u8>,
    samples_per_pixel: usize,
    /// Pillow's luma of RGB samples into one channel.
    luma: bool,
    /// `v as f32 · scale` for every 8-bit value.
    lut: [f32; 256],
}

impl Pixels {
    /// Bytes held by the samples.
    pub fn bytes(&self) -> usize {
        self.samples.len()
    }

    /// Rows `rows` of every channel as float planes: `out` is `[C, rows.len(), W]`,
    /// row-major, each value the 8-bit sample times the scale.
    ///
    /// # Panics
    /// If `rows` is beyond the image or `out.len() != C · rows.len() · W`.
    pub fn rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let (w, k) = (self.width, self.samples_per_pixel);
        let n = rows.len() * w;
        assert_eq!(out.len(), self.channels * n, "planes of {rows:?}");
        let src = &self.samples[rows.start * w * k..rows.end * w * k];
        let lut = &self.lut;
        if self.luma {
            for (o, p) in out.iter_mut().zip(src.chunks_exact(3)) {
                *o = lut[usize::from(pillow_luma(p[0], p[1], p[2]))];
            }
        } else if k == 1 {
            for (o, &v) in out.iter_mut().zip(src) {
                *o = lut[usize::from(v)];
            }
        } else {
            for (c, plane) in out.chunks_exact_mut(n).enumerate() {
                for (o, p) in plane.iter_mut().zip(src.chunks_exact(k)) {
                    *o = lut[usize::from(p[c])];
                }
            }
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

/// Pixels per parallel task of the conversion to floats.
const CHUNK: usize = 1 << 16;

/// Reads the header of `bytes`: format, size and the channels `color` gives, checked
/// against `limits`; nothing is decoded.
///
/// # Errors
/// As [`decode_pixels`], except [`CodecError::Corrupt`] for data past the header.
pub fn probe(bytes: &[u8], color: ColorMode, limits: &DecodeLimits) -> Result<Header, CodecError> {
    let (decoder, format) = open(bytes, limits)?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, limits)?;
    let spp = samples_per_pixel(decoder.color_type(), color);
    let channels = planes_of(decoder.color_type(), color);
    Ok(Header {
        width: w as usize,
        height: h as usize,
        channels,
        decoded_bytes: u64::from(w) * u64::from(h) * spp as u64,
        format,
    })
}

/// Decodes `bytes` into [`Pixels`]: the samples as the decoder gives them (converted to
/// the 8-bit layout `color` needs), to be turned into float planes row by row.
///
/// Each float value is the 8-bit sample (0..=255) multiplied by `scale` (use 1.0 for
/// 0..255, `1.0 / 255.0` for 0..1). Animated GIFs yield their first frame.
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
    color: ColorMode,
    scale: f32,
    limits: &DecodeLimits,
) -> Result<Pixels, CodecError> {
    let (mut decoder, format) = open(bytes, limits)?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, limits)?;

    // Second guard: the decoder's own limits, with the output buffer reserved
    // first exactly as `ImageReader::decode` does.
    let total = decoder.total_bytes();
    let mut full = image::Limits::no_limits();
    full.max_image_width = Some(limits.max_width);
    full.max_image_height = Some(limits.max_height);
    full.max_alloc = Some(limits.max_alloc_bytes);
    full.reserve(total)
        .map_err(|e| map_image_error(e, limits, Some(total)))?;
    decoder
        .set_limits(full)
        .map_err(|e| map_image_error(e, limits, Some(total)))?;

    let source = decoder.color_type();
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, limits, Some(total)))?;
    let channels = planes_of(source, color);
    let (samples, samples_per_pixel, luma) = match color {
        ColorMode::Auto | ColorMode::Gray if is_gray(source) => {
            (img.into_luma8().into_raw(), 1, false)
        }
        ColorMode::Gray => (img.into_rgb8().into_raw(), 3, true),
        ColorMode::Auto | ColorMode::Rgb => (img.into_rgb8().into_raw(), 3, false),
        ColorMode::Rgba => (img.into_rgba8().into_raw(), 4, false),
    };
    Ok(Pixels {
        width: w as usize,
        height: h as usize,
        channels,
        format,
        samples,
        samples_per_pixel,
        luma,
        lut: std::array::from_fn(|v| v as f32 * scale),
    })
}

/// Decodes `bytes` into float32 CHW planes: [`decode_pixels`], then every row.
///
/// # Errors
/// As [`decode_pixels`].
pub fn decode_image(
    bytes: &[u8],
    color: ColorMode,
    scale: f32,
    limits: &DecodeLimits,
) -> Result<DecodedImage, CodecError> {
    let px = decode_pixels(bytes, color, scale, limits)?;
    Ok(DecodedImage {
        channels: px.channels,
        height: px.height,
        width: px.width,
        data: px.planes(),
        format: px.format,
    })
}

/// The decoder for `bytes`, its header read under the allocation budget only (so that the
/// dimensions can be read and reported precisely by [`check_dimensions`]).
fn open<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<(Box<dyn ImageDecoder + 'a>, &'static str), CodecError> {
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
    let mut alloc_only = image::Limits::no_limits();
    alloc_only.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = reader;
    reader.limits(alloc_only);
    let decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, limits, None))?;
    Ok((Box::new(decoder), format))
}

/// Channels of the float planes a `source` image gives in mode `color`.
fn planes_of(source: ColorType, color: ColorMode) -> usize {
    match color {
        ColorMode::Auto if is_gray(source) => 1,
        ColorMode::Gray => 1,
        ColorMode::Auto | ColorMode::Rgb => 3,
        ColorMode::Rgba => 4,
    }
}

/// 8-bit samples per pixel [`decode_pixels`] holds for a `source` image in mode `color`.
fn samples_per_pixel(source: ColorType, color: ColorMode) -> usize {
    match color {
        ColorMode::Auto | ColorMode::Gray if is_gray(source) => 1,
        ColorMode::Gray | ColorMode::Auto | ColorMode::Rgb => 3,
        ColorMode::Rgba => 4,
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

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Luma, LumaA, Rgb, Rgba};

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_width: 8192,
            max_height: 8192,
            max_pixels: 16 << 20,
            max_alloc_bytes: 256 << 20,
        }
    }

    fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, fmt).expect("test image encodes");
        out.into_inner()
    }

    fn rgb_2x2() -> DynamicImage {
        let px = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(2, 2, |x, y| {
            Rgb(px[(y * 2 + x) as usize])
        }))
    }

    fn chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut c = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(body);
        let mut crc_in = kind.to_vec();
        crc_in.extend_from_slice(body);
        c.extend_from_slice(&crc32fast::hash(&crc_in).to_be_bytes());
        c
    }

    /// A PNG whose IHDR declares `w`×`h` 8-bit RGB, followed by a tiny IDAT.
    fn png_with_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    #[test]
    fn crc32_helper_matches_the_known_iend_crc() {
        assert_eq!(chunk(b"IEND", &[])[8..], [0xAE, 0x42, 0x60, 0x82]);
    }

    #[test]
    fn pillow_luma_matches_hand_computed_pixels() {
        assert_eq!(pillow_luma(0, 0, 0), 0);
        assert_eq!(pillow_luma(255, 255, 255), 255);
        // (255*19595 + 32768) >> 16 = 5029493 >> 16 = 76
        assert_eq!(pillow_luma(255, 0, 0), 76);
        // (255*38470 + 32768) >> 16 = 9842618 >> 16 = 150
        assert_eq!(pillow_luma(0, 255, 0), 150);
        // (255*7471 + 32768) >> 16 = 1937873 >> 16 = 29
        assert_eq!(pillow_luma(0, 0, 255), 29);
        // (10*19595 + 20*38470 + 30*7471 + 32768) >> 16 = 1221248 >> 16 = 18
        assert_eq!(pillow_luma(10, 20, 30), 18);
    }

    #[test]
    fn rgb_png_decodes_to_three_chw_planes_in_auto_mode() {
        let bytes = encode(&rgb_2x2(), ImageFormat::Png);
        let d = decode_image(&bytes, ColorMode::Auto, 1.0, &limits()).unwrap();
        assert_eq!((d.channels, d.height, d.width, d.format), (3, 2, 2, "png"));
        assert_eq!(
            d.data,
            [255., 0., 0., 10., 0., 255., 0., 20., 0., 0., 255., 30.]
        );
    }

    #[test]
    fn gray_mode_applies_the_pillow_formula_to_rgb_sources() {
        let bytes = encode(&rgb_2x2(), ImageFormat::Bmp);
        let d = decode_image(&bytes, ColorMode::Gray, 1.0, &limits()).unwrap();
        assert_eq!((d.channels, d.format), (1, "bmp"));
        assert_eq!(d.data, [76., 150., 29., 18.]);
    }

    #[test]
    fn scale_multiplies_every_sample() {
        let bytes = encode(&rgb_2x2(), ImageFormat::Png);
        let d = decode_image(&bytes, ColorMode::Gray, 1.0 / 255.0, &limits()).unwrap();
        assert_eq!(d.data[0], 76.0 * (1.0 / 255.0));
        assert!(d.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn grayscale_alpha_source_stays_single_channel_and_drops_alpha() {
        let img = DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(3, 1, |x, _| {
            LumaA([[7, 128, 250][x as usize], 9])
        }));
        let bytes = encode(&img, ImageFormat::Png);
        for mode in [ColorMode::Auto, ColorMode::Gray] {
            let d = decode_image(&bytes, mode, 1.0, &limits()).unwrap();
            assert_eq!((d.channels, d.height, d.width), (1, 1, 3));
            assert_eq!(d.data, [7., 128., 250.]);
        }
    }

    #[test]
    fn sixteen_bit_gray_is_reduced_to_eight_bit_like_to_luma8() {
        let img = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(4, 1, |x, _| {
            Luma([[0u16, 257, 32896, 65535][x as usize]])
        }));
        let expected: Vec<f32> = img.to_luma8().pixels().map(|p| f32::from(p[0])).collect();
        let bytes = encode(&img, ImageFormat::Png);
        let d = decode_image(&bytes, ColorMode::Auto, 1.0, &limits()).unwrap();
        assert_eq!(d.channels, 1);
        assert_eq!(d.data, expected);
        assert_eq!(d.data, [0., 1., 128., 255.]);
    }

    #[test]
    fn rgba_mode_keeps_alpha_and_rgb_mode_replicates_gray() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(1, 1, Rgba([1, 2, 3, 4])));
        let bytes = encode(&img, ImageFormat::Png);
        let d = decode_image(&bytes, ColorMode::Rgba, 1.0, &limits()).unwrap();
        assert_eq!((d.channels, d.data.as_slice()), (4, &[1., 2., 3., 4.][..]));
        let d = decode_image(&bytes, ColorMode::Auto, 1.0, &limits()).unwrap();
        assert_eq!((d.channels, d.data.as_slice()), (3, &[1., 2., 3.][..]));

        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(1, 1, Luma([42])));
        let bytes = encode(&gray, ImageFormat::Png);
        let d = decode_image(&bytes, ColorMode::Rgb, 1.0, &limits()).unwrap();
        assert_eq!((d.channels, d.data.as_slice()), (3, &[42., 42., 42.][..]));
    }

    #[test]
    fn jpeg_is_sniffed_and_decoded_approximately() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(16, 8, Rgb([200, 100, 50])));
        let bytes = encode(&img, ImageFormat::Jpeg);
        let d = decode_image(&bytes, ColorMode::Rgb, 1.0, &limits()).unwrap();
        assert_eq!(
            (d.channels, d.height, d.width, d.format),
            (3, 8, 16, "jpeg")
        );
        let hw = 16 * 8;
        for (c, want) in [200.0f32, 100.0, 50.0].into_iter().enumerate() {
            assert!(d.data[c * hw..(c + 1) * hw]
                .iter()
                .all(|v| (v - want).abs() <= 3.0));
        }
    }

    #[test]
    fn rows_of_any_band_are_the_whole_planes_rows_and_the_header_says_the_same() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(5, 7, |x, y| {
            Rgb([(x * 40) as u8, (y * 30) as u8, (x * y) as u8])
        }));
        let bytes = encode(&img, ImageFormat::Png);
        for mode in [
            ColorMode::Auto,
            ColorMode::Gray,
            ColorMode::Rgb,
            ColorMode::Rgba,
        ] {
            let px = decode_pixels(&bytes, mode, 0.5, &limits()).unwrap();
            let head = probe(&bytes, mode, &limits()).unwrap();
            assert_eq!(
                (head.width, head.height, head.channels, head.format),
                (5, 7, px.channels, "png")
            );
            assert_eq!(head.decoded_bytes, px.bytes() as u64);
            let whole = px.planes();
            for (a, b) in [(0, 7), (0, 1), (2, 5), (6, 7)] {
                let mut out = vec![0.0; px.channels * (b - a) * 5];
                px.rows(a..b, &mut out);
                for c in 0..px.channels {
                    assert_eq!(
                        out[c * (b - a) * 5..(c + 1) * (b - a) * 5],
                        whole[c * 35 + a * 5..c * 35 + b * 5],
                        "{mode:?} rows {a}..{b} channel {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_png_is_reported_as_corrupt() {
        let bytes = encode(&rgb_2x2(), ImageFormat::Png);
        let err = decode_image(&bytes[..bytes.len() / 2], ColorMode::Auto, 1.0, &limits());
        assert!(matches!(err, Err(CodecError::Corrupt(_))), "{err:?}");
    }

    #[test]
    fn random_text_is_reported_as_unsupported() {
        let err = decode_image(
            b"hello, this is not an image",
            ColorMode::Auto,
            1.0,
            &limits(),
        );
        assert!(matches!(err, Err(CodecError::Unsupported(_))), "{err:?}");
        let err = decode_image(b"", ColorMode::Auto, 1.0, &limits());
        assert!(matches!(err, Err(CodecError::Unsupported(_))), "{err:?}");
    }

    #[test]
    fn recognised_but_disabled_formats_are_unsupported() {
        // A PNM (P5) header: known to `image`, not accepted here.
        let err = decode_image(b"P5\n2 2\n255\n\0\0\0\0", ColorMode::Auto, 1.0, &limits());
        assert!(matches!(err, Err(CodecError::Unsupported(_))), "{err:?}");
    }

    #[test]
    fn huge_ihdr_is_rejected_from_the_header_without_decoding() {
        let bytes = png_with_header(100_000, 100_000);
        let err = decode_image(&bytes, ColorMode::Auto, 1.0, &limits()).unwrap_err();
        match err {
            CodecError::TooLarge {
                what,
                limit,
                actual,
            } => {
                assert_eq!((what, limit, actual), ("width", 8192, 100_000));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn pixel_count_limit_reports_the_product() {
        let bytes = png_with_header(5000, 5000);
        let err = decode_image(&bytes, ColorMode::Auto, 1.0, &limits()).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooLarge { what: "pixels", limit, actual: 25_000_000 } if limit == 16 << 20
            ),
            "{err:?}"
        );
    }

    #[test]
    fn zero_width_or_height_is_empty() {
        assert!(matches!(
            check_dimensions(0, 5, &limits()),
            Err(CodecError::Empty)
        ));
        assert!(matches!(
            check_dimensions(5, 0, &limits()),
            Err(CodecError::Empty)
        ));
        assert!(check_dimensions(8192, 2048, &limits()).is_ok());
    }

    #[test]
    fn allocation_limit_is_enforced_as_a_second_guard() {
        let bytes = encode(&rgb_2x2(), ImageFormat::Png);
        let tight = DecodeLimits {
            max_alloc_bytes: 4,
            ..limits()
        };
        let err = decode_image(&bytes, ColorMode::Auto, 1.0, &tight).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn gif_first_frame_and_tiff_and_webp_are_accepted() {
        let img = rgb_2x2();
        for (fmt, name) in [
            (ImageFormat::Gif, "gif"),
            (ImageFormat::Tiff, "tiff"),
            (ImageFormat::WebP, "webp"),
        ] {
            let bytes = encode(&img, fmt);
            let d = decode_image(&bytes, ColorMode::Rgb, 1.0, &limits()).unwrap();
            assert_eq!((d.format, d.channels, d.height, d.width), (name, 3, 2, 2));
        }
    }
}
