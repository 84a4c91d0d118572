//! The algorithm plan: which implementation runs a layer, chosen by a cost model written
//! down here and nowhere else.
//!
//! Every algorithm computes the same function (each is property-tested against
//! [`super::reference`]); they differ in where the time goes:
//!
//! | algorithm | how | pays |
//! |---|---|---|
//! | [`Conv2dAlgo::Direct`] | register tiles over input rows read in place | no reuse across output channels; scalar below a tile or at stride > 1 |
//! | [`Conv2dAlgo::Phased`] | register tiles over padded, stride-phase-split rows | one copy of the band's input per output channel |
//! | [`Conv2dAlgo::Separable`] | rank-1 kernel as a vertical then a horizontal 1-D pass | needs `c_in/groups = 1` and a rank-1 kernel (from 5×5) |
//! | [`Conv2dAlgo::GemmPointwise`] | 1×1 layer as one GEMM on the NCHW planes | a subsampled copy at stride > 1 |
//! | [`Conv2dAlgo::ChannelTile`] | vectors of 16 output channels, inputs broadcast from padded rows (AVX-512) | a 16 × 16 transpose per output block; weights reread per 6 outputs, so few input channels only |
//! | [`Conv2dAlgo::ChannelWinograd`] | the channel tile over kernel rows as 1-D Winograd F(2, 3): 4 products per output pair for 6 (AVX-512) | transformed input rows, and combining four partial rows per output row |
//! | [`Conv2dAlgo::GemmIm2col`] | GEMM over column blocks gathered from padded planes | the gather (`K` floats per output pixel) and one padded plane |
//! | [`Conv2dAlgo::ImplicitGemm`] | the same GEMM reading stride-phase planes in place (AVX-512) | one padded, phase-split copy; lanes past a row's end |
//! | [`Conv2dAlgo::ImplicitWinograd`] | the implicit GEMM over kernel rows as 1-D Winograd F(2, 3), vectors of output pairs over transformed planes (AVX-512) | transforming the input (`c_in` × slots planes) |
//! | [`Conv2dAlgo::Winograd`] | F(2×2, 3×3): 16 GEMMs over transformed tiles (3×3, stride 1) | the input, output and weight transforms |
//!
//! The model estimates each candidate's time on one core from the layer's shape with the
//! rates of this CPU's class ([`rates`]: Zen 4 and Zen 5 measured, see README
//! "Performance") and picks the cheapest. GEMMs are fast per multiply-add but waste their register tile when a
//! group has few output channels (`m_eff`), and pay for the gather; direct kernels have
//! no gather but read every input once per output channel. The choice depends on shapes
//! (and the CPU) only, so `/v1/conv2d/shape` reports the same plan a request gets, except that a layer
//! planned as a direct kernel runs as [`Conv2dAlgo::Separable`] when its weights turn out
//! to be rank-1 ([`plan_with_weights`]).

use std::fmt;

use super::params::Conv2dGeometry;

pub mod rates;

pub use rates::Rates;

/// An implementation of the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conv2dAlgo {
    /// In-place register-tiled direct convolution ([`super::direct`]).
    Direct,
    /// Direct convolution over padded, phase-split rows ([`super::phased`]).
    Phased,
    /// Two fused 1-D passes for rank-1 kernels ([`super::separable`]).
    Separable,
    /// GEMM straight on the input planes, 1×1 kernels ([`super::gemm`]).
    GemmPointwise,
    /// GEMM over gathered column blocks ([`super::gemm`]).
    GemmIm2col,
    /// GEMM reading the padded planes in place, AVX-512 ([`super::igemm`]).
    ImplicitGemm,
    /// Winograd F(2×2, 3×3): 16 GEMMs over transformed tiles ([`super::winograd`]).
    Winograd,
    /// Direct kernel vectorised over output channels, inputs broadcast, AVX-512
    /// ([`super::chantile`]).
    ChannelTile,
    /// The channel tile with kernel rows as 1-D Winograd F(2, 3), AVX-512
    /// ([`super::chanwino`]).
    ChannelWinograd,
    /// The implicit GEMM with kernel rows as 1-D Winograd F(2, 3), AVX-512
    /// ([`super::igwino`]).
    ImplicitWinograd,
}

impl Conv2dAlgo {
    /// Every algorithm.
    pub const ALL: [Self; 10] = [
        Self::Direct,
        Self::Phased,
        Self::Separable,
        Self::GemmPointwise,
        Self::GemmIm2col,
        Self::ImplicitGemm,
        Self::Winograd,
        Self::ChannelTile,
        Self::ChannelWinograd,
        Self::ImplicitWinograd,
    ];

    /// The name used in reports and `Server-Timing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Phased => "phased",
            Self::Separable => "separable",
            Self::GemmPointwise => "gemm_pointwise",
            Self::GemmIm2col => "gemm_im2col",
            Self::ImplicitGemm => "implicit_gemm",
            Self::Winograd => "winograd",
            Self::ChannelTile => "channel_tile",
            Self::ChannelWinograd => "channel_winograd",
            Self::ImplicitWinograd => "implicit_winograd",
        }
    }

    /// Whether this algorithm can run `g` with weights of any value (separable also needs
    /// rank-1 weights; see [`plan_with_weights`]).
    pub fn supports(self, g: &Conv2dGeometry) -> bool {
        match self {
            Self::Direct | Self::Phased | Self::GemmIm2col => true,
            Self::Separable => g.c_in == g.groups,
            Self::GemmPointwise => super::gemm::pointwise_ok(g),
            Self::ImplicitGemm => super::igemm::available(),
            Self::Winograd => super::winograd::supports(g),
            Self::ChannelTile => super::chantile::available(),
            Self::ChannelWinograd => super::chanwino::supports(g),
            Self::ImplicitWinograd => super::igwino::supports(g),
        }
    }
}

impl fmt::Display for Conv2dAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The chosen algorithm for one layer, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conv2dPlan {
    /// What runs.
    pub algorithm: Conv2dAlgo,
    /// One sentence: the deciding property and the model's estimates.
    pub reason: String,
}

/// Output channels per group that fill the GEMM's register tile.
const GEMM_FULL_M: f64 = 16.0;
/// Largest `c_in/groups` for the channel tile (few input channels: stems, first layers).
const CHANTILE_MAX_CPG: usize = 16;
/// Largest `c_in/groups · k_h · k_w` for the channel tile: its weight panel (`k` × 64
/// floats, 40 KiB at 160) is reread for every 6 outputs and must stay close to L1.
/// Deeper layers measured slower than the implicit GEMM (3×3/2 from 64 channels: 0.90
/// against 0.69 ms).
const CHANTILE_MAX_K: usize = 160;
/// Tile width (AVX-512) the in-place kernel needs for its fast path.
const DIRECT_TILE: usize = 128;

/// Estimated seconds on one core of this CPU for `algo` on `g`, or None if it cannot run
/// it.
pub fn estimate(algo: Conv2dAlgo, g: &Conv2dGeometry) -> Option<f64> {
    estimate_on(algo, g, rates::detected())
}

/// Estimated seconds on one core with the rates `r` for `algo` on `g`, or None if it
/// cannot run it.
pub fn estimate_on(algo: Conv2dAlgo, g: &Conv2dGeometry, r: &Rates) -> Option<f64> {
    if !algo.supports(g) || algo == Conv2dAlgo::Separable {
        return None;
    }
    let macs = g.macs() as f64;
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let (n, pixels) = (g.n as f64, (g.out_h * g.out_w) as f64);
    let k = (cpg * g.k_h * g.k_w) as f64;
    let m_eff = (opg as f64 / GEMM_FULL_M).min(1.0);
    let padded =
        (g.c_in * (g.h + g.padding[0] + g.padding[1]) * (g.w + g.padding[2] + g.padding[3])) as f64;
    let calls = n * g.groups as f64 * (pixels * k * 4.0 / (512.0 * 1024.0)).ceil().max(1.0);
    Some(match algo {
        Conv2dAlgo::GemmPointwise => {
            let gather = if g.stride == [1, 1] {
                0.0
            } else {
                n * g.c_in as f64 * pixels
            };
            macs / (r.gemm_macs * m_eff) + gather / r.gather + calls * r.gemm_call
        }
        Conv2dAlgo::GemmIm2col => {
            let gather = n * g.groups as f64 * k * pixels;
            macs / (r.gemm_macs * m_eff)
                + gather / r.gather
                + n * padded / r.pad
                + calls * r.gemm_call
        }
        Conv2dAlgo::Direct => {
            let rate = if g.stride[1] > 1 {
                r.direct_strided_macs
            } else if g.out_w >= DIRECT_TILE {
                r.direct_wide_macs
            } else {
                // The tile's lanes past the row's end are computed and dropped: depthwise
                // 3×3 layers on 28- and 56-wide planes ran at 3.6 and 4.2 G/s, where the
                // phased tiles took a seventh of the time (dilated DeepLab-style).
                r.direct_narrow_macs * g.out_w as f64 / DIRECT_TILE as f64
            };
            macs / rate
        }
        Conv2dAlgo::ImplicitGemm => {
            let lanes = pixels / (16 * super::igemm::vector_count(g)) as f64;
            let rows = opg as f64 / opg.next_multiple_of(8) as f64;
            let outputs = n * g.c_out as f64 * pixels;
            macs / (r.igemm_macs * lanes * rows) + n * padded / r.pad + outputs / r.igemm_store
        }
        Conv2dAlgo::Winograd => {
            let tiles = n * (g.out_h.div_ceil(2) * g.out_w.div_ceil(2)) as f64;
            let rows = g.c_out as f64 / g.c_out.next_multiple_of(8) as f64;
            // A block's tiles are the GEMMs' columns, in vectors of 16.
            let nt = super::winograd::block_rows(g) * g.out_w.div_ceil(2);
            let lanes = nt as f64 / nt.next_multiple_of(16) as f64;
            let (ci, co) = (g.c_in as f64, g.c_out as f64);
            let gemm = 16.0 * co * ci * tiles / (r.winograd_macs * rows * lanes);
            let transforms = 16.0 * tiles * (ci + co) / r.winograd_transform;
            let weights = 16.0 * ci * co / r.winograd_weights;
            gemm + transforms + weights + n * padded / r.pad
        }
        Conv2dAlgo::ChannelTile => {
            let chans = opg as f64 / opg.next_multiple_of(16) as f64;
            let cols = g.out_w as f64 / super::chantile::computed_width(g.out_w) as f64;
            let outputs = n * g.c_out as f64 * pixels;
            macs / (r.chantile_macs * chans * cols)
                + n * padded / r.pad
                + outputs / r.transpose_rate(outputs)
        }
        Conv2dAlgo::ChannelWinograd => {
            // Its tiles compute whole panels of 64 output channels (a 16-channel 5×5 on 64×64
            // took 0.24 ms against the implicit GEMM's 0.15). The channel tile's do too, but
            // its few-channel stems are bound by their stores, and its rate is fitted there.
            let chans = opg as f64 / opg.next_multiple_of(super::chantile::PANEL) as f64;
            // The tile's products: per output row, pair and (channel, kernel row).
            let products = n
                * (g.c_out * g.out_h * cpg * g.k_h) as f64
                * (super::chanwino::products_per_pair(g) * super::chanwino::computed_pairs(g.out_w))
                    as f64;
            let outputs = n * g.c_out as f64 * pixels;
            // Every band transforms its input rows (`slots` rows of whole vectors of
            // pairs per row), and each call transforms its weights.
            let bands = (g.out_h as f64).min(8.0 * threads()) as usize;
            let rows = g.out_h * g.stride[0] + bands * (g.k_h - 1) * g.dilation[0];
            let slots = super::chanwino::products_per_pair(g);
            let pairs = super::chanwino::computed_pairs(g.out_w).next_multiple_of(16);
            let transformed = n * (g.c_in * rows * slots * pairs) as f64;
            let weights = (g.c_out * cpg * g.k_h * slots) as f64;
            products / (r.chanwino_macs * chans)
                + n * padded / r.pad
                + outputs / r.transpose_rate(outputs)
                + outputs / r.row_winograd_combine
                + transformed / r.row_winograd_transform
                + weights / r.winograd_weights
        }
        Conv2dAlgo::ImplicitWinograd => {
            // Every output channel (panels of MR) × kernel-row point × vector of pairs.
            let rows = opg as f64 / opg.next_multiple_of(super::igwino::MR) as f64;
            let lane_macs = n
                * g.c_out as f64
                * (cpg * g.k_h * super::chanwino::products_per_pair(g)) as f64
                * (16 * super::igwino::vector_count(g)) as f64;
            let transformed = n * super::igwino::planes_floats(g) as f64;
            let outputs = n * g.c_out as f64 * pixels;
            let packed = super::igwino::packed_floats(g) as f64;
            let rate = if packed > 0.0 {
                r.igwino_packed_macs
            } else {
                r.igwino_macs
            };
            lane_macs / (rate * rows)
                + transformed / r.row_winograd_transform
                + n * padded / r.pad
                + outputs / r.igwino_store
                + packed / r.igwino_pack
                + r.igwino_call
        }
        Conv2dAlgo::Phased => {
            let tile = [16, 32, 64]
                .into_iter()
                .find(|&t| g.out_w <= t)
                .unwrap_or(DIRECT_TILE);
            let util = g.out_w as f64 / g.out_w.next_multiple_of(tile) as f64;
            // Each output channel copies its group's padded input once, except where
            // depthwise tiles read the rows in place, splitting columns in registers.
            let copies = if super::phased::splits_in_registers(g) {
                0.0
            } else {
                n * g.c_out as f64 * cpg as f64 * padded / g.c_in as f64
            };
            macs / (r.phased_macs * util) + copies / r.pad
        }
        Conv2dAlgo::Separable => unreachable!("excluded above"),
    })
}

/// Whether `algo` competes for `g` at all, beyond [`Conv2dAlgo::supports`]:
/// - where the implicit GEMM runs (AVX-512), it replaces the im2col GEMM: it computes the
///   same product without gathering the matrix, and measured 0.8–1.0× its time on every
///   GEMM layer of the zoo;
/// - a 1×1 layer without padding at stride 1 is already a GEMM over its input planes, so
///   the implicit GEMM's padded copy would be pure overhead;
/// - the channel tile only for few input channels per group and a weight panel near L1
///   ([`CHANTILE_MAX_CPG`], [`CHANTILE_MAX_K`]); the row Winograd likewise, its panel
///   being one point's weights (AlexNet's 11×11/4 stem: 132 vectors, where the channel
///   tile's 363 are not near L1), and only where the model has it clearly ahead of the
///   channel tile it is a variant of ([`Rates::row_winograd_margin`]);
/// - the implicit GEMM over kernel rows as 1-D Winograd only where one image's transformed
///   planes, its workspace, fit [`super::igwino::MAX_PLANES_BYTES`], and for kernels of
///   two rows or more: each transformed input row feeds `k_h` kernel rows, and at `k_h =
///   1` the transforms cost what the products save (Inception's 1×7 at 128 channels on
///   17×17: 0.34–0.37 ms against the implicit GEMM's 0.32).
fn candidate(algo: Conv2dAlgo, g: &Conv2dGeometry, r: &Rates) -> bool {
    match algo {
        Conv2dAlgo::GemmIm2col => !Conv2dAlgo::ImplicitGemm.supports(g),
        Conv2dAlgo::ImplicitGemm => !(super::gemm::pointwise_ok(g) && g.stride == [1, 1]),
        Conv2dAlgo::ChannelTile => channel_tile_reaches(g, g.c_in / g.groups * g.k_h * g.k_w, r),
        Conv2dAlgo::ChannelWinograd => {
            channel_tile_reaches(g, super::chanwino::longest_point(g), r)
                && match (
                    estimate_on(algo, g, r),
                    estimate_on(Conv2dAlgo::ChannelTile, g, r),
                ) {
                    (Some(rows), Some(tile)) => rows < r.row_winograd_margin * tile,
                    _ => false,
                }
        }
        Conv2dAlgo::ImplicitWinograd => {
            g.k_h >= 2
                && super::igwino::planes_floats(g).saturating_mul(4)
                    <= super::igwino::MAX_PLANES_BYTES
        }
        _ => true,
    }
}

/// Whether the channel tile (or its row Winograd, whose panel is one point's `k`
/// weights) reaches `g`: few input channels and a short panel ([`CHANTILE_MAX_CPG`],
/// [`CHANTILE_MAX_K`]) everywhere, up to the rates' wider reach where 64 or more output
/// channels per group fill its panels.
fn channel_tile_reaches(g: &Conv2dGeometry, k: usize, r: &Rates) -> bool {
    let cpg = g.c_in / g.groups;
    cpg <= CHANTILE_MAX_CPG && k <= CHANTILE_MAX_K
        || cpg <= r.chantile_max_cpg
            && k <= r.chantile_max_k
            && g.c_out / g.groups >= super::chantile::PANEL
}

/// The plan for `g` from its shape alone, on this CPU: the candidate with the lowest
/// estimate.
pub fn plan(g: &Conv2dGeometry) -> Conv2dPlan {
    plan_on(g, rates::detected())
}

/// The plan for `g` from its shape alone with the rates `r`: the candidate with the lowest
/// estimate.
pub fn plan_on(g: &Conv2dGeometry, r: &Rates) -> Conv2dPlan {
    let mut est: Vec<(Conv2dAlgo, f64)> = Conv2dAlgo::ALL
        .into_iter()
        .filter(|&a| candidate(a, g, r))
        .filter_map(|a| estimate_on(a, g, r).map(|t| (a, t)))
        .collect();
    est.sort_by(|a, b| a.1.total_cmp(&b.1));
    let algorithm = est[0].0;
    let opg = g.c_out / g.groups;
    let why = match algorithm {
        Conv2dAlgo::GemmPointwise => format!(
            "1x1 without padding: one GEMM over the input planes, {opg} output channels per group share each input column"
        ),
        Conv2dAlgo::GemmIm2col => format!(
            "{opg} output channels per group share each gathered column of {} inputs",
            g.c_in / g.groups * g.k_h * g.k_w
        ),
        Conv2dAlgo::Winograd => format!(
            "3x3 at stride 1, {} input and {} output channels: Winograd F(2x2,3x3) does 16 multiply-adds per 2x2 outputs and channel instead of 36",
            g.c_in, g.c_out
        ),
        Conv2dAlgo::ImplicitGemm => format!(
            "{opg} output channels per group share each input vector; {} inputs per output read in place from the padded planes, {:.0}% of the vector lanes kept",
            g.c_in / g.groups * g.k_h * g.k_w,
            100.0 * (g.out_h * g.out_w) as f64 / (16 * super::igemm::vector_count(g)) as f64
        ),
        Conv2dAlgo::ChannelTile => format!(
            "{} input channel(s) per group and {opg} output channels: vectors of 16 output channels, each of the {} inputs per output broadcast from the padded rows",
            g.c_in / g.groups,
            g.c_in / g.groups * g.k_h * g.k_w
        ),
        Conv2dAlgo::ChannelWinograd => format!(
            "{} input channel(s) per group and {opg} output channels: vectors of 16 output channels, kernel rows as 1-D Winograd F(2,3), {} products per output pair and kernel row instead of {}",
            g.c_in / g.groups,
            super::chanwino::products_per_pair(g),
            2 * g.k_w
        ),
        Conv2dAlgo::ImplicitWinograd => format!(
            "{opg} output channels per group share each vector of 16 output pairs; kernel rows as 1-D Winograd F(2,3), {} products per output pair and kernel row instead of {}",
            super::chanwino::products_per_pair(g),
            2 * g.k_w
        ),
        Conv2dAlgo::Direct => format!(
            "{opg} output channel(s) per group on {}-wide rows at stride 1: register tiles over rows read in place",
            g.out_w
        ),
        Conv2dAlgo::Phased if super::phased::splits_in_registers(g) && g.stride[1] == 2 => format!(
            "{opg} output channel(s) per group, stride 2, zero padding: register tiles over the input rows read in place, even and odd columns split in registers"
        ),
        Conv2dAlgo::Phased if super::phased::splits_in_registers(g) => format!(
            "{opg} output channel(s) per group, zero padding: register tiles over the input rows read in place, each tap one masked load"
        ),
        Conv2dAlgo::Phased => format!(
            "{opg} output channel(s) per group{}: register tiles over padded, phase-split rows",
            if g.stride[1] > 1 { format!(", stride {}", g.stride[1]) } else { format!(", {}-wide rows", g.out_w) }
        ),
        Conv2dAlgo::Separable => unreachable!("not a shape-only candidate"),
    };
    let estimates = est
        .iter()
        .map(|(a, t)| format!("{a} {}", fmt_secs(*t / threads())))
        .collect::<Vec<_>>()
        .join(", ");
    Conv2dPlan {
        algorithm,
        reason: format!("{why} (estimates: {estimates})"),
    }
}

/// The plan for `g` with its weights: [`plan`], upgraded to [`Conv2dAlgo::Separable`]
/// (with its factors) when the plan is a direct kernel and every output channel's kernel
/// is exactly rank-1 and large enough for two passes to pay.
pub fn plan_with_weights(
    g: &Conv2dGeometry,
    weight: ndarray::ArrayView4<'_, f32>,
) -> (Conv2dPlan, Option<super::separable::SeparablePlan>) {
    let p = plan(g);
    if matches!(p.algorithm, Conv2dAlgo::Direct | Conv2dAlgo::Phased) {
        if let Some(sep) = super::separable::plan(weight, g) {
            let reason = format!(
                "rank-1 {}x{} kernel: a vertical and a horizontal pass, {} multiply-adds per output instead of {}",
                g.k_h,
                g.k_w,
                g.k_h + g.k_w,
                g.k_h * g.k_w
            );
            return (
                Conv2dPlan {
                    algorithm: Conv2dAlgo::Separable,
                    reason,
                },
                Some(sep),
            );
        }
    }
    (p, None)
}

fn threads() -> f64 {
    rayon::current_num_threads() as f64
}

fn fmt_secs(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} us", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::params::{Conv2dParams, Padding};

    fn geom(
        input: [usize; 4],
        weight: [usize; 4],
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Conv2dGeometry {
        let p = Conv2dParams {
            stride: [stride; 2],
            padding: Padding::Explicit([pad; 4]),
            groups,
            ..Default::default()
        };
        Conv2dGeometry::new(input, weight, None, &p).unwrap()
    }

    #[test]
    fn classes_of_layers_get_their_algorithm() {
        use Conv2dAlgo::*;
        // The GEMM over 3×3, strided and stem layers: implicit where AVX-512 runs it.
        let gemm = if ImplicitGemm.supports(&geom([1, 1, 4, 4], [1, 1, 1, 1], 1, 0, 1)) {
            ImplicitGemm
        } else {
            GemmIm2col
        };
        // 3×3 at stride 1 on a large plane: Winograd where it runs.
        let winograd = if Winograd.supports(&geom([1, 16, 4, 4], [1, 16, 3, 3], 1, 0, 1)) {
            Winograd
        } else {
            gemm
        };
        let chantile = if ChannelTile.supports(&geom([1, 3, 8, 8], [16, 3, 3, 3], 1, 1, 1)) {
            ChannelTile
        } else {
            gemm
        };
        let rows = if ChannelWinograd.supports(&geom([1, 3, 8, 8], [16, 3, 3, 3], 1, 1, 1)) {
            ChannelWinograd
        } else {
            gemm
        };
        // Deep layers on small planes, 5×5 and dilated 3×3: the implicit GEMM over
        // kernel rows as 1-D Winograd.
        let deep = if ImplicitWinograd.supports(&geom([1, 16, 8, 8], [16, 16, 3, 3], 1, 1, 1)) {
            ImplicitWinograd
        } else {
            gemm
        };
        let dilated = |input, weight, d: usize| {
            let p = Conv2dParams {
                padding: Padding::Explicit([d; 4]),
                dilation: [d; 2],
                ..Default::default()
            };
            Conv2dGeometry::new(input, weight, None, &p).unwrap()
        };
        // (layer, its algorithm with Zen 4's rates, with Zen 5's). On Zen 5's 512-bit
        // FMA pipes the implicit GEMM doubled its speed and the others gained less, so
        // it also takes the deep layers and the short-row first layers there (criterion,
        // 2 threads: ResNet's 256-channel 3×3 on 14×14 0.59 ms against the implicit row
        // Winograd's 0.76; VGG's first layer 0.64–0.76 against the channel tile's
        // 1.0–1.3).
        let cases = [
            // image filters: one output per group on wide rows
            (
                geom([1, 1, 1080, 1920], [1, 1, 3, 3], 1, 1, 1),
                Direct,
                Direct,
            ),
            (
                geom([1, 3, 1080, 1920], [1, 3, 3, 3], 1, 0, 1),
                Direct,
                Direct,
            ),
            (
                geom([1, 3, 1080, 1920], [3, 1, 5, 5], 1, 2, 3),
                Direct,
                Direct,
            ),
            // CNN layers
            // stems with long kernel rows: the row Winograd
            (geom([1, 3, 224, 224], [64, 3, 7, 7], 2, 3, 1), rows, rows),
            (geom([1, 3, 224, 224], [64, 3, 11, 11], 4, 2, 1), rows, rows),
            (
                geom([1, 64, 56, 56], [64, 64, 3, 3], 1, 1, 1),
                winograd,
                // on Zen 5 the implicit row Winograd's packed tiles: 0.46 against 0.51 ms
                deep,
            ),
            (geom([1, 512, 7, 7], [512, 512, 3, 3], 1, 1, 1), deep, gemm),
            (
                geom([1, 256, 14, 14], [256, 256, 3, 3], 1, 1, 1),
                deep,
                gemm,
            ),
            (geom([1, 96, 27, 27], [256, 48, 5, 5], 1, 2, 2), deep, deep),
            (dilated([1, 128, 32, 32], [128, 128, 3, 3], 4), deep, deep),
            (dilated([1, 256, 28, 28], [256, 256, 3, 3], 2), deep, deep),
            // small planes, where its fixed costs (a fork-join more, the packing) weigh:
            // CIFAR's 3×3 at 32 channels on 16×16 and 64 on 8×8, and a one-row 1×7
            (geom([1, 32, 16, 16], [32, 32, 3, 3], 1, 1, 1), gemm, gemm),
            (geom([1, 64, 8, 8], [64, 64, 3, 3], 1, 1, 1), gemm, gemm),
            (
                geom([1, 128, 17, 17], [128, 128, 1, 7], 1, 0, 1),
                gemm,
                gemm,
            ),
            // 3×3/2: 15 products per pair for 18 do not pay the transforms
            (
                geom([1, 128, 56, 56], [128, 128, 3, 3], 2, 1, 1),
                gemm,
                gemm,
            ),
            (geom([1, 64, 56, 56], [128, 64, 3, 3], 2, 1, 1), gemm, gemm),
            // U-Net's 224×224 planes: Winograd (and past the row Winograd's workspace)
            (
                geom([1, 32, 224, 224], [32, 32, 3, 3], 1, 1, 1),
                winograd,
                winograd,
            ),
            (
                geom([1, 64, 56, 56], [256, 64, 1, 1], 1, 0, 1),
                GemmPointwise,
                GemmPointwise,
            ),
            (
                geom([1, 256, 56, 56], [512, 256, 1, 1], 2, 0, 1),
                GemmPointwise,
                GemmPointwise,
            ),
            (
                geom([1, 144, 56, 56], [144, 1, 3, 3], 1, 1, 144),
                Phased,
                Phased,
            ),
            // first layers on RGB with short kernels: the channel tile (the row Winograd's
            // partial rows cost what its products save); on Zen 5 its transposes into 16
            // planes at a time miss past the caches, and the implicit GEMM wins where the
            // output is large (VGG's 12.8 MB, YOLO's 11 MB), not where it is not
            // (MobileNet's stem, Inception's 3 → 32 at stride 2: 0.16 against 0.24 ms)
            (
                geom([1, 3, 224, 224], [64, 3, 3, 3], 1, 1, 1),
                chantile,
                gemm,
            ),
            (
                geom([1, 3, 224, 224], [32, 3, 3, 3], 2, 1, 1),
                chantile,
                chantile,
            ),
            (
                geom([1, 3, 299, 299], [32, 3, 3, 3], 2, 0, 1),
                chantile,
                chantile,
            ),
            // few output channels: the row Winograd computes whole panels of 64 (a 5×5 at
            // 16 channels on 64×64, Zen 5: 0.24 ms against the implicit GEMM's 0.15)
            (geom([1, 16, 64, 64], [16, 16, 5, 5], 1, 2, 1), gemm, gemm),
            // CIFAR's 16-channel 3×3 on 32×32: the row Winograd's transforms and weights
            // cost more than its products save (server: 0.049 against 0.043 ms)
            (
                geom([1, 16, 32, 32], [16, 16, 3, 3], 1, 1, 1),
                chantile,
                gemm,
            ),
            (
                geom([1, 3, 416, 416], [16, 3, 3, 3], 1, 1, 1),
                chantile,
                gemm,
            ),
            (
                geom([1, 96, 112, 112], [96, 1, 3, 3], 2, 1, 96),
                Phased,
                Phased,
            ),
            // 32 input channels with full panels of 64 outputs: on Zen 5 the channel tile
            // and its row Winograd reach them (YOLO's 3×3/2 on 208×208: 0.96 against the
            // implicit GEMM's 1.03 ms; at 56×56 0.094 against 0.18; 32 → 64 on 112×112 by
            // the row Winograd 0.81 against 0.96); not with half panels (a 4-group 3×3 with
            // 32 outputs per group: 0.19 against 0.17)
            (
                geom([1, 32, 208, 208], [64, 32, 3, 3], 2, 1, 1),
                gemm,
                chantile,
            ),
            (
                geom([1, 32, 56, 56], [64, 32, 3, 3], 2, 1, 1),
                gemm,
                chantile,
            ),
            (
                geom([1, 32, 112, 112], [64, 32, 3, 3], 1, 1, 1),
                winograd,
                ChannelWinograd,
            ),
            (
                geom([1, 128, 28, 28], [128, 32, 3, 3], 1, 1, 4),
                ImplicitWinograd,
                gemm,
            ),
            // one input channel, short k: the implicit GEMM's stores would dominate
            (
                geom([1, 1, 28, 28], [32, 1, 3, 3], 1, 1, 1),
                chantile,
                chantile,
            ),
        ];
        for (g, zen4, zen5) in cases {
            for (r, want) in [(&rates::ZEN4, zen4), (&rates::ZEN5, zen5)] {
                let p = plan_on(&g, r);
                assert_eq!(p.algorithm, want, "{}, {g:?}: {}", r.name, p.reason);
            }
        }
    }

    #[test]
    fn this_cpu_is_planned_with_its_class_of_rates() {
        let r = rates::detected();
        let g = geom([1, 256, 14, 14], [256, 256, 3, 3], 1, 1, 1);
        assert_eq!(plan(&g), plan_on(&g, r));
        assert!([rates::ZEN4.name, rates::ZEN5.name].contains(&r.name));
    }

    #[test]
    fn strided_depthwise_plans_say_whether_columns_split_in_registers() {
        let dw = geom([1, 96, 112, 112], [96, 1, 3, 3], 2, 1, 96);
        let p = plan(&dw);
        assert_eq!(p.algorithm, Conv2dAlgo::Phased);
        let split = crate::conv::phased::splits_in_registers(&dw);
        assert_eq!(
            p.reason.contains("split in registers"),
            split,
            "{}",
            p.reason
        );
        // Reflect padding keeps the phase copy, and its estimate counts it.
        let reflect = Conv2dGeometry::new(
            [1, 96, 112, 112],
            [96, 1, 3, 3],
            None,
            &Conv2dParams {
                stride: [2, 2],
                padding: Padding::Explicit([1; 4]),
                groups: 96,
                padding_mode: crate::conv::PaddingMode::Reflect,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!plan(&reflect).reason.contains("split in registers"));
        let (a, b) = (
            estimate(Conv2dAlgo::Phased, &dw).unwrap(),
            estimate(Conv2dAlgo::Phased, &reflect).unwrap(),
        );
        assert_eq!(a < b, split);
    }

    #[test]
    fn every_plan_is_an_algorithm_that_supports_the_layer() {
        use crate::conv::testutil::random_case;
        for seed in 0..200 {
            let (_, _, _, g) = random_case(seed);
            let p = plan(&g);
            assert!(p.algorithm.supports(&g), "{g:?} → {:?}", p.algorithm);
            assert!(!p.reason.is_empty());
        }
    }
}
