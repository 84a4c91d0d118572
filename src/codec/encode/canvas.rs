//! The picture a response carries, as quantised samples: maps placed in a grid of tiles,
//! written band by band as strips of maps are quantised, then encoded once.
//!
//! A [`Grid`] of `n` rows of tiles (one per image) by `c / k` columns, each tile `h × w`
//! pixels of `k` channels (1 = gray, 3 = RGB, 4 = RGBA) taken from `k` consecutive maps
//! (the rule of [`super::super::layout`]), tiles [`MONTAGE_GAP`](super::MONTAGE_GAP)
//! pixels apart on a mid-grey background (opaque in RGBA) when there are several. The samples are interleaved per pixel, `u8` at 8 bits and native-endian
//! `u16` at 16 bits, as `ImageEncoder::write_image` takes them.

use std::ops::Range;

use super::super::png_strips::{encode_png_strips, PngRows, STRIP_BYTES};
use super::super::CodecError;
use super::{png_dims, BitDepth, PngSpeed, MONTAGE_GAP};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::ImageEncoder;

/// Where each map goes in a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Images (rows of tiles).
    pub n: usize,
    /// Maps per image.
    pub c: usize,
    /// Map height and width.
    pub h: usize,
    /// Map width.
    pub w: usize,
    /// Channels per tile (1, 3 or 4); `c` is a multiple of it.
    pub k: usize,
}

impl Grid {
    /// Pixels between tiles: none for a single tile.
    fn gap(&self) -> usize {
        if self.n == 1 && self.c == self.k {
            0
        } else {
            MONTAGE_GAP
        }
    }

    /// `(width, height)` of the picture in pixels.
    pub fn size(&self) -> (usize, usize) {
        let side = |count: usize, len: usize| {
            count
                .checked_mul(len + self.gap())
                .map_or(usize::MAX, |t| t - self.gap())
        };
        (side(self.c / self.k, self.w), side(self.n, self.h))
    }
}

/// A picture being filled: [`Canvas::bands`] hands out disjoint rows to write.
#[derive(Debug)]
pub struct Canvas {
    grid: Grid,
    depth: BitDepth,
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl Drop for Canvas {
    /// The samples go back to the buffer cache for the next picture.
    fn drop(&mut self) {
        crate::conv::buffers::give_bytes(std::mem::take(&mut self.data));
    }
}

/// Rows `rows` of image `image`'s tiles, to write with [`Band::put`].
#[derive(Debug)]
pub struct Band<'a> {
    grid: Grid,
    depth: BitDepth,
    /// Bytes per picture row.
    stride: usize,
    /// Image (tile row) and its map rows.
    pub image: usize,
    /// Map rows this band holds.
    pub rows: Range<usize>,
    /// The picture row of its first row.
    top: usize,
    data: &'a mut [u8],
}

impl Canvas {
    /// A picture for `grid` at `depth`, mid-grey between tiles. The tiles' samples are
    /// unspecified until written: every map must be written (as `render` does) before the
    /// picture is encoded.
    ///
    /// # Errors
    /// [`CodecError::Empty`] for an empty grid, [`CodecError::TooLarge`] beyond the PNG
    /// size limit, [`CodecError::Encode`] for a grid whose `c` is not a multiple of `k`.
    pub fn new(grid: Grid, depth: BitDepth) -> Result<Self, CodecError> {
        let Grid { n, c, h, w, k } = grid;
        if n == 0 || c == 0 || h == 0 || w == 0 {
            return Err(CodecError::Empty);
        }
        if !matches!(k, 1 | 3 | 4) || !c.is_multiple_of(k) {
            return Err(CodecError::Encode(format!(
                "{c} maps do not make tiles of {k} channel(s)"
            )));
        }
        let (width, height) = grid.size();
        png_dims(width, height)?;
        let bytes = width
            .checked_mul(height)
            .and_then(|p| p.checked_mul(k * sample_bytes(depth)))
            .ok_or_else(|| CodecError::Encode(format!("picture {width}x{height} overflows")))?;
        // A buffer from the cache, warm from an earlier picture: not zeroed, since a
        // single tile's every sample is written by `render`, and the montage background
        // is filled here.
        let mut data = crate::conv::buffers::take_bytes_unzeroed(bytes);
        if grid.gap() != 0 {
            // Mid-grey samples; in RGBA the alpha of the gaps is opaque.
            let grey = depth.max_value() / 2 + 1;
            let sample = |v: u16| match depth {
                BitDepth::Eight => vec![v as u8],
                BitDepth::Sixteen => v.to_ne_bytes().to_vec(),
            };
            let mut pixel: Vec<u8> = (0..k).flat_map(|_| sample(grey)).collect();
            if k == 4 {
                let sb = sample_bytes(depth);
                pixel[3 * sb..].copy_from_slice(&sample(depth.max_value()));
            }
            for px in data.chunks_exact_mut(pixel.len()) {
                px.copy_from_slice(&pixel);
            }
        }
        Ok(Self {
            grid,
            depth,
            width,
            height,
            data,
        })
    }

    /// Bytes of the samples.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The picture's rows cut into bands of at most `rows` map rows per image, in order.
    pub fn bands(&mut self, rows: usize) -> Vec<Band<'_>> {
        self.bands_and_gaps(rows).0
    }

    /// [`Canvas::bands`], and the rows between images (a montage's gaps, already filled)
    /// as `(picture row, rows)`.
    pub fn bands_and_gaps(&mut self, rows: usize) -> (Vec<Band<'_>>, Vec<(usize, &[u8])>) {
        let Grid { h, k, .. } = self.grid;
        let rows = rows.max(1);
        let stride = self.width * k * sample_bytes(self.depth);
        let per_image = (h + self.grid.gap()) * stride;
        let mut out = Vec::new();
        let mut gaps = Vec::new();
        for (image, mut rest) in self.data.chunks_mut(per_image).enumerate() {
            let top = image * (h + self.grid.gap());
            let mut y = 0;
            while y < h {
                let take = rows.min(h - y);
                let (band, tail) = rest.split_at_mut(take * stride);
                out.push(Band {
                    grid: self.grid,
                    depth: self.depth,
                    stride,
                    image,
                    rows: y..y + take,
                    top: top + y,
                    data: band,
                });
                rest = tail;
                y += take;
            }
            if !rest.is_empty() {
                gaps.push((top + h, &*rest));
            }
        }
        (out, gaps)
    }

    /// The fast PNG ([`PngSpeed::Fast`]) with strips of about `strip_bytes` (tests force
    /// small ones).
    ///
    /// # Errors
    /// [`CodecError::Encode`] if the PNG encoder fails.
    pub fn png_in_strips(&self, strip_bytes: usize) -> Result<Vec<u8>, CodecError> {
        encode_png_strips(&self.data, self.png_rows()?, strip_bytes)
    }

    /// The picture's layout as the PNG writer takes it.
    ///
    /// # Errors
    /// [`CodecError::TooLarge`] beyond the PNG size limit.
    pub fn png_rows(&self) -> Result<PngRows, CodecError> {
        let (width, height) = png_dims(self.width, self.height)?;
        Ok(PngRows {
            width,
            height,
            // 1, 3 or 4 (Grid::k).
            channels: self.grid.k as u8,
            bits: 8 * sample_bytes(self.depth) as u8,
        })
    }

    /// Encodes the picture as a PNG (gray or RGB, 8 or 16 bits).
    ///
    /// # Errors
    /// [`CodecError::Encode`] if the PNG encoder fails.
    pub fn png(&self, speed: PngSpeed) -> Result<Vec<u8>, CodecError> {
        let (w, h) = png_dims(self.width, self.height)?;
        if speed == PngSpeed::Fast {
            return self.png_in_strips(STRIP_BYTES);
        }
        use image::ExtendedColorType as E;
        let color = match (self.grid.k, self.depth) {
            (1, BitDepth::Eight) => E::L8,
            (1, BitDepth::Sixteen) => E::L16,
            (3, BitDepth::Eight) => E::Rgb8,
            (3, BitDepth::Sixteen) => E::Rgb16,
            (_, BitDepth::Eight) => E::Rgba8,
            (_, BitDepth::Sixteen) => E::Rgba16,
        };
        // `compression: small`: the `image` crate's best compression, one thread.
        let mut out = Vec::with_capacity(self.data.len() / 4 + 256);
        PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive)
            .write_image(&self.data, w, h, color)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(out)
    }
}

impl Canvas {
    /// Encodes the picture as a lossless WebP with exactly its pixels (8-bit only).
    ///
    /// # Errors
    /// [`CodecError::Encode`] for a 16-bit picture; [`super::super::webp::encode_webp`]'s.
    pub fn webp(&self) -> Result<Vec<u8>, CodecError> {
        if self.depth != BitDepth::Eight {
            return Err(CodecError::Encode("WebP holds 8-bit samples only".into()));
        }
        super::super::webp::encode_webp(&self.data, self.width, self.height, self.grid.k)
    }
}

impl<'a> Band<'a> {
    /// The band's rows, written: `(picture row of the first, the rows' samples)`.
    pub fn finish(self) -> (usize, &'a [u8]) {
        (self.top, self.data)
    }

    /// Writes the quantised values of map `j` for this band's rows (`pixels` is
    /// `rows.len() × w`, each value ≤ the depth's maximum).
    ///
    /// # Panics
    /// If `j` is not a map of the grid or `pixels` has the wrong length.
    pub fn put(&mut self, j: usize, pixels: &[u16]) {
        let w = self.grid.w;
        assert_eq!(pixels.len(), self.rows.len() * w, "band of map {j}");
        for (y, src) in pixels.chunks_exact(w).enumerate() {
            self.put_row(j, y, src);
        }
    }

    /// Writes row `y` (of this band) of every channel of tile `tile` at once: `srcs[ch]`
    /// is map `tile · k + ch`'s row of `w` quantised values. The same bytes as
    /// [`Band::put_row`] for each map, in one pass over the picture row instead of `k`.
    ///
    /// # Panics
    /// If `tile` or `y` is out of the band, or `srcs` is not `k` rows of `w`.
    pub fn put_tile_row(&mut self, tile: usize, y: usize, srcs: &[Vec<u16>]) {
        let Grid { c, w, k, .. } = self.grid;
        assert!(tile < c / k && y < self.rows.len(), "tile {tile}, row {y}");
        assert!(
            srcs.len() == k && srcs.iter().all(|s| s.len() == w),
            "{k} rows of {w}"
        );
        let sb = sample_bytes(self.depth);
        let x0 = tile * (w + self.grid.gap());
        let row = &mut self.data[y * self.stride..][..self.stride];
        let row = &mut row[x0 * k * sb..(x0 + w) * k * sb];
        match (self.depth, k) {
            // Values are ≤ 255 at 8 bits, so the narrowing is lossless.
            (BitDepth::Eight, 3) => interleave3(&srcs[0], &srcs[1], &srcs[2], row),
            (BitDepth::Eight, _) => {
                for (x, px) in row.chunks_exact_mut(k).enumerate() {
                    for (o, src) in px.iter_mut().zip(srcs) {
                        *o = src[x] as u8;
                    }
                }
            }
            (BitDepth::Sixteen, _) => {
                for (x, px) in row.chunks_exact_mut(2 * k).enumerate() {
                    for (o, src) in px.chunks_exact_mut(2).zip(srcs) {
                        o.copy_from_slice(&src[x].to_ne_bytes());
                    }
                }
            }
        }
    }

    /// Writes row `y` (of this band) of map `j`: `w` quantised values.
    ///
    /// # Panics
    /// If `j` or `y` is out of the band, or `src` is not `w` long.
    pub fn put_row(&mut self, j: usize, y: usize, src: &[u16]) {
        let Grid { c, w, k, .. } = self.grid;
        assert!(j < c && y < self.rows.len(), "map {j} of {c}, row {y}");
        assert_eq!(src.len(), w, "a row of map {j}");
        let gap = self.grid.gap();
        let (tile, channel) = (j / k, j % k);
        let sb = sample_bytes(self.depth);
        let x0 = tile * (w + gap);
        let row = &mut self.data[y * self.stride..][..self.stride];
        let row = &mut row[x0 * k * sb..(x0 + w) * k * sb];
        match (self.depth, k) {
            // Values are ≤ 255 at 8 bits, so the narrowing is lossless.
            (BitDepth::Eight, 1) => {
                for (o, &v) in row.iter_mut().zip(src) {
                    *o = v as u8;
                }
            }
            (BitDepth::Eight, 3) => {
                for (px, &v) in row.chunks_exact_mut(3).zip(src) {
                    px[channel] = v as u8;
                }
            }
            (BitDepth::Eight, _) => {
                for (px, &v) in row.chunks_exact_mut(k).zip(src) {
                    px[channel] = v as u8;
                }
            }
            (BitDepth::Sixteen, _) => {
                for (px, &v) in row.chunks_exact_mut(2 * k).zip(src) {
                    px[2 * channel..2 * channel + 2].copy_from_slice(&v.to_ne_bytes());
                }
            }
        }
    }
}

super::super::simd::multiversion! {
    /// `out[3x..3x + 3] = [r[x], g[x], b[x]]` as bytes (values ≤ 255), compiled for the
    /// widest instruction set.
    pub(crate) fn interleave3, interleave3_at(r: &[u16], g: &[u16], b: &[u16], out: &mut [u8]) = interleave3_body;
}

/// [`interleave3`]'s loop.
#[inline(always)]
fn interleave3_body(r: &[u16], g: &[u16], b: &[u16], out: &mut [u8]) {
    // Values are ≤ 255 at 8 bits, so the narrowing is lossless.
    for (px, ((&r, &g), &b)) in out.chunks_exact_mut(3).zip(r.iter().zip(g).zip(b)) {
        px.copy_from_slice(&[r as u8, g as u8, b as u8]);
    }
}

/// Bytes per sample.
fn sample_bytes(depth: BitDepth) -> usize {
    match depth {
        BitDepth::Eight => 1,
        BitDepth::Sixteen => 2,
    }
}
