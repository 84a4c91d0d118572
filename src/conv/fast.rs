//! The serving convolution: register-blocked direct convolution, SIMD-dispatched at run time.
//!
//! Work is split into one flat task space, output plane `(n, o)` × band of output rows,
//! each task writing a disjoint chunk of the output (`par_chunks_mut`). A task
//! 1. copies the input rows its band needs (all channels of the group) into a per-worker
//!    scratch band, applying the padding mode to rows and columns — padding costs one
//!    small copy per band, never a padded copy of the whole image;
//! 2. computes each output row in tiles of [`TILE`] outputs held in a `[f32; TILE]`
//!    accumulator that stays in SIMD registers while every channel and tap is added, then
//!    stores the tile once (bias last, as the reference does).
//!
//! The tile loop is plain Rust compiled three times — for AVX-512, AVX2+FMA and baseline
//! x86-64 — and the widest one the CPU has is chosen once at run time ([`isa`]), as fast as
//! `-C target-cpu=native` and still portable. (`pulp`'s safe closure dispatch was tried
//! first: the closure was not inlined into its target-feature function, so nothing
//! vectorised — 0.5 GFLOP/s. Hence the one small `unsafe` module below.)
//! With FMA the products are fused, so results differ from the reference by rounding only:
//! property tests bound the difference by `2·(K+1)·2⁻²⁴·Σ|x·w|`.

use ndarray::{Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

use super::params::Conv2dGeometry;
use super::{CancelToken, Cancelled};

/// Outputs per register tile: 4 AVX-512 or 8 AVX2 registers of accumulators.
pub const TILE: usize = 64;

/// Work per task, in multiply-accumulates: large enough that scheduling is noise (≈100 µs),
/// small enough to spread one image over all cores and to react to cancellation quickly.
const TASK_MACS: usize = 1 << 21;

thread_local! {
    /// Per-thread scratch band, reused across tasks and calls: the compute pool's threads
    /// live as long as the server, so the band is allocated (and zero-filled) once per
    /// thread and size, not once per task (rayon's `for_each_init` re-initialises per split,
    /// which showed up as 22 % of W1 in memset).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every row band.
pub fn conv2d_fast(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    conv2d_isa(input, weight, bias, geom, cancel, isa::detect())
}

fn conv2d_isa(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
    isa: isa::Isa,
) -> Result<Array4<f32>, Cancelled> {
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());
    let plan = BandPlan::new(&g);

    let plane = g.out_h * g.out_w;
    let mut out = vec![0.0f32; g.n * g.c_out * plane];
    out.par_chunks_mut(plane)
        .enumerate()
        .try_for_each(|(p, out_plane)| {
            let (b, o) = (p / g.c_out, p % g.c_out);
            let taps = &wt[o * plan.taps_per_output..][..plan.taps_per_output];
            let bias = bias.as_ref().map_or(0.0, |v| v[o]);
            out_plane
                .par_chunks_mut(plan.band_rows * g.out_w)
                .enumerate()
                .try_for_each(|(band, rows)| {
                    if cancel.is_cancelled() {
                        return Err(Cancelled);
                    }
                    let i0 = band * plan.band_rows;
                    let group = o / (g.c_out / g.groups);
                    SCRATCH.with_borrow_mut(|scratch| {
                        let rows_in =
                            plan.fill_band(&g, x, b, group, i0, rows.len() / g.out_w, scratch);
                        let args = BandArgs {
                            g: &g,
                            plan: &plan,
                            band: scratch,
                            rows_in,
                            taps,
                            bias,
                        };
                        isa::band(isa, &args, rows);
                    });
                    Ok(())
                })
        })?;
    Ok(Array4::from_shape_vec(g.output_shape(), out).expect("output length matches shape"))
}

/// Run-time instruction-set dispatch of [`band_kernel`].
#[allow(unsafe_code)]
mod isa {
    use super::{band_kernel, BandArgs};

    /// The widest instruction set available.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Isa {
        Avx512,
        Avx2Fma,
        Baseline,
    }

    /// Detects the instruction set once.
    pub(super) fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx2Fma;
                }
            }
            Isa::Baseline
        })
    }

    /// Runs the band kernel compiled for `isa`.
    pub(super) fn band(isa: Isa, a: &BandArgs<'_>, out: &mut [f32]) {
        match isa {
            // SAFETY: `Isa::Avx512` is only returned by `detect` after run-time detection
            // of avx512f and fma on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { band_avx512(a, out) },
            // SAFETY: `Isa::Avx2Fma` is only returned after detection of avx2 and fma.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { band_avx2(a, out) },
            _ => band_kernel::<false>(a, out),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn band_avx512(a: &BandArgs<'_>, out: &mut [f32]) {
        band_kernel::<true>(a, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn band_avx2(a: &BandArgs<'_>, out: &mut [f32]) {
        band_kernel::<true>(a, out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn every_compiled_kernel_agrees_with_the_baseline() {
            use super::super::tests::random_case;
            for seed in 0..40 {
                let (x, w, b, g) = random_case(seed);
                let base = super::super::conv_with(super::Isa::Baseline, &x, &w, b.as_ref(), &g);
                let best = super::super::conv_with(super::detect(), &x, &w, b.as_ref(), &g);
                super::super::tests::assert_close(&best, &base, &x, &w, b.as_ref(), &g);
            }
        }
    }
}

/// Test hook: the convolution with a chosen instruction set.
#[cfg(test)]
fn conv_with(
    isa: isa::Isa,
    x: &Array4<f32>,
    w: &Array4<f32>,
    b: Option<&ndarray::Array1<f32>>,
    g: &Conv2dGeometry,
) -> Array4<f32> {
    conv2d_isa(
        x.view(),
        w.view(),
        b.map(|b| b.view()),
        g,
        &CancelToken::new(),
        isa,
    )
    .expect("not cancelled")
}

/// Inputs of one band computation.
struct BandArgs<'a> {
    g: &'a Conv2dGeometry,
    plan: &'a BandPlan,
    band: &'a [f32],
    rows_in: usize,
    taps: &'a [f32],
    bias: f32,
}

/// Shapes of the scratch band, fixed for one call.
struct BandPlan {
    band_rows: usize,
    /// Padded columns actually read: `(out_w − 1)·s_w + d_w·(k_w − 1) + 1`.
    cols: usize,
    /// Column → input column (or zero) for the padded border columns; interior is a copy.
    left: Vec<Option<usize>>,
    right: Vec<Option<usize>>,
    /// Input columns copied straight: `left.len() .. left.len() + interior`.
    interior: usize,
    taps_per_output: usize,
}

impl BandPlan {
    fn new(g: &Conv2dGeometry) -> Self {
        let [_, eff_w] = g.effective_kernel();
        let cols = (g.out_w - 1) * g.stride[1] + eff_w;
        let pl = g.padding[2];
        let left_n = pl.min(cols);
        let interior = g.w.min(cols - left_n);
        let map = |c: usize| g.padding_mode.source_index(c as isize - pl as isize, g.w);
        let left = (0..left_n).map(map).collect();
        let right = (left_n + interior..cols).map(map).collect();
        let c_per_group = g.c_in / g.groups;
        let row_macs = (g.out_w * c_per_group * g.k_h * g.k_w).max(1);
        Self {
            band_rows: (TASK_MACS / row_macs).clamp(1, g.out_h),
            cols,
            left,
            right,
            interior,
            taps_per_output: c_per_group * g.k_h * g.k_w,
        }
    }

    /// Fills `buf` with the padded input rows output rows `i0 .. i0 + n_rows` read, for the
    /// channels of `group` of batch item `b`: layout `[c][row][col]`. Returns rows per channel.
    #[allow(clippy::too_many_arguments)]
    fn fill_band(
        &self,
        g: &Conv2dGeometry,
        x: &[f32],
        b: usize,
        group: usize,
        i0: usize,
        n_rows: usize,
        buf: &mut Vec<f32>,
    ) -> usize {
        let c_per_group = g.c_in / g.groups;
        let [eff_h, _] = g.effective_kernel();
        let r0 = i0 * g.stride[0];
        let rows = (n_rows - 1) * g.stride[0] + eff_h;
        // Every element is written below (zero rows explicitly), so only growth zero-fills.
        buf.resize(c_per_group * rows * self.cols, 0.0);
        let plane = g.h * g.w;
        for c in 0..c_per_group {
            let ci = group * c_per_group + c;
            let src_plane = &x[(b * g.c_in + ci) * plane..][..plane];
            for r in 0..rows {
                let dst = &mut buf[(c * rows + r) * self.cols..][..self.cols];
                let y = (r0 + r) as isize - g.padding[0] as isize;
                let Some(y) = g.padding_mode.source_index(y, g.h) else {
                    dst.fill(0.0);
                    continue;
                };
                let src = &src_plane[y * g.w..][..g.w];
                let (l, rest) = dst.split_at_mut(self.left.len());
                let (mid, r) = rest.split_at_mut(self.interior);
                mid.copy_from_slice(&src[..self.interior]);
                for (d, s) in l.iter_mut().zip(&self.left) {
                    *d = s.map_or(0.0, |s| src[s]);
                }
                for (d, s) in r.iter_mut().zip(&self.right) {
                    *d = s.map_or(0.0, |s| src[s]);
                }
            }
        }
        rows
    }
}

/// Computes the output rows of one band from the scratch band.
#[inline(always)]
fn band_kernel<const FMA: bool>(a: &BandArgs<'_>, out_rows: &mut [f32]) {
    let BandArgs {
        g,
        plan,
        band,
        rows_in,
        taps,
        bias,
    } = *a;
    let c_per_group = g.c_in / g.groups;
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let full_tiles = if sw == 1 { g.out_w / TILE } else { 0 };
    for (r, out_row) in out_rows.chunks_exact_mut(g.out_w).enumerate() {
        let row_of = |c: usize, u: usize| {
            let start = (c * rows_in + r * sh + u * g.dilation[0]) * plan.cols;
            &band[start..start + plan.cols]
        };
        // Full stride-1 tiles: the accumulator is only indexed by constants, so it lives in
        // registers (4 zmm / 8 ymm) across all channels and taps.
        for tile in 0..full_tiles {
            let j0 = tile * TILE;
            let mut acc = [0.0f32; TILE];
            for c in 0..c_per_group {
                for u in 0..g.k_h {
                    let row = row_of(c, u);
                    let w_row = &taps[(c * g.k_h + u) * g.k_w..][..g.k_w];
                    for (v, &w) in w_row.iter().enumerate() {
                        let start = j0 + v * g.dilation[1];
                        let src: &[f32; TILE] =
                            row[start..start + TILE].try_into().expect("tile in bounds");
                        for t in 0..TILE {
                            acc[t] = madd::<FMA>(w, src[t], acc[t]);
                        }
                    }
                }
            }
            for (o, a) in out_row[j0..j0 + TILE].iter_mut().zip(&acc) {
                *o = a + bias;
            }
        }
        // The rest (row tails, rows narrower than a tile, strided rows), in short tiles.
        let mut j0 = full_tiles * TILE;
        while j0 < g.out_w {
            let len = TILE.min(g.out_w - j0);
            let mut acc = [0.0f32; TILE];
            for c in 0..c_per_group {
                for u in 0..g.k_h {
                    let row = row_of(c, u);
                    let w_row = &taps[(c * g.k_h + u) * g.k_w..][..g.k_w];
                    for (v, &w) in w_row.iter().enumerate() {
                        let start = j0 * sw + v * g.dilation[1];
                        let src = &row[start..=start + (len - 1) * sw];
                        for (a, &x) in acc[..len].iter_mut().zip(src.iter().step_by(sw)) {
                            *a = madd::<FMA>(w, x, *a);
                        }
                    }
                }
            }
            for (o, a) in out_row[j0..j0 + len].iter_mut().zip(&acc) {
                *o = a + bias;
            }
            j0 += len;
        }
    }
}

#[inline(always)]
fn madd<const FMA: bool>(w: f32, x: f32, acc: f32) -> f32 {
    if FMA {
        w.mul_add(x, acc)
    } else {
        acc + w * x
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use ndarray::{Array1, Array4};
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;
    use crate::conv::conv2d_reference;
    use crate::conv::params::{Conv2dParams, Padding, PaddingMode};
    use ndarray::Zip;

    const MODES: [PaddingMode; 5] = [
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
        PaddingMode::Symmetric,
    ];

    /// Asserts `|got − want| ≤ 2·(K+1)·2⁻²⁴·Σ|x·w|+|b|` element-wise, the fixtures' rule,
    /// with the magnitude computed by the reference on absolute values.
    pub(crate) fn assert_close(
        got: &Array4<f32>,
        want: &Array4<f32>,
        x: &Array4<f32>,
        w: &Array4<f32>,
        b: Option<&Array1<f32>>,
        g: &Conv2dGeometry,
    ) {
        let ax = x.mapv(f32::abs);
        let aw = w.mapv(f32::abs);
        let ab = b.map(|b| b.mapv(f32::abs));
        let mag = conv2d_reference(ax.view(), aw.view(), ab.as_ref().map(|b| b.view()), g);
        let k = (g.c_in / g.groups * g.k_h * g.k_w + 1) as f32;
        assert_eq!(got.shape(), want.shape());
        Zip::from(got).and(want).and(&mag).for_each(|&a, &e, &m| {
            let atol = 2.0 * (k + 1.0) * f32::EPSILON / 2.0 * m;
            assert!((a - e).abs() <= atol, "{a} vs {e} (atol {atol})");
        });
    }

    /// A deterministic random valid case for `seed` (for non-proptest loops).
    pub(crate) fn random_case(
        seed: u64,
    ) -> (
        Array4<f32>,
        Array4<f32>,
        Option<Array1<f32>>,
        Conv2dGeometry,
    ) {
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            ProptestConfig::default(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &[seed as u8; 32],
            ),
        );
        case().new_tree(&mut runner).expect("a case").current()
    }

    /// A random but valid case: shapes, parameters and small-integer data (so that the
    /// comparison can be exact whatever the summation order).
    fn case() -> impl Strategy<
        Value = (
            Array4<f32>,
            Array4<f32>,
            Option<Array1<f32>>,
            Conv2dGeometry,
        ),
    > {
        (
            (1usize..3, 1usize..4, 1usize..4, 1usize..13, 1usize..150),
            (
                1usize..5,
                1usize..5,
                1usize..4,
                1usize..4,
                1usize..3,
                1usize..3,
            ),
            (
                0usize..5,
                0usize..4,
                0usize..4,
                0usize..4,
                0usize..4,
                any::<bool>(),
                any::<u64>(),
            ),
        )
            .prop_filter_map(
                "impossible spec",
                |(
                    (n, groups, cpg, h, w),
                    (k_h, k_w, s_h, s_w, d_h, d_w),
                    (mode, t, b, l, r, bias, seed),
                )| {
                    let c_in = groups * cpg;
                    let c_out = groups * (1 + (seed as usize % 3));
                    let padding = match seed % 7 {
                        0 => Padding::Same,
                        1 => Padding::Valid,
                        _ => Padding::Explicit([t, b, l, r]),
                    };
                    let params = Conv2dParams {
                        stride: [s_h, s_w],
                        dilation: [d_h, d_w],
                        padding,
                        groups,
                        padding_mode: MODES[mode],
                    };
                    let g = Conv2dGeometry::new(
                        [n, c_in, h, w],
                        [c_out, cpg, k_h, k_w],
                        bias.then_some(c_out),
                        &params,
                    )
                    .ok()?;
                    let mut state = seed | 1;
                    let mut next = move || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        ((state % 2001) as f32) / 250.0 - 4.0
                    };
                    let x = Array4::from_shape_simple_fn(g.input_shape(), &mut next);
                    let wt = Array4::from_shape_simple_fn(g.weight_shape(), &mut next);
                    let bias = bias.then(|| Array1::from_shape_simple_fn(c_out, &mut next));
                    Some((x, wt, bias, g))
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn fast_equals_reference_within_float32_rounding((x, w, b, g) in case()) {
            let want = conv2d_reference(x.view(), w.view(), b.as_ref().map(|b| b.view()), &g);
            let got = conv2d_fast(x.view(), w.view(), b.as_ref().map(|b| b.view()), &g, &CancelToken::new()).unwrap();
            assert_close(&got, &want, &x, &w, b.as_ref(), &g);
        }
    }

    #[test]
    fn a_fired_token_stops_the_computation() {
        let g = Conv2dGeometry::new([1, 1, 64, 64], [1, 1, 3, 3], None, &Conv2dParams::default())
            .unwrap();
        let x = Array4::zeros(g.input_shape());
        let w = Array4::zeros(g.weight_shape());
        let t = CancelToken::new();
        t.cancel();
        assert_eq!(
            conv2d_fast(x.view(), w.view(), None, &g, &t),
            Err(Cancelled)
        );
    }

    #[test]
    fn one_by_one_image_with_kernel_equal_to_input() {
        let g = Conv2dGeometry::new(
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            Some(1),
            &Conv2dParams::default(),
        )
        .unwrap();
        let x = Array4::from_elem(g.input_shape(), 3.0);
        let w = Array4::from_elem(g.weight_shape(), 2.0);
        let b = Array1::from_elem(1, 1.0);
        let y = conv2d_fast(x.view(), w.view(), Some(b.view()), &g, &CancelToken::new()).unwrap();
        assert_eq!(y.into_raw_vec_and_offset().0, vec![7.0]);
    }
}
