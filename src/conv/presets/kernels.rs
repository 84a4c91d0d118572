//! The kernel maths of the presets: plain functions and constants, no parameter schema.
//!
//! Every kernel is `k_h × k_w` row-major `f32` weights meant for **cross-correlation** (the
//! kernel is not flipped), so `SOBEL_X` responds positively where the intensity increases
//! to the right. Weights that involve real arithmetic (Gaussian, box normalisation, unsharp
//! mask) are computed in `f64` and cast to `f32` once at the end.

use serde::Serialize;

/// One `k_h × k_w` kernel, row-major: the weight at row `r`, column `c` is
/// `weights[r * k_w + c]`, so `weights.len() == k_h * k_w`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kernel2d {
    /// Number of rows (kernel height), ≥ 1.
    pub k_h: usize,
    /// Number of columns (kernel width), ≥ 1.
    pub k_w: usize,
    /// Row-major weights, `k_h * k_w` of them.
    pub weights: Vec<f32>,
}

const E: f32 = -0.125;

/// `[1, 0, −1]`: the horizontal difference.
pub const EDGE_1X3: [f32; 3] = [1.0, 0.0, -1.0];
/// 8 at the centre, −1 around, divided by 8.
#[rustfmt::skip]
pub const LAPLACIAN: [f32; 9] = [E, E, E,  E, 1.0, E,  E, E, E];
/// The 4-neighbour Laplacian.
#[rustfmt::skip]
pub const LAPLACIAN4: [f32; 9] = [0.0, -1.0, 0.0,  -1.0, 4.0, -1.0,  0.0, -1.0, 0.0];
/// Sobel, positive where intensity increases to the right.
#[rustfmt::skip]
pub const SOBEL_X: [f32; 9] = [-1.0, 0.0, 1.0,  -2.0, 0.0, 2.0,  -1.0, 0.0, 1.0];
/// Sobel, positive where intensity increases downwards.
#[rustfmt::skip]
pub const SOBEL_Y: [f32; 9] = [-1.0, -2.0, -1.0,  0.0, 0.0, 0.0,  1.0, 2.0, 1.0];
/// Scharr, positive where intensity increases to the right.
#[rustfmt::skip]
pub const SCHARR_X: [f32; 9] = [-3.0, 0.0, 3.0,  -10.0, 0.0, 10.0,  -3.0, 0.0, 3.0];
/// Scharr, positive where intensity increases downwards.
#[rustfmt::skip]
pub const SCHARR_Y: [f32; 9] = [-3.0, -10.0, -3.0,  0.0, 0.0, 0.0,  3.0, 10.0, 3.0];
/// Prewitt, positive where intensity increases to the right.
#[rustfmt::skip]
pub const PREWITT_X: [f32; 9] = [-1.0, 0.0, 1.0,  -1.0, 0.0, 1.0,  -1.0, 0.0, 1.0];
/// Prewitt, positive where intensity increases downwards.
#[rustfmt::skip]
pub const PREWITT_Y: [f32; 9] = [-1.0, -1.0, -1.0,  0.0, 0.0, 0.0,  1.0, 1.0, 1.0];
/// 5 at the centre, −1 at the 4 neighbours.
#[rustfmt::skip]
pub const SHARPEN: [f32; 9] = [0.0, -1.0, 0.0,  -1.0, 5.0, -1.0,  0.0, -1.0, 0.0];
/// Emboss towards the bottom-right.
#[rustfmt::skip]
pub const EMBOSS: [f32; 9] = [-2.0, -1.0, 0.0,  -1.0, 1.0, 1.0,  0.0, 1.0, 2.0];
/// 8 at the centre, −1 around (unnormalised).
#[rustfmt::skip]
pub const OUTLINE: [f32; 9] = [-1.0, -1.0, -1.0,  -1.0, 8.0, -1.0,  -1.0, -1.0, -1.0];

/// A kernel from its shape and row-major weights.
pub fn kernel(k_h: usize, k_w: usize, weights: Vec<f32>) -> Kernel2d {
    Kernel2d { k_h, k_w, weights }
}

/// `n × n` kernel with a single 1 at the centre (`n` odd).
pub fn delta(n: usize) -> Kernel2d {
    let mut weights = vec![0.0; n * n];
    weights[n * n / 2] = 1.0;
    kernel(n, n, weights)
}

/// `h × w` mean filter: every weight `1/(h·w)`.
pub fn box_mean(h: usize, w: usize) -> Kernel2d {
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let weight = (1.0 / (h * w) as f64) as f32;
    kernel(h, w, vec![weight; h * w])
}

/// `size × size` Gaussian `exp(−(x² + y²)/(2σ²))` normalised to sum 1, offsets `x, y` in
/// `−(size−1)/2 ..= (size−1)/2`; `sigma == 0` selects [`opencv_sigma`].
pub fn gaussian(size: usize, sigma: f64) -> Kernel2d {
    to_f32(size, &gaussian_weights(size, sigma))
}

/// Unsharp mask `identity·(1 + amount) − amount·gaussian(size, sigma)` (`size` odd).
pub fn unsharp(size: usize, sigma: f64, amount: f64) -> Kernel2d {
    let mut w = gaussian_weights(size, sigma);
    for g in &mut w {
        *g *= -amount;
    }
    w[size * size / 2] += 1.0 + amount;
    to_f32(size, &w)
}

/// OpenCV's default σ for a Gaussian of odd side `size`
/// (`getGaussianKernel` with `sigma <= 0`): `0.3·((size−1)·0.5 − 1) + 0.8`.
pub fn opencv_sigma(size: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let s = size as f64;
    0.3 * ((s - 1.0) * 0.5 - 1.0) + 0.8
}

/// Row-major `size × size` Gaussian in `f64`, normalised to sum 1;
/// `sigma == 0` selects [`opencv_sigma`]. Offsets `x, y` run over
/// `−(size−1)/2 ..= (size−1)/2` pixels.
fn gaussian_weights(size: usize, sigma: f64) -> Vec<f64> {
    let sigma = if sigma > 0.0 {
        sigma
    } else {
        opencv_sigma(size)
    };
    #[allow(clippy::cast_precision_loss)]
    let half = (size / 2) as f64;
    let two_s2 = 2.0 * sigma * sigma;
    let mut w: Vec<f64> = (0..size * size)
        .map(|i| {
            #[allow(clippy::cast_precision_loss)]
            let (y, x) = ((i / size) as f64 - half, (i % size) as f64 - half);
            let d2 = x * x + y * y;
            // The centre is exactly 1 even when 2σ² underflows to 0.
            if d2 == 0.0 {
                1.0
            } else {
                (-d2 / two_s2).exp()
            }
        })
        .collect();
    // The centre weight is exp(0) = 1, so the sum is ≥ 1 and never zero.
    let sum: f64 = w.iter().sum();
    for v in &mut w {
        *v /= sum;
    }
    w
}

#[allow(clippy::cast_possible_truncation)]
fn to_f32(size: usize, w: &[f64]) -> Kernel2d {
    kernel(size, size, w.iter().map(|&v| v as f32).collect())
}

/// Factor a kernel as `K ≈ u · vᵀ` if it is rank-1: [`crate::conv::separable::rank1_factors`]
/// on the preset's weights.
pub fn rank1_factors(kernel: &Kernel2d) -> Option<(Vec<f64>, Vec<f64>)> {
    crate::conv::separable::rank1_factors(&kernel.weights, kernel.k_h, kernel.k_w)
}

/// True when the kernel is exactly rank-1 (see [`rank1_factors`]).
pub fn is_separable(kernel: &Kernel2d) -> bool {
    rank1_factors(kernel).is_some()
}
