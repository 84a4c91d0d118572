//! Convolution as matrix multiplication, on both cores whatever the batch.
//!
//! For one image and one group, with `K = c_in/groups · k_h · k_w` and
//! `P = out_h · out_w`, the layer is `Y[c_out/groups, P] = W[c_out/groups, K] · B[K, P]`
//! where the weight tensor `[c_out, c_in/groups, k_h, k_w]` already is `W` row-major, and
//! column `p = i·out_w + j` of `B` holds the `K` inputs output `(i, j)` reads, in the
//! weight's `(c, u, v)` order. Two ways to get `B` ([`Lowering`]):
//! - **Pointwise** (1×1, no padding): `B` *is* the input, `[c_in/groups, h·w]` row-major,
//!   at stride 1: the GEMM reads the NCHW planes in place, no copy. At stride > 1 each task
//!   gathers its columns once (a subsampled copy).
//! - **im2col** (everything else): the image's channels are first padded in the padding
//!   mode and split into stride phases ([`super::phase`]), so that row `(c, u, v)` of a
//!   block of `B` is a handful of contiguous runs (one per output row), copied with
//!   `memcpy`: no per-pixel index arithmetic, no padding tests. `B` is never built whole:
//!   each task builds one column block, `K × nb` floats sized to a core's L2
//!   (`COLS_BYTES`), and multiplies it at once. That block is the whole workspace per
//!   thread, plus one padded plane per image. A plane that fits one block but is split by
//!   output channels (7×7 layers) is gathered once and shared by its row blocks: that only
//!   happens with fewer than `BLOCKS_PER_THREAD × threads` groups, so it holds fewer than
//!   that many blocks.
//!
//! The GEMM writes its block of `Y` straight into the output tensor (row stride `P`); the
//! bias is added to the block while it is still in cache (after the sum, as the reference
//! does).
//!
//! **Tasks.** An image's output is partitioned into blocks of output-channel rows ×
//! columns, and the blocks of every image of the batch (pointwise) or of one image at a
//! time (im2col, after its padded plane is built in parallel) go to the rayon pool. Blocks
//! are made small enough that there are at least `4 ×` as many as threads: a batch-1 layer
//! uses every core, by columns when `P` is large and by output channels when it is not
//! (7×7 planes).
//!
//! The GEMM is the `gemm` crate with its `x86-v4` feature (AVX-512, AVX2+FMA or scalar
//! kernels picked at run time), single-threaded inside each task; it reaches 87–114
//! GFLOP/s per core on these shapes (of ~154 peak). It replaced ndarray's
//! `general_mat_mul` (matrixmultiply, which stops at AVX2). Its API takes raw pointers,
//! so the one call, and the writes of blocks into the uninitialised output, sit in one
//! small checked module (`out`).

use std::cell::RefCell;

use ndarray::{Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

use super::params::Conv2dGeometry;
use super::phase::PhaseLayout;
use super::{CancelToken, Cancelled};

/// How the GEMM's right-hand matrix is obtained from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowering {
    /// 1×1 kernel without padding: the input planes are the matrix.
    Pointwise,
    /// Column blocks gathered from padded, phase-split planes.
    Im2col,
}

/// Whether `g` can use [`Lowering::Pointwise`]: a 1×1 kernel with no padding (dilation
/// is then irrelevant).
pub fn pointwise_ok(g: &Conv2dGeometry) -> bool {
    g.k_h == 1 && g.k_w == 1 && g.padding == [0; 4]
}

/// Bytes of one gathered column block (`K × nb` floats): a core's L2 (2 MiB here). Larger
/// blocks mean fewer GEMM calls, each repacking the weights: 512 KiB blocks were 10–30 %
/// slower on deep layers (K = 2304) and stems.
const COLS_BYTES: usize = 2 << 20;

/// Blocks per thread to aim for, so that uneven blocks still balance.
const BLOCKS_PER_THREAD: usize = 4;

/// Smallest column block worth a GEMM call.
const MIN_COLS: usize = 48;

/// Smallest row block (output channels) when rows are split.
const MIN_ROWS: usize = 16;

thread_local! {
    /// Per-thread column block of `B`, reused across tasks and calls.
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Cross-correlates `input [n, c_in, h, w]` with `weight [c_out, c_in/groups, k_h, k_w]`
/// plus `bias [c_out]` into `[n, c_out, out_h, out_w]`, on the current rayon pool.
///
/// # Errors
/// [`Cancelled`] if `cancel` fires; it is checked before every block.
///
/// # Panics
/// If `lowering` is [`Lowering::Pointwise`] and `!pointwise_ok(geom)`.
pub fn conv2d_gemm(
    input: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geom: &Conv2dGeometry,
    lowering: Lowering,
    cancel: &CancelToken,
) -> Result<Array4<f32>, Cancelled> {
    assert_eq!(input.shape(), geom.input_shape().as_slice());
    assert_eq!(weight.shape(), geom.weight_shape().as_slice());
    assert!(lowering == Lowering::Im2col || pointwise_ok(geom));
    let g = *geom;
    let x = input.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let wt = weight.as_standard_layout();
    let wt = wt.as_slice().expect("standard layout");
    let bias = bias.map(|b| b.to_vec());
    let (cpg, opg) = (g.c_in / g.groups, g.c_out / g.groups);
    let k = cpg * g.k_h * g.k_w;
    let p_len = g.out_h * g.out_w;
    let images_at_once = if lowering == Lowering::Pointwise {
        g.n
    } else {
        1
    };
    let split = Split::new(&g, k, images_at_once, lowering);
    let mut out = out::Output::new(g.n, g.c_out, p_len);
    let bias_of = |o0: usize, rows: usize| bias.as_ref().map(|b| &b[o0..o0 + rows]);

    match lowering {
        Lowering::Pointwise => {
            let blocks = out.blocks(0..g.n, &split.rows, &split.cols);
            blocks.into_par_iter().try_for_each(|mut blk| {
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                let (img, o0, rows, p0, cols) = blk.position();
                let grp = o0 / opg;
                let a = &wt[o0 * k..(o0 + rows) * k];
                let xg = &x[(img * g.c_in + grp * cpg) * g.h * g.w..][..cpg * g.h * g.w];
                if g.stride == [1, 1] {
                    blk.gemm(a, k, &xg[p0..], g.h * g.w, k);
                } else {
                    gemm_gathered(&mut blk, a, k, cols, |buf| {
                        gather_pointwise(&g, xg, p0, cols, buf)
                    });
                }
                blk.add_bias(bias_of(o0, rows));
                Ok(())
            })?;
        }
        Lowering::Im2col => {
            let layout = PhaseLayout::new(&g, 0);
            let hp = g.h + g.padding[0] + g.padding[1];
            let chan_len = hp * layout.row_len();
            let mut plane = super::buffers::take(g.c_in * chan_len);
            plane.resize(g.c_in * chan_len, 0.0);
            // A plane small enough for one column block but split by output channels
            // (7×7 layers) is gathered once, in parallel by channel, and shared by the row
            // blocks, rather than once per row block.
            let shared = split.cols.len() == 1 && split.rows.len() > g.groups;
            let taps = g.k_h * g.k_w;
            let mut b_all = Vec::new();
            if shared {
                b_all.resize(g.c_in * taps * p_len, 0.0);
            }
            for img in 0..g.n {
                if cancel.is_cancelled() {
                    return Err(Cancelled);
                }
                let xi = &x[img * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
                plane
                    .par_chunks_mut(chan_len)
                    .zip(xi.par_chunks(g.h * g.w))
                    .for_each(|(dst, src)| {
                        for (r, row) in dst.chunks_exact_mut(layout.row_len()).enumerate() {
                            layout.fill_row(src, r, row);
                        }
                    });
                if shared {
                    b_all
                        .par_chunks_mut(taps * p_len)
                        .zip(plane.par_chunks(chan_len))
                        .for_each(|(dst, pc)| {
                            gather_im2col(&g, &layout, pc, chan_len, 0, p_len, dst);
                        });
                }
                let blocks = out.blocks(img..img + 1, &split.rows, &split.cols);
                blocks.into_par_iter().try_for_each(|mut blk| {
                    if cancel.is_cancelled() {
                        return Err(Cancelled);
                    }
                    let (_, o0, rows, p0, cols) = blk.position();
                    let grp = o0 / opg;
                    let a = &wt[o0 * k..(o0 + rows) * k];
                    if shared {
                        blk.gemm(a, k, &b_all[grp * k * p_len..][..k * p_len], p_len, k);
                        blk.add_bias(bias_of(o0, rows));
                        return Ok(());
                    }
                    let pg = &plane[grp * cpg * chan_len..][..cpg * chan_len];
                    gemm_gathered(&mut blk, a, k, cols, |buf| {
                        gather_im2col(&g, &layout, pg, chan_len, p0, cols, buf)
                    });
                    blk.add_bias(bias_of(o0, rows));
                    Ok(())
                })?;
            }
            super::buffers::give(plane);
        }
    }
    Ok(out.finish(g.output_shape()))
}

/// `blk := A[m × k] · B[k × cols]` where `gather` writes `B` (row-major) into this thread's
/// column-block buffer.
fn gemm_gathered(
    blk: &mut out::Block<'_>,
    a: &[f32],
    k: usize,
    cols: usize,
    gather: impl FnOnce(&mut [f32]),
) {
    COLS.with_borrow_mut(|buf| {
        buf.resize(k * cols, 0.0);
        gather(buf);
        blk.gemm(a, k, buf, cols, k);
    });
}

/// The partition of one image's output `[c_out, P]` into row and column blocks.
struct Split {
    /// `(first output channel, count)`, never crossing a group.
    rows: Vec<(usize, usize)>,
    /// `(first column, count)`.
    cols: Vec<(usize, usize)>,
}

impl Split {
    /// Column blocks of at most `COLS_BYTES` of gathered input, then smaller columns and
    /// split rows until `images × groups × rows × cols` blocks give every thread
    /// `BLOCKS_PER_THREAD` of them (or the blocks reach their minimum size).
    fn new(g: &Conv2dGeometry, k: usize, images: usize, lowering: Lowering) -> Self {
        let p_len = g.out_h * g.out_w;
        let opg = g.c_out / g.groups;
        let want = BLOCKS_PER_THREAD * rayon::current_num_threads();
        let copies = !(lowering == Lowering::Pointwise && g.stride == [1, 1]);
        let mut nb = if copies {
            (COLS_BYTES / (4 * k)).max(MIN_COLS).min(p_len)
        } else {
            p_len
        };
        let have = |nb: usize, mb: usize| images * g.groups * p_len.div_ceil(nb) * opg.div_ceil(mb);
        if have(nb, opg) < want {
            let per = want.div_ceil(images * g.groups);
            nb = p_len.div_ceil(per).max(MIN_COLS).min(nb);
        }
        let mut mb = opg;
        if have(nb, mb) < want {
            let per = want.div_ceil(images * g.groups * p_len.div_ceil(nb));
            mb = opg.div_ceil(per).next_multiple_of(MIN_ROWS).min(opg);
        }
        // Even blocks: the same count of columns (rows) in each, ± 1 vector.
        let even = |len: usize, block: usize, unit: usize| -> Vec<(usize, usize)> {
            let parts = len.div_ceil(block);
            let size = len.div_ceil(parts).next_multiple_of(unit).min(len);
            (0..len)
                .step_by(size)
                .map(|s| (s, size.min(len - s)))
                .collect()
        };
        let cols = even(p_len, nb, 16);
        let rows = (0..g.groups)
            .flat_map(|grp| {
                even(opg, mb, 1)
                    .into_iter()
                    .map(move |(o, m)| (grp * opg + o, m))
            })
            .collect();
        Self { rows, cols }
    }
}

/// Gathers columns `p0 .. p0 + cols` of a strided pointwise layer's `B` from the group's
/// input `[c_in/groups, h, w]` into `dst [c_in/groups, cols]`.
fn gather_pointwise(g: &Conv2dGeometry, x: &[f32], p0: usize, cols: usize, dst: &mut [f32]) {
    let (sh, sw) = (g.stride[0], g.stride[1]);
    for (c, row) in dst.chunks_exact_mut(cols).enumerate() {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        let mut d = 0;
        let (mut i, mut j) = (p0 / g.out_w, p0 % g.out_w);
        while d < cols {
            let len = (g.out_w - j).min(cols - d);
            let src = &plane[i * sh * g.w + j * sw..];
            for (o, &v) in row[d..d + len].iter_mut().zip(src.iter().step_by(sw)) {
                *o = v;
            }
            d += len;
            (i, j) = (i + 1, 0);
        }
    }
}

/// Gathers columns `p0 .. p0 + cols` of `B` from padded, phase-split planes (`chan_len`
/// floats per channel) into `dst [channels·k_h·k_w, cols]`, row `(c, u, v)` by row, for
/// as many channels as `dst` holds rows for.
fn gather_im2col(
    g: &Conv2dGeometry,
    layout: &PhaseLayout,
    planes: &[f32],
    chan_len: usize,
    p0: usize,
    cols: usize,
    dst: &mut [f32],
) {
    let (sh, sw) = (g.stride[0], g.stride[1]);
    let (dh, dw) = (g.dilation[0], g.dilation[1]);
    let (row_len, wq) = (layout.row_len(), layout.wq);
    let channels = dst.len() / (cols * g.k_h * g.k_w);
    let mut rows = dst.chunks_exact_mut(cols);
    for c in 0..channels {
        let plane = &planes[c * chan_len..][..chan_len];
        for u in 0..g.k_h {
            for v in 0..g.k_w {
                let row = rows.next().expect("K rows");
                let (phase, shift) = ((v * dw) % sw, (v * dw) / sw);
                let mut d = 0;
                let (mut i, mut j) = (p0 / g.out_w, p0 % g.out_w);
                while d < cols {
                    let len = (g.out_w - j).min(cols - d);
                    let r = i * sh + u * dh;
                    let src = &plane[r * row_len + phase * wq + j + shift..][..len];
                    row[d..d + len].copy_from_slice(src);
                    d += len;
                    (i, j) = (i + 1, 0);
                }
            }
        }
    }
}

/// The output tensor filled block by block, and the one call into the `gemm` crate.
#[allow(unsafe_code)]
mod out {
    use std::marker::PhantomData;
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ndarray::Array4;

    /// An uninitialised `[n, rows, cols]` output, handed out as disjoint [`Block`]s.
    pub(super) struct Output {
        buf: Vec<f32>,
        len: usize,
        rows: usize,
        cols: usize,
        /// Images whose blocks were handed out (each once).
        handed: Vec<bool>,
        /// Elements written so far.
        written: AtomicUsize,
    }

    impl Output {
        pub(super) fn new(n: usize, rows: usize, cols: usize) -> Self {
            let len = n * rows * cols;
            Self {
                buf: crate::conv::buffers::take(len),
                len,
                rows,
                cols,
                handed: vec![false; n],
                written: AtomicUsize::new(0),
            }
        }

        /// The blocks of `images`, partitioned by `row_blocks` × `col_blocks` (each a
        /// list of `(start, count)` that must tile `0 .. rows` / `0 .. cols` in order).
        ///
        /// # Panics
        /// If the lists do not tile their axis or an image was handed out before: then
        /// blocks could overlap.
        pub(super) fn blocks(
            &mut self,
            images: Range<usize>,
            row_blocks: &[(usize, usize)],
            col_blocks: &[(usize, usize)],
        ) -> Vec<Block<'_>> {
            let tiles = |blocks: &[(usize, usize)], len: usize| {
                let mut next = 0;
                for &(s, c) in blocks {
                    assert!(s == next && c > 0, "blocks must tile the axis");
                    next += c;
                }
                assert_eq!(next, len, "blocks must tile the axis");
            };
            tiles(row_blocks, self.rows);
            tiles(col_blocks, self.cols);
            for img in images.clone() {
                assert!(!self.handed[img], "image handed out twice");
                self.handed[img] = true;
            }
            let base = self.buf.as_mut_ptr();
            let (rows, cols, written) = (self.rows, self.cols, &self.written);
            let mut v = Vec::with_capacity(images.len() * row_blocks.len() * col_blocks.len());
            for img in images {
                for &(r0, m) in row_blocks {
                    for &(c0, nb) in col_blocks {
                        // SAFETY: in bounds: img < n, r0 + m ≤ rows, c0 + nb ≤ cols, and
                        // the buffer has capacity n·rows·cols.
                        let ptr = unsafe { base.add((img * rows + r0) * cols + c0) };
                        v.push(Block {
                            ptr,
                            pos: (img, r0, m, c0, nb),
                            ld: cols,
                            written,
                            done: false,
                            _out: PhantomData,
                        });
                    }
                }
            }
            v
        }

        /// The tensor, once every element has been written.
        ///
        /// # Panics
        /// If some block was not computed.
        pub(super) fn finish(mut self, shape: [usize; 4]) -> Array4<f32> {
            assert_eq!(
                self.written.load(Ordering::Acquire),
                self.len,
                "every block written"
            );
            // SAFETY: blocks are disjoint (checked tilings, each image once) and each
            // counts its elements once when its GEMM has written all of them; the count
            // equals `len`, so all `len` elements are initialised.
            unsafe { self.buf.set_len(self.len) };
            Array4::from_shape_vec(shape, std::mem::take(&mut self.buf)).expect("shape")
        }
    }

    /// One block `[m, nb]` of one image's output, with row stride `ld`.
    pub(super) struct Block<'a> {
        ptr: *mut f32,
        /// `(image, first row, rows, first column, columns)`.
        pos: (usize, usize, usize, usize, usize),
        ld: usize,
        written: &'a AtomicUsize,
        done: bool,
        _out: PhantomData<&'a mut [f32]>,
    }

    // SAFETY: a block is the only handle to its elements (blocks are disjoint), so moving
    // it to another thread is like moving a `&mut [f32]`.
    unsafe impl Send for Block<'_> {}

    impl Block<'_> {
        /// `(image, first row, rows, first column, columns)`.
        pub(super) fn position(&self) -> (usize, usize, usize, usize, usize) {
            self.pos
        }

        /// `block := A[m × k] · B[k × nb]`, `A` and `B` row-major with row strides `lda`
        /// and `ldb`. Single-threaded; `gemm` picks AVX-512, AVX2+FMA or scalar kernels.
        ///
        /// # Panics
        /// If called twice, or a slice is shorter than its matrix.
        pub(super) fn gemm(&mut self, a: &[f32], lda: usize, b: &[f32], ldb: usize, k: usize) {
            let (_, _, m, _, n) = self.pos;
            assert!(!self.done, "block computed twice");
            assert!(m > 0 && n > 0 && k > 0);
            assert!(lda >= k && ldb >= n);
            assert!(a.len() >= (m - 1) * lda + k, "A out of bounds");
            assert!(b.len() >= (k - 1) * ldb + n, "B out of bounds");
            let s = |x: usize| isize::try_from(x).expect("stride fits isize");
            // SAFETY: the asserts keep every element A and B's strides address inside the
            // slices; the block's `m × n` elements at stride `ld` lie inside the output
            // (see `Output::blocks`) and belong to this block alone; read_dst = false
            // means they are only written (dst := 0·dst + 1·A·B).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    self.ptr,
                    1,
                    s(self.ld),
                    false,
                    a.as_ptr(),
                    1,
                    s(lda),
                    b.as_ptr(),
                    1,
                    s(ldb),
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            self.done = true;
            self.written.fetch_add(m * n, Ordering::Release);
        }

        /// Adds `bias[r]` to row `r` of the computed block (nothing for `None`).
        ///
        /// # Panics
        /// Before [`gemm`](Self::gemm), or if `bias` is shorter than the block's rows.
        pub(super) fn add_bias(&mut self, bias: Option<&[f32]>) {
            let Some(bias) = bias else { return };
            assert!(self.done, "bias before the block is computed");
            let (_, _, m, _, n) = self.pos;
            for (r, &b) in bias[..m].iter().enumerate() {
                // SAFETY: row r of the block: n initialised elements (the GEMM wrote them)
                // inside the output, owned by this block, borrowed through `&mut self`.
                let row = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.ld), n) };
                for v in row {
                    *v += b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
