//! The colour rule of pictures (`output.color`): which maps of which image form one tile
//! of a PNG, montage or WebP, and with how many channels.
//!
//! **Rule.** With `"auto"` (the default), when the input had 3 channels (RGB) or 4 (RGBA)
//! and the result has as many maps per image, the maps of each image form one colour tile
//! (RGB or RGBA), one row of the grid per batch item: a batch of colour images filtered
//! with `channels: "each"`, `rgba` with `each`, a 4-D kernel with 3 outputs on RGB and a
//! depthwise `groups: 3` blur all come back in colour. Every other result, and every
//! result with `"gray"`, is one gray tile per map: rows are batch items, columns are
//! channels. Each map is still normalised on its own.

/// `output.color`: how maps become tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PictureColor {
    /// Colour tiles where the module rule allows, gray tiles elsewhere.
    #[default]
    Auto,
    /// One gray tile per map.
    Gray,
}

/// The tiles of a picture, in a `rows × cols` grid, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileLayout {
    /// Tile rows (batch items).
    pub rows: usize,
    /// Tiles per row.
    pub cols: usize,
    /// Channels of every tile: 1 (gray), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// Per tile (row-major), the map indices (`i · c + j`) of its channels, in order.
    pub tiles: Vec<Vec<usize>>,
}

/// The tiles of an `n × c` grid of maps computed from a `c_in`-channel input.
pub fn tile_layout(n: usize, c: usize, c_in: usize, color: PictureColor) -> TileLayout {
    if color == PictureColor::Auto && matches!(c_in, 3 | 4) && c == c_in {
        TileLayout {
            rows: n,
            cols: 1,
            channels: c,
            tiles: (0..n).map(|i| (i * c..(i + 1) * c).collect()).collect(),
        }
    } else {
        TileLayout {
            rows: n,
            cols: c,
            channels: 1,
            tiles: (0..n * c).map(|k| vec![k]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_maps_of_one_rgb_image_are_one_rgb_tile() {
        let l = tile_layout(1, 3, 3, PictureColor::Auto);
        assert_eq!((l.rows, l.cols, l.channels), (1, 1, 3));
        assert_eq!(l.tiles, [vec![0, 1, 2]]);
    }

    #[test]
    fn a_batch_of_rgb_images_is_one_colour_tile_per_row() {
        let l = tile_layout(2, 3, 3, PictureColor::Auto);
        assert_eq!((l.rows, l.cols, l.channels), (2, 1, 3));
        assert_eq!(l.tiles, [vec![0, 1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn four_maps_of_rgba_are_rgba_tiles() {
        let l = tile_layout(2, 4, 4, PictureColor::Auto);
        assert_eq!((l.cols, l.channels), (1, 4));
        assert_eq!(l.tiles[1], [4, 5, 6, 7]);
    }

    #[test]
    fn gray_input_other_counts_and_gray_mode_give_gray_tiles() {
        for (n, c, c_in, color) in [
            (1, 3, 1, PictureColor::Auto),
            (1, 1, 3, PictureColor::Auto),
            (2, 2, 3, PictureColor::Auto),
            (1, 3, 4, PictureColor::Auto),
            (2, 3, 3, PictureColor::Gray),
        ] {
            let l = tile_layout(n, c, c_in, color);
            assert_eq!(
                (l.rows, l.cols, l.channels),
                (n, c, 1),
                "{n} {c} {c_in} {color:?}"
            );
            assert_eq!(l.tiles.len(), n * c);
            assert!(l.tiles.iter().enumerate().all(|(k, t)| t == &[k]));
        }
    }
}
