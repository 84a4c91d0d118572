//! Streamed PNG rows against the whole decode: every colour type and bit depth, every
//! colour mode, readers racing the decoder, errors, cancels and the files left whole.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::codec::decode::fidelity_tests::png_with_orientation;
use crate::codec::decode::{decode_pixels, ColorMode, OrientationMode};

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_width: 4096,
        max_height: 4096,
        max_pixels: 1 << 22,
        max_alloc_bytes: 1 << 28,
    }
}

fn opts(color: ColorMode) -> DecodeOptions {
    DecodeOptions {
        color,
        orientation: OrientationMode::Exif,
        scale: 0.75,
    }
}

/// Pseudo-random bytes (xorshift), the same for the same seed.
pub(crate) fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 7) as u8
        })
        .collect()
}

/// A `w × h` PNG of `color` at `depth` bits written by the `png` crate (noise samples;
/// palettes of every index the depth reaches, with `trns` entries when given).
pub(crate) fn png_of(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    trns: Option<&[u8]>,
    seed: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    let bits = depth as usize;
    if color == png::ColorType::Indexed {
        enc.set_palette(noise(3 << bits, seed ^ 0x55));
    }
    if let Some(t) = trns {
        enc.set_trns(t.to_vec());
    }
    let row = (w as usize * color.samples() * bits).div_ceil(8);
    let mut writer = enc.write_header().unwrap();
    writer
        .write_image_data(&noise(row * h as usize, seed))
        .unwrap();
    writer.finish().unwrap();
    out
}

/// Every colour type and bit depth PNG allows, with and without `tRNS`.
fn every_kind(w: u32, h: u32) -> Vec<(String, Vec<u8>)> {
    use png::BitDepth::*;
    use png::ColorType::*;
    let mut kinds = Vec::new();
    for depth in [One, Two, Four, Eight, Sixteen] {
        kinds.push((Grayscale, depth, None));
    }
    kinds.push((Grayscale, Eight, Some(&[0u8, 77][..])));
    kinds.push((Grayscale, Two, Some(&[0u8, 1][..])));
    kinds.push((Grayscale, Sixteen, Some(&[0x12u8, 0x34][..])));
    for depth in [Eight, Sixteen] {
        kinds.push((GrayscaleAlpha, depth, None));
        kinds.push((Rgb, depth, None));
        kinds.push((Rgba, depth, None));
    }
    kinds.push((Rgb, Eight, Some(&[0u8, 10, 0, 20, 0, 30][..])));
    kinds.push((Rgb, Sixteen, Some(&[1u8, 2, 3, 4, 5, 6][..])));
    for depth in [One, Two, Four, Eight] {
        kinds.push((Indexed, depth, None));
        kinds.push((Indexed, depth, Some(&[0u8, 128, 255][..])));
    }
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, (c, d, t))| {
            (
                format!("{c:?} {d:?} tRNS {}", t.is_some()),
                png_of(w, h, c, d, t, i as u32 + 1),
            )
        })
        .collect()
}

/// The samples of two `Pixels` are the same values in the same type.
fn same_samples(a: &Pixels, b: &Pixels) -> bool {
    match (&a.samples, &b.samples) {
        (Samples::U8(x), Samples::U8(y)) => x == y,
        (Samples::U16(x), Samples::U16(y)) => x == y,
        _ => false,
    }
}

/// Decodes `png` streamed (the decoder on a thread, `readers` threads reading bands of
/// `band` rows as they come) and returns the rows they read and the finished `Pixels`.
fn stream(png: &[u8], o: &DecodeOptions, band: usize) -> (Vec<Vec<f32>>, Pixels) {
    let (dec, rows) = open(png, o, &limits()).unwrap().expect("streams");
    let h = rows.height();
    let per = rows.channels() * rows.width();
    let cancel = CancelToken::new();
    let bands: Vec<Vec<f32>> = std::thread::scope(|s| {
        let r = &rows;
        let readers: Vec<_> = (0..h.div_ceil(band))
            .rev()
            .map(|b| {
                s.spawn(move || {
                    let span = b * band..((b + 1) * band).min(h);
                    let mut out = vec![0.0; per * span.len()];
                    r.rows(span, &mut out).unwrap();
                    out
                })
            })
            .collect();
        dec.run(&rows, &cancel).unwrap();
        let mut got: Vec<Vec<f32>> = readers.into_iter().map(|t| t.join().unwrap()).collect();
        got.reverse();
        got
    });
    (bands, rows.into_pixels().unwrap())
}

#[test]
fn every_colour_type_and_depth_streams_the_whole_decodes_samples_in_every_mode() {
    for (name, png) in every_kind(13, 9) {
        for color in [
            ColorMode::Auto,
            ColorMode::Gray,
            ColorMode::Rgb,
            ColorMode::Rgba,
        ] {
            let o = opts(color);
            let whole = decode_pixels(&png, &o, &limits()).unwrap();
            let (bands, px) = stream(&png, &o, 4);
            assert!(same_samples(&px, &whole), "{name} {color:?}: samples");
            assert_eq!(
                (px.width, px.height, px.channels, px.format),
                (whole.width, whole.height, whole.channels, whole.format),
                "{name} {color:?}"
            );
            for (b, got) in bands.iter().enumerate() {
                let span = b * 4..((b + 1) * 4).min(9);
                let mut want = vec![0.0; got.len()];
                whole.rows(span, &mut want);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} {color:?}: rows of band {b}"
                );
            }
        }
    }
}

#[test]
fn one_row_and_one_column_images_stream() {
    for (w, h) in [(1, 1), (17, 1), (1, 11)] {
        let png = png_of(w, h, png::ColorType::Rgb, png::BitDepth::Eight, None, w + h);
        let o = opts(ColorMode::Auto);
        let (_, px) = stream(&png, &o, 3);
        assert!(same_samples(
            &px,
            &decode_pixels(&png, &o, &limits()).unwrap()
        ));
    }
}

/// `png` with its IHDR's interlace byte set (and the CRC made again): for a 1×1 image
/// Adam7's one pass is the whole image, so the data stays valid.
fn interlaced_1x1(png: &[u8]) -> Vec<u8> {
    let mut out = png.to_vec();
    let ihdr = 8;
    out[ihdr + 8 + 12] = 1;
    let crc = crc32fast::hash(&out[ihdr + 4..ihdr + 8 + 13]);
    out[ihdr + 8 + 13..ihdr + 8 + 17].copy_from_slice(&crc.to_be_bytes());
    out
}

#[test]
fn other_formats_interlaced_and_turned_pngs_are_left_to_the_whole_decode() {
    let o = opts(ColorMode::Auto);
    let small = png_of(1, 1, png::ColorType::Rgb, png::BitDepth::Eight, None, 3);
    let interlaced = interlaced_1x1(&small);
    assert!(decode_pixels(&interlaced, &o, &limits()).is_ok());
    assert!(open(&interlaced[..], &o, &limits()).unwrap().is_none());
    let rgb = image::RgbImage::from_pixel(4, 3, Rgb([1, 2, 3]));
    let mut jpeg = Cursor::new(Vec::new());
    rgb.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
    assert!(open(jpeg.get_ref(), &o, &limits()).unwrap().is_none());
    let png = png_of(5, 3, png::ColorType::Rgb, png::BitDepth::Eight, None, 4);
    for (orientation, streams) in [(1, true), (2, false), (3, false), (6, false)] {
        let turned = png_with_orientation(&png, orientation);
        assert_eq!(
            open(&turned[..], &o, &limits()).unwrap().is_some(),
            streams,
            "orientation {orientation}"
        );
        let ignore = DecodeOptions {
            orientation: OrientationMode::Ignore,
            ..o
        };
        assert!(open(&turned[..], &ignore, &limits()).unwrap().is_some());
    }
    assert!(open(&b"not an image"[..], &o, &limits()).unwrap().is_none());
    // Errors before any row are the whole decode's.
    for bad in [
        [&small[..8], b"not a chunk at all"].concat(),
        small[..20].to_vec(),
    ] {
        let e = open(&bad[..], &o, &limits()).unwrap_err();
        let whole = decode_pixels(&bad, &o, &limits()).unwrap_err();
        assert_eq!(e.to_string(), whole.to_string());
    }
}

#[test]
fn a_truncated_or_corrupt_png_fails_with_the_whole_decodes_error_and_wakes_every_reader() {
    let png = png_of(64, 200, png::ColorType::Rgb, png::BitDepth::Eight, None, 7);
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    let mut flipped = png.clone();
    flipped[idat + 2000] ^= 0x5a;
    let cases = [
        png[..png.len() / 2].to_vec(),
        png[..png.len() - 20].to_vec(),
        png[..idat + 100].to_vec(),
        flipped,
    ];
    let o = opts(ColorMode::Rgb);
    for (i, bad) in cases.iter().enumerate() {
        let whole = decode_pixels(bad, &o, &limits()).unwrap_err();
        let (dec, rows) = open(&bad[..], &o, &limits()).unwrap().unwrap();
        let cancel = CancelToken::new();
        let rows = Arc::new(rows);
        let readers: Vec<_> = [0..5, 195..200, 0..200]
            .into_iter()
            .map(|span| {
                let r = rows.clone();
                std::thread::spawn(move || {
                    let mut out = vec![0.0; 3 * 64 * span.len()];
                    r.rows(span, &mut out)
                })
            })
            .collect();
        let got = dec.run(&rows, &cancel).unwrap_err();
        match got {
            Stop::Failed(e) => assert_eq!(e.to_string(), whole.to_string(), "case {i}"),
            other => panic!("case {i}: {other:?}"),
        }
        let results: Vec<_> = readers.into_iter().map(|t| t.join().unwrap()).collect();
        // Rows decoded before the error were read; the others failed (nobody hangs).
        assert_eq!(results[2].is_err(), rows.decoded() < 200, "case {i}");
        assert!(
            rows.decoded() < 200 || i != 2,
            "case {i}: {}",
            rows.decoded()
        );
    }
}

#[test]
fn a_cancel_stops_the_decoder_and_fails_the_readers_waiting() {
    let png = png_of(
        512,
        512,
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        None,
        9,
    );
    let o = opts(ColorMode::Rgb);
    let (dec, rows) = open(&png[..], &o, &limits()).unwrap().unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();
    let rows = Arc::new(rows);
    let r = rows.clone();
    let reader = std::thread::spawn(move || {
        let mut out = vec![0.0; 3 * 512];
        r.rows(511..512, &mut out)
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(matches!(dec.run(&rows, &cancel), Err(Stop::Cancelled)));
    assert_eq!(reader.join().unwrap(), Err(Unavailable));
    // And abandoned: the decoder stops at the next row.
    let (dec, rows) = open(&png[..], &o, &limits()).unwrap().unwrap();
    rows.abandon();
    assert!(matches!(
        dec.run(&rows, &CancelToken::new()),
        Err(Stop::Abandoned)
    ));
    assert_eq!(rows.decoded(), 0);
    assert!(rows.into_pixels().is_err());
}

#[test]
fn the_buffer_is_the_headers_decoded_bytes_and_the_limits_are_the_whole_decodes() {
    let png = png_of(
        40,
        30,
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        None,
        11,
    );
    for color in [ColorMode::Auto, ColorMode::Rgba] {
        let o = opts(color);
        let head = super::super::probe(&png, &o, &limits()).unwrap();
        let (_, rows) = open(&png[..], &o, &limits()).unwrap().unwrap();
        assert_eq!(rows.bytes() as u64, head.decoded_bytes);
        assert_eq!(rows.sample(), SampleType::U16);
    }
    let tight = DecodeLimits {
        max_alloc_bytes: 40 * 30 * 6 - 1,
        ..limits()
    };
    let o = opts(ColorMode::Auto);
    let whole = decode_pixels(&png, &o, &tight).unwrap_err();
    let e = open(&png[..], &o, &tight).unwrap_err();
    assert_eq!(e.to_string(), whole.to_string());
}
