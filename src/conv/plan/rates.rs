//! The cost model's rates, per class of CPU.
//!
//! The algorithms do not scale alike from one CPU to the next. Zen 4 runs AVX-512 on
//! 256-bit FMA pipes, Zen 5 on 512-bit ones: a tile that only multiplies and adds (the
//! implicit GEMM, the pointwise GEMM) runs twice as fast on Zen 5, while one that also
//! transforms, packs or transposes (the row Winograds, the channel tile's transposes)
//! gains less, and memory-bound work (padded copies, stores) about nothing. Measured on the
//! layer zoo (`ZOO_ALL=1 cargo bench --bench zoo`, 2026-11-29): on Zen 5 the implicit GEMM
//! took ResNet's 256-channel 3×3 on 14×14 in 0.59 ms against the implicit row Winograd's
//! 0.76 ms, the reverse of Zen 4 (1.22 against 1.02 ms); VGG's first layer ran 0.64–0.76
//! ms by the implicit GEMM against the channel tile's 0.99–1.31 ms.
//!
//! So each class of CPU has its own table, and [`detected`] picks one once per process
//! from CPUID. A CPU not recognised gets [`ZEN4`]'s rates: they were fitted on the
//! narrower FMA pipes, where every algorithm's compute is dearest.

/// Sustained rates of each algorithm's parts on one core, measured on one class of CPU
/// (seconds of work = amount / rate; fixed costs in seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// The CPUs these rates were measured on.
    pub name: &'static str,
    /// Multiply-adds per second of the GEMM kernel at full register tiles.
    pub gemm_macs: f64,
    /// Floats per second gathered into a column block (runs of `out_w` floats).
    pub gather: f64,
    /// Floats per second written into padded planes.
    pub pad: f64,
    /// Fixed cost of one GEMM call (packing, dispatch), seconds.
    pub gemm_call: f64,
    /// Implicit GEMM multiply-adds per second at full tiles (8 output channels, 16 kept
    /// lanes).
    pub igemm_macs: f64,
    /// Outputs per second that the implicit GEMM's tiles store (one vector per 16
    /// outputs after `k` multiply-adds: its cost when `k` is short).
    pub igemm_store: f64,
    /// Multiply-adds per second of Winograd F(2×2, 3×3)'s 16 GEMMs over transformed tiles
    /// at full tiles.
    pub winograd_macs: f64,
    /// Floats per second through a Winograd F(2×2, 3×3) transform (input or output
    /// tiles).
    pub winograd_transform: f64,
    /// Winograd F(2×2, 3×3) transformed weights per second (16 per input × output
    /// channel, transformed on every call).
    pub winograd_weights: f64,
    /// Channel tile multiply-adds per second at full tiles (64 output channels, 6
    /// positions).
    pub chantile_macs: f64,
    /// The row Winograd's products (lanes × points) per second, counted over whole panels
    /// of 64 output channels (its tiles compute them whole).
    pub chanwino_macs: f64,
    /// Outputs per second transposed from the channel tile's rows into NCHW.
    pub transpose: f64,
    /// The same where a layer's output is larger than [`LARGE_OUTPUT`] floats: each
    /// transposed vector is stored to a different plane, and past the caches those stores
    /// miss.
    pub transpose_large: f64,
    /// Outputs per second of the row Winograd's partial rows (four per output pair,
    /// stored by the tiles and reloaded to combine).
    pub row_winograd_combine: f64,
    /// Transformed inputs per second written by the row Winograds.
    pub row_winograd_transform: f64,
    /// The row Winograd competes only where its estimate is below this fraction of the
    /// channel tile's (it is a variant of that tile, and its model has more terms).
    pub row_winograd_margin: f64,
    /// The implicit row Winograd's products (lanes × points) per second, where the tile
    /// forms the points' weights itself (planes of few vectors).
    pub igwino_macs: f64,
    /// The same from weights packed once per call (planes of
    /// [`crate::conv::igwino::packed_floats`] > 0).
    pub igwino_packed_macs: f64,
    /// Outputs per second that the implicit row Winograd's tiles combine from their four
    /// points and store.
    pub igwino_store: f64,
    /// The implicit row Winograd's packed weights per second.
    pub igwino_pack: f64,
    /// The implicit row Winograd's fixed cost per call, seconds: a fork-join more than
    /// the implicit GEMM, its packing and its buffers.
    pub igwino_call: f64,
    /// Direct in-place kernel multiply-adds per second, stride 1, full tiles (`out_w` ≥
    /// its 128-wide tile).
    pub direct_wide_macs: f64,
    /// Direct in-place kernel on rows narrower than a tile.
    pub direct_narrow_macs: f64,
    /// Direct in-place kernel at horizontal stride > 1 (scalar gathers).
    pub direct_strided_macs: f64,
    /// Phased kernel multiply-adds per second with full tiles.
    pub phased_macs: f64,
    /// Largest `c_in/groups` for which the channel tile competes with full panels (64
    /// output channels per group or more; beyond the plan's few-channel reach, which
    /// holds everywhere).
    pub chantile_max_cpg: usize,
    /// Largest `c_in/groups · k_h · k_w` for which the channel tile competes with full
    /// panels: its weight panel (`k` × 64 floats) is reread for every 6 outputs.
    pub chantile_max_k: usize,
}

/// Output floats from which the channel tile's transposes run at
/// [`Rates::transpose_large`] (4 MiB: more than both cores' L2).
pub const LARGE_OUTPUT: f64 = 1024.0 * 1024.0;

impl Rates {
    /// The channel tile's transposes per second for a layer of `outputs` floats.
    pub fn transpose_rate(&self, outputs: f64) -> f64 {
        if outputs > LARGE_OUTPUT {
            self.transpose_large
        } else {
            self.transpose
        }
    }
}

/// AMD Zen 4 (EPYC 9004), AVX-512 on 256-bit FMA pipes: about 154 GFLOP/s per core. Also
/// the rates for CPUs not recognised.
pub const ZEN4: Rates = Rates {
    name: "zen4",
    // The `gemm` crate reaches 43–57 G on the zoo's shapes.
    gemm_macs: 45e9,
    gather: 3e9,
    pad: 1.5e9,
    gemm_call: 2e-6,
    igemm_macs: 50e9,
    // Criterion on a 1 → 32 channel 3×3 layer on 28×28 (`k` = 9): implicit GEMM 10.9 µs,
    // channel tile 8.5 µs; with this term the model ranks them so (the rate is the
    // channel tile's transposes: both write every output once).
    igemm_store: 16e9,
    // 90 % of the implicit GEMM's.
    winograd_macs: 45e9,
    winograd_transform: 4e9,
    // Criterion measured 0.9 G/s on weights already in cache; in the server a request's
    // weights were just parsed and the 16/9 larger result is written out, and a
    // 256-channel 14×14 layer ran 1.4–2.2 ms by Winograd against 1.35 ms by the implicit
    // GEMM.
    winograd_weights: 0.6e9,
    // Fitted on the few-channel layers it is for (stems from 1 and 3 channels, 3×3 at 16
    // channels): there the implicit GEMM's own estimate is optimistic, as its 16-position
    // tiles store as many vectors as they do multiply-adds over a short `k`.
    chantile_macs: 60e9,
    chanwino_macs: 60e9,
    transpose: 16e9,
    transpose_large: 16e9,
    // On ResNet's stem its combine with the transposes took 0.25 ms a thread against the
    // channel tile's 0.2 ms of transposes.
    row_winograd_combine: 8e9,
    // ResNet's stem: 584 K floats in 44 µs.
    row_winograd_transform: 12e9,
    // Where the model called the two even (CIFAR's 16-channel 3×3 on 32×32) the channel
    // tile measured faster (server 0.043 against 0.049 ms).
    row_winograd_margin: 0.85,
    // Its 6 × 4 accumulators reach 82 % of the FMA ceiling where the implicit GEMM's reach
    // 99 % (the points' weights are formed with adds inside the tile): one thread on
    // ResNet's 512-channel 7×7, 100.7 M lane products in 2.2 ms (46 G/s). Set below that
    // so that 3×3/2 layers, where it saves 1/6 of the products, stay on the implicit GEMM
    // (measured 1.31 against 1.23 ms at 128 channels on 56×56).
    igwino_macs: 40e9,
    // Measured before the packed tile ran its points one after the other; a tile of
    // fewer loads, equal FMAs and these FMA-bound pipes, so the same rate.
    igwino_packed_macs: 40e9,
    igwino_store: 16e9,
    // Perf on a dilated 3×3 at 128 channels: 203 K floats in about 0.1 ms.
    igwino_pack: 2e9,
    // Fitted on small layers no issue names, where it lost: CIFAR's 32-channel 3×3 on
    // 16×16 took 65 µs against the implicit GEMM's 44, its 64-channel 3×3 on 8×8 65
    // against 49.
    igwino_call: 25e-6,
    direct_wide_macs: 16e9,
    direct_narrow_macs: 5e9,
    direct_strided_macs: 2e9,
    phased_macs: 14e9,
    // 3×3/2 from 64 channels (k = 576): 0.90 ms against the implicit GEMM's 0.69.
    chantile_max_cpg: 16,
    chantile_max_k: 160,
};

/// AMD Zen 5 (EPYC 9005), AVX-512 on 512-bit FMA pipes: 270 GFLOP/s per core measured
/// (16 independent FMA chains). Fitted on the zoo's 30 layers with every algorithm that
/// runs them (criterion medians, 2 threads, 2026-11-29): measured over the Zen 4 model's
/// estimate, the implicit GEMM and the pointwise GEMM came out at 0.41–0.54 on layers with
/// many products, the channel tile at 0.49–0.58, the implicit row Winograd at 0.52–0.74,
/// Winograd at 0.41–0.66, and the store- and copy-bound terms unchanged (the channel
/// tile's VGG stem, 64 outputs per 27 products, 1.5).
pub const ZEN5: Rates = Rates {
    name: "zen5",
    gemm_macs: 95e9,
    igemm_macs: 110e9,
    // Its GEMMs gained less than the implicit GEMM's and its transforms more. Fitted on
    // U-Net's 32-channel 3×3 on 224×224 (Winograd 1.95 ms, the implicit GEMM 2.30),
    // ResNet's 64-channel 3×3 on 56×56 alone (Winograd 0.51, the implicit row Winograd
    // 0.46) and in a batch of 8 (4.61 against 3.57).
    winograd_macs: 55e9,
    winograd_transform: 25e9,
    chantile_macs: 120e9,
    // The channel tile's: the same tile, over transformed rows.
    chanwino_macs: 120e9,
    // Its scattered stores to 16 planes per vector did not speed up past the caches:
    // VGG's first layer (12.8 MB of output, 64 per 27 products) took 1.0–1.3 ms by the
    // channel tile against the implicit GEMM's 0.50–0.76, YOLO's 16-channel 3×3 on
    // 416×416 (11 MB) 0.81 against 0.52; Inception's 3 → 32 stem at stride 2 (2.8 MB)
    // 0.16 against 0.24, MobileNet's (1.6 MB) 0.076 against 0.078.
    transpose_large: 5e9,
    // The model's ranking holds without a margin here: ResNet's stem ran 0.49 ms by the
    // row Winograd against the channel tile's 0.55 (estimates 0.53 and 0.59), CIFAR's
    // 3×3 0.034 against 0.030 (0.020 and 0.018).
    row_winograd_margin: 1.0,
    // The tile that forms the points' weights (ResNet's 512-channel 3×3 on 7×7: 0.76 ms,
    // about 74 G/s a core) and the packed one (a dilated 3×3 at 256 channels on 28×28:
    // 1.94 ms, about 100 G/s a core in its tiles).
    igwino_macs: 62e9,
    igwino_packed_macs: 90e9,
    // Its combine and the point sums it keeps on the stack weigh where `k` is short:
    // VGG's first layer (3 channels, 64 outputs per 27 products) 0.67 ms against the
    // implicit GEMM's 0.50.
    igwino_store: 6e9,
    direct_wide_macs: 24e9,
    direct_narrow_macs: 7.5e9,
    direct_strided_macs: 3e9,
    phased_macs: 21e9,
    // With full panels the channel tile caught up with the implicit GEMM at 32 input
    // channels: YOLO's 3×3/2 from 32 to 64 channels on 208×208 (k = 288) 0.96 ms against
    // 1.03 in-process, 1.04–1.18 against 1.30–1.43 through the server. At 64 and 128
    // input channels (k = 576, 1152) the two tie, so the reach stops at 288. With 32
    // output channels (half a panel) its estimate was optimistic: U-Net's 32-channel
    // 3×3 on 224×224 2.9 ms against Winograd's 2.0, a 4-group 3×3 0.19 against 0.17.
    chantile_max_cpg: 32,
    chantile_max_k: 288,
    // The copies, stores, partial rows and fixed costs: as on Zen 4.
    ..ZEN4
};

/// The rates of this CPU's class, detected once: [`ZEN5`] on AMD family 1Ah and later,
/// else [`ZEN4`].
pub fn detected() -> &'static Rates {
    static RATES: std::sync::OnceLock<&'static Rates> = std::sync::OnceLock::new();
    RATES.get_or_init(|| for_amd_family(amd_family()))
}

/// The table for an AMD CPU of family `family` (None: not AMD).
fn for_amd_family(family: Option<u32>) -> &'static Rates {
    match family {
        Some(f) if f >= 0x1a => &ZEN5,
        _ => &ZEN4,
    }
}

/// The CPU family (base plus extended, as AMD numbers them: 19h is Zen 3 and 4, 1Ah Zen
/// 5) if this is an AMD CPU.
fn amd_family() -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let vendor = __cpuid(0);
        let amd = [vendor.ebx, vendor.edx, vendor.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .eq(*b"AuthenticAMD");
        if !amd {
            return None;
        }
        let eax = __cpuid(1).eax;
        let base = (eax >> 8) & 0xf;
        Some(if base == 0xf {
            base + ((eax >> 20) & 0xff)
        } else {
            base
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zen_5_and_later_get_their_rates_and_every_other_cpu_zen_4s() {
        assert_eq!(for_amd_family(Some(0x1a)), &ZEN5);
        assert_eq!(for_amd_family(Some(0x1b)), &ZEN5);
        assert_eq!(for_amd_family(Some(0x19)), &ZEN4);
        assert_eq!(for_amd_family(Some(0x17)), &ZEN4);
        assert_eq!(for_amd_family(None), &ZEN4);
        // This machine's family, as CPUID reports it, picks the detected table.
        assert_eq!(detected(), for_amd_family(amd_family()));
    }

    /// Only the rates differ: each table's FMA-bound tiles are faster on Zen 5, and no
    /// rate is zero or negative.
    #[test]
    fn zen_5_computes_faster_and_every_rate_is_positive() {
        for r in [&ZEN4, &ZEN5] {
            for v in [
                r.gemm_macs,
                r.gather,
                r.pad,
                r.gemm_call,
                r.igemm_macs,
                r.igemm_store,
                r.winograd_macs,
                r.winograd_transform,
                r.winograd_weights,
                r.chantile_macs,
                r.chanwino_macs,
                r.transpose,
                r.transpose_large,
                r.row_winograd_combine,
                r.row_winograd_transform,
                r.row_winograd_margin,
                r.igwino_macs,
                r.igwino_packed_macs,
                r.igwino_store,
                r.igwino_pack,
                r.igwino_call,
                r.direct_wide_macs,
                r.direct_narrow_macs,
                r.direct_strided_macs,
                r.phased_macs,
            ] {
                assert!(v > 0.0 && v.is_finite(), "{}: {v}", r.name);
            }
        }
        const { assert!(ZEN5.igemm_macs > ZEN4.igemm_macs && ZEN5.gemm_macs > ZEN4.gemm_macs) };
    }
}
