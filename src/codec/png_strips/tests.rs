use super::*;
use proptest::prelude::*;

/// The zlib stream of a PNG's IDAT chunks, inflated with its Adler-32 checked.
fn inflate_idat(png_bytes: &[u8]) -> Result<Vec<u8>, fdeflate::DecompressionError> {
    let mut stream = Vec::new();
    let mut at = 8;
    while at + 12 <= png_bytes.len() {
        let len = u32::from_be_bytes(png_bytes[at..at + 4].try_into().unwrap()) as usize;
        if &png_bytes[at + 4..at + 8] == b"IDAT" {
            stream.extend_from_slice(&png_bytes[at + 8..at + 8 + len]);
        }
        at += 12 + len;
    }
    fdeflate::decompress_to_vec(&stream)
}

/// Decodes a PNG with a second, independent decoder (zune-png, zune-inflate checks the
/// Adler-32 too) to its samples in native byte order.
fn decode_zune(png_bytes: &[u8]) -> Vec<u8> {
    let mut decoder = zune_png::PngDecoder::new(zune_core::bytestream::ZCursor::new(png_bytes));
    match decoder.decode().expect("zune-png decodes") {
        zune_core::result::DecodingResult::U8(v) => v,
        zune_core::result::DecodingResult::U16(v) => {
            v.iter().flat_map(|x| x.to_ne_bytes()).collect()
        }
        _ => panic!("zune-png gave neither 8- nor 16-bit samples"),
    }
}

/// Decodes a PNG to its samples in native byte order (16-bit samples as native `u16` bytes).
fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    decoder.ignore_checksums(false);
    let mut reader = decoder.read_info().expect("header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("frame");
    buf.truncate(info.buffer_size());
    if info.bit_depth == png::BitDepth::Sixteen {
        for pair in buf.chunks_exact_mut(2) {
            let v = u16::from_be_bytes([pair[0], pair[1]]);
            pair.copy_from_slice(&v.to_ne_bytes());
        }
    }
    (info, buf)
}

/// Bytes that compress like a picture: smooth ramps with noise and flat runs.
pub(super) fn picture_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match (i / 97) % 3 {
                0 => (i / 7) as u8,
                1 => 0,
                _ => state as u8,
            }
        })
        .collect()
}

fn round_trip(rows: PngRows, strip_bytes: usize, seed: u64) {
    let len = rows.stride() * rows.height as usize;
    let data = picture_bytes(len, seed);
    let png_bytes = encode_png_strips(&data, rows, strip_bytes).expect("encode");
    let (info, pixels) = decode(&png_bytes);
    assert_eq!((info.width, info.height), (rows.width, rows.height));
    assert_eq!(info.color_type, rows.color().unwrap());
    assert_eq!(info.bit_depth, rows.depth().unwrap());
    assert!(pixels == data, "{rows:?} in strips of {strip_bytes} bytes");
    assert!(
        decode_zune(&png_bytes) == data,
        "zune-png: {rows:?}, {strip_bytes}"
    );
    let filtered = inflate_idat(&png_bytes).expect("one valid zlib stream");
    assert_eq!(filtered.len(), (rows.stride() + 1) * rows.height as usize);
}

#[test]
fn one_strip_and_many_strips_decode_to_the_same_samples() {
    for (channels, bits) in [(1, 8), (2, 8), (3, 8), (4, 8), (1, 16), (3, 16), (4, 16)] {
        let rows = PngRows {
            width: 37,
            height: 53,
            channels,
            bits,
        };
        // One strip; a row per strip (every joint); a few rows per strip with a short last.
        for strip_bytes in [usize::MAX, 1, rows.stride() * 4] {
            round_trip(
                rows,
                strip_bytes,
                u64::from(channels) * 31 + u64::from(bits),
            );
        }
    }
}

#[test]
fn one_pixel_and_one_row_pictures_encode() {
    for (width, height) in [(1, 1), (1, 9), (9, 1), (2, 2)] {
        for bits in [8, 16] {
            let rows = PngRows {
                width,
                height,
                channels: 3,
                bits,
            };
            round_trip(rows, 1, 7);
        }
    }
}

#[test]
fn every_padding_width_at_a_joint_decodes() {
    // Many strips of random data make the bits that end each block fall at every place in
    // a byte, including the ones where the stored block's header needs a byte of its own.
    let rows = PngRows {
        width: 61,
        height: 400,
        channels: 1,
        bits: 8,
    };
    let data = picture_bytes(61 * 400, 99);
    let mut pads = [false; 8];
    for y0 in 0..400 {
        let row = |y: usize| &data[y * 61..][..61];
        let zlib = compress_strip(&row, rows, y0..y0 + 1).unwrap().zlib;
        pads[zlib[zlib.len() - 5].leading_zeros() as usize] = true;
    }
    assert!(pads.iter().all(|&p| p), "padding widths seen: {pads:?}");
    round_trip(rows, 1, 99);
}

#[test]
fn filtered_bytes_match_the_png_crates_adaptive_filter_in_size() {
    // Same compressor, same filter rule: the file is within 1 % of the `png` crate's.
    let rows = PngRows {
        width: 640,
        height: 480,
        channels: 3,
        bits: 8,
    };
    let data: Vec<u8> = (0..640 * 480 * 3)
        .map(|i| {
            let (x, y) = ((i / 3) % 640, (i / 3) / 640);
            ((x * 3 + y * 2 + (i % 3) * 40) / 4) as u8 ^ ((x * y) % 5) as u8
        })
        .collect();
    let ours = encode_png_strips(&data, rows, STRIP_BYTES).unwrap();
    let mut theirs = Vec::new();
    let mut encoder = png::Encoder::new(&mut theirs, 640, 480);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Adaptive);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&data)
        .unwrap();
    let ratio = ours.len() as f64 / theirs.len() as f64;
    assert!(
        (0.99..1.01).contains(&ratio),
        "{} vs {}",
        ours.len(),
        theirs.len()
    );
}

#[test]
fn bad_layouts_are_refused() {
    let rows = PngRows {
        width: 4,
        height: 4,
        channels: 1,
        bits: 8,
    };
    assert!(encode_png_strips(&[0; 15], rows, 1).is_err());
    for (channels, bits) in [(5, 8), (0, 8), (1, 4), (3, 32)] {
        let bad = PngRows {
            channels,
            bits,
            ..rows
        };
        assert!(encode_png_strips(&[0; 64], bad, 1).is_err(), "{bad:?}");
    }
    assert!(joinable(vec![0x78, 0x01, 0b100, 1, 0, 0, 0, 0], true, false).is_err());
    assert!(joinable(vec![0x78, 0x9C, 0b101, 1, 0, 0, 0, 0], true, false).is_err());
    assert!(joinable(vec![0x78, 0x01, 0b101, 0, 0, 0, 0, 0], true, false).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn adler32_combine_equals_the_checksum_of_the_concatenation(
        a in proptest::collection::vec(any::<u8>(), 0..6000),
        b in proptest::collection::vec(any::<u8>(), 0..6000),
    ) {
        let adler = |bytes: &[u8]| {
            let z = fdeflate::compress_to_vec(bytes);
            u32::from_be_bytes(z[z.len() - 4..].try_into().unwrap())
        };
        let whole = [a.clone(), b.clone()].concat();
        prop_assert_eq!(adler32_combine(adler(&a), adler(&b), b.len() as u64), adler(&whole));
    }

    #[test]
    fn random_pictures_round_trip(
        width in 1u32..80,
        height in 1u32..40,
        layout in 0usize..7,
        strip_rows in 1usize..12,
        seed in any::<u64>(),
    ) {
        let (channels, bits) = [(1, 8), (2, 8), (3, 8), (4, 8), (1, 16), (3, 16), (4, 16)][layout];
        let rows = PngRows { width, height, channels, bits };
        round_trip(rows, rows.stride() * strip_rows, seed);
    }

    #[test]
    fn filters_invert(
        bpp in 1usize..9,
        pixels in 1usize..40,
        seed in any::<u64>(),
    ) {
        // Each filter's output, unfiltered by the PNG rule, gives back the row.
        let stride = bpp * pixels;
        let both = picture_bytes(2 * stride, seed);
        let (previous, current) = both.split_at(stride);
        let mut scratch = Filtered::new(stride);
        let (kind, bytes) = scratch.best(bpp, previous, current);
        let bytes = bytes.to_vec();
        // The choice is the first candidate of least cost, by a plain sum.
        let sums: Vec<u64> = std::iter::once(current)
            .chain(scratch.rows.iter().map(|r| &r[..]))
            .map(|r| r.iter().map(|&b| u64::from((b as i8).unsigned_abs())).sum())
            .collect();
        let least = *sums.iter().min().unwrap();
        prop_assert_eq!(usize::from(kind), sums.iter().position(|&s| s == least).unwrap());
        let chosen = if kind == 0 { current } else { &scratch.rows[usize::from(kind) - 1][..] };
        prop_assert_eq!(&bytes[..], chosen);
        for (kind, row) in scratch.rows.iter().enumerate() {
            let mut back = vec![0u8; stride];
            for i in 0..stride {
                let a = if i >= bpp { back[i - bpp] } else { 0 };
                let c = if i >= bpp { previous[i - bpp] } else { 0 };
                let b = previous[i];
                let predicted = match kind {
                    0 => a,
                    1 => b,
                    2 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    _ => {
                        let p = i16::from(a) + i16::from(b) - i16::from(c);
                        let (pa, pb, pc) = ((p - i16::from(a)).abs(), (p - i16::from(b)).abs(), (p - i16::from(c)).abs());
                        if pa <= pb && pa <= pc { a } else if pb <= pc { b } else { c }
                    }
                };
                back[i] = row[i].wrapping_add(predicted);
            }
            prop_assert_eq!(&back[..], current, "filter {}", kind + 1);
        }
    }
}

#[test]
fn the_round_trip_checks_the_checksum() {
    let rows = PngRows {
        width: 8,
        height: 8,
        channels: 1,
        bits: 8,
    };
    let mut png_bytes = encode_png_strips(&picture_bytes(64, 3), rows, 8).unwrap();
    // The Adler-32 is the last IDAT chunk's data: 12 bytes (IEND) + 4 (CRC) + 4 before the end.
    let at = png_bytes.len() - 12 - 4 - 4;
    assert_eq!(&png_bytes[at - 4..at], b"IDAT");
    png_bytes[at] ^= 1;
    // A valid chunk CRC, so that only the Adler-32 is wrong.
    let crc = crc32fast::hash(&png_bytes[at - 4..at + 4]);
    png_bytes[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        inflate_idat(&png_bytes),
        Err(fdeflate::DecompressionError::WrongChecksum)
    ));
}

#[test]
fn the_eight_bit_paeth_predictor_is_the_specs_for_every_input() {
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            for c in 0..=255u8 {
                let p = i16::from(a) + i16::from(b) - i16::from(c);
                let (pa, pb, pc) = (
                    (p - i16::from(a)).abs(),
                    (p - i16::from(b)).abs(),
                    (p - i16::from(c)).abs(),
                );
                let spec = if pa <= pb && pa <= pc {
                    a
                } else if pb <= pc {
                    b
                } else {
                    c
                };
                assert_eq!(paeth(a, b, c), spec, "a={a} b={b} c={c}");
            }
        }
    }
}
