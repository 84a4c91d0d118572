//! Encoding of float maps (convolution outputs) into PNG images, grid
//! montages and ZIP archives.
//!
//! Every map is normalised on its own into 8- or 16-bit pixel values by
//! [`normalize_map`] (rules in [`Normalize`]); the range actually used is
//! returned as a [`MapRange`] so callers can report how pixels map back to
//! floats. Shapes are always given explicitly as `h` (rows) and `w`
//! (columns); a map is a row-major `&[f32]` of length `h * w`.

use rayon::prelude::*;

use super::layout::TileLayout;
use super::CodecError;

mod archive;
mod canvas;
mod render;
pub use archive::{encode_zip, zip_rendered, zip_tiffs, ZipInner};
pub(crate) use archive::{f32_json, manifest_object, non_nan_min_max};
pub use canvas::{Band, Canvas, Grid};
pub use render::{kept_floats, render, Rendered, Strips, Target, WholeMaps};

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
    /// Adaptive filtering and fdeflate, in strips on every core of the pool
    /// ([`super::png_strips`]).
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

/// What normalisation needs to know of a map, gathered in one pass (or strip by strip,
/// [`MapStats::add`] then [`MapStats::merge`]): its finite extremes, and whether it holds
/// `+∞` or `−∞`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapStats {
    /// Smallest and largest finite value (`+∞`, `−∞` while there is none).
    finite: (f32, f32),
    /// Whether some value is `−∞`, some value `+∞`.
    infinite: (bool, bool),
}

impl Default for MapStats {
    fn default() -> Self {
        Self {
            finite: (f32::INFINITY, f32::NEG_INFINITY),
            infinite: (false, false),
        }
    }
}

impl MapStats {
    /// The statistics of a whole map, in parallel chunks on the current rayon pool.
    pub fn of(map: &[f32]) -> Self {
        map.par_chunks(CHUNK)
            .map(|c| {
                let mut s = Self::default();
                s.add(c);
                s
            })
            .reduce(Self::default, Self::merge)
    }

    /// Adds the values of `part`.
    pub fn add(&mut self, part: &[f32]) {
        // Branch-free selects (non-finite values leave the extremes alone), so the loop
        // vectorises.
        let (lo, hi, neg, pos) = part.iter().fold(
            (
                self.finite.0,
                self.finite.1,
                self.infinite.0,
                self.infinite.1,
            ),
            |(lo, hi, neg, pos), &x| {
                let finite = x.abs() < f32::INFINITY;
                (
                    if finite && x < lo { x } else { lo },
                    if finite && x > hi { x } else { hi },
                    neg | (x == f32::NEG_INFINITY),
                    pos | (x == f32::INFINITY),
                )
            },
        );
        self.finite = (lo, hi);
        self.infinite = (neg, pos);
    }

    /// The statistics of two parts together.
    pub fn merge(self, o: Self) -> Self {
        Self {
            finite: (self.finite.0.min(o.finite.0), self.finite.1.max(o.finite.1)),
            infinite: (
                self.infinite.0 | o.infinite.0,
                self.infinite.1 | o.infinite.1,
            ),
        }
    }

    /// Minimum and maximum of the finite values, `None` if there are none.
    fn finite_min_max(&self) -> Option<(f32, f32)> {
        (self.finite.0 <= self.finite.1).then_some(self.finite)
    }

    /// Largest finite `|x|`, 0 if there is none.
    fn max_abs(&self) -> f32 {
        self.finite_min_max()
            .map_or(0.0, |(lo, hi)| lo.abs().max(hi.abs()))
    }

    /// Minimum and maximum ignoring NaN (NaN when every value is NaN).
    pub fn min_max(&self) -> (f32, f32) {
        let (neg, pos) = self.infinite;
        let (lo, hi) = self.finite_min_max().unwrap_or((f32::NAN, f32::NAN));
        let lo = if neg {
            f32::NEG_INFINITY
        } else if lo.is_nan() && pos {
            f32::INFINITY
        } else {
            lo
        };
        let hi = if pos {
            f32::INFINITY
        } else if hi.is_nan() && neg {
            f32::NEG_INFINITY
        } else {
            hi
        };
        (lo, hi)
    }
}

/// The per-pixel rule of a normalisation: floats → pixel values `0..=max`, for one map
/// whose [`MapStats`] are known. See [`normalize_map`].
#[derive(Debug, Clone, Copy)]
pub struct Quantizer {
    rule: Rule,
    top: u16,
    range: MapRange,
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `(x − lo)·scale` in f32.
    Shift { lo: f32, scale: f32 },
    /// `(x − lo)·scale` in f64 (ranges that overflow f32, or a constant map).
    ShiftWide { lo: f64, scale: f64 },
    /// `clamp(x, 0, 255)·k`.
    Clamp { k: f32 },
    /// `|x|·scale` in f32.
    Abs { scale: f32 },
    /// `|x|·scale` in f64.
    AbsWide { scale: f64 },
}

impl Quantizer {
    /// The rule of `mode` at `depth` for a map with statistics `stats`.
    pub fn new(mode: Normalize, depth: BitDepth, stats: &MapStats) -> Self {
        let top = depth.max_value();
        let max = f64::from(top);
        let (rule, range) = match mode {
            Normalize::Minmax => {
                let (lo, hi) = stats.finite_min_max().unwrap_or((0.0, 0.0));
                let span = f64::from(hi) - f64::from(lo);
                let scale = if span > 0.0 { max / span } else { 0.0 };
                let scale32 = scale as f32;
                let rule = if span > 0.0
                    && (hi - lo).is_finite()
                    && scale32.is_finite()
                    && scale32 > 0.0
                {
                    Rule::Shift { lo, scale: scale32 }
                } else {
                    Rule::ShiftWide {
                        lo: f64::from(lo),
                        scale,
                    }
                };
                (rule, MapRange { lo, hi })
            }
            Normalize::Clamp => (
                // max / 255 is exactly 1 or 257, so 8-bit output is round(clamp(x)).
                Rule::Clamp {
                    k: (max / 255.0) as f32,
                },
                MapRange { lo: 0.0, hi: 255.0 },
            ),
            Normalize::Abs => {
                let hi = stats.max_abs();
                let scale = if hi > 0.0 { max / f64::from(hi) } else { 0.0 };
                let scale32 = scale as f32;
                let rule = if scale32.is_finite() && scale32 > 0.0 {
                    Rule::Abs { scale: scale32 }
                } else {
                    Rule::AbsWide { scale }
                };
                (rule, MapRange { lo: 0.0, hi })
            }
        };
        Self { rule, top, range }
    }

    /// The range mapped onto `0..=max`.
    pub fn range(&self) -> MapRange {
        self.range
    }

    /// `out[i] = pixel(map[i])`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn fill(&self, map: &[f32], out: &mut [u16]) {
        assert_eq!(map.len(), out.len(), "quantize: output length mismatch");
        fill_rule(self.rule, self.top, map, out);
    }

    /// [`Self::fill`] compiled for `level` (for tests of every variant).
    #[cfg(test)]
    pub(crate) fn fill_at(&self, level: super::simd::Level, map: &[f32], out: &mut [u16]) {
        assert_eq!(map.len(), out.len(), "quantize: output length mismatch");
        fill_rule_at(level, self.rule, self.top, map, out);
    }
}

super::simd::multiversion! {
    /// `out[i] = pixel(map[i])` under `rule`, compiled for the widest instruction set.
    fn fill_rule, fill_rule_at(rule: Rule, top: u16, map: &[f32], out: &mut [u16]) = fill_body;
}

/// [`Quantizer::fill`]'s loop (`map` and `out` of one length).
#[inline(always)]
fn fill_body(rule: Rule, top: u16, map: &[f32], out: &mut [u16]) {
    let max = f64::from(top);
    // x ↦ round((x − offset)·scale) clamped to 0..=max, one multiply per pixel (a
    // division and a libm `round` call per pixel were a quarter of the 1080p pipeline).
    // Rounding is half up, `(v + 0.5)` truncated, which equals half away from zero for
    // v ≥ 0.
    let quantize = move |v: f64| -> u16 {
        if v >= max {
            top
        } else if v > 0.0 {
            (v + 0.5) as u16
        } else {
            0 // also NaN
        }
    };
    let each = |out: &mut [u16], f: &dyn Fn(f32) -> u16| {
        for (o, &x) in out.iter_mut().zip(map) {
            *o = f(x);
        }
    };
    match rule {
        // Branch-free in f32 so it vectorises: ±∞ saturate, NaN → 0 (`max` drops NaN).
        // Within a rounding error of the f64 form.
        Rule::Shift { lo, scale } => {
            for (o, &x) in out.iter_mut().zip(map) {
                *o = quantize32((x - lo) * scale, top);
            }
        }
        Rule::ShiftWide { lo, scale } => each(out, &|x: f32| {
            if x.is_finite() {
                quantize((f64::from(x) - lo) * scale)
            } else if x == f32::INFINITY {
                top
            } else {
                0
            }
        }),
        // Not `clamp`: it keeps NaN, where `max` maps NaN to 0 as documented.
        #[allow(clippy::manual_clamp)]
        Rule::Clamp { k } => {
            for (o, &x) in out.iter_mut().zip(map) {
                *o = quantize32(x.max(0.0).min(255.0) * k, top);
            }
        }
        Rule::Abs { scale } => {
            for (o, &x) in out.iter_mut().zip(map) {
                *o = quantize32(x.abs() * scale, top);
            }
        }
        Rule::AbsWide { scale } => each(out, &|x: f32| {
            if x.is_finite() {
                quantize(f64::from(x.abs()) * scale)
            } else if x.is_infinite() {
                top
            } else {
                0
            }
        }),
    }
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
    let stats = if mode == Normalize::Clamp {
        MapStats::default()
    } else {
        MapStats::of(map)
    };
    let q = Quantizer::new(mode, depth, &stats);
    out.par_chunks_mut(CHUNK)
        .zip(map.par_chunks(CHUNK))
        .for_each(|(o, m)| q.fill(m, o));
    q.range()
}

/// `round(clamp(v, 0, top))`, half up; NaN → 0. Branch-free, so loops over it vectorise.
#[inline(always)]
fn quantize32(v: f32, top: u16) -> u16 {
    // `max` maps NaN to 0, so `v` is finite, in 0.5..=65535.5.
    let v = v.max(0.0).min(f32::from(top)) + 0.5;
    // SAFETY: `v` is finite and within i32's range, so the unchecked conversion is exact
    // truncation; it vectorises (cvttps2dq) where a saturating `as` does not.
    #[allow(unsafe_code)]
    let i = unsafe { v.to_int_unchecked::<i32>() };
    i as u16
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
    png_dims(w, h)?;
    check_lengths(planes, h * w)?;
    let k = planes.len();
    if !matches!(k, 1 | 3) {
        return Err(CodecError::Encode(format!(
            "expected 1 or 3 planes, got {k}"
        )));
    }
    let grid = Grid {
        n: 1,
        c: k,
        h,
        w,
        k,
    };
    let (canvas, ranges) = whole_picture(planes, grid, mode, depth)?;
    Ok((canvas.png(speed)?, ranges))
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
/// [`CodecError::Empty`] if `h`, `w` or the tile count is 0; [`CodecError::TooLarge`] if
/// the picture exceeds the PNG size limit; [`CodecError::Encode`] if the tiles are not
/// the maps in order, a map has the wrong length, or the PNG encoder fails.
pub fn encode_montage(
    maps: &[&[f32]],
    layout: &TileLayout,
    h: usize,
    w: usize,
    mode: Normalize,
    depth: BitDepth,
    speed: PngSpeed,
) -> Result<(Vec<u8>, Vec<MapRange>), CodecError> {
    let grid = layout_grid(maps, layout, h, w)?;
    let (canvas, ranges) = whole_picture(maps, grid, mode, depth)?;
    Ok((canvas.png(speed)?, ranges))
}

/// Encodes the tiles of `layout` as a lossless WebP with exactly the pixels of the 8-bit
/// PNG [`encode_montage`] gives. Returns the WebP bytes and the ranges in map order.
///
/// # Errors
/// As [`encode_montage`] and [`super::webp::encode_webp`].
pub fn encode_montage_webp(
    maps: &[&[f32]],
    layout: &TileLayout,
    h: usize,
    w: usize,
    mode: Normalize,
) -> Result<(Vec<u8>, Vec<MapRange>), CodecError> {
    let grid = layout_grid(maps, layout, h, w)?;
    let (canvas, ranges) = whole_picture(maps, grid, mode, BitDepth::Eight)?;
    Ok((canvas.webp()?, ranges))
}

/// The [`Grid`] of a tile layout, whose tiles must be the maps in order (`k` consecutive
/// maps per tile, as [`super::layout::tile_layout`] makes them).
fn layout_grid(
    maps: &[&[f32]],
    layout: &TileLayout,
    h: usize,
    w: usize,
) -> Result<Grid, CodecError> {
    let (rows, cols, k) = (layout.rows, layout.cols, layout.channels);
    check_grid(maps, rows, cols * k, h, w)?;
    let in_order = layout.tiles.len() == rows * cols
        && layout
            .tiles
            .iter()
            .enumerate()
            .all(|(t, tile)| tile.iter().copied().eq(t * k..(t + 1) * k));
    if !in_order {
        return Err(CodecError::Encode(format!(
            "{} tiles for a {rows}x{cols} grid of {k} channel(s), not the maps in order",
            layout.tiles.len()
        )));
    }
    Ok(Grid {
        n: rows,
        c: cols * k,
        h,
        w,
        k,
    })
}

/// Normalises whole maps into one picture for `grid` ([`render`]).
fn whole_picture(
    maps: &[&[f32]],
    grid: Grid,
    mode: Normalize,
    depth: BitDepth,
) -> Result<(Canvas, Vec<MapRange>), CodecError> {
    let strips = WholeMaps {
        maps,
        c: grid.c,
        w: grid.w,
    };
    let rendered = render(
        &strips,
        grid,
        false,
        mode,
        depth,
        STRIP_PIXELS.div_ceil(grid.w),
        None,
    )?;
    let Target::One(canvas) = rendered.target else {
        unreachable!("render without per_map makes one picture")
    };
    Ok((canvas, rendered.ranges))
}

/// Pixels per strip when whole maps are rendered.
const STRIP_PIXELS: usize = 1 << 16;

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

#[cfg(test)]
mod tests;
