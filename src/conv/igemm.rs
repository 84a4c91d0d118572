//! Implicit GEMM with an AVX-512 register tile: the GEMM of [`super::gemm`] without
//! building its right-hand matrix.
//!
//! For one image and one group the layer is `Y[c_out/groups, P] = W[c_out/groups, K] ·
//! B[K, P]` (see [`super::gemm`]). Each padded input channel is split into `s_h × s_w`
//! phase planes ([`super::phase`] splits the columns, the rows go to plane `r mod s_h`,
//! row `⌊r/s_h⌋`), each `wq = ⌈w_pad/s_w⌉` floats wide. Output `(i, j)` of tap
//! `(c, u, v)` then reads element `(i + ⌊u·d_h/s_h⌋)·wq + j + ⌊v·d_w/s_w⌋` of phase plane
//! `(u·d_h mod s_h, v·d_w mod s_w)`: at output position `q = i·wq + j`, row `k = (c, u,
//! v)` of `B` is the float at `q + koff[k]`, at any stride and dilation. So the register
//! tile reads `B` straight from the phase planes, one offset per `k`: no im2col matrix,
//! no packing.
//!
//! **The tile** is 8 output channels × 3 vectors of 16 outputs (24 `zmm` accumulators,
//! started at the bias). Per `k` it loads 3 vectors of `B` at `koff[k]`, broadcasts the 8
//! weights `W[o, k]` (read in place, one row pointer per output channel) and issues 24
//! FMAs; no spills, ~110 GFLOP/s per core when `B` stays in L1/L2.
//!
//! **Vectors** (16 outputs each) are cut from the positions `q` in one of two ways,
//! whichever wastes fewer lanes ([`Vectors::new`]):
//! - *per row*: each output row in pieces of 16, the last one masked;
//! - *flat*: 16 consecutive `q` at a time over the rows of `wq`; lanes with `j ≥ out_w`
//!   are computed and dropped, and the rest are compressed into consecutive outputs
//!   (`vcompressps`). A 56-wide 3×3 layer wastes 2 lanes in 58 this way, against 8 in 64
//!   per row; a 7×7 plane 14 in 63 against 9 in 16; a 3×3/2 layer with 28 outputs per
//!   row 1 in 29 against 4 in 32; AlexNet's 11×11/4 stem 2 in 57 against 9 in 64.
//!
//! Loop order inside a task: when the task's weights fit L2, its tiles run in chunks that
//! read [`CHUNK_BYTES`] of the planes, each chunk for every panel of output channels in
//! turn (the chunk's `B` stays in L2, and each panel writes its 8 output rows in long
//! runs); deep layers (weights larger than L2) run output channels outside over all of
//! the task's tiles, so each weight row streams from memory once.
//!
//! Tasks are output-channel panels × vector ranges, at least 4 per thread, so a batch-1
//! layer uses every core. Workspace: one padded, phase-split image (plus `wq + 32`
//! floats of slack that the last vectors may read past the planes' end).
//!
//! **Where the time goes** (reference machine, 2 threads): the tile is at the FMA
//! ceiling. A loop of independent 512-bit FMAs runs 3.5–3.65 G/s on one core alone and
//! 3.34 G/s on each when both cores run it (≈ 214 GFLOP/s for two); a 256-channel 3×3
//! layer on 14×14 issues 8.26 M FMAs (14 vectors, 12.5% of the lanes wasted) in 1.27
//! ms, 97% of that. So only fewer computed lanes (or fewer multiply-adds) can make
//! these layers faster. Tried and measured slower or no faster (criterion zoo,
//! alternating builds):
//! - planes expanded per kernel column (`k_w` copies, rows exactly `out_w` wide, every
//!   vector dense): fewer vectors, but 3× the fill and the cache lines of `B`; +3–7% on
//!   3×3 at 7×7, 14×14 and dilation 4, −11% only on AlexNet's 11×11/4 stem;
//! - a dense cut over unpadded rows with the taps' column edges masked in the loads
//!   (`vmovups {k}{z}`): the masked loads cost more than 12.5% fewer lanes save (14×14
//!   and dilation 2 on 28×28 +2–5%); on 7×7 a dot-product tail for the 49th output gave
//!   −8%, but it sums in another order than the tile, so strips of one layer would no
//!   longer equal the whole layer bit for bit (`conv::strip`'s tests);
//! - tasks split by output-channel panels first when the weights exceed L2: −1 to −7%
//!   on some layers, +3% on 3×3/2 at 128 channels, within the noise.
//!
//! Only for CPUs with AVX-512F ([`available`]); elsewhere the plan uses
//! [`super::gemm`]. This module is one of the crate's `unsafe` sites: raw-pointer loads
//! and stores whose bounds are checked once per layer when the vectors are built.
#![allow(unsafe_code)]

use ndarray::{Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

use super::params::Conv2dGeometry;
use super::phase::PhaseLayout;
use super::{CancelToken, Cancelled};

/// Output channels per register tile.
pub(crate) const MR: usize = 8;
/// Vectors (16 outputs each) per register tile.
const NV: usize = 3;
/// Weight bytes per task above which output channels run in the outer loop.
const A_RESIDENT: usize = 256 << 10;
/// Bytes of the planes that one chunk of a task's tiles reads (half a core's L2): the
/// task runs each chunk for all of its panels before the next, so that every panel writes
/// its 8 output rows as long runs. Running every panel per tile instead wrote 64 rows at
/// once on VGG's 3→64 stem, a scatter of stores that missed the caches: with the caches
/// flushed between calls, as the server finds them, 1.18 ms against 0.64.
pub(crate) const CHUNK_BYTES: usize = 256 << 10;
/// Tasks per thread to aim for.
const TASKS_PER_THREAD: usize = 4;
/// Largest padded input of one group padded once per image; larger ones are padded in
/// bands of about this size inside the tasks (L2-resident right before they are read).
const BAND_BYTES: usize = 512 << 10;
/// Smallest task worth scheduling, in multiply-adds.
const MIN_TASK_MACS: usize = 1 << 18;

/// Whether this CPU can run the implicit GEMM (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

mod vectors;

#[cfg(test)]
use vectors::flat_vectors;
pub use vectors::vector_count;
use vectors::{Vector, Vectors};

/// Fills phase-plane rows `t0 .. t0 + rows` of one channel (`src`, `[h, w]`) into
/// `dst` (`s_h·s_w` planes of `rows × wq`); padded rows past `hp` are zeros.
fn fill_planes(
    g: &Conv2dGeometry,
    layout: &PhaseLayout,
    src: &[f32],
    t0: usize,
    rows: usize,
    dst: &mut [f32],
) {
    let (sh, sw, wq) = (g.stride[0], g.stride[1], layout.wq);
    let hp = g.h + g.padding[0] + g.padding[1];
    let sub_len = rows * wq;
    for t in 0..rows {
        for a in 0..sh {
            let r = (t0 + t) * sh + a;
            let at = a * sw * sub_len + t * wq;
            if r < hp {
                layout.fill_row_split(src, r, &mut dst[at..], sub_len);
            } else {
                for b in 0..sw {
                    dst[at + b * sub_len..][..wq].fill(0.0);
                }
            }
        }
    }
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every task.
///
/// # Panics
/// If the CPU lacks AVX-512F (see [`available`]) or the shapes disagree with `geom`.
pub fn conv2d_igemm(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    conv2d_banded(input, weight, bias, geom, cancel, BAND_BYTES, CHUNK_BYTES)
}

/// [`conv2d_igemm`] padding a group's planes in bands of about `band_bytes` when they are
/// larger, with chunks of tiles that read about `chunk_bytes` of them (tests use small
/// bands and chunks to check those paths on small layers).
fn conv2d_banded(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
    band_bytes: usize,
    chunk_bytes: usize,
) -> Result<Array4<f32>, Cancelled> {
    assert!(available(), "implicit GEMM needs AVX-512F");
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let zeros = vec![0.0; g.c_out];
    let bias = bias.map_or(zeros, |b| b.to_vec());
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let k = cpg * g.k_h * g.k_w;
    let p_len = g.out_h * g.out_w;

    let layout = PhaseLayout::new(&g, 0);
    let mut vectors = Vectors::new(&g);
    let (wq, phases) = (vectors.wq, g.stride[0] * g.stride[1]);
    debug_assert_eq!(wq, layout.wq);
    let tiles = vectors.list.len().div_ceil(NV);
    let panels = opg.div_ceil(MR);
    // A group's phase planes larger than L2 are filled band by band inside the tasks,
    // each band right before the tiles that read it; smaller ones once per image.
    let whole = vectors.input_rows(&vectors.list);
    let group_bytes = cpg * phases * whole.1 * wq * 4;
    let bands = group_bytes.div_ceil(band_bytes);
    let chunk = (chunk_bytes * tiles / group_bytes.max(1)).max(1);
    let tasks = plan_tasks(&g, tiles, panels, k, bands, chunk);
    let plane_rows = if bands > 1 {
        tasks
            .iter()
            .map(|t| {
                vectors
                    .input_rows(tile_vectors(&vectors.list, t.tiles.clone()))
                    .1
            })
            .max()
            .unwrap_or(1)
    } else {
        whole.1
    };
    let chan_len = phases * plane_rows * wq;
    vectors.set_plane_rows(&g, plane_rows);
    let vectors = &vectors;
    let koff_max = vectors.koff.iter().copied().max().unwrap_or(0) as usize;
    // The last vectors' lanes past `out_w` may read up to a row past the last plane.
    let slack = wq + 32;

    let mut plane = Vec::new();
    if bands == 1 {
        plane = super::buffers::take(g.c_in * chan_len + slack);
        plane.resize(g.c_in * chan_len + slack, 0.0);
    }
    let len = g.n * g.c_out * p_len;
    let mut out = super::buffers::take(len);
    let base = OutPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    let mut images = || -> Result<(), Cancelled> {
        for img in 0..g.n {
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let xi = &x[img * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
            if bands == 1 {
                plane[..g.c_in * chan_len]
                    .par_chunks_mut(chan_len)
                    .zip(xi.par_chunks(g.h * g.w))
                    .for_each(|(dst, src)| fill_planes(&g, &layout, src, 0, plane_rows, dst));
            }
            let padded = &plane[..];
            tasks.par_iter().try_for_each(|t| {
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                let xg = &xi[t.group * cpg * g.h * g.w..][..cpg * g.h * g.w];
                let run = |planes: &[f32], shift: usize| {
                    // Every tile of this task reads below this bound (the slack covers
                    // the 16 lanes of a vector that starts near a plane's end).
                    let last = tile_vectors(&vectors.list, t.tiles.clone())
                        .last()
                        .map_or(0, |v| v.src);
                    assert!(
                        last as usize - shift + koff_max + 16 <= planes.len(),
                        "vectors read inside the padded planes"
                    );
                    run_task(t, &g, wt, &bias, vectors, planes, shift, base, img, p_len);
                };
                if bands == 1 {
                    run(&padded[t.group * cpg * chan_len..], 0);
                    return Ok(());
                }
                let (t0, _) = vectors.input_rows(tile_vectors(&vectors.list, t.tiles.clone()));
                BAND.with_borrow_mut(|buf| {
                    buf.resize(cpg * chan_len + slack, 0.0);
                    for (c, src) in xg.chunks_exact(g.h * g.w).enumerate() {
                        let dst = &mut buf[c * chan_len..][..chan_len];
                        fill_planes(&g, &layout, src, t0, plane_rows, dst);
                    }
                    run(&buf[..], t0 * wq);
                });
                Ok(())
            })?;
        }
        Ok(())
    };
    let done = images();
    if bands == 1 {
        super::buffers::give(plane);
    }
    done?;
    // SAFETY: every (image, group, panel, tile) was run by exactly one task (the tasks
    // partition groups × panels × tiles, and every image ran them all without error), and
    // each run wrote its rows at every output its vectors keep; the vectors tile the
    // plane, so all `len` elements are initialised.
    unsafe { out.set_len(len) };
    Ok(Array4::from_shape_vec(g.output_shape(), out).expect("shape"))
}

/// `out[m × n] := bias[r] + a[m × k] · b[k × n]` on the calling thread, with the same
/// register tile: `a` in panels of [`MR`] rows (`m = bias.len()` rows, panel `p` at
/// `a[p·k·MR ..]` as `[k][MR]`, rows past `m` computed and dropped), `b` row-major with
/// row stride `ldb`, `out` row-major with row stride `ldo`. For callers that build their
/// own `A` and `B` (the Winograd transforms).
///
/// # Panics
/// If the CPU lacks AVX-512F or a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    a: &[f32],
    k: usize,
    bias: &[f32],
    b: &[f32],
    ldb: usize,
    n: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let m = bias.len();
    assert!(available(), "implicit GEMM needs AVX-512F");
    assert!(m > 0 && n > 0 && k > 0 && ldb >= n && ldo >= n);
    assert!(a.len() >= m.div_ceil(MR) * k * MR && out.len() >= (m - 1) * ldo + n);
    // The last vector may read up to 15 floats past column n of B's last row.
    assert!(b.len() >= (k - 1) * ldb + n.next_multiple_of(16));
    let koff: Vec<u32> = (0..k)
        .map(|kk| u32::try_from(kk * ldb).expect("offsets fit u32"))
        .collect();
    let list: Vec<Vector> = (0..n)
        .step_by(16)
        .map(|j| Vector {
            src: j as u32,
            dst: j as u32,
            mask: ((1u32 << (n - j).min(16)) - 1) as u16,
        })
        .collect();
    for at in 0..list.len().div_ceil(NV) {
        for o0 in (0..m).step_by(MR) {
            let rows = (m - o0).min(MR);
            // SAFETY: AVX-512F is present; loads at `j + kk·ldb + lane` < `(k−1)·ldb +
            // n.next_multiple_of(16)` ≤ `b.len()`; stores at rows `o0 .. o0 + rows`,
            // columns < n of `out` (asserted above), through `&mut out`.
            unsafe {
                tile(&TileArgs {
                    w: &a[o0 * k..(o0 + MR) * k],
                    packed: true,
                    k,
                    bias: &bias[o0..o0 + rows],
                    planes: b.as_ptr(),
                    shift: 0,
                    koff: &koff,
                    vs: tile_vectors(&list, at..at + 1),
                    out: out.as_mut_ptr().add(o0 * ldo),
                    ldo,
                });
            }
        }
    }
}

/// The vectors of tiles `at`.
fn tile_vectors(list: &[Vector], at: std::ops::Range<usize>) -> &[Vector] {
    &list[at.start * NV..(at.end * NV).min(list.len())]
}

thread_local! {
    /// Per-thread band of padded planes, reused across tasks and calls.
    static BAND: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs task `t` of image `img`: its panels × tiles, reading the group's padded planes
/// `planes` (vector `v` reads at `v.src - shift`), writing into the output at `base`.
#[allow(clippy::too_many_arguments)]
fn run_task(
    t: &Task,
    g: &Conv2dGeometry,
    wt: &[f32],
    bias: &[f32],
    vectors: &Vectors,
    planes: &[f32],
    shift: usize,
    base: OutPtr,
    img: usize,
    p_len: usize,
) {
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let k = cpg * g.k_h * g.k_w;
    let o_first = t.group * opg;
    let out_img = base.at((img * g.c_out + o_first) * p_len);
    let run = |panel: usize, at: usize| {
        let o0 = panel * MR;
        let rows = (opg - o0).min(MR);
        let vs = tile_vectors(&vectors.list, at..at + 1);
        let w = &wt[(o_first + o0) * k..(o_first + o0 + rows) * k];
        let b = &bias[o_first + o0..o_first + o0 + rows];
        // SAFETY: AVX-512F is present (asserted by the caller). Every load is at
        // `v.src - shift + koff[k] + lane`, below the bound the caller asserted against
        // `planes.len()` (vectors are in increasing `src` order); `w` holds `rows` rows
        // of `k` weights; the stores go to rows `o0 .. o0 + rows` of this image and group
        // at the outputs the vectors keep, which tile the plane (checked in
        // `Vectors::new`), and tasks own disjoint (panel, tile) pairs.
        unsafe {
            tile(&TileArgs {
                w,
                packed: false,
                k,
                bias: b,
                planes: planes.as_ptr(),
                shift,
                koff: &vectors.koff,
                vs,
                out: out_img.0.add(o0 * p_len),
                ldo: p_len,
            });
        }
    };
    let (first, end) = (t.tiles.start, t.tiles.end);
    for c0 in (first..end).step_by(t.chunk) {
        for panel in t.panels.clone() {
            for at in c0..(c0 + t.chunk).min(end) {
                run(panel, at);
            }
        }
    }
}

/// The output buffer's base, shared by the tasks that write disjoint parts of it (here
/// and in [`super::chantile`]).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

// SAFETY: tasks write disjoint elements through it (see `conv2d_igemm` and
// `conv2d_chantile`, each of which checks that its tasks partition the output).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(crate) fn at(self, offset: usize) -> Self {
        // SAFETY: callers stay inside the output's capacity (n · c_out · P floats).
        Self(unsafe { self.0.add(offset) })
    }
}

/// One task: a group's panels × tiles, and its loop order.
struct Task {
    group: usize,
    panels: std::ops::Range<usize>,
    tiles: std::ops::Range<usize>,
    /// Tiles per chunk: the task runs its tiles a chunk at a time, each chunk for every
    /// panel in turn.
    chunk: usize,
}

/// Splits every group's `panels × tiles` into at least `TASKS_PER_THREAD` tasks per
/// thread, by tiles first (a task keeps all of its group's weights hot), then by panels,
/// and never below `MIN_TASK_MACS` per task; into at least `bands` tile ranges.
fn plan_tasks(
    g: &Conv2dGeometry,
    tiles: usize,
    panels: usize,
    k: usize,
    bands: usize,
    chunk: usize,
) -> Vec<Task> {
    let want = TASKS_PER_THREAD * rayon::current_num_threads();
    let tile_macs = MR * NV * 16 * k;
    let max_parts = (panels * tiles * tile_macs / MIN_TASK_MACS).max(1);
    let per_group = want.div_ceil(g.groups).min(max_parts).max(bands);
    let tile_parts = per_group.min(tiles);
    let panel_parts = per_group.div_ceil(tile_parts).min(panels);
    let ranges = |len: usize, parts: usize| {
        let size = len.div_ceil(parts);
        (0..len).step_by(size).map(move |s| s..(s + size).min(len))
    };
    let mut tasks = Vec::new();
    for group in 0..g.groups {
        for p in ranges(panels, panel_parts) {
            let a_bytes = p.len() * MR * k * 4;
            for t in ranges(tiles, tile_parts) {
                let n = t.len();
                tasks.push(Task {
                    group,
                    panels: p.clone(),
                    tiles: t,
                    chunk: if a_bytes > A_RESIDENT {
                        n
                    } else {
                        chunk.min(n)
                    }
                    .max(1),
                });
            }
        }
    }
    tasks
}

/// One register tile: rows `0 .. w.len()/k` (≤ 8) of `out` (row stride `ldo`) at the
/// outputs `vs` keep, `out[r] = bias[r] + Σ_k w[r·k + kk] · planes[v.src − shift + koff[kk]]`.
///
/// # Safety
/// AVX-512F must be present; every `planes[v.src − shift + koff[kk] + lane]` (16 lanes) must be
/// readable, and `out[r·ldo + v.dst ..][..popcount(v.mask)]` writable, for each row and
/// vector.
#[cfg(target_arch = "x86_64")]
unsafe fn tile(t: &TileArgs<'_>) {
    // SAFETY: the caller upholds `tile`'s contract, which is `tile_n`'s.
    match (t.packed, t.vs.len()) {
        (false, 3) => unsafe { tile_n::<3, false>(t) },
        (false, 2) => unsafe { tile_n::<2, false>(t) },
        (false, 1) => unsafe { tile_n::<1, false>(t) },
        (true, 3) => unsafe { tile_n::<3, true>(t) },
        (true, 2) => unsafe { tile_n::<2, true>(t) },
        (true, 1) => unsafe { tile_n::<1, true>(t) },
        _ => unreachable!("1 to {NV} vectors per tile"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(_: &TileArgs<'_>) {
    unreachable!("available() is false off x86-64")
}

/// The operands of one [`tile`] call.
struct TileArgs<'a> {
    /// `rows` rows of `k` weights, or with `packed` one panel `[k][MR]` (weight `(r, kk)`
    /// at `kk·MR + r`: one pointer for the 8 broadcasts instead of 8).
    w: &'a [f32],
    packed: bool,
    k: usize,
    /// One per row (`rows = bias.len()` ≤ 8).
    bias: &'a [f32],
    planes: *const f32,
    shift: usize,
    koff: &'a [u32],
    vs: &'a [Vector],
    out: *mut f32,
    ldo: usize,
}

/// [`tile`] with `N` vectors, weights in rows or (`PACKED`) in a panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_n<const N: usize, const PACKED: bool>(t: &TileArgs<'_>) {
    use std::arch::x86_64::*;
    let TileArgs {
        w,
        packed: _,
        k,
        bias,
        planes,
        shift,
        koff,
        vs,
        out,
        ldo,
    } = *t;
    let rows = bias.len();
    assert!((1..=MR).contains(&rows) && koff.len() == k);
    assert_eq!(w.len(), if PACKED { k * MR } else { rows * k });
    // Rows past `rows` repeat the last one (computed, never stored).
    let wr: [*const f32; MR] = std::array::from_fn(|r| {
        if PACKED {
            w[r..].as_ptr()
        } else {
            w[r.min(rows - 1) * k..].as_ptr()
        }
    });
    let mut acc: [[__m512; N]; MR] =
        std::array::from_fn(|r| [_mm512_set1_ps(bias[r.min(rows - 1)]); N]);
    // SAFETY (whole body): the caller guarantees the loads and stores are in bounds;
    // `wr[r] + kk` (rows) and `wr[0] + kk·MR + r` (packed) are inside `w` for kk < k
    // (lengths asserted).
    unsafe {
        let src: [*const f32; N] = std::array::from_fn(|j| planes.add(vs[j].src as usize - shift));
        for (kk, &o) in koff.iter().enumerate() {
            let o = o as usize;
            let b: [__m512; N] = std::array::from_fn(|j| _mm512_loadu_ps(src[j].add(o)));
            for r in 0..MR {
                let a = if PACKED {
                    _mm512_set1_ps(*wr[0].add(kk * MR + r))
                } else {
                    _mm512_set1_ps(*wr[r].add(kk))
                };
                for j in 0..N {
                    acc[r][j] = _mm512_fmadd_ps(a, b[j], acc[r][j]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let row = out.add(r * ldo);
            for (v, &a) in vs.iter().zip(acc) {
                let m = v.mask;
                let dst = row.add(v.dst as usize);
                if m & m.wrapping_add(1) == 0 {
                    _mm512_mask_storeu_ps(dst, m, a);
                } else {
                    let kept = _mm512_maskz_compress_ps(m, a);
                    let n = m.count_ones();
                    _mm512_mask_storeu_ps(dst, ((1u32 << n) - 1) as u16, kept);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
