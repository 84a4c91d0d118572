//! Image decoding under small limits: any bytes, never a panic, never more than the limits.
#![no_main]

use convd::codec::{decode_image, ColorMode, DecodeLimits, DecodeOptions, OrientationMode};
use libfuzzer_sys::fuzz_target;

const LIMITS: DecodeLimits = DecodeLimits {
    max_width: 1024,
    max_height: 1024,
    max_pixels: 1 << 18,
    max_alloc_bytes: 16 << 20,
};

fuzz_target!(|data: &[u8]| {
    let (opts, bytes) = match data.split_first() {
        Some((c, rest)) => (
            DecodeOptions {
                color: [ColorMode::Auto, ColorMode::Gray, ColorMode::Rgb, ColorMode::Rgba]
                    [usize::from(*c & 3)],
                orientation: [OrientationMode::Exif, OrientationMode::Ignore]
                    [usize::from(*c >> 2 & 1)],
                scale: 1.0,
            },
            rest,
        ),
        None => return,
    };
    if let Ok(img) = decode_image(bytes, &opts, &LIMITS) {
        assert!((img.width * img.height) as u64 <= LIMITS.max_pixels);
        assert_eq!(img.data.len(), img.channels * img.width * img.height);
    }
});
