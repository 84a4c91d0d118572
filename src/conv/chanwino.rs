//! The channel tile ([`super::chantile`]) with its kernel rows run as 1-D Winograd
//! F(2, 3): stems and other few-input-channel layers in about 2/3 of the multiply-adds.
//!
//! **Why.** The channel tile issues its FMAs at the core's ceiling, and so does ONNX
//! Runtime on a ResNet stem: only fewer multiply-adds can be faster there. Along a
//! kernel row, two neighbouring outputs read overlapping inputs, and Toom–Cook with the
//! points `{0, 1, −1, ∞}` computes both from four products instead of six.
//!
//! **Chunks.** Output column `j` of kernel column `v` reads padded column `j·s + v`
//! (horizontal stride `s`, dilation 1). The kernel columns of one stride phase (`v`,
//! `v + s`, `v + 2s`, …) are cut into chunks of up to three; for the output pair
//! `(2t, 2t + 1)` a chunk with first column `v₀` reads `dᵢ = x[2t·s + v₀ + i·s]`,
//! `i = 0 .. 4`, and with its weights `g₀, g₁, g₂` (zeros past its length):
//! ```text
//! point   input        weight            enters
//!   0     d₀ − d₂      g₀                y₀
//!   1     d₁ + d₂      (g₀ + g₁ + g₂)/2  y₀ and y₁
//!   2     d₂ − d₁      (g₀ − g₁ + g₂)/2  y₀ and −y₁
//!   3     d₁ − d₃      g₂                −y₁
//! ```
//! so that `y₀ = M₀ + M₁ + M₂` and `y₁ = M₁ − M₂ − M₃` where `Mₖ` sums point `k`'s
//! products over every chunk, kernel row and input channel. Each output's products
//! involve only its own inputs (`y₀` reads `d₀ .. d₃` but not `d₃`, `y₁` not `d₀`), so an
//! output whose inputs are all zero (in the padding, say) is exactly zero.
//!
//! A chunk of two columns takes 3 products for 4, in Karatsuba's form, which keeps that
//! property (the form above with `g₂ = 0` would not: `y₀` would add and cancel `d₂·g₀`):
//! ```text
//! point   input        weight            enters
//!   0     d₀ − d₁      g₀                y₀
//!   1     d₁           g₀ + g₁           y₀ and y₁
//!   3     d₁ − d₂      g₁                −y₁
//! ```
//! A single column takes points 0 and 3 with inputs `d₀`, `d₁` and weights `g₀`, `−g₀`
//! (the direct sum). ResNet's 7×7/2 stem (phases of 4 and 3 columns: chunks 3 + 1 and 3)
//! takes 10 products per pair and kernel row instead of 14; a 3×3 at stride 1 takes 4
//! for 6.
//!
//! **The tile.** Each `Mₖ` is the channel tile's product: 6 pairs × 64 output channels,
//! one weight vector per (channel, kernel row, chunk) broadcast against 6 transformed
//! inputs, read from per-band rows of transformed inputs (`[channel][input row][slot]
//! [pair]`, one slot per chunk and point, contiguous over pairs). The four results of a
//! row are combined into its outputs and transposed into NCHW by the channel tile's
//! transpose.
//!
//! **Exactness.** The transforms add, subtract and halve (exact scalings): on
//! small-integer data every step is exact, as in the direct sum. In general an output's
//! `M`s hold products of its inputs with other columns' weights, which cancel, so its
//! rounding is relative to those too; the property test checks the fixtures' bound from
//! [`MIN_TERMS`] products per point on.
//!
//! For dilation 1 along rows, any stride, padding, groups and batch, on CPUs with
//! AVX-512F ([`supports`]).
#![allow(unsafe_code)]

use std::cell::RefCell;

use ndarray::{Array4, ArrayView1, ArrayView4};

use super::chantile::{self, PANEL};
use super::igemm::OutPtr;
use super::params::Conv2dGeometry;
use super::phase::PhaseLayout;
use super::{CancelToken, Cancelled};

/// Fewest (input channel, kernel row) pairs per group, and fewest products of the
/// direct sum (`c_in/groups · k_h · k_w`): below them a point's sum is short and the
/// transforms' rounding is large next to the direct sum's bound (measured over random
/// data, worst error against the fixtures' bound: 0.5 for a one-channel 3×3, over 1 for
/// a one-channel 3×2; from 18 products on at most 0.22, on 16 layer shapes × 60 draws).
pub const MIN_TERMS: usize = 3;
/// See [`MIN_TERMS`].
pub const MIN_PRODUCTS: usize = 18;

/// The points a chunk of 1, 2 or 3 kernel columns feeds, in its slot order.
pub(crate) fn points(taps: usize) -> &'static [usize] {
    match taps {
        3 => &[0, 1, 2, 3],
        2 => &[0, 1, 3],
        _ => &[0, 3],
    }
}

/// Kernel columns `v₀, v₀ + s, …` (`taps` of them) of one stride phase; its transformed
/// inputs are slots `slot ..` of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) v0: usize,
    pub(crate) taps: usize,
    pub(crate) slot: usize,
}

/// The chunks of `g`'s kernel rows: each phase's columns in runs of three, then the
/// rest (a run of four as 3 + 1, of five as 3 + 2).
pub(crate) fn chunks(g: &Conv2dGeometry) -> Vec<Chunk> {
    let s = g.stride[1];
    let mut out = Vec::new();
    let mut slot = 0;
    for p in 0..s.min(g.k_w) {
        let cols = (g.k_w - p).div_ceil(s);
        let mut done = 0;
        while done < cols {
            let taps = (cols - done).min(3);
            out.push(Chunk {
                v0: p + done * s,
                taps,
                slot,
            });
            slot += points(taps).len();
            done += taps;
        }
    }
    out
}

/// Products per output pair and (input channel, kernel row): the direct kernel does
/// `2·k_w`.
pub fn products_per_pair(g: &Conv2dGeometry) -> usize {
    chunks(g).iter().map(|c| points(c.taps).len()).sum()
}

/// Weight vectors of the longest point's sum: `c_in/groups · k_h ·` (the chunks feeding
/// it). One tile call rereads that many, as the channel tile rereads its `k`.
pub fn longest_point(g: &Conv2dGeometry) -> usize {
    let ch = chunks(g);
    let feeding = (0..4)
        .map(|k| ch.iter().filter(|c| points(c.taps).contains(&k)).count())
        .max()
        .unwrap_or(0);
    g.c_in / g.groups * g.k_h * feeding
}

/// Whether the row Winograd can run `g` here, and saves products on it.
pub fn supports(g: &Conv2dGeometry) -> bool {
    chantile::available() && saves_products(g)
}

/// Whether kernel rows as 1-D Winograd apply to `g` (column dilation 1, enough terms per
/// point for the rounding bound) and take fewer products than the direct sum, on any CPU
/// (also [`super::igwino`]'s condition).
pub(crate) fn saves_products(g: &Conv2dGeometry) -> bool {
    g.dilation[1] == 1
        && g.c_in / g.groups * g.k_h >= MIN_TERMS
        && g.c_in / g.groups * g.k_h * g.k_w >= MIN_PRODUCTS
        && products_per_pair(g) < 2 * g.k_w
}

/// Output pairs computed per row: `⌈out_w / 2⌉`, in tiles of [`chantile::NJ`] and a shorter one.
pub(crate) fn computed_pairs(out_w: usize) -> usize {
    out_w.div_ceil(2)
}

thread_local! {
    /// Per-thread transformed rows of a band, one padded row, and the four `M` rows.
    static BUFS: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every band.
///
/// # Panics
/// If `g` is not [supported](supports) or the shapes disagree with it.
pub fn conv2d_chanwino(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    assert!(supports(geom), "the row Winograd cannot run {geom:?}");
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let chunks = chunks(&g);
    let slots: usize = chunks.iter().map(|c| points(c.taps).len()).sum();
    let tp = computed_pairs(g.out_w);
    let panels = opg.div_ceil(PANEL);
    let bands = chantile::plan_bands(&g, cpg * g.k_h * g.k_w, panels);
    let band_out = bands.first().map_or(1, |b| b.len());
    // Input rows of the tallest band; a band's buffer is `[c][row][slot][pair]`.
    let cap = (band_out - 1) * g.stride[0] + (g.k_h - 1) * g.dilation[0] + 1;
    // Each slot's pairs, padded to whole vectors of the transform.
    let ts = tp.next_multiple_of(16);
    let row_len = slots * ts;

    // Each point's entries (c, u, chunk) in that order: their offsets in a band's buffer,
    // and their transformed weights `[group][panel][entry][PANEL]` (points one after
    // another; `starts[k] .. starts[k + 1]`).
    let mut entries: Vec<(usize, usize, usize, Chunk, usize)> = Vec::new();
    let mut starts = [0usize; 5];
    for k in 0..4 {
        for c in 0..cpg {
            for u in 0..g.k_h {
                for ch in &chunks {
                    if let Some(i) = points(ch.taps).iter().position(|&q| q == k) {
                        entries.push((k, c, u, *ch, ch.slot + i));
                    }
                }
            }
        }
        starts[k + 1] = entries.len();
    }
    let koff: Vec<u32> = entries
        .iter()
        .map(|&(_, c, u, _, slot)| (c * cap + u * g.dilation[0]) * row_len + slot * ts)
        .map(|o| u32::try_from(o).expect("band offsets fit u32"))
        .collect();
    let ne = entries.len();
    let mut packed = vec![0.0f32; g.groups * panels * ne * PANEL];
    let mut biases = vec![0.0f32; g.groups * panels * PANEL];
    let (kk, s) = (cpg * g.k_h * g.k_w, g.stride[1]);
    // Each panel's weights first as `[kk][PANEL]` (rows read in order), then every entry
    // from whole rows of lanes.
    let mut plain = vec![0.0f32; kk * PANEL];
    for grp in 0..g.groups {
        for p in 0..panels {
            let chans = (opg - p * PANEL).min(PANEL);
            let first = grp * opg + p * PANEL;
            for (lane, w) in wt[first * kk..].chunks_exact(kk).take(chans).enumerate() {
                for (kx, &v) in w.iter().enumerate() {
                    plain[kx * PANEL + lane] = v;
                }
            }
            let panel = &mut packed[(grp * panels + p) * ne * PANEL..][..ne * PANEL];
            for (dst, &(k, c, u, ch, _)) in panel.chunks_exact_mut(PANEL).zip(&entries) {
                let at = (c * g.k_h + u) * g.k_w + ch.v0;
                let zeros = [0.0f32; PANEL];
                let tap = |i: usize| {
                    if i < ch.taps {
                        &plain[(at + i * s) * PANEL..][..PANEL]
                    } else {
                        &zeros[..]
                    }
                };
                let (g0, g1, g2) = (tap(0), tap(1), tap(2));
                for l in 0..PANEL {
                    dst[l] = match (k, ch.taps) {
                        (0, _) => g0[l],
                        (1, 2) => g0[l] + g1[l],
                        (1, _) => (g0[l] + g1[l] + g2[l]) * 0.5,
                        (2, _) => (g0[l] - g1[l] + g2[l]) * 0.5,
                        (_, 1) => -g0[l],
                        (_, 2) => g1[l],
                        _ => g2[l],
                    };
                }
            }
            if let Some(b) = &bias {
                let dst = &mut biases[(grp * panels + p) * PANEL..][..chans];
                for (lane, d) in dst.iter_mut().enumerate() {
                    *d = b[first + lane];
                }
            }
        }
    }

    // Padded rows in `s` phases: input dᵢ of pair t is element `⌊v₀/s⌋ + i + 2t` of phase
    // `v₀ mod s`; the transform reads 34 floats from there per 16 pairs.
    let reach = chunks.iter().map(|c| c.v0 / s).max().unwrap_or(0);
    let layout = PhaseLayout::new(&g, reach + 2 * ts + 2);

    let args = BandArgs {
        g: &g,
        layout: &layout,
        chunks: &chunks,
        packed: &packed,
        biases: &biases,
        koff: &koff,
        starts,
        panels,
        cap,
        row_len,
        tp,
        ts,
    };
    // `run_band` stores every output column of every row of its band for each of the
    // group's output channels (`combine_row`), as `run_bands` requires.
    chantile::run_bands(&g, x, &bands, cancel, |grp, xg, rows, out| {
        run_band(&args, grp, xg, rows, out);
    })
}

/// What every band of one call shares.
struct BandArgs<'a> {
    g: &'a Conv2dGeometry,
    /// Padded rows in `2·s_w` phases.
    layout: &'a PhaseLayout,
    chunks: &'a [Chunk],
    /// `[group][panel][entry][PANEL]`.
    packed: &'a [f32],
    /// `[group][panel][PANEL]`.
    biases: &'a [f32],
    /// Each entry's offset in a band's buffer.
    koff: &'a [u32],
    /// Point `k`'s entries are `starts[k] .. starts[k + 1]`.
    starts: [usize; 5],
    panels: usize,
    /// Input rows per channel in a band's buffer.
    cap: usize,
    /// Floats per (channel, input row) in a band's buffer: `slots · ts`.
    row_len: usize,
    /// Pairs computed per output row ([`computed_pairs`]).
    tp: usize,
    /// Floats per slot: `tp` rounded up to whole vectors.
    ts: usize,
}

/// Output rows `rows` of group `grp` (input channels `xg`, `[c_in/groups, h, w]`), every
/// output channel of the group, into `out` (the group's first output plane).
fn run_band(a: &BandArgs<'_>, grp: usize, xg: &[f32], rows: std::ops::Range<usize>, out: OutPtr) {
    let g = a.g;
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let (sh, tp) = (g.stride[0], a.tp);
    let r0 = rows.start * sh;
    let n_rows = (rows.len() - 1) * sh + (g.k_h - 1) * g.dilation[0] + 1;
    assert!(n_rows <= a.cap);
    // Pairs per point's row: the computed ones, and whole 16-wide blocks of outputs for
    // the transposes (whose lanes past `out_w` are read and not stored).
    let mp = tp.max(g.out_w.next_multiple_of(16) / 2);
    let [mut buf, mut padded, mut m] = BUFS.take();
    buf.resize(cpg * a.cap * a.row_len, 0.0);
    padded.resize(a.layout.row_len(), 0.0);
    m.resize(4 * mp * PANEL, 0.0);
    for c in 0..cpg {
        let plane = &xg[c * g.h * g.w..][..g.h * g.w];
        for r in 0..n_rows {
            a.layout.fill_row(plane, r0 + r, &mut padded);
            let dst = &mut buf[(c * a.cap + r) * a.row_len..][..a.row_len];
            // SAFETY: AVX-512F is present (`supports`).
            unsafe {
                transform_row(
                    &padded,
                    a.layout.wq,
                    a.chunks,
                    (g.stride[1], 1),
                    a.ts,
                    a.ts,
                    false,
                    dst,
                );
            };
        }
    }
    // Every tile reads below `rr·s_h·row_len + koff + tp` (rr < rows, koff of a row below
    // `cap`), inside the buffer.
    let koff_max = a.koff.iter().copied().max().unwrap_or(0) as usize;
    assert!((rows.len() - 1) * sh * a.row_len + koff_max + tp <= buf.len());
    let p_len = g.out_h * g.out_w;
    let ne = a.koff.len();
    let zeros = [0.0f32; PANEL];
    for p in 0..a.panels {
        let chans = (opg - p * PANEL).min(PANEL);
        let w = &a.packed[(grp * a.panels + p) * ne * PANEL..][..ne * PANEL];
        let bias = &a.biases[(grp * a.panels + p) * PANEL..][..PANEL];
        for (rr, i) in rows.clone().enumerate() {
            let x = &buf[rr * sh * a.row_len..];
            for (k, mk) in m.chunks_exact_mut(mp * PANEL).enumerate() {
                let (e0, e1) = (a.starts[k], a.starts[k + 1]);
                // The bias enters both outputs through point 1.
                let b = if k == 1 { bias } else { &zeros[..] };
                // SAFETY: AVX-512F is present; the loads are below the bound asserted
                // above; `mk` holds `mp ≥ tp` pairs × PANEL.
                unsafe {
                    chantile::row_tiles(
                        &w[e0 * PANEL..e1 * PANEL],
                        b,
                        &a.koff[e0..e1],
                        x,
                        1,
                        tp,
                        mk,
                        chans,
                    );
                }
            }
            // SAFETY: AVX-512F is present; `m` holds 4 × `mp` pairs, `2·mp ≥
            // out_w.next_multiple_of(16)`; the stores go to channels `p·PANEL .. + chans`
            // of the group, row `i`, columns < out_w, which this band alone writes.
            unsafe {
                combine_row(
                    &m,
                    mp,
                    chans,
                    g.out_w,
                    out.at(p * PANEL * p_len + i * g.out_w).0,
                    p_len,
                );
            }
        }
    }
    BUFS.set([buf, padded, m]);
}

/// Writes one input row's transformed inputs: for each chunk and each of its points,
/// `pairs` pairs at `dst[slot·slot_stride ..]`, from the padded row's `s` phases of `wq`
/// floats each (`dᵢ[t]` = element `⌊v₀/s⌋ + i + 2t` of phase `v₀ mod s`; even and odd
/// elements split by two permutes per 16 pairs). With `halve`, the inputs of a
/// three-column chunk's points 1 and 2 are halved (exact) instead of their weights.
///
/// With a column dilation `d > 1` (which needs `s = 1` and `d | 16`), pair `q` is the
/// outputs `2d·⌊q/d⌋ + q mod d` and that plus `d`, which read the same inputs `d` apart:
/// `dᵢ[q]` = element `(v₀ + i)·d + 2d·⌊q/d⌋ + q mod d` of the row, 16 pairs from 32
/// consecutive floats by one permute ("take `d`, skip `d`").
///
/// # Safety
/// AVX-512F must be present; each chunk's phase must hold `⌊v₀/s⌋·d + 2·⌈pairs/16⌉·16 +
/// reach(d)` floats at `padded[(v₀ mod s)·wq ..]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn transform_row(
    padded: &[f32],
    wq: usize,
    chunks: &[Chunk],
    (s, d): (usize, usize),
    pairs: usize,
    slot_stride: usize,
    halve: bool,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(d == 1 || (s == 1 && 16 % d == 0));
    // Lane `l` of a block of 16 pairs reads float `l + ⌊l/d⌋·d` of a 32-float window.
    let take: [i32; 16] = std::array::from_fn(|l| (l + l / d * d) as i32);
    let take = _mm512_loadu_si512(take.as_ptr().cast());
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let half = _mm512_set1_ps(if halve { 0.5 } else { 1.0 });
    let whole = pairs.next_multiple_of(16);
    for ch in chunks {
        let src = &padded[(ch.v0 % s) * wq + ch.v0 / s * d..][..2 * whole + reach(d)];
        let n = points(ch.taps).len();
        let out = &mut dst[ch.slot * slot_stride..][..(n - 1) * slot_stride + pairs];
        for t0 in (0..pairs).step_by(16) {
            let m = ((1u32 << (pairs - t0).min(16)) - 1) as u16;
            // SAFETY: the loads read `src[2·t0 .. 2·t0 + 32 + reach(d)]`, inside `src` (t0
            // + 16 ≤ whole); the stores write the lanes `m` keeps of `out[j·slot_stride + t0
            // ..][..16]` (t0 + popcount(m) ≤ pairs) for the chunk's `n` points.
            unsafe {
                let q = src.as_ptr().add(2 * t0);
                let at = |i: usize| {
                    let w = q.add(i * d);
                    _mm512_permutex2var_ps(_mm512_loadu_ps(w), take, _mm512_loadu_ps(w.add(16)))
                };
                let (b0, b1) = (_mm512_loadu_ps(q.add(2)), _mm512_loadu_ps(q.add(18)));
                let (d0, d1, d2) = if d == 1 {
                    let (a0, a1) = (_mm512_loadu_ps(q), _mm512_loadu_ps(q.add(16)));
                    (
                        _mm512_permutex2var_ps(a0, even, a1),
                        _mm512_permutex2var_ps(a0, odd, a1),
                        _mm512_permutex2var_ps(b0, even, b1),
                    )
                } else {
                    (at(0), at(1), at(2))
                };
                let o = out.as_mut_ptr().add(t0);
                let st = |j: usize, v: __m512| _mm512_mask_storeu_ps(o.add(j * slot_stride), m, v);
                match ch.taps {
                    1 => {
                        st(0, d0);
                        st(1, d1);
                    }
                    2 => {
                        st(0, _mm512_sub_ps(d0, d1));
                        st(1, d1);
                        st(2, _mm512_sub_ps(d1, d2));
                    }
                    _ => {
                        let d3 = if d == 1 {
                            _mm512_permutex2var_ps(b0, odd, b1)
                        } else {
                            at(3)
                        };
                        st(0, _mm512_sub_ps(d0, d2));
                        st(1, _mm512_mul_ps(_mm512_add_ps(d1, d2), half));
                        st(2, _mm512_mul_ps(_mm512_sub_ps(d2, d1), half));
                        st(3, _mm512_sub_ps(d1, d3));
                    }
                }
            }
        }
    }
}

/// Floats past `2·⌈pairs/16⌉·16` that [`transform_row`] reads of a chunk's phase: two for
/// `d = 1` (`d₃` of the last pair), else `3d` (its last window of 32 floats).
pub(crate) fn reach(d: usize) -> usize {
    if d == 1 {
        2
    } else {
        3 * d
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn transform_row(
    _: &[f32],
    _: usize,
    _: &[Chunk],
    _: (usize, usize),
    _: usize,
    _: usize,
    _: bool,
    _: &mut [f32],
) {
    unreachable!("supports() is false off x86-64")
}

/// Writes one output row from its points, `m` = `[k][pair][PANEL]` with `mp` pairs per
/// point: position `2t` is `M₀ + M₁ + M₂`, `2t + 1` is `M₁ − M₂ − M₃`, transposed 16 × 16
/// into channels `0 .. chans`, channel `o`'s row at `out + o·ldo`, columns `0 .. out_w`.
///
/// # Safety
/// AVX-512F must be present; `out + o·ldo + j` writable for `o < chans`, `j < out_w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn combine_row(m: &[f32], mp: usize, chans: usize, out_w: usize, out: *mut f32, ldo: usize) {
    use std::arch::x86_64::*;
    assert!(m.len() >= 4 * mp * PANEL && 2 * mp >= out_w.next_multiple_of(16));
    let n = mp * PANEL;
    for j0 in (0..out_w).step_by(16) {
        let mask = ((1u32 << (out_w - j0).min(16)) - 1) as u16;
        for o0 in (0..chans).step_by(16) {
            // SAFETY: pairs j0/2 .. j0/2 + 8 < mp of each point, channels o0 .. o0 + 16 ≤
            // PANEL (length asserted); stores as the contract.
            unsafe {
                let mut rows = [_mm512_setzero_ps(); 16];
                for q in 0..8 {
                    let at = m.as_ptr().add((j0 / 2 + q) * PANEL + o0);
                    let m0 = _mm512_loadu_ps(at);
                    let m1 = _mm512_loadu_ps(at.add(n));
                    let m2 = _mm512_loadu_ps(at.add(2 * n));
                    let m3 = _mm512_loadu_ps(at.add(3 * n));
                    rows[2 * q] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    rows[2 * q + 1] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                let cols = chantile::transpose16(rows);
                for (c, col) in cols.iter().enumerate().take(chans - o0) {
                    let dst = out.add((o0 + c) * ldo + j0);
                    if mask == u16::MAX {
                        _mm512_storeu_ps(dst, *col);
                    } else {
                        _mm512_mask_storeu_ps(dst, mask, *col);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn combine_row(_: &[f32], _: usize, _: usize, _: usize, _: *mut f32, _: usize) {
    unreachable!("supports() is false off x86-64")
}

#[cfg(test)]
mod tests;
