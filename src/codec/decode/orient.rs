//! EXIF orientation applied to interleaved samples, so that [`super::Pixels`] is upright.
//!
//! The eight EXIF Orientation values (TIFF tag 274) say how the stored pixels must be
//! turned to be shown upright. In upright coordinates `(x', y')` of an image stored as
//! `w × h`, the stored pixel read is:
//!
//! | EXIF | `image::metadata::Orientation` | stored `(x, y)`          | upright size |
//! |------|--------------------------------|--------------------------|--------------|
//! | 1    | `NoTransforms`                 | `(x', y')`               | `w × h`      |
//! | 2    | `FlipHorizontal`               | `(w-1-x', y')`           | `w × h`      |
//! | 3    | `Rotate180`                    | `(w-1-x', h-1-y')`       | `w × h`      |
//! | 4    | `FlipVertical`                 | `(x', h-1-y')`           | `w × h`      |
//! | 5    | `Rotate90FlipH` (transpose)    | `(y', x')`               | `h × w`      |
//! | 6    | `Rotate90` (clockwise)         | `(y', h-1-x')`           | `h × w`      |
//! | 7    | `Rotate270FlipH` (transverse)  | `(w-1-y', h-1-x')`       | `h × w`      |
//! | 8    | `Rotate270`                    | `(w-1-y', x')`           | `h × w`      |
//!
//! The table is proven equal to `DynamicImage::apply_orientation` by a test; one generic
//! function serves 8-bit, 16-bit and float samples alike.

use image::metadata::Orientation;
use rayon::prelude::*;

/// True when `o` turns the image by a quarter (orientations 5–8): width and height swap.
pub(crate) fn swaps(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The upright `(width, height)` of a `w × h` image stored with orientation `o`.
pub(crate) fn upright(w: u32, h: u32, o: Orientation) -> (u32, u32) {
    if swaps(o) {
        (h, w)
    } else {
        (w, h)
    }
}

/// Returns `src` (interleaved, `k` samples per pixel, `w × h` row-major) turned upright
/// per `o` (see the module table). `NoTransforms` returns `src` untouched.
///
/// # Panics
/// If `src.len() != w · h · k`.
pub(crate) fn orient<T: Copy + Send + Sync + Default>(
    src: Vec<T>,
    w: usize,
    h: usize,
    k: usize,
    o: Orientation,
) -> Vec<T> {
    assert_eq!(src.len(), w * h * k, "orient: sample count");
    if o == Orientation::NoTransforms {
        return src;
    }
    let out_w = if swaps(o) { h } else { w };
    let mut out = vec![T::default(); src.len()];
    // Each task writes whole upright rows (disjoint chunks).
    out.par_chunks_mut(out_w * k)
        .enumerate()
        .for_each(|(yo, row)| {
            for (xo, px) in row.chunks_exact_mut(k).enumerate() {
                let (x, y) = match o {
                    Orientation::NoTransforms => (xo, yo),
                    Orientation::FlipHorizontal => (w - 1 - xo, yo),
                    Orientation::Rotate180 => (w - 1 - xo, h - 1 - yo),
                    Orientation::FlipVertical => (xo, h - 1 - yo),
                    Orientation::Rotate90FlipH => (yo, xo),
                    Orientation::Rotate90 => (yo, h - 1 - xo),
                    Orientation::Rotate270FlipH => (w - 1 - yo, h - 1 - xo),
                    Orientation::Rotate270 => (w - 1 - yo, xo),
                };
                let at = (y * w + x) * k;
                px.copy_from_slice(&src[at..at + k]);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, Rgb, RgbImage};

    #[test]
    fn every_orientation_matches_image_apply_orientation() {
        // 5×3 (prime-ish, not square) so that every swap and flip shows.
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8, y as u8, (x * 3 + y) as u8]));
        for exif in 1..=8u8 {
            let o = Orientation::from_exif(exif).unwrap();
            let mut want = DynamicImage::ImageRgb8(img.clone());
            want.apply_orientation(o);
            let got = orient(img.as_raw().clone(), 5, 3, 3, o);
            let (uw, uh) = upright(5, 3, o);
            assert_eq!((want.width(), want.height()), (uw, uh), "exif {exif} size");
            assert_eq!(got, want.into_rgb8().into_raw(), "exif {exif} pixels");
        }
    }

    #[test]
    fn one_by_one_and_single_rows_survive_every_orientation() {
        for exif in 1..=8u8 {
            let o = Orientation::from_exif(exif).unwrap();
            assert_eq!(orient(vec![7u16], 1, 1, 1, o), [7]);
            let row = orient(vec![1.0f32, 2.0, 3.0], 3, 1, 1, o);
            let mut sorted = row.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, [1.0, 2.0, 3.0], "exif {exif}");
        }
    }
}
