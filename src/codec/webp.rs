//! Lossless WebP of already-quantised 8-bit pixels (the samples the 8-bit PNG holds).
//!
//! VP8L (lossless) keeps every sample: decoding the WebP gives back exactly the PNG's
//! pixels. WebP has no gray colour type: a gray picture is stored as RGB with R = G = B
//! (the `image-webp` encoder does this), so a decoder reads gray back as RGB.

use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::CodecError;

/// Largest side of a WebP picture (the format stores `side - 1` in 14 bits).
pub const WEBP_MAX_SIDE: usize = 16_383;

/// Encodes interleaved 8-bit `samples` (`channels` per pixel: 1 gray, 2 gray+alpha,
/// 3 RGB, 4 RGBA; `width × height`, row-major) as a lossless WebP.
///
/// # Errors
/// [`CodecError::Empty`] for a zero side; [`CodecError::TooLarge`] (`webp_width`,
/// `webp_height`) for a side over [`WEBP_MAX_SIDE`]; [`CodecError::Encode`] for a channel
/// count other than 1–4, a sample count that is not `width · height · channels`, or an
/// encoder failure.
pub fn encode_webp(
    samples: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> Result<Vec<u8>, CodecError> {
    if width == 0 || height == 0 {
        return Err(CodecError::Empty);
    }
    for (what, v) in [("webp_width", width), ("webp_height", height)] {
        if v > WEBP_MAX_SIDE {
            return Err(CodecError::TooLarge {
                what,
                limit: WEBP_MAX_SIDE as u64,
                actual: v as u64,
            });
        }
    }
    let color = match channels {
        1 => ExtendedColorType::L8,
        2 => ExtendedColorType::La8,
        3 => ExtendedColorType::Rgb8,
        4 => ExtendedColorType::Rgba8,
        k => return Err(CodecError::Encode(format!("webp: {k} channels"))),
    };
    if samples.len() != width * height * channels {
        return Err(CodecError::Encode(format!(
            "webp: {} samples for {width}x{height}x{channels}",
            samples.len()
        )));
    }
    let mut out = Vec::with_capacity(samples.len() / 4 + 64);
    // The sides fit in u32: both are <= WEBP_MAX_SIDE.
    WebPEncoder::new_lossless(&mut out)
        .write_image(samples, width as u32, height as u32, color)
        .map_err(|e| CodecError::Encode(format!("webp: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> image::DynamicImage {
        image::load_from_memory_with_format(bytes, image::ImageFormat::WebP).unwrap()
    }

    #[test]
    fn rgb_and_rgba_round_trip_exactly() {
        let rgb: Vec<u8> = (0..7 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let d = decode(&encode_webp(&rgb, 7, 5, 3).unwrap());
        assert_eq!(d.to_rgb8().into_raw(), rgb);
        let rgba: Vec<u8> = (0..3 * 2 * 4).map(|i| (i * 11 % 256) as u8).collect();
        let d = decode(&encode_webp(&rgba, 3, 2, 4).unwrap());
        assert_eq!(d.to_rgba8().into_raw(), rgba);
    }

    #[test]
    fn gray_comes_back_as_equal_rgb_samples() {
        let gray: Vec<u8> = (0..=255).collect();
        let d = decode(&encode_webp(&gray, 16, 16, 1).unwrap()).to_rgb8();
        for (p, &g) in d.pixels().zip(&gray) {
            assert_eq!(p.0, [g, g, g]);
        }
    }

    #[test]
    fn a_side_over_16383_and_a_wrong_count_are_refused() {
        let err = encode_webp(&[0; 16_384], 16_384, 1, 1).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooLarge {
                    what: "webp_width",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = encode_webp(&[0; 5], 2, 2, 1).unwrap_err();
        assert!(matches!(err, CodecError::Encode(_)), "{err:?}");
        assert!(matches!(encode_webp(&[], 0, 2, 1), Err(CodecError::Empty)));
    }
}
