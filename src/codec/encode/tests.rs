use super::*;
use crate::codec::layout::{tile_layout, PictureColor};

fn norm(map: &[f32], mode: Normalize, depth: BitDepth) -> (Vec<u16>, MapRange) {
    let mut out = vec![0u16; map.len()];
    let r = normalize_map(map, mode, depth, &mut out);
    (out, r)
}

#[test]
fn minmax_maps_min_to_zero_and_max_to_full_scale() {
    let (p, r) = norm(&[-1.0, 0.0, 1.0, 0.5], Normalize::Minmax, BitDepth::Eight);
    assert_eq!(p, [0, 128, 255, 191]);
    assert_eq!(r, MapRange { lo: -1.0, hi: 1.0 });
    let (p, _) = norm(&[-1.0, 0.0, 1.0], Normalize::Minmax, BitDepth::Sixteen);
    assert_eq!(p, [0, 32768, 65535]);
}

#[test]
fn constant_map_normalises_to_zero_with_degenerate_range() {
    for mode in [Normalize::Minmax, Normalize::Abs] {
        let (p, _) = norm(&[0.0; 4], mode, BitDepth::Eight);
        assert_eq!(p, [0; 4]);
    }
    let (p, r) = norm(&[3.5; 3], Normalize::Minmax, BitDepth::Sixteen);
    assert_eq!(p, [0; 3]);
    assert_eq!(r, MapRange { lo: 3.5, hi: 3.5 });
}

#[test]
fn clamp_rounds_and_saturates_at_eight_and_sixteen_bit() {
    let map = [-5.0, 0.4, 2.5, 254.6, 300.0];
    let (p, r) = norm(&map, Normalize::Clamp, BitDepth::Eight);
    assert_eq!(p, [0, 0, 3, 255, 255]);
    assert_eq!(r, MapRange { lo: 0.0, hi: 255.0 });
    let (p, _) = norm(
        &[1.0, 128.0, 255.0, 1000.0],
        Normalize::Clamp,
        BitDepth::Sixteen,
    );
    assert_eq!(p, [257, 32896, 65535, 65535]);
}

#[test]
fn abs_uses_the_largest_magnitude_as_full_scale() {
    let (p, r) = norm(&[-4.0, 2.0, 0.0, 1.0], Normalize::Abs, BitDepth::Eight);
    assert_eq!(p, [255, 128, 0, 64]);
    assert_eq!(r, MapRange { lo: 0.0, hi: 4.0 });
}

#[test]
fn non_finite_values_never_panic_and_saturate() {
    let map = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0, 3.0];
    let (p, r) = norm(&map, Normalize::Minmax, BitDepth::Eight);
    assert_eq!(p, [0, 255, 0, 0, 255]);
    assert_eq!(r, MapRange { lo: 1.0, hi: 3.0 });
    let (p, _) = norm(&map, Normalize::Clamp, BitDepth::Eight);
    assert_eq!(p, [0, 255, 0, 1, 3]);
    let (p, r) = norm(&map, Normalize::Abs, BitDepth::Eight);
    assert_eq!(p, [0, 255, 255, 85, 255]);
    assert_eq!(r.hi, 3.0);
    let (p, r) = norm(&[f32::NAN; 3], Normalize::Minmax, BitDepth::Sixteen);
    assert_eq!((p, r), (vec![0; 3], MapRange { lo: 0.0, hi: 0.0 }));
}

#[test]
fn extreme_finite_ranges_do_not_overflow() {
    let (p, _) = norm(
        &[-f32::MAX, 0.0, f32::MAX],
        Normalize::Minmax,
        BitDepth::Eight,
    );
    assert_eq!(p, [0, 128, 255]);
}

#[test]
fn gray_png_round_trips_at_eight_bit() {
    let map: Vec<f32> = (0..6).map(|v| v as f32 * 51.0).collect();
    let (png, ranges) = encode_png(
        &[&map],
        2,
        3,
        Normalize::Clamp,
        BitDepth::Eight,
        PngSpeed::Fast,
    )
    .unwrap();
    assert_eq!(ranges, [MapRange { lo: 0.0, hi: 255.0 }]);
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(img.color(), image::ColorType::L8);
    assert_eq!((img.width(), img.height()), (3, 2));
    assert_eq!(img.into_luma8().into_raw(), [0, 51, 102, 153, 204, 255]);
}

#[test]
fn gray_png_round_trips_at_sixteen_bit_with_correct_byte_order() {
    let map = [0.0f32, 1.0, 256.0, 65535.0];
    let (png, _) = encode_png(
        &[&map],
        1,
        4,
        Normalize::Minmax,
        BitDepth::Sixteen,
        PngSpeed::Small,
    )
    .unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(img.color(), image::ColorType::L16);
    assert_eq!(img.into_luma16().into_raw(), [0, 1, 256, 65535]);
}

#[test]
fn rgb_png_normalises_each_channel_independently() {
    let r = [0.0f32, 10.0];
    let g = [-1.0f32, 1.0];
    let b = [5.0f32, 5.0];
    let (png, ranges) = encode_png(
        &[&r, &g, &b],
        1,
        2,
        Normalize::Minmax,
        BitDepth::Eight,
        PngSpeed::Fast,
    )
    .unwrap();
    assert_eq!(ranges.len(), 3);
    assert_eq!(ranges[1], MapRange { lo: -1.0, hi: 1.0 });
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgb8);
    assert_eq!(img.into_rgb8().into_raw(), [0, 0, 0, 255, 255, 0]);

    let (png, _) = encode_png(
        &[&r, &g, &b],
        1,
        2,
        Normalize::Minmax,
        BitDepth::Sixteen,
        PngSpeed::Fast,
    )
    .unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(img.into_rgb16().into_raw(), [0, 0, 0, 65535, 65535, 0]);
}

#[test]
fn encode_png_rejects_bad_shapes() {
    let m = [0.0f32; 4];
    let e = |r| matches!(r, Err(CodecError::Encode(_)));
    let enc = |planes: &[&[f32]], h, w| {
        encode_png(
            planes,
            h,
            w,
            Normalize::Minmax,
            BitDepth::Eight,
            PngSpeed::Fast,
        )
    };
    assert!(e(enc(&[&m, &m], 2, 2)));
    assert!(e(enc(&[&m], 3, 2)));
    assert!(matches!(enc(&[&m], 0, 4), Err(CodecError::Empty)));
}

#[test]
fn montage_has_grid_dimensions_and_mid_grey_gaps() {
    let (n, c, h, w) = (2usize, 3usize, 2usize, 5usize);
    let maps: Vec<Vec<f32>> = (0..n * c)
        .map(|k| (0..h * w).map(|v| (v + k) as f32).collect())
        .collect();
    let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let (png, ranges) = encode_montage(
        &refs,
        &gray(n, c),
        h,
        w,
        Normalize::Minmax,
        BitDepth::Eight,
        PngSpeed::Fast,
    )
    .unwrap();
    assert_eq!(ranges.len(), n * c);
    assert_eq!(ranges[4], MapRange { lo: 4.0, hi: 13.0 });
    let img = image::load_from_memory(&png).unwrap().into_luma8();
    let g = MONTAGE_GAP as u32;
    assert_eq!(img.dimensions(), (3 * 5 + 2 * g, 2 * 2 + g));
    // Tile (1, 2) starts at x = 2*(w+gap), y = h+gap: its min is 0, max 255.
    let (x0, y0) = (2 * (5 + g), 2 + g);
    assert_eq!(img.get_pixel(x0, y0).0, [0]);
    assert_eq!(img.get_pixel(x0 + 4, y0 + 1).0, [255]);
    // Gap column after the first tile and gap row after the first band.
    assert_eq!(img.get_pixel(5, 0).0, [128]);
    assert_eq!(img.get_pixel(0, 2).0, [128]);
    assert_eq!(img.get_pixel(5 + g - 1, 2 + g - 1).0, [128]);

    let (png, _) = encode_montage(
        &refs,
        &gray(n, c),
        h,
        w,
        Normalize::Minmax,
        BitDepth::Sixteen,
        PngSpeed::Fast,
    )
    .unwrap();
    let img = image::load_from_memory(&png).unwrap().into_luma16();
    assert_eq!(img.get_pixel(5, 0).0, [32768]);
    assert_eq!(img.get_pixel(x0 + 4, y0 + 1).0, [65535]);
}

#[test]
fn single_tile_montage_has_no_gap() {
    let m = [1.0f32, 2.0];
    let (png, _) = encode_montage(
        &[&m],
        &gray(1, 1),
        1,
        2,
        Normalize::Abs,
        BitDepth::Eight,
        PngSpeed::Fast,
    )
    .unwrap();
    let img = image::load_from_memory(&png).unwrap().into_luma8();
    assert_eq!(img.into_raw(), [128, 255]);
}

#[test]
fn montage_rejects_a_wrong_map_count() {
    let m = [0.0f32; 4];
    let r = encode_montage(
        &[&m],
        &gray(1, 2),
        2,
        2,
        Normalize::Minmax,
        BitDepth::Eight,
        PngSpeed::Fast,
    );
    assert!(matches!(r, Err(CodecError::Encode(_))));
}

fn gray(n: usize, c: usize) -> TileLayout {
    tile_layout(n, c, 1, PictureColor::Gray)
}

#[test]
fn a_batch_of_rgb_results_is_a_colour_montage_one_row_per_image() {
    let (h, w) = (2usize, 3usize);
    let maps: Vec<Vec<f32>> = (0..6)
        .map(|k| (0..h * w).map(|v| (v * (k + 1)) as f32).collect())
        .collect();
    let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let layout = tile_layout(2, 3, 3, PictureColor::Auto);
    let (png, ranges) = encode_montage(
        &refs,
        &layout,
        h,
        w,
        Normalize::Minmax,
        BitDepth::Eight,
        PngSpeed::Fast,
    )
    .unwrap();
    assert_eq!(ranges.len(), 6);
    assert_eq!(ranges[5], MapRange { lo: 0.0, hi: 30.0 });
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgb8);
    let img = img.into_rgb8();
    let g = MONTAGE_GAP as u32;
    assert_eq!(img.dimensions(), (3, 2 * 2 + g));
    // Each channel of each tile is its own map, normalised alone: last pixel is 255.
    assert_eq!(img.get_pixel(2, 1).0, [255, 255, 255]);
    assert_eq!(img.get_pixel(0, 2).0, [128, 128, 128]);
    // The single-image RGB case is the 3-plane PNG of before, byte for byte.
    let one = tile_layout(1, 3, 3, PictureColor::Auto);
    let (a, _) = encode_montage(
        &refs[..3],
        &one,
        h,
        w,
        Normalize::Minmax,
        BitDepth::Sixteen,
        PngSpeed::Fast,
    )
    .unwrap();
    let (b, _) = encode_png(
        &refs[..3],
        h,
        w,
        Normalize::Minmax,
        BitDepth::Sixteen,
        PngSpeed::Fast,
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn rgba_montage_has_opaque_gaps() {
    let maps: Vec<Vec<f32>> = (0..8).map(|k| vec![k as f32, 1.0 + k as f32]).collect();
    let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let layout = tile_layout(2, 4, 4, PictureColor::Auto);
    let (png, _) = encode_montage(
        &refs,
        &layout,
        1,
        2,
        Normalize::Minmax,
        BitDepth::Eight,
        PngSpeed::Fast,
    )
    .unwrap();
    let pic = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (pic.width(), pic.height(), pic.color()),
        (2, 2 + MONTAGE_GAP as u32, image::ColorType::Rgba8)
    );
    let px = pic.to_rgba8().into_raw();
    assert_eq!(px[..8], [0, 0, 0, 0, 255, 255, 255, 255]);
    assert_eq!(px[8..12], [128, 128, 128, 255]);
}

#[test]
fn webp_picture_decodes_to_exactly_the_eight_bit_png_pixels() {
    let maps: Vec<Vec<f32>> = (0..6)
        .map(|k| {
            (0..35)
                .map(|v| ((v * 7 + k * 13) % 17) as f32 - 3.5)
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    for layout in [
        tile_layout(2, 3, 3, PictureColor::Auto),
        gray(2, 3),
        gray(1, 1),
    ] {
        let refs = &refs[..layout.rows * layout.cols * layout.channels];
        let (png, r1) = encode_montage(
            refs,
            &layout,
            5,
            7,
            Normalize::Abs,
            BitDepth::Eight,
            PngSpeed::Fast,
        )
        .unwrap();
        let (webp, r2) = encode_montage_webp(refs, &layout, 5, 7, Normalize::Abs).unwrap();
        assert_eq!(r1, r2);
        let png = image::load_from_memory(&png).unwrap().to_rgba8();
        let webp = image::load_from_memory(&webp).unwrap().to_rgba8();
        assert_eq!(png, webp, "{layout:?}");
    }
}

#[test]
fn a_tile_row_written_at_once_equals_its_channels_written_one_by_one() {
    for (k, depth) in [
        (3, BitDepth::Eight),
        (4, BitDepth::Eight),
        (3, BitDepth::Sixteen),
        (4, BitDepth::Sixteen),
    ] {
        // Two images of two tiles each: gaps between tiles and rows.
        let grid = Grid {
            n: 2,
            c: 2 * k,
            h: 3,
            w: 5,
            k,
        };
        let top = depth.max_value();
        let value = |i: usize, j: usize, y: usize, x: usize| {
            ((i * 977 + j * 131 + y * 17 + x * 7) % (usize::from(top) + 1)) as u16
        };
        let mut by_map = Canvas::new(grid, depth).unwrap();
        let mut by_tile = Canvas::new(grid, depth).unwrap();
        for band in by_map.bands(2) {
            let mut band = band;
            for j in 0..grid.c {
                for y in 0..band.rows.len() {
                    let row: Vec<u16> = (0..grid.w)
                        .map(|x| value(band.image, j, band.rows.start + y, x))
                        .collect();
                    band.put_row(j, y, &row);
                }
            }
        }
        for band in by_tile.bands(2) {
            let mut band = band;
            for tile in 0..grid.c / k {
                for y in 0..band.rows.len() {
                    let rows: Vec<Vec<u16>> = (0..k)
                        .map(|ch| {
                            (0..grid.w)
                                .map(|x| value(band.image, tile * k + ch, band.rows.start + y, x))
                                .collect()
                        })
                        .collect();
                    band.put_tile_row(tile, y, &rows);
                }
            }
        }
        assert_eq!(
            by_map.png(PngSpeed::Fast).unwrap(),
            by_tile.png(PngSpeed::Fast).unwrap(),
            "k {k}, {depth:?}"
        );
    }
}

/// Values that reach every branch of the quantising rules: NaN, ±∞, ±0, subnormals,
/// values around the rounding points, and a wide spread.
fn awkward_values(n: usize) -> Vec<f32> {
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::MIN_POSITIVE / 2.0,
        0.5,
        254.5,
        255.0,
        255.5,
        -0.5,
        1e30,
        -1e30,
    ];
    let mut s = 0x2545_f491u32;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            if i % 7 == 0 {
                special[(s as usize) % special.len()]
            } else {
                (s as f32 / u32::MAX as f32) * 700.0 - 200.0
            }
        })
        .collect()
}

#[test]
fn every_instruction_set_quantises_bit_for_bit_alike() {
    let map = awkward_values(1037);
    let finite: Vec<f32> = map.iter().copied().filter(|v| v.is_finite()).collect();
    for depth in [BitDepth::Eight, BitDepth::Sixteen] {
        for mode in [Normalize::Minmax, Normalize::Clamp, Normalize::Abs] {
            // A stats of the finite values (f32 rules) and of a huge range (f64 rules).
            let mut narrow = MapStats::default();
            narrow.add(&finite[..finite.len() / 2]);
            let mut wide = MapStats::default();
            wide.add(&[-3e38, 3e38]);
            for stats in [narrow, wide] {
                let q = Quantizer::new(mode, depth, &stats);
                let mut want = vec![0u16; map.len()];
                q.fill_at(crate::codec::simd::Level::Base, &map, &mut want);
                for &level in crate::codec::simd::available() {
                    let mut got = vec![1u16; map.len()];
                    q.fill_at(level, &map, &mut got);
                    assert_eq!(got, want, "{level:?} {mode:?} {depth:?}");
                }
            }
        }
    }
}

#[test]
fn every_instruction_set_interleaves_alike() {
    for w in [0usize, 1, 5, 64, 1001] {
        let r: Vec<u16> = (0..w).map(|x| (x * 7 % 256) as u16).collect();
        let g: Vec<u16> = (0..w).map(|x| (x * 13 % 256) as u16).collect();
        let b: Vec<u16> = (0..w).map(|x| (255 - x % 256) as u16).collect();
        let want: Vec<u8> = (0..w)
            .flat_map(|x| [r[x] as u8, g[x] as u8, b[x] as u8])
            .collect();
        for &level in crate::codec::simd::available() {
            let mut got = vec![0u8; 3 * w];
            super::canvas::interleave3_at(level, &r, &g, &b, &mut got);
            assert_eq!(got, want, "{level:?}, w = {w}");
        }
    }
}
