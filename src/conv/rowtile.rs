//! The AVX-512 register tile of the in-place direct kernel at stride 1 down the rows:
//! 4 output rows (6 for 5×5 kernels) × 4 vectors of 16 outputs that share every loaded
//! input vector.
//!
//! [`super::direct`]'s portable tile keeps one output row of 128 outputs in registers
//! and loads, for every tap, the 8 vectors it multiplies: one load per FMA, most of them
//! split across two cache lines (a tap's run starts at any column). On W6 (depthwise 5×5
//! on RGB 1080p) that ran at about a third of the FMA rate. At stride 1 and dilation 1
//! down the rows, kernel row `u` of output row `r` reads input row `r + u`, so 4 output
//! rows read `4 + k_h − 1` input rows between them: this tile loads each input vector
//! once and feeds it to every output row it belongs to (5×5: 8 rows loaded instead of 20),
//! the same idea as [`super::dwtile`] without the padded copy: rows are read where they
//! are, as the direct kernel reads them (a row in the zero padding is skipped, any other
//! padded row is the input row the padding mode maps it to).
//!
//! Every output sums the same products in the same order as the portable tile (channel,
//! kernel row, kernel column; bias last), so the two give identical results.
//!
//! Only for CPUs with AVX-512F, which [`super::isa`] has detected when it runs the AVX-512
//! build of the direct kernel (the only caller).
#![allow(unsafe_code)]

use super::isa::Out;

/// Output rows per shared tile.
pub(crate) const ROWS: usize = 4;
/// Output rows per shared tile of a 5×5 kernel: 6 × 4 accumulators still fit, and each
/// output row loads 10·5·4/6 ≈ 33 input vectors instead of 40 (criterion W6, 5 alternating
/// rounds: 2.29–2.56 → 2.14–2.16 ms).
const ROWS_5X5: usize = 6;

/// Output rows per shared tile for a `k_h × k_w` kernel: bands of a multiple of this
/// leave single rows only at a plane's end.
pub(crate) const fn rows_for(k_h: usize, k_w: usize) -> usize {
    if k_h == 5 && k_w == 5 {
        ROWS_5X5
    } else {
        ROWS
    }
}
/// Vectors of 16 outputs per tile row: 4 × 4 accumulators, 4 loaded vectors and the
/// broadcast weights fit the 32 zmm registers.
pub(crate) const VECS: usize = 4;
/// Outputs per tile row; the interior must be at least this wide.
pub(crate) const WIDTH: usize = 16 * VECS;

/// The interior columns of a band of output rows of one plane.
pub(crate) struct RowBand<'a> {
    /// For each input channel `c` of the group and band row `t` (`0 .. rows + k_h − 1`),
    /// at `c · (rows + k_h − 1) + t`, the input row that padded row `i0 + t` reads (None: a
    /// row of zeros). Every row holds `w` floats.
    pub rows: &'a [Option<&'a [f32]>],
    /// Input row width.
    pub w: usize,
    /// Weights `[c][u][v]`.
    pub taps: &'a [f32],
    pub k_h: usize,
    pub k_w: usize,
    /// Column dilation.
    pub d_w: usize,
    /// Left padding: output column `j`, kernel column `v` reads input column
    /// `j − pad_left + v·d_w`.
    pub pad_left: usize,
    /// Output columns `lo .. hi` read only real input columns; `hi − lo ≥ WIDTH`.
    pub lo: usize,
    pub hi: usize,
    pub out_w: usize,
    pub bias: f32,
    /// Store with non-temporal (streaming) stores where a vector's address is 64-byte
    /// aligned: for outputs far larger than the caches, which ordinary stores would first
    /// read from memory ([`STREAM_BYTES`]).
    pub stream: bool,
}

/// Smallest output, in bytes, that the direct kernel writes with streaming stores: half
/// the reference machine's 32 MiB L3. On that VM two threads copying 25 MB (W6's output)
/// took 2.1–2.2 ms with ordinary stores and 1.3–1.5 ms with streaming ones; below this
/// size the output can still be in the cache when the next stage reads it.
pub(crate) const STREAM_BYTES: usize = 16 << 20;

/// Writes columns `lo .. hi` of the band's `out.len() / out_w` output rows (the caller
/// writes the border columns).
///
/// # Panics
/// If a tap of an interior column could fall outside its row (a caller bug), or the CPU
/// lacks AVX-512F.
pub(crate) fn run(b: &RowBand<'_>, out: &mut [Out]) {
    assert!(std::arch::is_x86_feature_detected!("avx512f"));
    assert!(b.out_w > 0 && out.len().is_multiple_of(b.out_w));
    let rows = out.len() / b.out_w;
    assert!(b.k_h > 0 && b.k_w > 0 && b.taps.len().is_multiple_of(b.k_h * b.k_w));
    let channels = b.taps.len() / (b.k_h * b.k_w);
    assert_eq!(b.rows.len(), channels * (rows + b.k_h - 1));
    assert!(b.rows.iter().flatten().all(|r| r.len() == b.w));
    // Interior columns: the first tap of column `lo` and the last of column `hi − 1`
    // are inside the row.
    assert!(b.hi <= b.out_w && b.hi >= b.lo + WIDTH && b.lo >= b.pad_left);
    assert!(b.hi - 1 - b.pad_left + (b.k_w - 1) * b.d_w < b.w);
    if rows == 0 {
        return;
    }
    // SAFETY: AVX-512F is present (asserted). Every load reads 16 floats of a row at
    // column `j0 + 16·q − pad_left + v·d_w` with `lo ≤ j0`, `j0 + 16·q + 16 ≤ hi`, all
    // inside the row (asserted above); every row index is `c·(rows + k_h − 1) + r0 + t`
    // with `r0 + R ≤ rows` and `t < R + k_h − 1`; every store is columns `j0 .. j0 + WIDTH
    // ≤ hi ≤ out_w` of a row `< rows`, streaming ones only at 64-byte aligned addresses
    // (checked before each).
    unsafe { run_avx512(b, rows, channels, out.as_mut_ptr().cast::<f32>()) }
}

#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(b: &RowBand<'_>, rows: usize, channels: usize, out: *mut f32) {
    // SAFETY (all calls): the caller's bounds hold, and `KH`, `KW` are `b`'s kernel size.
    unsafe {
        match (b.k_h, b.k_w) {
            (3, 3) => rows_of::<ROWS, 3, 3>(b, rows, channels, out),
            (5, 5) => rows_of::<ROWS_5X5, 5, 5>(b, rows, channels, out),
            _ => rows_of::<ROWS, 0, 0>(b, rows, channels, out),
        }
    }
    if b.stream {
        // Streaming stores are weakly ordered: make them visible before the task ends
        // (another thread may read the output next).
        std::arch::x86_64::_mm_sfence();
    }
}

/// Every row of the band in tiles of `R` rows, then single rows, with the kernel size
/// known at compile time (`KH`, `KW` > 0, for 3×3 and 5×5: the tap loops unroll and the
/// weights' offsets are constants) or read from `b` (`KH = KW = 0`).
#[target_feature(enable = "avx512f")]
unsafe fn rows_of<const R: usize, const KH: usize, const KW: usize>(
    b: &RowBand<'_>,
    rows: usize,
    channels: usize,
    out: *mut f32,
) {
    let mut r0 = 0;
    // SAFETY (all calls): the caller's bounds hold for rows r0 .. r0 + R ≤ rows.
    unsafe {
        while r0 + R <= rows {
            tile_rows::<R, KH, KW>(b, rows, channels, r0, out);
            r0 += R;
        }
        while r0 < rows {
            tile_rows::<1, KH, KW>(b, rows, channels, r0, out);
            r0 += 1;
        }
    }
}

/// Output rows `r0 .. r0 + R`, every interior column in tiles of [`WIDTH`] (the last
/// one shifted left to end at `hi`, recomputing a few outputs identically). When
/// streaming, the tiles after the first start where row `r0`'s outputs are 64-byte
/// aligned (the first covers the columns before), so that their stores can stream.
#[target_feature(enable = "avx512f")]
unsafe fn tile_rows<const R: usize, const KH: usize, const KW: usize>(
    b: &RowBand<'_>,
    rows: usize,
    channels: usize,
    r0: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let k_h = if KH > 0 { KH } else { b.k_h };
    let k_w = if KW > 0 { KW } else { b.k_w };
    let n_t = rows + k_h - 1;
    let last = b.hi - WIDTH;
    // The first column after `lo` whose output in row r0 is 64-byte aligned.
    let aligned = if b.stream {
        let addr = out.wrapping_add(r0 * b.out_w + b.lo) as usize;
        b.lo + ((64 - addr % 64) % 64) / 4
    } else {
        b.lo
    };
    let mut j0 = b.lo;
    loop {
        let mut acc = [[_mm512_setzero_ps(); VECS]; R];
        // SAFETY: see `run`.
        unsafe {
            for c in 0..channels {
                let taps = b.taps.as_ptr().add(c * k_h * k_w);
                for t in 0..R + k_h - 1 {
                    let Some(row) = *b.rows.get_unchecked(c * n_t + r0 + t) else {
                        continue;
                    };
                    let p = row.as_ptr().add(j0 - b.pad_left);
                    for v in 0..k_w {
                        let p = p.add(v * b.d_w);
                        let mut x = [_mm512_setzero_ps(); VECS];
                        for (q, x) in x.iter_mut().enumerate() {
                            *x = _mm512_loadu_ps(p.add(16 * q));
                        }
                        // Output row r uses this input row as its kernel row t − r.
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let u = t.wrapping_sub(r);
                            if u < k_h {
                                let w = _mm512_set1_ps(*taps.add(u * k_w + v));
                                for (a, &x) in acc.iter_mut().zip(&x) {
                                    *a = _mm512_fmadd_ps(w, x, *a);
                                }
                            }
                        }
                    }
                }
            }
            let bias = _mm512_set1_ps(b.bias);
            for (r, acc) in acc.iter().enumerate() {
                let dst = out.add((r0 + r) * b.out_w + j0);
                for (q, &a) in acc.iter().enumerate() {
                    let (p, y) = (dst.add(16 * q), _mm512_add_ps(a, bias));
                    if b.stream && (p as usize).is_multiple_of(64) {
                        _mm512_stream_ps(p, y);
                    } else {
                        _mm512_storeu_ps(p, y);
                    }
                }
            }
        }
        if j0 == last {
            break;
        }
        j0 = if j0 < aligned && aligned < last {
            aligned
        } else {
            (j0 + WIDTH).min(last)
        };
    }
}
