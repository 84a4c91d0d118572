use super::*;
use image::{ImageFormat, Luma, LumaA, Rgb, Rgba};

fn opts(color: ColorMode, scale: f32) -> DecodeOptions {
    DecodeOptions {
        color,
        scale,
        ..DecodeOptions::default()
    }
}

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
    let d = decode_image(&bytes, &opts(ColorMode::Auto, 1.0), &limits()).unwrap();
    assert_eq!((d.channels, d.height, d.width, d.format), (3, 2, 2, "png"));
    assert_eq!(
        d.data,
        [255., 0., 0., 10., 0., 255., 0., 20., 0., 0., 255., 30.]
    );
}

#[test]
fn gray_mode_applies_the_pillow_formula_to_rgb_sources() {
    let bytes = encode(&rgb_2x2(), ImageFormat::Bmp);
    let d = decode_image(&bytes, &opts(ColorMode::Gray, 1.0), &limits()).unwrap();
    assert_eq!((d.channels, d.format), (1, "bmp"));
    assert_eq!(d.data, [76., 150., 29., 18.]);
}

#[test]
fn scale_multiplies_every_sample() {
    let bytes = encode(&rgb_2x2(), ImageFormat::Png);
    let d = decode_image(&bytes, &opts(ColorMode::Gray, 1.0 / 255.0), &limits()).unwrap();
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
        let d = decode_image(&bytes, &opts(mode, 1.0), &limits()).unwrap();
        assert_eq!((d.channels, d.height, d.width), (1, 1, 3));
        assert_eq!(d.data, [7., 128., 250.]);
    }
}

#[test]
fn sixteen_bit_gray_keeps_all_sixteen_bits() {
    let img = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(4, 1, |x, _| {
        Luma([[0u16, 257, 32897, 65535][x as usize]])
    }));
    let bytes = encode(&img, ImageFormat::Png);
    let d = decode_image(&bytes, &opts(ColorMode::Auto, 1.0), &limits()).unwrap();
    assert_eq!(d.channels, 1);
    assert_eq!(d.data, [0., 257., 32897., 65535.]);
}

#[test]
fn rgba_mode_keeps_alpha_and_rgb_mode_replicates_gray() {
    let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(1, 1, Rgba([1, 2, 3, 4])));
    let bytes = encode(&img, ImageFormat::Png);
    let d = decode_image(&bytes, &opts(ColorMode::Rgba, 1.0), &limits()).unwrap();
    assert_eq!((d.channels, d.data.as_slice()), (4, &[1., 2., 3., 4.][..]));
    let d = decode_image(&bytes, &opts(ColorMode::Auto, 1.0), &limits()).unwrap();
    assert_eq!((d.channels, d.data.as_slice()), (3, &[1., 2., 3.][..]));

    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(1, 1, Luma([42])));
    let bytes = encode(&gray, ImageFormat::Png);
    let d = decode_image(&bytes, &opts(ColorMode::Rgb, 1.0), &limits()).unwrap();
    assert_eq!((d.channels, d.data.as_slice()), (3, &[42., 42., 42.][..]));
}

#[test]
fn jpeg_is_sniffed_and_decoded_approximately() {
    let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(16, 8, Rgb([200, 100, 50])));
    let bytes = encode(&img, ImageFormat::Jpeg);
    let d = decode_image(&bytes, &opts(ColorMode::Rgb, 1.0), &limits()).unwrap();
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
        let px = decode_pixels(&bytes, &opts(mode, 0.5), &limits()).unwrap();
        let head = probe(&bytes, &opts(mode, 1.0), &limits()).unwrap();
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
    let err = decode_image(
        &bytes[..bytes.len() / 2],
        &opts(ColorMode::Auto, 1.0),
        &limits(),
    );
    assert!(matches!(err, Err(CodecError::Corrupt(_))), "{err:?}");
}

#[test]
fn random_text_is_reported_as_unsupported() {
    let err = decode_image(
        b"hello, this is not an image",
        &opts(ColorMode::Auto, 1.0),
        &limits(),
    );
    assert!(matches!(err, Err(CodecError::Unsupported(_))), "{err:?}");
    let err = decode_image(b"", &opts(ColorMode::Auto, 1.0), &limits());
    assert!(matches!(err, Err(CodecError::Unsupported(_))), "{err:?}");
}

#[test]
fn recognised_but_disabled_formats_are_unsupported() {
    // A PNM (P5) header: known to `image`, not accepted here.
    let err = decode_image(
        b"P5\n2 2\n255\n\0\0\0\0",
        &opts(ColorMode::Auto, 1.0),
        &limits(),
    );
    assert!(matches!(err, Err(CodecError::Unsupported(_))), "{err:?}");
}

#[test]
fn huge_ihdr_is_rejected_from_the_header_without_decoding() {
    let bytes = png_with_header(100_000, 100_000);
    let err = decode_image(&bytes, &opts(ColorMode::Auto, 1.0), &limits()).unwrap_err();
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
    let err = decode_image(&bytes, &opts(ColorMode::Auto, 1.0), &limits()).unwrap_err();
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
    let err = decode_image(&bytes, &opts(ColorMode::Auto, 1.0), &tight).unwrap_err();
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
        let d = decode_image(&bytes, &opts(ColorMode::Rgb, 1.0), &limits()).unwrap();
        assert_eq!((d.format, d.channels, d.height, d.width), (name, 3, 2, 2));
    }
}
