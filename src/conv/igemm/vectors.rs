//! The vectors of 16 outputs that cover one output plane of the implicit GEMM, and the
//! tap offsets into its phase planes (see [`super`]).

use crate::conv::params::Conv2dGeometry;

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
pub(super) fn flat_vectors(g: &Conv2dGeometry) -> usize {
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
pub(super) struct Vector {
    /// Position `q = i·wq + j` of lane 0: tap `(0, 0, 0)` reads phase plane (0, 0) there.
    pub(super) src: u32,
    /// Output index `i·out_w + j` of the first kept lane.
    pub(super) dst: u32,
    /// Lanes kept; a mask that is not a prefix is compressed into consecutive outputs.
    pub(super) mask: u16,
}

/// The vectors that cover one output plane, in order, and the tap offsets.
pub(super) struct Vectors {
    pub(super) list: Vec<Vector>,
    /// Width of the phase planes.
    pub(super) wq: usize,
    /// Phase-plane rows below output row `i` that tap row `u` reads: max `⌊u·d_h/s_h⌋`.
    pub(super) reach: usize,
    /// `koff[k]` for `k = (c, u, v)` in the weight's order.
    pub(super) koff: Vec<u32>,
}

impl Vectors {
    /// The cut of `g`'s output plane that wastes fewer lanes; the tap offsets follow once
    /// the planes' sizes are known ([`set_plane_rows`](Self::set_plane_rows)).
    ///
    /// # Panics
    /// If the offsets do not fit `u32`, or (a bug) the vectors do not tile the plane.
    pub(super) fn new(g: &Conv2dGeometry) -> Self {
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
    pub(super) fn set_plane_rows(&mut self, g: &Conv2dGeometry, rows: usize) {
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
    pub(super) fn input_rows(&self, vs: &[Vector]) -> (usize, usize) {
        let first = vs.first().map_or(0, |v| v.src as usize / self.wq);
        let last = vs.last().map_or(0, |v| (v.src as usize + 15) / self.wq);
        (first, last - first + 1 + self.reach)
    }
}
