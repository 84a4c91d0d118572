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
//! Loop order inside a task: when the task's weights fit L2 the vectors run outside and
//! the output channels inside (the `B` vectors stay in L1); deep layers (weights larger
//! than L2) run output channels outside, so each weight row streams from memory once.
//!
//! Tasks are output-channel panels × vector ranges, at least 4 per thread, so a batch-1
//! layer uses every core. Workspace: one padded, phase-split image (plus `wq + 32`
//! floats of slack that the last vectors may read past the planes' end).
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

/// Vectors of 16 outputs that cover one output plane of `g` (the cheaper cut, as
/// [`Vectors::new`] picks it): `out_h · out_w / (16 · vector_count)` of the lanes computed
/// are kept.
pub fn vector_count(g: &Conv2dGeometry) -> usize {
    (g.out_h * g.out_w.div_ceil(16)).min(flat_vectors(g))
}

/// Width `wq` of the phase planes: the padded width over the column stride.
fn phase_width(g: &Conv2dGeometry) -> usize {
    (g.w + g.padding[2] + g.padding[3]).div_ceil(g.stride[1])
}

/// Vectors of the flat cut: 16 at a time over rows of [`phase_width`], less those that
/// fall wholly in the columns past `out_w`.
///
/// Counted per row in O(`out_h`), not per vector: the plan calls this for every layer,
/// and a 1080p image filter has 130 000 vectors.
fn flat_vectors(g: &Conv2dGeometry) -> usize {
    let row_len = phase_width(g);
    let len = g.out_h * row_len;
    // A vector [q, min(q + 16, len)) is dropped when it lies inside one row's padding
    // columns [i·row_len + out_w, (i + 1)·row_len).
    let dropped: usize = (0..g.out_h)
        .map(|i| {
            let (a, b) = (i * row_len + g.out_w, (i + 1) * row_len);
            let first = a.next_multiple_of(16);
            // q from `first` in steps of 16 while min(q + 16, len) ≤ b.
            if first >= b {
                0
            } else if b == len {
                (len - first).div_ceil(16)
            } else {
                (b - first) / 16
            }
        })
        .sum();
    len.div_ceil(16) - dropped
}

/// One vector of 16 outputs.
#[derive(Debug, Clone, Copy, Default)]
struct Vector {
    /// Position `q = i·wq + j` of lane 0: tap `(0, 0, 0)` reads phase plane (0, 0) there.
    src: u32,
    /// Output index `i·out_w + j` of the first kept lane.
    dst: u32,
    /// Lanes kept; a mask that is not a prefix is compressed into consecutive outputs.
    mask: u16,
}

/// The vectors that cover one output plane, in order, and the tap offsets.
struct Vectors {
    list: Vec<Vector>,
    /// Width of the phase planes.
    wq: usize,
    /// Phase-plane rows below output row `i` that tap row `u` reads: max `⌊u·d_h/s_h⌋`.
    reach: usize,
    /// `koff[k]` for `k = (c, u, v)` in the weight's order.
    koff: Vec<u32>,
}

impl Vectors {
    /// The cut of `g`'s output plane that wastes fewer lanes; the tap offsets follow once
    /// the planes' sizes are known ([`set_plane_rows`](Self::set_plane_rows)).
    ///
    /// # Panics
    /// If the offsets do not fit `u32`, or (a bug) the vectors do not tile the plane.
    fn new(g: &Conv2dGeometry) -> Self {
        let wq = phase_width(g);
        let u32_of = |x: usize| u32::try_from(x).expect("plane offsets fit u32");
        let flat_len = g.out_h * wq;
        let mut list = Vec::new();
        if flat_vectors(g) < g.out_h * g.out_w.div_ceil(16) {
            for q in (0..flat_len).step_by(16) {
                let mut mask = 0u16;
                for l in 0..16.min(flat_len - q) {
                    if (q + l) % wq < g.out_w {
                        mask |= 1 << l;
                    }
                }
                if mask != 0 {
                    let (i, j) = (q / wq, (q % wq).min(g.out_w));
                    let first = i * g.out_w + j;
                    list.push(Vector {
                        src: u32_of(q),
                        dst: u32_of(first),
                        mask,
                    });
                }
            }
        } else {
            for i in 0..g.out_h {
                for j in (0..g.out_w).step_by(16) {
                    let lanes = (g.out_w - j).min(16);
                    list.push(Vector {
                        src: u32_of(i * wq + j),
                        dst: u32_of(i * g.out_w + j),
                        mask: ((1u32 << lanes) - 1) as u16,
                    });
                }
            }
        }
        // The kept lanes tile the plane in order: every output written once.
        let mut next = 0u32;
        for v in &list {
            assert_eq!(v.dst, next, "vectors tile the output plane");
            next += v.mask.count_ones();
        }
        assert_eq!(next as usize, g.out_h * g.out_w);
        debug_assert_eq!(list.len(), vector_count(g));
        Self {
            list,
            wq,
            reach: (g.k_h - 1) * g.dilation[0] / g.stride[0],
            koff: Vec::new(),
        }
    }

    /// Builds the tap offsets for phase planes of `rows` rows (of `wq` floats), `s_h·s_w`
    /// of them per channel.
    ///
    /// # Panics
    /// If an offset does not fit `u32`.
    fn set_plane_rows(&mut self, g: &Conv2dGeometry, rows: usize) {
        let (sh, sw) = (g.stride[0], g.stride[1]);
        let (dh, dw) = (g.dilation[0], g.dilation[1]);
        let sub_len = rows * self.wq;
        let chan_len = sh * sw * sub_len;
        let u32_of = |x: usize| u32::try_from(x).expect("plane offsets fit u32");
        let mut koff = Vec::with_capacity(g.c_in / g.groups * g.k_h * g.k_w);
        for c in 0..g.c_in / g.groups {
            for u in 0..g.k_h {
                for v in 0..g.k_w {
                    let plane = (u * dh % sh) * sw + v * dw % sw;
                    let at = (u * dh / sh) * self.wq + v * dw / sw;
                    koff.push(u32_of(c * chan_len + plane * sub_len + at));
                }
            }
        }
        self.koff = koff;
    }

    /// Phase-plane rows that vectors `vs` read: `(first, count)`.
    fn input_rows(&self, vs: &[Vector]) -> (usize, usize) {
        let first = vs.first().map_or(0, |v| v.src as usize / self.wq);
        let last = vs.last().map_or(0, |v| (v.src as usize + 15) / self.wq);
        (first, last - first + 1 + self.reach)
    }
}

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
    conv2d_banded(input, weight, bias, geom, cancel, BAND_BYTES)
}

/// [`conv2d_igemm`] padding a group's planes in bands of about `band_bytes` when they are
/// larger (tests use small bands to check the banded path on small layers).
fn conv2d_banded(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    cancel: &CancelToken,
    band_bytes: usize,
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
    let tasks = plan_tasks(&g, tiles, panels, k, bands);
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
    if t.a_outer {
        for panel in t.panels.clone() {
            for at in t.tiles.clone() {
                run(panel, at);
            }
        }
    } else {
        for at in t.tiles.clone() {
            for panel in t.panels.clone() {
                run(panel, at);
            }
        }
    }
}

/// The output buffer's base, shared by the tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: tasks write disjoint elements through it (see `conv2d_igemm`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn at(self, offset: usize) -> Self {
        // SAFETY: callers stay inside the output's capacity (n · c_out · P floats).
        Self(unsafe { self.0.add(offset) })
    }
}

/// One task: a group's panels × tiles, and its loop order.
struct Task {
    group: usize,
    panels: std::ops::Range<usize>,
    tiles: std::ops::Range<usize>,
    /// Output channels in the outer loop (the task's weights exceed L2).
    a_outer: bool,
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
                tasks.push(Task {
                    group,
                    panels: p.clone(),
                    tiles: t,
                    a_outer: a_bytes > A_RESIDENT,
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
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::conv::params::{Conv2dParams, Padding};
    use crate::conv::testutil::{check_against_reference, MODES};

    fn check(g: &Conv2dGeometry, seed: u32, bias: bool) {
        check_banded(g, seed, bias, BAND_BYTES);
    }

    fn check_banded(g: &Conv2dGeometry, seed: u32, bias: bool, band_bytes: usize) {
        check_against_reference(g, seed, bias, |x, w, b| {
            conv2d_banded(x, w, b, g, &CancelToken::new(), band_bytes).unwrap()
        });
    }

    fn geom(input: [usize; 4], weight: [usize; 4], stride: usize, pad: usize) -> Conv2dGeometry {
        let params = Conv2dParams {
            stride: [stride; 2],
            padding: Padding::Explicit([pad; 4]),
            ..Default::default()
        };
        Conv2dGeometry::new(input, weight, Some(weight[0]), &params).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Strides 1–3, dilations 1–3, groups, every padding mode, batch 1–3, 1×1 to 5×5,
        /// output channels that do and do not fill the 8-row tile, planes from 1 to 40
        /// wide (flat and per-row vectors, masked tails).
        #[test]
        fn equals_reference(
            (n, groups, cpg, opg, h, w) in (1usize..4, 1usize..4, 1usize..6, 1usize..20, 1usize..24, 1usize..40),
            (k_h, k_w, s_h, s_w, d_h, d_w) in (1usize..6, 1usize..6, 1usize..4, 1usize..4, 1usize..4, 1usize..4),
            (mode, t, b, l, r, same, bias, seed) in (0usize..5, 0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4, any::<bool>(), any::<u32>()),
        ) {
            if !available() {
                return Ok(());
            }
            let padding = match same { 0 => Padding::Same, 1 => Padding::Valid, _ => Padding::Explicit([t, b, l, r]) };
            let params = Conv2dParams { stride: [s_h, s_w], dilation: [d_h, d_w], padding, groups, padding_mode: MODES[mode] };
            let Ok(g) = Conv2dGeometry::new([n, groups * cpg, h, w], [groups * opg, cpg, k_h, k_w], Some(groups * opg), &params) else { return Ok(()) };
            // Whole padded planes, and bands of a few rows (the path of large planes).
            check_banded(&g, seed, bias, if seed % 2 == 0 { BAND_BYTES } else { 256 + seed as usize % 2048 });
        }
    }

    #[test]
    fn cnn_shapes_equal_the_reference() {
        if !available() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        // A stem (stride 2), a 7×7 plane split by channels (flat, a compressed store in
        // most vectors), a wide plane with a masked tail, AlexNet's 11×11/4 (flat over
        // four phase planes).
        check(&geom([1, 3, 40, 44], [24, 3, 7, 7], 2, 3), 1, true);
        check(&geom([1, 3, 67, 67], [16, 3, 11, 11], 4, 2), 6, true);
        check(&geom([1, 64, 7, 7], [40, 64, 3, 3], 1, 1), 2, true);
        check(&geom([2, 8, 9, 37], [16, 8, 3, 3], 1, 1), 3, false);
        // Banded: planes padded a few rows at a time inside the tasks.
        check_banded(&geom([1, 3, 40, 44], [24, 3, 7, 7], 2, 3), 4, true, 4096);
        check_banded(&geom([2, 8, 29, 37], [16, 8, 3, 3], 1, 1), 5, true, 4096);
        check_banded(&geom([1, 3, 67, 67], [16, 3, 11, 11], 4, 2), 7, true, 4096);
    }

    #[test]
    fn vectors_keep_each_output_once_and_waste_little() {
        let v = Vectors::new;
        // 56 wide, 3×3: flat over 58-wide padded rows beats 4 vectors per row.
        let g = geom([1, 4, 56, 56], [8, 4, 3, 3], 1, 1);
        let vs = v(&g);
        assert_eq!(vs.list.len(), (56 * 58usize).div_ceil(16));
        assert!(vs.list.iter().any(|x| x.mask & x.mask.wrapping_add(1) != 0));
        // Stride 2 with 112 outputs per row: per row, 7 full vectors.
        let g = geom([1, 3, 224, 224], [8, 3, 7, 7], 2, 3);
        let vs = v(&g);
        assert_eq!(vs.list.len(), 112 * 7);
        assert!(vs.list.iter().all(|x| x.mask == u16::MAX));
        // Stride 2 with 28 outputs per row: flat over rows of 29 (2 vectors per row would
        // waste 4 lanes in 32).
        let g = geom([1, 64, 56, 56], [8, 64, 3, 3], 2, 1);
        assert_eq!(v(&g).list.len(), (28 * 29usize).div_ceil(16));
        // AlexNet's stem, 11×11/4 → 55 per row: flat over rows of 57, not 4 per row.
        let g = geom([1, 3, 224, 224], [8, 3, 11, 11], 4, 2);
        assert_eq!(g.out_w, 55);
        assert_eq!(v(&g).list.len(), (55 * 57usize).div_ceil(16));
    }

    #[test]
    fn flat_vector_count_matches_counting_each_vector() {
        for (w, k, pad, s) in [
            (56, 3, 1, 1),
            (7, 3, 1, 1),
            (5, 15, 7, 1),
            (40, 1, 0, 1),
            (3, 5, 9, 1),
            (17, 3, 0, 1),
            (56, 3, 1, 2),
            (224, 11, 2, 4),
            (31, 5, 2, 3),
        ] {
            for h in [1, 2, 7, 13] {
                let params = Conv2dParams {
                    padding: Padding::Explicit([pad; 4]),
                    stride: [s, s],
                    ..Default::default()
                };
                let Ok(g) = Conv2dGeometry::new([1, 1, h, w], [1, 1, k, k], None, &params) else {
                    continue;
                };
                let row_len = (g.w + 2 * pad).div_ceil(s);
                let len = g.out_h * row_len;
                let brute = (0..len)
                    .step_by(16)
                    .filter(|&q| (q..(q + 16).min(len)).any(|x| x % row_len < g.out_w))
                    .count();
                assert_eq!(flat_vectors(&g), brute, "{g:?}");
            }
        }
    }

    #[test]
    fn tasks_cover_every_panel_and_tile_once() {
        for (g, tiles, panels) in [
            (geom([1, 512, 7, 7], [512, 512, 3, 3], 1, 1), 2, 64),
            (geom([1, 3, 224, 224], [64, 3, 7, 7], 2, 3), 262, 8),
            (geom([1, 16, 8, 8], [16, 16, 3, 3], 1, 1), 2, 2),
        ] {
            let k = g.c_in * g.k_h * g.k_w;
            let tasks = plan_tasks(&g, tiles, panels, k, 1 + tiles % 3);
            let mut seen = vec![0u8; tiles * panels];
            for t in &tasks {
                for p in t.panels.clone() {
                    for x in t.tiles.clone() {
                        seen[p * tiles + x] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1));
            if g.macs() > 1 << 24 {
                assert!(tasks.len() >= 2 * rayon::current_num_threads());
            }
        }
    }

    #[test]
    fn a_fired_token_stops_it() {
        if !available() {
            return;
        }
        let g = geom([2, 16, 8, 8], [16, 16, 3, 3], 1, 1);
        let x = Array4::zeros(g.input_shape());
        let w = Array4::zeros(g.weight_shape());
        let t = CancelToken::new();
        t.cancel();
        assert_eq!(
            conv2d_igemm(x.view(), w.view(), None, &g, &t),
            Err(Cancelled)
        );
    }
}
