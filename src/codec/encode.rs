//! Encoding of float maps (convolution outputs) into PNG images, grid
//! montages and ZIP archives.
//!
//! Every map is normalised on its own into 8- or 16-bit pixel values by
//! [`normalize_map`] (rules in [`Normalize`]); the range actually used is
//! returned as a [`MapRange`] so callers can report how pixels map back to
//! floats. Shapes are always given explicitly as `h` (rows) and `w`
//! (columns); a map is a row-major `&[f32]` of length `h * w`.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;

use super::layout::TileLayout;
use super::CodecError;

mod archive;
pub use archive::{encode_zip, ZipInner};
pub(crate) use archive::{f32_json, non_nan_min_max};

/// Gap in pixels between neighbouring tiles of a montage, on both axes.
pub const MONTAGE_GAP: usize = 4;

/// Largest width or height a PNG may declare (2^31 - 1).
const PNG_MAX_DIM: usize = i32::MAX as usize;

/// How a float map is mapped onto pixel values `0..=max` (255 or 65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// `lo = min`, `hi = max` of the finite values;
    /// `p = round((x - lo) / (hi - lo) * max)`. A constant map gives all 0.
    #[default]
    Minmax,
    /// `lo = 0`, `hi = 255`: `p = round(clamp(x, 0, 255) / 255 * max)`, so
    /// 8-bit output is `round(clamp(x))`.
    Clamp,
    /// `lo = 0`, `hi = max |x|` of the finite values;
    /// `p = round(|x| / hi * max)`. An all-zero map gives all 0.
    Abs,
}

/// Sample depth of encoded PNGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BitDepth {
    /// 8 bits per sample, pixel values `0..=255`.
    #[default]
    Eight,
    /// 16 bits per sample, pixel values `0..=65535`.
    Sixteen,
}

impl BitDepth {
    /// Largest pixel value at this depth.
    fn max_value(self) -> u16 {
        match self {
            Self::Eight => u16::from(u8::MAX),
            Self::Sixteen => u16::MAX,
        }
    }
}

/// PNG compression trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PngSpeed {
    /// `CompressionType::Fast` with adaptive filtering.
    #[default]
    Fast,
    /// `CompressionType::Best` with adaptive filtering (slower, smaller).
    Small,
}

/// The value range mapped onto `[0, max pixel]`: `lo` → 0, `hi` → 255 (or
/// 65535). Both ends are finite floats in the map's own units.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MapRange {
    /// Float value that maps to pixel 0.
    pub lo: f32,
    /// Float value that maps to the maximum pixel value.
    pub hi: f32,
}

/// Normalises one float map (length `h * w`) into pixel values `0..=max`
/// (255 or 65535 per `depth`), written to `out` as `u16`; returns the range
/// used.
///
/// See [`Normalize`] for the per-mode formulas; `lo`/`hi` are computed from
/// finite values only. Non-finite values never panic: NaN maps to pixel 0
/// (like `lo`), `+inf` saturates to `max` and `-inf` to 0 (`abs`: both
/// infinities give `max`). Arithmetic is done in `f32` (in `f64` when a range
/// overflows `f32`); rounding is half up.
/// Runs on the current rayon pool.
///
/// # Panics
///
/// Panics if `out.len() != map.len()`.
pub fn normalize_map(map: &[f32], mode: Normalize, depth: BitDepth, out: &mut [u16]) -> MapRange {
    assert_eq!(
        map.len(),
        out.len(),
        "normalize_map: output length mismatch"
    );
    let top = depth.max_value();
    let max = f64::from(top);
    // x ↦ round((x − offset)·scale) clamped to 0..=max, one multiply per pixel (a division
    // and a libm `round` call per pixel were a quarter of the 1080p pipeline). Rounding is
    // half up, `(v + 0.5)` truncated, which equals half away from zero for v ≥ 0.
    let quantize = move |v: f64| -> u16 {
        if v >= max {
            top
        } else if v > 0.0 {
            (v + 0.5) as u16
        } else {
            0 // also NaN
        }
    };
    match mode {
        Normalize::Minmax => {
            let (lo, hi) = finite_min_max(map).unwrap_or((0.0, 0.0));
            let span = f64::from(hi) - f64::from(lo);
            let (lo64, scale) = (f64::from(lo), if span > 0.0 { max / span } else { 0.0 });
            let (lo32, scale32) = (lo, scale as f32);
            if span > 0.0 && (hi - lo).is_finite() && scale32.is_finite() && scale32 > 0.0 {
                // Branch-free in f32 so it vectorises: ±∞ saturate, NaN → 0 (`max` drops
                // NaN). Within a rounding error of the f64 form below.
                fill(map, out, move |x| quantize32((x - lo32) * scale32, top));
                return MapRange { lo, hi };
            }
            let f = move |x: f32| {
                if x.is_finite() {
                    quantize((f64::from(x) - lo64) * scale)
                } else if x == f32::INFINITY {
                    top
                } else {
                    0
                }
            };
            fill(map, out, f);
            MapRange { lo, hi }
        }
        Normalize::Clamp => {
            // max / 255 is exactly 1 or 257, so 8-bit output is round(clamp(x)).
            let k = (max / 255.0) as f32;
            // Not `clamp`: it keeps NaN, where `max` maps NaN to 0 as documented.
            #[allow(clippy::manual_clamp)]
            let f = move |x: f32| quantize32(x.max(0.0).min(255.0) * k, top);
            fill(map, out, f);
            MapRange { lo: 0.0, hi: 255.0 }
        }
        Normalize::Abs => {
            let hi = map
                .par_chunks(CHUNK)
                .map(|c| {
                    c.iter()
                        .filter(|x| x.is_finite())
                        .fold(0.0f32, |m, x| m.max(x.abs()))
                })
                .reduce(|| 0.0, f32::max);
            let scale = if hi > 0.0 { max / f64::from(hi) } else { 0.0 };
            let scale32 = scale as f32;
            if scale32.is_finite() && scale32 > 0.0 {
                fill(map, out, move |x| quantize32(x.abs() * scale32, top));
                return MapRange { lo: 0.0, hi };
            }
            let f = move |x: f32| {
                if x.is_finite() {
                    quantize(f64::from(x.abs()) * scale)
                } else if x.is_infinite() {
                    top
                } else {
                    0
                }
            };
            fill(map, out, f);
            MapRange { lo: 0.0, hi }
        }
    }
}

/// `round(clamp(v, 0, top))`, half up; NaN → 0. Branch-free, so loops over it vectorise.
#[inline(always)]
fn quantize32(v: f32, top: u16) -> u16 {
    // Through i32: the value is already in 0..=65535.5, and the i32 conversion vectorises
    // (cvttps2dq) where a saturating u16 conversion does not.
    (v.max(0.0).min(f32::from(top)) + 0.5) as i32 as u16
}

/// `out[i] = pixel(map[i])`, in parallel chunks.
fn fill(map: &[f32], out: &mut [u16], pixel: impl Fn(f32) -> u16 + Sync) {
    out.par_chunks_mut(CHUNK)
        .zip(map.par_chunks(CHUNK))
        .for_each(|(o, m)| {
            for (o, &x) in o.iter_mut().zip(m) {
                *o = pixel(x);
            }
        });
}

/// Pixels per parallel task of the per-pixel loops.
const CHUNK: usize = 1 << 16;

/// Encodes planes (each `h * w` floats, all the same size) as one PNG:
/// 1 plane → grayscale (L8/L16), 3 planes → RGB (RGB8/RGB16), each plane
/// normalised independently with `mode`. Returns the PNG bytes and the
/// per-plane ranges.
///
/// # Errors
///
/// [`CodecError::Empty`] if `h` or `w` is 0; [`CodecError::TooLarge`] if a
/// side exceeds the PNG limit of 2^31 - 1; [`CodecError::Encode`] if the
/// plane count is not 1 or 3, a plane has the wrong length, or the PNG
/// encoder fails.
pub fn encode_png(
    planes: &[&[f32]],
    h: usize,
    w: usize,
    mode: Normalize,
    depth: BitDepth,
    speed: PngSpeed,
) -> Result<(Vec<u8>, Vec<MapRange>), CodecError> {
    let (pw, ph) = png_dims(w, h)?;
    let hw = h * w;
    check_lengths(planes, hw)?;
    let color = match (planes.len(), depth) {
        (1, BitDepth::Eight) => ExtendedColorType::L8,
        (1, BitDepth::Sixteen) => ExtendedColorType::L16,
        (3, BitDepth::Eight) => ExtendedColorType::Rgb8,
        (3, BitDepth::Sixteen) => ExtendedColorType::Rgb16,
        (k, _) => {
            return Err(CodecError::Encode(format!(
                "expected 1 or 3 planes, got {k}"
            )))
        }
    };
    let mut norm = vec![0u16; planes.len() * hw];
    let ranges = planes
        .iter()
        .zip(norm.chunks_exact_mut(hw))
        .map(|(p, o)| normalize_map(p, mode, depth, o))
        .collect();
    let bytes = interleave(&norm, planes.len(), depth);
    Ok((write_png(&bytes, pw, ph, color, speed)?, ranges))
}

/// Encodes the tiles of `layout` (see [`super::layout`]) as one PNG: a single tile is the
/// picture itself; several are a montage.
///
/// Each tile holds `layout.channels` maps (gray, RGB or RGBA), each `h * w` floats and
/// normalised on its own. Tiles are separated by [`MONTAGE_GAP`] pixels of mid-grey (128
/// at 8 bit, 32768 at 16 bit; opaque in RGBA) so that black maps stay visible. The image
/// is `(rows*h + (rows-1)*gap)` rows × `(cols*w + (cols-1)*gap)` columns. Returns the PNG
/// bytes and the ranges in map order.
///
/// # Errors
///
/// As [`montage_pixels`], plus [`CodecError::TooLarge`] if the picture exceeds the PNG
/// size limit and [`CodecError::Encode`] if the PNG encoder fails.
pub fn encode_montage(
    maps: &[&[f32]],
    layout: &TileLayout,
    h: usize,
    w: usize,
    mode: Normalize,
    depth: BitDepth,
    speed: PngSpeed,
) -> Result<(Vec<u8>, Vec<MapRange>), CodecError> {
    let (pic, ranges) = montage_pixels(maps, layout, h, w, mode, depth)?;
    let (pw, ph) = png_dims(pic.width, pic.height)?;
    let color = match (pic.channels, depth) {
        (1, BitDepth::Eight) => ExtendedColorType::L8,
        (1, BitDepth::Sixteen) => ExtendedColorType::L16,
        (3, BitDepth::Eight) => ExtendedColorType::Rgb8,
        (3, BitDepth::Sixteen) => ExtendedColorType::Rgb16,
        (_, BitDepth::Eight) => ExtendedColorType::Rgba8,
        (_, BitDepth::Sixteen) => ExtendedColorType::Rgba16,
    };
    let bytes = interleave(&pic.samples, 1, depth);
    Ok((write_png(&bytes, pw, ph, color, speed)?, ranges))
}

/// Encodes the tiles of `layout` as a lossless WebP with exactly the pixels of the 8-bit
/// PNG [`encode_montage`] gives. Returns the WebP bytes and the ranges in map order.
///
/// # Errors
/// As [`montage_pixels`] and [`super::webp::encode_webp`].
pub fn encode_montage_webp(
    maps: &[&[f32]],
    layout: &TileLayout,
    h: usize,
    w: usize,
    mode: Normalize,
) -> Result<(Vec<u8>, Vec<MapRange>), CodecError> {
    let (pic, ranges) = montage_pixels(maps, layout, h, w, mode, BitDepth::Eight)?;
    // Values are <= 255 at 8 bit, so the narrowing is lossless.
    let samples: Vec<u8> = pic.samples.iter().map(|&v| v as u8).collect();
    let webp = super::webp::encode_webp(&samples, pic.width, pic.height, pic.channels)?;
    Ok((webp, ranges))
}

/// Quantised pixels of a picture: interleaved samples (`0..=255` or `0..=65535`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// `width · height · channels` samples, row-major, interleaved.
    pub samples: Vec<u16>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Samples per pixel: 1, 3 or 4.
    pub channels: usize,
}

/// The quantised pixels of the tiles of `layout` (the montage rule of [`encode_montage`]),
/// and the ranges in map order.
///
/// # Errors
///
/// [`CodecError::Empty`] if `h`, `w` or the tile count is 0; [`CodecError::Encode`] if
/// the tiles do not name every map of `maps` once, a map has the wrong length, or the
/// picture's size overflows.
pub fn montage_pixels(
    maps: &[&[f32]],
    layout: &TileLayout,
    h: usize,
    w: usize,
    mode: Normalize,
    depth: BitDepth,
) -> Result<(Picture, Vec<MapRange>), CodecError> {
    let (rows, cols, k) = (layout.rows, layout.cols, layout.channels);
    check_grid(maps, rows, cols * k, h, w)?;
    if layout.tiles.len() != rows * cols || layout.tiles.iter().any(|t| t.len() != k) {
        return Err(CodecError::Encode(format!(
            "{} tiles for a {rows}x{cols} grid of {k} channel(s)",
            layout.tiles.len()
        )));
    }
    // A single tile is the picture itself.
    let gap = if rows * cols == 1 { 0 } else { MONTAGE_GAP };
    let side = |count: usize, len: usize| {
        count
            .checked_mul(len + gap)
            .map(|t| t - gap)
            .ok_or_else(|| CodecError::Encode(format!("montage of {count} tiles overflows")))
    };
    let (big_h, big_w) = (side(rows, h)?, side(cols, w)?);
    let total = big_h
        .checked_mul(big_w)
        .and_then(|p| p.checked_mul(k))
        .ok_or_else(|| CodecError::Encode(format!("montage {big_h}x{big_w} overflows")))?;
    let top = depth.max_value();
    let grey = top / 2 + 1;
    let mut out = vec![grey; total];
    if k == 4 {
        // Gaps are opaque.
        out.iter_mut().skip(3).step_by(4).for_each(|a| *a = top);
    }
    // One band of `h + gap` rows per tile row; the last band has no gap.
    let ranges: Vec<Vec<(usize, MapRange)>> = out
        .par_chunks_mut((h + gap) * big_w * k)
        .enumerate()
        .map(|(i, band)| {
            let mut tile = vec![0u16; h * w];
            let mut ranges = Vec::with_capacity(cols * k);
            for t in 0..cols {
                for (ch, &m) in layout.tiles[i * cols + t].iter().enumerate() {
                    ranges.push((m, normalize_map(maps[m], mode, depth, &mut tile)));
                    for (y, row) in tile.chunks_exact(w).enumerate() {
                        let at = (y * big_w + t * (w + gap)) * k + ch;
                        for (o, &v) in band[at..].iter_mut().step_by(k).zip(row) {
                            *o = v;
                        }
                    }
                }
            }
            ranges
        })
        .collect();
    let mut ranges: Vec<(usize, MapRange)> = ranges.into_iter().flatten().collect();
    ranges.sort_by_key(|(m, _)| *m);
    let pic = Picture {
        samples: out,
        width: big_w,
        height: big_h,
        channels: k,
    };
    Ok((pic, ranges.into_iter().map(|(_, r)| r).collect()))
}

/// Minimum and maximum of the finite values, `None` if there are none.
fn finite_min_max(map: &[f32]) -> Option<(f32, f32)> {
    let (lo, hi) = map
        .par_chunks(CHUNK)
        .map(|c| {
            // Branch-free selects (non-finite values leave the extremes alone), so the
            // loop vectorises.
            c.iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                    let finite = x.abs() < f32::INFINITY;
                    (
                        if finite && x < lo { x } else { lo },
                        if finite && x > hi { x } else { hi },
                    )
                })
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        );
    (lo <= hi).then_some((lo, hi))
}
/// Validates PNG side lengths and converts them to `(width, height)` as `u32`.
fn png_dims(w: usize, h: usize) -> Result<(u32, u32), CodecError> {
    if w == 0 || h == 0 {
        return Err(CodecError::Empty);
    }
    for (what, v) in [("png_width", w), ("png_height", h)] {
        if v > PNG_MAX_DIM {
            return Err(CodecError::TooLarge {
                what,
                limit: PNG_MAX_DIM as u64,
                actual: v as u64,
            });
        }
    }
    let to_u32 = |v: usize| u32::try_from(v).map_err(|e| CodecError::Encode(e.to_string()));
    Ok((to_u32(w)?, to_u32(h)?))
}

/// Checks that every plane has exactly `hw` values.
fn check_lengths(planes: &[&[f32]], hw: usize) -> Result<(), CodecError> {
    match planes.iter().position(|p| p.len() != hw) {
        Some(k) => Err(CodecError::Encode(format!(
            "map {k} has {} values, expected {hw}",
            planes[k].len()
        ))),
        None => Ok(()),
    }
}

/// Validates an `n`×`c` grid of `h`×`w` maps.
fn check_grid(maps: &[&[f32]], n: usize, c: usize, h: usize, w: usize) -> Result<(), CodecError> {
    if n == 0 || c == 0 || h == 0 || w == 0 {
        return Err(CodecError::Empty);
    }
    if n.checked_mul(c) != Some(maps.len()) {
        return Err(CodecError::Encode(format!(
            "expected {n}x{c} maps, got {}",
            maps.len()
        )));
    }
    let hw = h
        .checked_mul(w)
        .ok_or_else(|| CodecError::Encode(format!("map size {h}x{w} overflows")))?;
    check_lengths(maps, hw)
}

/// Packs `k` planes of normalised pixels (CHW) into interleaved sample bytes
/// as `ImageEncoder::write_image` expects: `u8` at 8 bit, native-endian `u16`
/// at 16 bit.
fn interleave(norm: &[u16], k: usize, depth: BitDepth) -> Vec<u8> {
    let hw = norm.len() / k;
    let pixel = |i: usize| (0..k).map(move |c| norm[c * hw + i]);
    match depth {
        // Values are <= 255 at 8 bit, so the narrowing is lossless.
        BitDepth::Eight if k == 1 => norm.iter().map(|&v| v as u8).collect(),
        BitDepth::Eight => (0..hw).flat_map(pixel).map(|v| v as u8).collect(),
        BitDepth::Sixteen if k == 1 => norm.iter().flat_map(|v| v.to_ne_bytes()).collect(),
        BitDepth::Sixteen => (0..hw).flat_map(pixel).flat_map(u16::to_ne_bytes).collect(),
    }
}

/// Runs the PNG encoder over interleaved sample bytes.
fn write_png(
    bytes: &[u8],
    w: u32,
    h: u32,
    color: ExtendedColorType,
    speed: PngSpeed,
) -> Result<Vec<u8>, CodecError> {
    let compression = match speed {
        PngSpeed::Fast => CompressionType::Fast,
        PngSpeed::Small => CompressionType::Best,
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 + 256);
    PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive)
        .write_image(bytes, w, h, color)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
