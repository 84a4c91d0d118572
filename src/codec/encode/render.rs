//! Maps → quantised pictures, strip by strip: the one path by which every picture output
//! (PNG of one map, RGB, montage, ZIP of PNGs) is made, from whole maps or from a stack
//! computed a strip at a time.
//!
//! Min-max and `abs` normalisation need each map's range before any pixel is quantised,
//! so those run two passes over the strips: the first gathers each map's [`MapStats`],
//! the second quantises with them. `clamp` needs one pass (two for a ZIP, whose manifest
//! gives each map's extremes). A strip's values are the same in both passes, so the
//! pictures are exactly those of whole maps normalised at once.

use std::ops::Range;

use rayon::prelude::*;

use super::super::png_strips::PngStream;
use super::super::CodecError;
use super::canvas::{Band, Canvas, Grid};
use super::{BitDepth, MapRange, MapStats, Normalize, Quantizer};

/// The maps of a picture, a strip at a time.
pub trait Strips: Sync {
    /// What can stop a strip (a cancelled computation).
    type Error: Send + From<CodecError>;

    /// Rows `rows` of every map of image `image`: `[c, rows.len(), w]`, row-major.
    ///
    /// # Errors
    /// The source's.
    fn strip(&self, image: usize, rows: Range<usize>) -> Result<Vec<f32>, Self::Error>;

    /// Hands a strip back when it has been used (to a buffer cache, say).
    fn done(&self, _strip: Vec<f32>) {}
}

/// Where the maps go.
#[derive(Debug)]
pub enum Target {
    /// One picture (one map, RGB, or a montage of every map).
    One(Canvas),
    /// One gray picture per map, in map order (a ZIP).
    PerMap(Vec<Canvas>),
}

/// What [`render`] made.
#[derive(Debug)]
pub struct Rendered {
    /// The pictures, filled.
    pub target: Target,
    /// Each map's range, in map order.
    pub ranges: Vec<MapRange>,
    /// Each map's statistics, in map order (default values where none were gathered:
    /// `clamp` into one picture).
    pub stats: Vec<MapStats>,
    /// The one picture as a fast PNG, encoded as its rows were rendered, when asked.
    pub png: Option<Vec<u8>>,
}

/// Normalises the `grid.n × grid.c` maps of `strips` into pictures, strips of `rows` map
/// rows at a time, in parallel on the current rayon pool: into one picture for `grid`,
/// or with `per_map` one gray picture per map.
///
/// With `png = Some(strip_bytes)` (one picture only), the picture is also encoded as
/// [`Canvas::png`]'s fast PNG with strips of about `strip_bytes`, each strip filtered and
/// compressed by the thread that renders its last row ([`PngStream`]), so that encoding
/// overlaps the render's second (or only) pass: the same file, byte for byte.
///
/// # Errors
/// The pictures' (too large for PNG) as `S::Error`, the first strip's error, or the PNG
/// writer's.
pub fn render<S: Strips>(
    strips: &S,
    grid: Grid,
    per_map: bool,
    mode: Normalize,
    depth: BitDepth,
    rows: usize,
    png: Option<usize>,
) -> Result<Rendered, S::Error> {
    let Grid { n, c, h, w, .. } = grid;
    let rows = rows.clamp(1, h);
    let cuts: Vec<(usize, Range<usize>)> = (0..n)
        .flat_map(|i| (0..h.div_ceil(rows)).map(move |b| (i, b * rows..((b + 1) * rows).min(h))))
        .collect();
    let two_passes = mode != Normalize::Clamp || per_map;
    // A small job keeps its strips between the passes rather than computing them twice.
    let keep = two_passes && kept_floats(grid, per_map, mode) > 0;
    let mut kept: Vec<Option<Vec<f32>>> = Vec::new();
    let stats = if two_passes {
        let parts = cuts
            .par_iter()
            .map(|(i, r)| {
                let strip = strips.strip(*i, r.clone())?;
                let s = strip
                    .chunks_exact(r.len() * w)
                    .map(|m| {
                        let mut s = MapStats::default();
                        s.add(m);
                        s
                    })
                    .collect::<Vec<_>>();
                let strip = if keep {
                    Some(strip)
                } else {
                    strips.done(strip);
                    None
                };
                Ok((*i, s, strip))
            })
            .collect::<Result<Vec<_>, S::Error>>()?;
        let mut stats = vec![MapStats::default(); n * c];
        for (i, s, strip) in parts {
            for (j, s) in s.into_iter().enumerate() {
                stats[i * c + j] = stats[i * c + j].merge(s);
            }
            kept.push(strip);
        }
        stats
    } else {
        vec![MapStats::default(); n * c]
    };
    kept.resize_with(cuts.len(), || None);
    let quantizers: Vec<Quantizer> = stats
        .iter()
        .map(|s| Quantizer::new(mode, depth, s))
        .collect();
    let mut target = if per_map {
        let one = Grid {
            n: 1,
            c: 1,
            h,
            w,
            k: 1,
        };
        Target::PerMap(
            (0..n * c)
                .map(|_| Canvas::new(one, depth))
                .collect::<Result<_, _>>()?,
        )
    } else {
        Target::One(Canvas::new(grid, depth)?)
    };
    // Each task: an image's rows, and the bands its maps go to with, per map, the band
    // and the map's index within that band's grid.
    let mut file = Vec::new();
    let mut stream = None;
    let tasks: Vec<(usize, Range<usize>, Vec<Band<'_>>)> = match &mut target {
        Target::One(canvas) => {
            // The PNG's layout only when it is encoded here (a picture too large for
            // PNG may still be a TIFF or WebP).
            let layout = png.map(|_| canvas.png_rows()).transpose()?;
            let picture_bytes = canvas.bytes();
            let (bands, gaps) = canvas.bands_and_gaps(rows);
            if let (Some(strip_bytes), Some(layout)) = (png, layout) {
                file.reserve(picture_bytes / 4 + 256);
                let s = PngStream::new(&mut file, layout, strip_bytes)?;
                // The gaps between a montage's images are written already.
                for (top, gap) in gaps {
                    s.put(top, gap)?;
                }
                stream = Some(s);
            }
            bands
                .into_iter()
                .map(|b| (b.image, b.rows.clone(), vec![b]))
                .collect()
        }
        Target::PerMap(canvases) => {
            let mut per: Vec<std::vec::IntoIter<Band<'_>>> = canvases
                .iter_mut()
                .map(|cv| cv.bands(rows).into_iter())
                .collect();
            cuts.iter()
                .map(|(i, r)| {
                    let bands = per[i * c..(i + 1) * c]
                        .iter_mut()
                        .map(|it| it.next().expect("a band per cut"))
                        .collect();
                    (*i, r.clone(), bands)
                })
                .collect()
        }
    };
    tasks
        .into_par_iter()
        .zip(kept)
        .map(|((i, r, mut bands), strip)| {
            let strip = match strip {
                Some(s) => s,
                None => strips.strip(i, r.clone())?,
            };
            let maps: Vec<&[f32]> = strip.chunks_exact(r.len() * w).collect();
            if bands.len() == 1 && grid.k > 1 {
                // Tiles of k channels (RGB, RGBA): row by row, each channel's row quantised
                // into L1, then the tile's pixels written in one pass.
                let k = grid.k;
                let mut pixels = vec![vec![0u16; w]; k];
                for tile in 0..c / k {
                    for y in 0..r.len() {
                        for (ch, px) in pixels.iter_mut().enumerate() {
                            let j = tile * k + ch;
                            quantizers[i * c + j].fill(&maps[j][y * w..][..w], px);
                        }
                        bands[0].put_tile_row(tile, y, &pixels);
                    }
                }
            } else {
                // Row by row through a row of pixels that stays in L1.
                let mut pixels = vec![0u16; w];
                for (j, map) in maps.iter().enumerate() {
                    let q = &quantizers[i * c + j];
                    let (band, at) = if bands.len() == 1 { (0, j) } else { (j, 0) };
                    for (y, row) in map.chunks_exact(w).enumerate() {
                        q.fill(row, &mut pixels);
                        bands[band].put_row(at, y, &pixels);
                    }
                }
            }
            drop(maps);
            strips.done(strip);
            if let Some(stream) = &stream {
                for band in bands {
                    let (top, rows) = band.finish();
                    stream.put(top, rows)?;
                }
            }
            Ok(())
        })
        .collect::<Result<(), S::Error>>()?;
    let finished = stream.map(PngStream::finish).transpose()?;
    let png = finished.map(|()| file);
    Ok(Rendered {
        target,
        ranges: quantizers.iter().map(Quantizer::range).collect(),
        stats,
        png,
    })
}

/// Floats of map strips [`render`] keeps between its two passes (instead of computing
/// them again): all of them when the maps hold at most [`KEEP_FLOATS`], else none.
pub fn kept_floats(grid: Grid, per_map: bool, mode: Normalize) -> u64 {
    let floats = [grid.n, grid.c, grid.h, grid.w]
        .iter()
        .fold(1u64, |a, &d| a.saturating_mul(d as u64));
    if (mode != Normalize::Clamp || per_map) && floats <= KEEP_FLOATS {
        floats
    } else {
        0
    }
}

/// Most floats of maps kept between the passes: 16 MiB, a 1080p picture's three maps.
const KEEP_FLOATS: u64 = 4 << 20;

/// Whole maps `[n·c][h·w]` as strips.
pub struct WholeMaps<'a> {
    /// The maps, `maps[i·c + j]`.
    pub maps: &'a [&'a [f32]],
    /// Maps per image.
    pub c: usize,
    /// Map width.
    pub w: usize,
}

impl Strips for WholeMaps<'_> {
    type Error = CodecError;

    fn strip(&self, image: usize, rows: Range<usize>) -> Result<Vec<f32>, CodecError> {
        let mut out = Vec::with_capacity(self.c * rows.len() * self.w);
        for m in &self.maps[image * self.c..(image + 1) * self.c] {
            out.extend_from_slice(&m[rows.start * self.w..rows.end * self.w]);
        }
        Ok(out)
    }
}
