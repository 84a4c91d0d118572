//! Issue #13 on the way in: EXIF orientation (all 8 values, JPEG, PNG eXIf, TIFF), 16-bit
//! PNG and TIFF kept whole, float32 TIFF entered exactly, and every limit on each.
//! The files are made by other encoders (`image`'s JPEG, PNG and TIFF writers, the `tiff`
//! crate's float writer), with the EXIF block written by hand.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Luma, Rgb};
use tiff::encoder::colortype::{Gray32Float, RGB32Float};
use tiff::encoder::compression::DeflateLevel;
use tiff::encoder::{Compression, TiffEncoder};
use tiff::tags::Tag;

use super::*;

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_width: 8192,
        max_height: 8192,
        max_pixels: 16 << 20,
        max_alloc_bytes: 256 << 20,
    }
}

fn opts(color: ColorMode, orientation: OrientationMode) -> DecodeOptions {
    DecodeOptions {
        color,
        orientation,
        scale: 1.0,
    }
}

fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).expect("test image encodes");
    out.into_inner()
}

/// A big-endian TIFF block holding one IFD entry: Orientation = `o`.
fn exif_tiff(o: u16) -> Vec<u8> {
    let mut t = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    t.extend_from_slice(&o.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    t
}

/// `jpeg` with an APP1 Exif segment (Orientation = `o`) right after SOI, as cameras write.
pub(crate) fn jpeg_with_orientation(jpeg: &[u8], o: u16) -> Vec<u8> {
    let mut body = b"Exif\0\0".to_vec();
    body.extend(exif_tiff(o));
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&u16::try_from(body.len() + 2).unwrap().to_be_bytes());
    out.extend(body);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// `png` with an eXIf chunk (Orientation = `o`) before its first IDAT.
pub(crate) fn png_with_orientation(png: &[u8], o: u16) -> Vec<u8> {
    let body = exif_tiff(o);
    let mut chunk = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    chunk.extend_from_slice(b"eXIf");
    chunk.extend_from_slice(&body);
    let mut crc_in = b"eXIf".to_vec();
    crc_in.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32fast::hash(&crc_in).to_be_bytes());
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap() - 4;
    [&png[..idat], &chunk, &png[idat..]].concat()
}

/// A float32 TIFF (`tiff` crate), `k` = 1 (gray) or 3 (RGB), with an Orientation tag.
pub(crate) fn float_tiff(w: u32, h: u32, k: usize, data: &[f32], orientation: u16) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut out)
        .unwrap()
        .with_compression(Compression::Deflate(DeflateLevel::Fast));
    if k == 1 {
        let mut img = enc.new_image::<Gray32Float>(w, h).unwrap();
        img.encoder()
            .write_tag(Tag::Orientation, orientation)
            .unwrap();
        img.write_data(data).unwrap();
    } else {
        let mut img = enc.new_image::<RGB32Float>(w, h).unwrap();
        img.encoder()
            .write_tag(Tag::Orientation, orientation)
            .unwrap();
        img.write_data(data).unwrap();
    }
    out.into_inner()
}

/// A 48×24 (w×h) picture, a bright 8×8 block in the stored top-left corner.
fn marked() -> DynamicImage {
    DynamicImage::ImageRgb8(image::RgbImage::from_fn(48, 24, |x, y| {
        if x < 8 && y < 8 {
            Rgb([250, 250, 250])
        } else {
            Rgb([20, 20, 20])
        }
    }))
}

/// Mean of the 4×4 block at the corner `(right, bottom)` of a 1-channel decode.
fn corner(d: &DecodedImage, right: bool, bottom: bool) -> f32 {
    let x0 = if right { d.width - 4 } else { 0 };
    let y0 = if bottom { d.height - 4 } else { 0 };
    let mut s = 0.0;
    for y in y0..y0 + 4 {
        for x in x0..x0 + 4 {
            s += d.data[y * d.width + x];
        }
    }
    s / 16.0
}

#[test]
fn jpeg_of_each_exif_orientation_comes_upright_like_apply_orientation() {
    let jpeg = encode(&marked(), ImageFormat::Jpeg);
    for o in 1..=8u16 {
        let bytes = jpeg_with_orientation(&jpeg, o);
        let up = decode_image(
            &bytes,
            &opts(ColorMode::Gray, OrientationMode::Exif),
            &limits(),
        )
        .unwrap();
        // Oracle: `image`'s own decode turned by `apply_orientation`.
        let mut want = image::load_from_memory(&bytes).unwrap();
        want.apply_orientation(Orientation::from_exif(o as u8).unwrap());
        assert_eq!(
            (up.width as u32, up.height as u32),
            (want.width(), want.height())
        );
        let stored = decode_image(
            &bytes,
            &opts(ColorMode::Gray, OrientationMode::Ignore),
            &limits(),
        )
        .unwrap();
        assert_eq!((stored.width, stored.height), (48, 24), "ignore keeps {o}");
        let turned = orient::orient(stored.data.clone(), 48, 24, 1, want_orientation(o));
        assert_eq!(up.data, turned, "orientation {o}");
        // Where the stored top-left block ends up, per the EXIF table.
        let (right, bottom) = match o {
            1 | 5 => (false, false),
            2 | 6 => (true, false),
            3 | 7 => (true, true),
            _ => (false, true),
        };
        assert!(corner(&up, right, bottom) > 200.0, "orientation {o}");
    }
}

fn want_orientation(o: u16) -> Orientation {
    Orientation::from_exif(o as u8).unwrap()
}

#[test]
fn orientation_six_jpeg_24_by_48_is_48_by_24_upright_and_probe_says_so() {
    let bytes = jpeg_with_orientation(&encode(&marked(), ImageFormat::Jpeg), 6);
    let o = opts(ColorMode::Auto, OrientationMode::Exif);
    let head = probe(&bytes, &o, &limits()).unwrap();
    let px = decode_pixels(&bytes, &o, &limits()).unwrap();
    assert_eq!((head.width, head.height), (24, 48));
    assert_eq!((px.width, px.height), (24, 48));
    assert_eq!(head.decoded_bytes, px.bytes() as u64);
    let ignored = probe(
        &bytes,
        &opts(ColorMode::Auto, OrientationMode::Ignore),
        &limits(),
    );
    assert_eq!((ignored.unwrap().width, 24), (48, 24));
}

#[test]
fn png_exif_and_tiff_orientation_tags_are_applied_too() {
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(3, 2, |x, y| {
        Luma([(y * 3 + x) as u8])
    }));
    let png = png_with_orientation(&encode(&gray, ImageFormat::Png), 6);
    let d = decode_image(&png, &DecodeOptions::default(), &limits()).unwrap();
    // Stored [[0,1,2],[3,4,5]] turned clockwise: [[3,0],[4,1],[5,2]].
    assert_eq!((d.width, d.height), (2, 3));
    assert_eq!(d.data, [3., 0., 4., 1., 5., 2.]);

    let tif = float_tiff(3, 2, 1, &[0., 1., 2., 3., 4., 5.], 8);
    let d = decode_image(&tif, &DecodeOptions::default(), &limits()).unwrap();
    // Orientation 8 (counter-clockwise): [[2,5],[1,4],[0,3]].
    assert_eq!(d.data, [2., 5., 1., 4., 0., 3.]);
    let d = decode_image(
        &tif,
        &opts(ColorMode::Auto, OrientationMode::Ignore),
        &limits(),
    )
    .unwrap();
    assert_eq!(d.data, [0., 1., 2., 3., 4., 5.]);
}

#[test]
fn sixteen_bit_png_and_tiff_keep_2048_distinct_values_gray_and_rgb() {
    let (w, h) = (64u32, 32u32);
    let v = |x: u32, y: u32| ((y * w + x) * 31 + 7) as u16; // 2048 distinct, odd values
    let gray = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(w, h, |x, y| Luma([v(x, y)])));
    let rgb = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([v(x, y), 65535 - v(x, y), v(x, y) / 3])
    }));
    for fmt in [ImageFormat::Png, ImageFormat::Tiff] {
        let d = decode_image(&encode(&gray, fmt), &DecodeOptions::default(), &limits()).unwrap();
        let want: Vec<f32> = gray
            .as_luma16()
            .unwrap()
            .iter()
            .map(|&s| f32::from(s))
            .collect();
        assert_eq!(d.data, want, "{fmt:?} gray");
        let mut distinct = d.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 2048);

        let bytes = encode(&rgb, fmt);
        let px = decode_pixels(&bytes, &DecodeOptions::default(), &limits()).unwrap();
        assert_eq!(px.sample(), SampleType::U16);
        let d = px.planes();
        let hw = (w * h) as usize;
        for (i, p) in rgb.as_rgb16().unwrap().pixels().enumerate() {
            for c in 0..3 {
                assert_eq!(d[c * hw + i], f32::from(p[c]), "{fmt:?} rgb");
            }
        }
        let head = probe(&bytes, &DecodeOptions::default(), &limits()).unwrap();
        assert_eq!(head.decoded_bytes, px.bytes() as u64);
        assert_eq!(head.decoded_bytes, u64::from(w * h) * 3 * 2);
        assert_eq!(head.sample, SampleType::U16);
    }
}

#[test]
fn gray_of_sixteen_bit_rgb_is_pillows_weights_on_sixteen_bits() {
    let rgb = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(2, 1, |x, _| {
        [Rgb([65535u16, 0, 0]), Rgb([1000, 2000, 3000])][x as usize]
    }));
    let d = decode_image(
        &encode(&rgb, ImageFormat::Png),
        &opts(ColorMode::Gray, OrientationMode::Exif),
        &limits(),
    )
    .unwrap();
    // (65535·19595 + 32768) >> 16 = 19595; (1000·19595 + 2000·38470 + 3000·7471 + 32768) >> 16 = 1815
    assert_eq!(d.data, [19595., 1815.]);
    assert_eq!(pillow_luma16(65535, 65535, 65535), 65535);
}

#[test]
fn rgba_of_sixteen_bit_rgb_is_opaque_at_65535_and_scale_applies() {
    let rgb = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(1, 1, Rgb([1, 2, 65535])));
    let o = DecodeOptions {
        color: ColorMode::Rgba,
        scale: 1.0 / 65535.0,
        ..DecodeOptions::default()
    };
    let d = decode_image(&encode(&rgb, ImageFormat::Png), &o, &limits()).unwrap();
    assert_eq!(d.data, [1.0 / 65535.0, 2.0 / 65535.0, 1.0, 1.0]);
}

#[test]
fn float_tiff_gray_and_rgb_enter_exactly_negative_and_fractional_values_included() {
    let gray: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.1 + 1e-7).collect();
    let d = decode_image(
        &float_tiff(4, 3, 1, &gray, 1),
        &DecodeOptions::default(),
        &limits(),
    )
    .unwrap();
    assert_eq!((d.channels, d.width, d.height, d.format), (1, 4, 3, "tiff"));
    assert_eq!(
        d.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        gray.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    let rgb: Vec<f32> = (0..3 * 6).map(|i| -1000.25 + i as f32 * 123.456).collect();
    let bytes = float_tiff(3, 2, 3, &rgb, 1);
    let px = decode_pixels(&bytes, &DecodeOptions::default(), &limits()).unwrap();
    assert_eq!((px.channels, px.sample()), (3, SampleType::F32));
    let d = px.planes();
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            assert_eq!(d[c * 6 + i].to_bits(), p[c].to_bits());
        }
    }
    let head = probe(&bytes, &DecodeOptions::default(), &limits()).unwrap();
    assert_eq!((head.decoded_bytes, px.bytes()), (6 * 3 * 4, 6 * 3 * 4));

    // Gray of float RGB: 0.299 R + 0.587 G + 0.114 B in f32; RGB of float gray replicates.
    let g = decode_image(
        &bytes,
        &opts(ColorMode::Gray, OrientationMode::Exif),
        &limits(),
    )
    .unwrap();
    assert_eq!(g.data[0], float_luma(rgb[0], rgb[1], rgb[2]));
    let r = decode_image(
        &float_tiff(4, 3, 1, &gray, 1),
        &opts(ColorMode::Rgba, OrientationMode::Exif),
        &limits(),
    )
    .unwrap();
    assert_eq!((r.data[0], r.data[12], r.data[36]), (gray[0], gray[0], 1.0));
}

#[test]
fn band_rows_equal_the_whole_planes_for_sixteen_bit_and_float() {
    let g16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(5, 7, |x, y| {
        Rgb([(x * 9000) as u16, (y * 7000) as u16, (x * y * 1000) as u16])
    }));
    let f: Vec<f32> = (0..35 * 3).map(|i| i as f32 * -0.37).collect();
    for bytes in [encode(&g16, ImageFormat::Png), float_tiff(5, 7, 3, &f, 6)] {
        for color in [ColorMode::Auto, ColorMode::Gray, ColorMode::Rgba] {
            let px = decode_pixels(&bytes, &opts(color, OrientationMode::Exif), &limits()).unwrap();
            let (w, h) = (px.width, px.height);
            let whole = px.planes();
            let mut out = vec![0.0; px.channels * 2 * w];
            px.rows(2..4, &mut out);
            for c in 0..px.channels {
                assert_eq!(
                    out[c * 2 * w..(c + 1) * 2 * w],
                    whole[c * w * h + 2 * w..c * w * h + 4 * w]
                );
            }
        }
    }
}

fn too_large(r: Result<DecodedImage, CodecError>) -> &'static str {
    match r {
        Err(CodecError::TooLarge { what, .. }) => what,
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn every_limit_holds_for_sixteen_bit_png() {
    let img = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(1000, 500, Luma([7u16])));
    let bytes = encode(&img, ImageFormat::Png);
    assert!(bytes.len() < 10_000, "a small file that decodes big");
    let o = DecodeOptions::default();
    let cap = |f: fn(&mut DecodeLimits)| {
        let mut l = limits();
        f(&mut l);
        l
    };
    assert_eq!(
        too_large(decode_image(&bytes, &o, &cap(|l| l.max_width = 999))),
        "width"
    );
    assert_eq!(
        too_large(decode_image(&bytes, &o, &cap(|l| l.max_height = 499))),
        "height"
    );
    assert_eq!(
        too_large(decode_image(&bytes, &o, &cap(|l| l.max_pixels = 499_999))),
        "pixels"
    );
    // 1000·500 samples of 2 bytes: a 1 MB budget is not enough (the bomb guard).
    let bomb = cap(|l| l.max_alloc_bytes = 999_999);
    assert_eq!(too_large(decode_image(&bytes, &o, &bomb)), "decoded_bytes");
    assert!(decode_image(&bytes, &o, &cap(|l| l.max_alloc_bytes = 1_000_000)).is_ok());
}

#[test]
fn every_limit_holds_for_float_tiff() {
    let bytes = float_tiff(1000, 500, 1, &vec![0.5f32; 500_000], 1);
    assert!(bytes.len() < 20_000, "a small file that decodes big");
    let o = DecodeOptions::default();
    let cap = |f: fn(&mut DecodeLimits)| {
        let mut l = limits();
        f(&mut l);
        l
    };
    assert_eq!(
        too_large(decode_image(&bytes, &o, &cap(|l| l.max_width = 999))),
        "width"
    );
    assert_eq!(
        too_large(decode_image(&bytes, &o, &cap(|l| l.max_height = 499))),
        "height"
    );
    assert_eq!(
        too_large(decode_image(&bytes, &o, &cap(|l| l.max_pixels = 499_999))),
        "pixels"
    );
    let bomb = cap(|l| l.max_alloc_bytes = 1_999_999);
    assert_eq!(too_large(decode_image(&bytes, &o, &bomb)), "decoded_bytes");
    assert!(decode_image(&bytes, &o, &cap(|l| l.max_alloc_bytes = 2_000_000)).is_ok());
}

#[test]
fn sides_are_checked_upright_after_orientation() {
    // Stored 40 wide, 10 high; orientation 6 makes it 10 wide, 40 high.
    let tif = float_tiff(40, 10, 1, &[0.0; 400], 6);
    let l = DecodeLimits {
        max_width: 20,
        max_height: 40,
        ..limits()
    };
    let d = decode_image(&tif, &DecodeOptions::default(), &l).unwrap();
    assert_eq!((d.width, d.height), (10, 40));
    let stored = opts(ColorMode::Auto, OrientationMode::Ignore);
    assert_eq!(too_large(decode_image(&tif, &stored, &l)), "width");
}

#[test]
fn float64_tiff_is_unsupported_not_a_panic() {
    use tiff::encoder::colortype::Gray64Float;
    let mut out = Cursor::new(Vec::new());
    TiffEncoder::new(&mut out)
        .unwrap()
        .write_image::<Gray64Float>(2, 1, &[1.0, 2.0])
        .unwrap();
    let err = decode_image(&out.into_inner(), &DecodeOptions::default(), &limits());
    assert!(matches!(err, Err(CodecError::Unsupported(_))), "{err:?}");
}
