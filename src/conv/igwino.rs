//! The implicit GEMM ([`super::igemm`]) with its kernel rows run as 1-D Winograd F(2, 3):
//! deep layers with 3- to 7-column kernels in 2/3 to 3/4 of the multiply-adds.
//!
//! **Why.** The implicit GEMM issues its FMAs at the core's ceiling, and so does ONNX
//! Runtime on its fast runs: only fewer multiply-adds can be faster. Along a kernel row,
//! the output pair `(2t, 2t + 1)` reads overlapping inputs, and the chunks and points of
//! [`super::chanwino`] compute both from fewer products: a three-column chunk takes 4
//! products for 6, a two-column one 3 for 4, a single column 2 for 2. A 3×3 layer takes 12
//! per pair, input channel and output channel instead of 18; a 3×3/2 layer 15 for 18
//! (phases of 2 and 1 columns); a 5×5 21 for 30.
//!
//! **Planes.** For one image, each input channel's padded rows are split by row phase
//! (`r mod s_h`, as the implicit GEMM does) and transformed
//! ([`chanwino::transform_row`]) into one plane per slot (chunk × point): `out_h + reach`
//! rows of exactly `tp = ⌈out_w/2⌉` pairs. Pair `t` of output row `i` is then position `q
//! = i·tp + t` of every plane, shifted by one offset per (channel, kernel row, chunk), at
//! any row stride and dilation, with no lane wasted at a row's end: the vectors are 16
//! consecutive `q` (the last one masked), whatever the width. A 7×7 plane takes 2 vectors
//! of pairs per kernel-row point where the implicit GEMM takes 4 vectors per tap.
//!
//! **Column dilation** `d` (dividing 16, at column stride 1): pair `q` holds the outputs
//! `2d·⌊q/d⌋ + q mod d` and that plus `d`, which read the same inputs `d` apart, so a row
//! has `tp = d·⌈out_w/2d⌉` pairs, the transform takes each 16 pairs from 32 consecutive
//! floats with one permute, and a vector's 32 outputs are still consecutive columns
//! ([`interleave`]).
//!
//! **The tiles.** Where a plane has [`PACK_MIN_VECTORS`] or more, the points' weights
//! (`g₀`, `g₀ + g₂ ± g₁`, `g₂`; the halving of points 1 and 2 is in the input transform,
//! exact) are packed per panel once per call ([`pack`]), and [`tile_passes`] sums the
//! points one after the other over up to 4 consecutive vectors: each pass is a GEMM tile
//! of [`MR`] output channels × 4 vectors (one broadcast weight feeds 4 FMAs, one loaded
//! vector 6), 10 loads per 24 FMAs. On fewer vectors (a 7×7 plane's 9.4 MB of weights are
//! used by 2 vectors) packing would cost more than it saves: [`tile`] keeps `MR` output
//! channels × the 4 points' sums `M₀ … M₃` over one vector (24 accumulators), broadcasts
//! each output channel's 1–3 weights in place and forms the sums with adds (on Zen 4's add
//! pipes beside the FMAs), so a request's weights are never rewritten. Either way `M₁`
//! starts at the bias (which thus enters both outputs), and at the end a tile combines `y₀
//! = M₀ + M₁ + M₂`, `y₁ = M₁ − M₂ − M₃`, interleaves them into 32 outputs, and stores them
//! (compressed past `out_w` when a row's last pair is short).
//!
//! Summing the four points of one vector together from packed weights (each weight used
//! by one FMA: 28 loads per 24 FMAs) ran at 97 % of Zen 4's FMA ceiling but only about 60
//! % of Zen 5's, whose 512-bit FMA pipes issue twice as many; one point at a time took a
//! dilated 3×3 at 256 channels on 28×28 from 2.35 to 1.94 ms there (2 threads).
//!
//! **Exactness.** As [`super::chanwino`]: an output over zeros is exactly zero, on small
//! integers every step is exact, and elsewhere the property test checks the fixtures'
//! bound from [`chanwino::MIN_PRODUCTS`] products per output on.
//!
//! Tasks are output-channel panels × vector ranges, split along whichever of a group's
//! weights and planes is larger ([`plan_tasks`]). Workspace: one image's transformed planes
//! (`c_in · slots · s_h · (out_h + reach) · tp` floats, [`planes_floats`]; the plan keeps
//! it at most [`MAX_PLANES_BYTES`]) and the packed weights.
//!
//! Only for CPUs with AVX-512F ([`supports`]). One of the crate's `unsafe` sites:
//! raw-pointer loads and stores whose bounds are checked once per layer.
#![allow(unsafe_code)]

use std::cell::RefCell;

use ndarray::{Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

use super::chanwino::{self, Chunk};
use super::igemm::OutPtr;
use super::params::Conv2dGeometry;
use super::phase::PhaseLayout;
use super::{CancelToken, Cancelled};
use tiles::{tile, tile_passes};

/// Output channels per register tile (× 4 points or 4 vectors = 24 accumulators).
pub(crate) const MR: usize = 6;
/// Weight bytes per task above which output channels run in the outer loop.
const A_RESIDENT: usize = 256 << 10;
/// Tasks per thread to aim for.
const TASKS_PER_THREAD: usize = 4;
/// Smallest task worth scheduling, in multiply-adds of the direct sum.
const MIN_TASK_MACS: usize = 1 << 18;
/// Vectors per output plane from which the points' weights are formed once per call,
/// packed per panel (`[point][entry][MR]`), instead of by adds inside every tile: the
/// tile then issues only FMAs (perf, one thread on Zen 4, a dilated 3×3 at 128 channels
/// on 32×32, 32 vectors: the tile at 97 % of the FMA ceiling, against about 82 % with the
/// adds), and the pass writes `4/3` of the weights once, which on a 7×7 plane (2 vectors,
/// 9.4 MB of weights at 512 channels) would cost more than it saves (on Zen 5 packing
/// from 1 vector took ResNet's 512-channel 7×7 from 0.76 to 2.3 ms).
const PACK_MIN_VECTORS: usize = 8;
/// Largest transformed image the plan gives this algorithm (its workspace).
pub const MAX_PLANES_BYTES: usize = 8 << 20;

/// Whether this algorithm can run `g` here, and saves products on it: column dilation 1
/// at any column stride, or a column dilation dividing 16 at column stride 1.
pub fn supports(g: &Conv2dGeometry) -> bool {
    super::igemm::available()
        && (g.dilation[1] == 1 || (g.stride[1] == 1 && 16 % g.dilation[1] == 0))
        && chanwino::saves_products(&undilated(g))
        && Planes::checked(g).is_some()
}

/// `g` with its column dilation taken out: the chunks and products of a row.
fn undilated(g: &Conv2dGeometry) -> Conv2dGeometry {
    let mut u = *g;
    u.dilation[1] = 1;
    u
}

/// Pairs per output row: `⌈out_w / 2⌉`, or with a column dilation `d` whole groups of
/// `d` pairs, `d·⌈out_w / 2d⌉` (pair `q` holds the columns `2d·⌊q/d⌋ + q mod d` and that
/// plus `d`).
fn pairs(g: &Conv2dGeometry) -> usize {
    let d = g.dilation[1];
    d * g.out_w.div_ceil(2 * d)
}

/// Vectors of 16 output pairs that cover one output plane: up to the last pair that
/// holds an output.
pub fn vector_count(g: &Conv2dGeometry) -> usize {
    let (tp, d) = (pairs(g), g.dilation[1]);
    // The last pair with an output: column `out_w − 1` is in pair `2d·⌊q/d⌋ + q mod d`
    // or that plus `d`.
    let c = g.out_w - 1;
    let last = c / (2 * d) * d + c % d;
    ((g.out_h - 1) * tp + last) / 16 + 1
}

/// Floats of the points' weights packed once per call, or 0 where the tile forms them
/// itself (planes of fewer than [`PACK_MIN_VECTORS`] vectors).
pub fn packed_floats(g: &Conv2dGeometry) -> usize {
    if vector_count(g) < PACK_MIN_VECTORS {
        return 0;
    }
    let panels = (g.c_out / g.groups).div_ceil(MR);
    let per_entry: usize = chanwino::chunks(g)
        .iter()
        .map(|c| PACKED_POINTS[3 - c.taps])
        .sum();
    g.groups * panels * MR * (g.c_in / g.groups) * g.k_h * per_entry
}

/// Floats of one image's transformed planes (the workspace); `usize::MAX` where a
/// group's planes would not be addressable with `u32` offsets (the plan never gives it
/// such a layer, and [`supports`] is false).
pub fn planes_floats(g: &Conv2dGeometry) -> usize {
    Planes::checked(g).map_or(usize::MAX, |p| p.chan_len * g.c_in)
}

/// The sizes of one image's transformed planes.
struct Planes {
    /// Pairs per row.
    tp: usize,
    /// Rows per row phase: `out_h + reach`.
    rows: usize,
    /// Floats between one slot's planes and the next (`s_h` row phases).
    ss: usize,
    /// Floats per input channel: `slots · ss`.
    chan_len: usize,
}

impl Planes {
    /// The sizes, or None if one group's planes (and the 16 floats of slack past them)
    /// would not be addressable with `u32` offsets.
    fn checked(g: &Conv2dGeometry) -> Option<Self> {
        let tp = pairs(g);
        let rows = g.out_h + (g.k_h - 1) * g.dilation[0] / g.stride[0];
        let ss = g.stride[0].checked_mul(rows)?.checked_mul(tp)?;
        let chan_len = chanwino::products_per_pair(g).checked_mul(ss)?;
        let group = (g.c_in / g.groups).checked_mul(chan_len)?.checked_add(16)?;
        (u32::try_from(group).is_ok() && g.c_in.checked_mul(chan_len).is_some()).then_some(Self {
            tp,
            rows,
            ss,
            chan_len,
        })
    }

    fn new(g: &Conv2dGeometry) -> Self {
        Self::checked(g).expect("supported layers have addressable planes")
    }
}

/// One (input channel, kernel row, chunk) of the sum.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Offset of the chunk's first slot plane (at output row 0) in a group's planes.
    koff: u32,
    /// Offset of the chunk's first weight in an output channel's row of weights.
    woff: u32,
}

/// The entries of `g`'s sum by chunk width (3, 2 and 1 columns), and the farthest float
/// past a vector's start that any of them reads (its last slot's 16 lanes).
fn entries(g: &Conv2dGeometry, p: &Planes, chunks: &[Chunk]) -> ([Vec<Entry>; 3], usize) {
    let u32_of = |x: usize| u32::try_from(x).expect("plane offsets fit u32");
    let slots = chanwino::products_per_pair(g);
    let (sh, dh) = (g.stride[0], g.dilation[0]);
    let mut by_taps: [Vec<Entry>; 3] = Default::default();
    let mut reach = 0;
    for c in 0..g.c_in / g.groups {
        for u in 0..g.k_h {
            let row = (u * dh % sh) * p.rows * p.tp + (u * dh / sh) * p.tp;
            for ch in chunks {
                let koff = (c * slots + ch.slot) * p.ss + row;
                let last = koff + (chanwino::points(ch.taps).len() - 1) * p.ss + 16;
                reach = reach.max(last);
                by_taps[3 - ch.taps].push(Entry {
                    koff: u32_of(koff),
                    woff: u32_of((c * g.k_h + u) * g.k_w + ch.v0),
                });
            }
        }
    }
    (by_taps, reach)
}

/// One vector: 16 pairs from position `src`, stored as two halves of 16 outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vector {
    src: u32,
    /// Per half: output index of the first kept lane, and the lanes kept (a mask that is
    /// not a prefix is compressed into consecutive outputs).
    halves: [(u32, u16); 2],
}

/// The vectors over `g`'s output plane: 16 pairs at a time over `out_h` rows of `tp`
/// pairs. Interleaved (`interleave`), a vector's 32 outputs are columns `2·(q mod tp)
/// ..` of rows of `2·tp` columns, of which those below `out_w` are kept.
///
/// # Panics
/// If (a bug) the kept lanes do not tile the plane in order.
fn vectors(g: &Conv2dGeometry) -> Vec<Vector> {
    let tp = pairs(g);
    let np = g.out_h * tp;
    let u32_of = |x: usize| u32::try_from(x).expect("offsets fit u32");
    let mut list = Vec::new();
    let mut next = 0;
    for q0 in (0..np).step_by(16) {
        let mut halves = [(0u32, 0u16); 2];
        for (h, half) in halves.iter_mut().enumerate() {
            for l in 0..16 {
                let z = 2 * q0 + 16 * h + l;
                let (row, col) = (z / (2 * tp), z % (2 * tp));
                if z / 2 < np && col < g.out_w {
                    if half.1 == 0 {
                        half.0 = u32_of(row * g.out_w + col);
                        assert_eq!(row * g.out_w + col, next, "vectors tile the plane");
                    }
                    half.1 |= 1 << l;
                    next += 1;
                }
            }
        }
        if halves[0].1 | halves[1].1 != 0 {
            list.push(Vector {
                src: u32_of(q0),
                halves,
            });
        }
    }
    assert_eq!(next, g.out_h * g.out_w);
    debug_assert_eq!(list.len(), vector_count(g));
    list
}

/// Where each of a vector's 32 outputs comes from: lane `l` of `y₀` (`l`) or of `y₁` (`16
/// + l`). Output `z` of a row of pairs is `y₀` or `y₁` of pair `⌊z/2d⌋·d + z mod d`, as
/// `⌊z/d⌋` is even or odd (`d = 1`: `y₀`, `y₁` alternate).
fn interleave(d: usize) -> [i32; 32] {
    std::array::from_fn(|z| ((z / d % 2) * 16 + z / (2 * d) * d + z % d) as i32)
}

/// `runs` in order, in chunks of at most `chunk` vectors (a longer run alone).
fn chunk_runs<'a, 'b>(runs: &'b [&'a [Vector]], chunk: usize) -> Vec<&'b [&'a [Vector]]> {
    let mut out = Vec::new();
    let mut rest = runs;
    while !rest.is_empty() {
        let mut n = 0;
        let mut len = 0;
        while n < rest.len() && (n == 0 || len + rest[n].len() <= chunk) {
            len += rest[n].len();
            n += 1;
        }
        let (c, tail) = rest.split_at(n);
        out.push(c);
        rest = tail;
    }
    out
}

/// `list` in runs of at most `width` consecutive vectors (each `src` 16 past the last).
fn runs(list: &[Vector], width: usize) -> Vec<&[Vector]> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let n = (1..rest.len().min(width))
            .find(|&i| rest[i].src != rest[i - 1].src + 16)
            .unwrap_or(rest.len().min(width));
        let (run, tail) = rest.split_at(n);
        out.push(run);
        rest = tail;
    }
    out
}

thread_local! {
    /// Per-thread padded row for the transforms.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The packed weights of the last call that packed on this thread ([`pack`]).
    static PACKED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every image and task.
///
/// # Panics
/// If `g` is not [supported](supports) or the shapes disagree with it.
pub fn conv2d_igwino(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    conv2d_chunked(input, weight, bias, geom, cancel, super::igemm::CHUNK_BYTES)
}

/// [`conv2d_igwino`] with chunks of vectors that read about `chunk_bytes` of the planes
/// (tests use small chunks to check that path on small layers).
fn conv2d_chunked(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
    chunk_bytes: usize,
) -> Result<Array4<f32>, Cancelled> {
    assert!(
        supports(geom),
        "the implicit row Winograd cannot run {geom:?}"
    );
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let bias = bias.map_or_else(|| vec![0.0; g.c_out], |b| b.to_vec());
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let p_len = g.out_h * g.out_w;

    let planes = Planes::new(&g);
    let chunks = chanwino::chunks(&g);
    let (by_taps, reach) = entries(&g, &planes, &chunks);
    let k = cpg * g.k_h * g.k_w;
    let list = &vectors(&g);
    let inter = interleave(g.dilation[1]);
    let panels = opg.div_ceil(MR);
    let group_len = cpg * planes.chan_len;
    let chunk = (chunk_bytes * list.len() / (4 * group_len).max(1)).max(1);
    let tasks = plan_tasks(&g, list.len(), panels, group_len, chunk);
    let packed = (packed_floats(&g) > 0).then(|| pack(&g, wt, &by_taps, panels));
    let per_panel = packed.as_ref().map_or(0, |p| p.len() / (g.groups * panels));
    // Padded rows in `s_w` phases; the transform reads `2·⌈tp/16⌉·16 + reach(d_w)` floats
    // of a phase from a chunk's first column.
    let d = g.dilation[1];
    let first_col = chunks
        .iter()
        .map(|c| c.v0 / g.stride[1] * d)
        .max()
        .unwrap_or(0);
    let whole = planes.tp.next_multiple_of(16);
    let layout = PhaseLayout::new(&g, first_col + 2 * whole + chanwino::reach(d));
    // Every vector of a group reads below its start + `reach` (the last one 16 lanes from
    // a position < out_h·tp): the slack covers the lanes past the last plane.
    let last_src = list.last().map_or(0, |v| v.src as usize);
    assert!(last_src + reach <= group_len + 16);

    // Every image's transforms overwrite all `c_in · chan_len` floats: a cached buffer
    // is not zeroed again (only the slack, which masked-off lanes read).
    let mut buf = super::buffers::take_unzeroed(g.c_in * planes.chan_len + 16);
    buf[g.c_in * planes.chan_len..].fill(0.0);
    let len = g.n * g.c_out * p_len;
    let mut out = super::buffers::take(len);
    let base = OutPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    let mut images = || -> Result<(), Cancelled> {
        for img in 0..g.n {
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let xi = &x[img * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
            buf[..g.c_in * planes.chan_len]
                .par_chunks_mut(planes.chan_len)
                .zip(xi.par_chunks(g.h * g.w))
                .for_each(|(dst, src)| transform_channel(&g, &planes, &layout, &chunks, src, dst));
            let all = &buf[..];
            tasks.par_iter().try_for_each(|t| {
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                let run = |panel: usize, vecs: &[Vector]| {
                    let (o_first, o0) = (t.group * opg, panel * MR);
                    let rows = (opg - o0).min(MR);
                    let out_img = base.at((img * g.c_out + o_first + o0) * p_len);
                    let src = &all[t.group * group_len + vecs[0].src as usize..];
                    let args = TileArgs {
                        w: &wt[(o_first + o0) * k..(o_first + o0 + rows) * k],
                        k,
                        bias: &bias[o_first + o0..o_first + o0 + rows],
                        by_taps: &by_taps,
                        packed: packed
                            .as_ref()
                            .map(|p| &p[(t.group * panels + panel) * per_panel..][..per_panel]),
                        s: g.stride[1],
                        ss: planes.ss,
                        src: src.as_ptr(),
                        vecs,
                        inter: &inter,
                        out: out_img.0,
                        ldo: p_len,
                    };
                    // SAFETY: AVX-512F is present (`supports`). `vecs` are consecutive
                    // (`runs`), so every load is below the last one's `src + reach` of
                    // the group's planes, inside `all` (asserted above, with the slack);
                    // the weights of rows `o0 .. o0 + rows` are whole rows of `k`, and
                    // each entry reads columns `woff + i·s_w` inside its kernel row; the
                    // stores go to rows `o0 .. o0 + rows` of this image and group at the
                    // outputs the vectors keep, which tile the plane (`vectors`), and
                    // tasks own disjoint (panel, vector) pairs.
                    unsafe {
                        match (args.packed.is_some(), vecs.len()) {
                            (false, _) => tile(&args),
                            (true, 1) => tile_passes::<1>(&args),
                            (true, 2) => tile_passes::<2>(&args),
                            (true, 3) => tile_passes::<3>(&args),
                            (true, _) => tile_passes::<4>(&args),
                        }
                    }
                };
                let runs = runs(
                    &list[t.vectors.clone()],
                    if packed.is_some() { 4 } else { 1 },
                );
                for chunk in chunk_runs(&runs, t.chunk) {
                    for panel in t.panels.clone() {
                        chunk.iter().for_each(|vecs| run(panel, vecs));
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    };
    let done = images();
    super::buffers::give(buf);
    if let Some(p) = packed {
        PACKED.set(p);
    }
    done?;
    // SAFETY: every (image, group, panel, vector) was run by exactly one task (the tasks
    // partition groups × panels × vectors, and every image ran them all without error),
    // and each run wrote its rows at every output its vector keeps; the vectors tile the
    // plane, so all `len` elements are initialised.
    unsafe { out.set_len(len) };
    Ok(Array4::from_shape_vec(g.output_shape(), out).expect("shape"))
}

/// Points per entry of a chunk of 3, 2 and 1 columns in the packed weights (a single
/// column's point 3 is `−g₀`, so that every pass only adds products).
const PACKED_POINTS: [usize; 3] = [4, 3, 2];

/// The slot of a chunk of `3 − i` columns that holds point `M_j`, if it has one: a
/// three-column chunk has all four points; a two-column one `M₀, M₁, M₃` in slots 0–2 (no
/// `M₂`); a single column `M₀` and `M₃` in slots 0 and 1.
fn point_slot(i: usize, j: usize) -> Option<usize> {
    match (i, j) {
        (0, _) => Some(j),
        (1, 0 | 1) | (2, 0) => Some(j),
        (1, 3) => Some(2),
        (2, 3) => Some(1),
        _ => None,
    }
}

/// The points' weights of every panel, `[group][panel][point][entry][MR]`: per point
/// `M₀ … M₃`, the entries that have it in the tile's order (3-, 2-, then 1-column chunks;
/// [`point_slot`]); rows past a panel's end repeat its last row. The same sums as the
/// unpacked tile forms (`(g₀ + g₂) ± g₁`, `g₀ + g₁`), and a single column's `M₃` weight
/// negated (its `y₁` takes `−g₀·x₁`).
fn pack(g: &Conv2dGeometry, wt: &[f32], by_taps: &[Vec<Entry>; 3], panels: usize) -> Vec<f32> {
    let (opg, k, s) = (
        g.c_out / g.groups,
        g.c_in / g.groups * g.k_h * g.k_w,
        g.stride[1],
    );
    let per_panel: usize = (0..3)
        .map(|i| by_taps[i].len() * PACKED_POINTS[i] * MR)
        .sum();
    // A buffer kept on this thread (taken out, so that a call nested on this thread while
    // the pool packs finds it empty and allocates its own); it grows only, and every
    // element is written below.
    let len = g.groups * panels * per_panel;
    debug_assert_eq!(len, packed_floats(g));
    let mut packed = PACKED.take();
    if packed.len() < len {
        packed.resize(len, 0.0);
    }
    packed.truncate(len);
    packed
        .par_chunks_mut(per_panel)
        .enumerate()
        .for_each(|(gp, dst)| {
            let (grp, o0) = (gp / panels, gp % panels * MR);
            let rows = (opg - o0).min(MR);
            // Rows past `rows` repeat the last one (computed, never stored).
            let w: [&[f32]; MR] = std::array::from_fn(|r| {
                let o = grp * opg + o0 + r.min(rows - 1);
                &wt[o * k..(o + 1) * k]
            });
            let mut at = 0;
            for j in 0..4 {
                for (i, list) in by_taps.iter().enumerate() {
                    if point_slot(i, j).is_none() {
                        continue;
                    }
                    let dst = &mut dst[at..at + list.len() * MR];
                    // One formula per (chunk kind, point), chosen outside the loops.
                    match (i, j) {
                        (_, 0) => pack_point(dst, list, &w, |x| x[0]),
                        (0, 1) => pack_point(dst, list, &w, |x| (x[0] + x[2 * s]) + x[s]),
                        (0, 2) => pack_point(dst, list, &w, |x| (x[0] + x[2 * s]) - x[s]),
                        (0, _) => pack_point(dst, list, &w, |x| x[2 * s]),
                        (1, 1) => pack_point(dst, list, &w, |x| x[0] + x[s]),
                        (1, _) => pack_point(dst, list, &w, |x| x[s]),
                        _ => pack_point(dst, list, &w, |x| -x[0]),
                    }
                    at += list.len() * MR;
                }
            }
            debug_assert_eq!(at, per_panel);
        });
    packed
}

/// `dst[e·MR + r] = f(w[r][woff(e) ..])` for the entries `e` of `list` and the panel's
/// weight rows `r`. Packing with the formula chosen per weight took a fifth of a
/// 256-channel dilated layer (0.4 ms); chosen once per list, the loop is loads and adds.
fn pack_point(dst: &mut [f32], list: &[Entry], w: &[&[f32]; MR], f: impl Fn(&[f32]) -> f32) {
    for (d, e) in dst.chunks_exact_mut(MR).zip(list) {
        let at = e.woff as usize;
        for (d, row) in d.iter_mut().zip(w) {
            *d = f(&row[at..]);
        }
    }
}

/// Transforms one input channel (`src`, `[h, w]`) into its planes (`dst`, `chan_len`
/// floats): slot `σ`, row phase `a`, row `t` at `σ·ss + (a·rows + t)·tp`, from padded
/// row `t·s_h + a` (zeros past the padded rows).
fn transform_channel(
    g: &Conv2dGeometry,
    p: &Planes,
    layout: &PhaseLayout,
    chunks: &[Chunk],
    src: &[f32],
    dst: &mut [f32],
) {
    let hp = g.h + g.padding[0] + g.padding[1];
    let slots = chanwino::products_per_pair(g);
    PADDED.with_borrow_mut(|padded| {
        padded.resize(layout.row_len(), 0.0);
        for a in 0..g.stride[0] {
            for t in 0..p.rows {
                let r = t * g.stride[0] + a;
                let at = (a * p.rows + t) * p.tp;
                if r >= hp {
                    for s in 0..slots {
                        dst[s * p.ss + at..][..p.tp].fill(0.0);
                    }
                    continue;
                }
                layout.fill_row(src, r, padded);
                // SAFETY: AVX-512F is present (`supports`); the layout holds
                // `first_col + 2·⌈tp/16⌉·16 + reach(d_w)` floats per phase.
                unsafe {
                    chanwino::transform_row(
                        padded,
                        layout.wq,
                        chunks,
                        (g.stride[1], g.dilation[1]),
                        p.tp,
                        p.ss,
                        true,
                        &mut dst[at..],
                    );
                }
            }
        }
    });
}

/// One task: a group's panels × vectors, and its loop order.
struct Task {
    group: usize,
    panels: std::ops::Range<usize>,
    vectors: std::ops::Range<usize>,
    /// Vectors per chunk: the task runs its vectors a chunk at a time, each chunk for
    /// every panel in turn.
    chunk: usize,
}

/// Splits every group's `panels × vectors` into at least `TASKS_PER_THREAD` tasks per
/// thread (never below `MIN_TASK_MACS` each), along the operand that is larger: every
/// task reads all of the other one. Where a group's weights outweigh its planes (deep
/// layers on small planes) by panels first, so each task streams its own weights once;
/// else by vectors first, so each task reads its own rows of the planes (a dilated 3×3
/// on 32×32 at 128 channels: 1.3 MiB of planes against 0.6 MiB of weights).
fn plan_tasks(
    g: &Conv2dGeometry,
    vectors: usize,
    panels: usize,
    group_len: usize,
    chunk: usize,
) -> Vec<Task> {
    let k = g.c_in / g.groups * g.k_h * g.k_w;
    let want = TASKS_PER_THREAD * rayon::current_num_threads();
    let max_parts = (panels * vectors * MR * 32 * k / MIN_TASK_MACS).max(1);
    let per_group = want.div_ceil(g.groups).min(max_parts);
    let by_panels = g.c_out / g.groups * k > group_len;
    let (panel_parts, vector_parts) = if by_panels {
        let p = per_group.min(panels);
        (p, per_group.div_ceil(p).min(vectors))
    } else {
        let v = per_group.min(vectors);
        (per_group.div_ceil(v).min(panels), v)
    };
    // `parts` ranges whose lengths differ by at most one.
    let ranges =
        |len: usize, parts: usize| (0..parts).map(move |i| i * len / parts..(i + 1) * len / parts);
    let mut tasks = Vec::new();
    for group in 0..g.groups {
        for p in ranges(panels, panel_parts) {
            let a_outer = p.len() * MR * k * 4 > A_RESIDENT;
            for v in ranges(vectors, vector_parts) {
                let n = v.len();
                tasks.push(Task {
                    group,
                    panels: p.clone(),
                    vectors: v,
                    chunk: if a_outer { n } else { chunk.min(n) }.max(1),
                });
            }
        }
    }
    tasks
}

/// The operands of one [`tile`] call.
struct TileArgs<'a> {
    /// `rows = bias.len()` (≤ [`MR`]) rows of `k` weights.
    w: &'a [f32],
    k: usize,
    bias: &'a [f32],
    /// The entries of 3-, 2- and 1-column chunks.
    by_taps: &'a [Vec<Entry>; 3],
    /// This panel's points' weights ([`pack`]), or None to form them from `w`.
    packed: Option<&'a [f32]>,
    /// Column stride: a chunk's weights are `woff`, `woff + s`, `woff + 2s`.
    s: usize,
    /// Floats between a chunk's slot planes.
    ss: usize,
    /// The group's planes at the first vector's position.
    src: *const f32,
    /// The vectors: one for [`tile`], 1–4 consecutive ones for [`tile_passes`].
    vecs: &'a [Vector],
    /// The outputs' order ([`interleave`]).
    inter: &'a [i32; 32],
    /// Row 0's output plane; row `r` at `out + r·ldo`.
    out: *mut f32,
    ldo: usize,
}

mod tiles;

#[cfg(test)]
mod tests;
