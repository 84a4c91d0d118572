//! NumPy `.npy` reading (many dtypes → `f32`) and writing (`f32` only).
//!
//! A `.npy` file is the magic `\x93NUMPY`, a version `major.minor`, a header
//! length (`u16` LE for v1, `u32` LE for v2/v3), an ASCII (v3: UTF-8) Python
//! dict literal such as `{'descr': '<f4', 'fortran_order': False, 'shape':
//! (2, 3), }` padded with spaces and a final `\n`, and then the raw element
//! bytes.
//!
//! Why a hand parser instead of `ndarray-npy`: the service reads untrusted
//! uploads, so it must (a) reject an oversized claimed shape *before*
//! allocating anything, with an element limit chosen per request, (b) convert
//! every integer, bool and float dtype of either byte order to `f32` (ndarray-
//! npy only reads the exact element type requested), (c) report the position
//! of NaN/∞/out-of-range values, and (d) return precise, user-facing errors.
//! The header grammar is tiny, so a bounds-checked byte cursor with checked
//! arithmetic does all of that without ever indexing out of range or
//! overflowing on hostile input.

/// Why a `.npy` payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// Not a well-formed `.npy` file (bad magic, header, or data length).
    #[error("malformed .npy data: {0}")]
    Malformed(String),
    /// The dtype is valid NumPy but not convertible here.
    #[error(
        "unsupported .npy dtype {0}; supported: f2, f4, f8, i1, i2, i4, i8, u1, u2, u4, u8, b1 \
         (little- or big-endian)"
    )]
    UnsupportedDtype(String),
    /// The claimed shape has more elements than allowed. `actual` is the
    /// claimed element count (saturated at `u64::MAX` on overflow); for an
    /// empty array whose largest dimension exceeds the limit, that dimension.
    #[error("array has {actual} elements, more than the limit of {limit}")]
    TooLarge { limit: u64, actual: u64 },
    /// Element at flat row-major (C-order) position `index` is NaN, infinite,
    /// or a float64 outside the float32 range.
    #[error(
        "element {index} (flat row-major index) is NaN, infinite or outside the float32 range"
    )]
    NonFinite { index: usize },
}

mod header;

use header::{parse_header, split_header, Dtype, Header, Scalar};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Alignment of the data section in files we write (as NumPy does).
const ALIGN: usize = 64;
/// NumPy's own limit on the number of dimensions.
const MAX_NDIM: usize = 64;

/// Parse a `.npy` file (v1/v2/v3 headers) into `(shape, data)`, where `data`
/// is the flat row-major (C-order) `f32` data, `data.len()` = product of
/// `shape` (1 for the scalar shape `()`).
///
/// Accepted dtypes: `f2`, `f4`, `f8`, `i1`–`i8`, `u1`–`u8` and `b1`, little-
/// (`<`, `=`, `|`) or big-endian (`>`). Integers are converted with `as f32`
/// (values beyond 2²⁴ round to the nearest `f32`); bools become 0.0 / 1.0.
/// Fortran-order arrays are transposed into C order.
///
/// # Errors
///
/// * [`NpyError::Malformed`] for a bad magic, version, header dict or a data
///   section whose length is not exactly `elements × itemsize`;
/// * [`NpyError::UnsupportedDtype`] for other dtypes (complex, strings,
///   objects, structured);
/// * [`NpyError::TooLarge`] when the claimed element count (or any dimension)
///   exceeds `max_elements`, checked before any allocation;
/// * [`NpyError::NonFinite`] for NaN, ±∞ or float64 values outside the
///   `f32` range.
pub fn read_npy(bytes: &[u8], max_elements: u64) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let (header, data) = split_header(bytes)?;
    let Header {
        dtype,
        fortran,
        shape,
    } = parse_header(header)?;

    let count = shape.iter().try_fold(1_u64, |acc, &d| acc.checked_mul(d));
    let largest = shape.iter().copied().max().unwrap_or(0);
    match count {
        None => {
            return Err(NpyError::TooLarge {
                limit: max_elements,
                actual: u64::MAX,
            })
        }
        Some(c) if c > max_elements => {
            return Err(NpyError::TooLarge {
                limit: max_elements,
                actual: c,
            })
        }
        Some(_) if largest > max_elements => {
            return Err(NpyError::TooLarge {
                limit: max_elements,
                actual: largest,
            })
        }
        Some(_) => {}
    }
    let too_big = || NpyError::Malformed("array too large for this platform".to_owned());
    let count = count
        .and_then(|c| usize::try_from(c).ok())
        .ok_or_else(too_big)?;
    let shape = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_big()))
        .collect::<Result<Vec<usize>, _>>()?;

    let expected = count.checked_mul(dtype.size()).ok_or_else(too_big)?;
    if data.len() != expected {
        return Err(NpyError::Malformed(format!(
            "data section has {} bytes, expected {expected} ({count} elements of {} bytes)",
            data.len(),
            dtype.size()
        )));
    }

    let values = decode(dtype, data).map_err(|storage_index| NpyError::NonFinite {
        index: if fortran {
            fortran_to_c_index(&shape, storage_index)
        } else {
            storage_index
        },
    })?;
    let values = if fortran && shape.len() > 1 {
        fortran_to_c(&shape, &values)
    } else {
        values
    };
    Ok((shape, values))
}

/// Write a float32 little-endian C-order `.npy` v1 file (v2 if the header
/// needs more than 65535 bytes). The data section starts at a multiple of 64
/// bytes, like files written by NumPy.
///
/// # Panics
///
/// If `data.len()` differs from the product of `shape` (1 for `()`), which is
/// a caller bug.
pub fn write_npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let count = shape.iter().try_fold(1_usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(
        count,
        Some(data.len()),
        "write_npy_f32: shape {shape:?} does not match data length"
    );

    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_repr = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    // magic + version + length field, then dict, padding spaces and '\n'.
    let padded_len = |prefix: usize| {
        let unpadded = prefix + dict.len() + 1;
        dict.len() + 1 + (ALIGN - unpadded % ALIGN) % ALIGN
    };
    let mut out = Vec::with_capacity(128 + dict.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    let v1_len = padded_len(MAGIC.len() + 4);
    let header_len = if let Ok(len) = u16::try_from(v1_len) {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&len.to_le_bytes());
        v1_len
    } else {
        let len = padded_len(MAGIC.len() + 6);
        out.extend_from_slice(&[2, 0]);
        let len32 = u32::try_from(len).expect("header of a real shape fits in u32");
        out.extend_from_slice(&len32.to_le_bytes());
        len
    };
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + header_len - dict.len() - 1, b' ');
    out.push(b'\n');
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------------------
// Data

/// Decode storage-order elements; `Err(i)` names the first non-finite one.
/// `data.len()` must be a multiple of the item size (checked by the caller).
fn decode(dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, usize> {
    macro_rules! convert {
        ($n:literal, |$a:ident| $to_f32:expr) => {
            data.chunks_exact($n)
                .map(|c| {
                    let mut $a = [0_u8; $n];
                    $a.copy_from_slice(c);
                    if dtype.big_endian {
                        $a.reverse();
                    }
                    $to_f32
                })
                .collect_taken()
        };
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let values = match dtype.scalar {
        Scalar::Bool => data
            .iter()
            .map(|&b| if b == 0 { 0.0 } else { 1.0 })
            .collect_taken(),
        Scalar::I1 => convert!(1, |a| f32::from(i8::from_le_bytes(a))),
        Scalar::U1 => convert!(1, |a| f32::from(a[0])),
        Scalar::I2 => convert!(2, |a| f32::from(i16::from_le_bytes(a))),
        Scalar::U2 => convert!(2, |a| f32::from(u16::from_le_bytes(a))),
        Scalar::I4 => convert!(4, |a| i32::from_le_bytes(a) as f32),
        Scalar::U4 => convert!(4, |a| u32::from_le_bytes(a) as f32),
        Scalar::I8 => convert!(8, |a| i64::from_le_bytes(a) as f32),
        Scalar::U8 => convert!(8, |a| u64::from_le_bytes(a) as f32),
        Scalar::F2 => convert!(2, |a| f16_to_f32(u16::from_le_bytes(a))),
        Scalar::F4 => convert!(4, |a| f32::from_le_bytes(a)),
        // Out-of-range doubles become ±∞ and are rejected below.
        Scalar::F8 => convert!(8, |a| f64::from_le_bytes(a) as f32),
    };
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(i),
        None => Ok(values),
    }
}

/// Collecting decoded values into a reused buffer ([`crate::conv::buffers`]): a large
/// fresh allocation faults in every page.
trait CollectTaken: ExactSizeIterator<Item = f32> + Sized {
    fn collect_taken(self) -> Vec<f32> {
        let mut v = crate::conv::buffers::take(self.len());
        v.extend(self);
        v
    }
}

impl<I: ExactSizeIterator<Item = f32>> CollectTaken for I {}

/// IEEE binary16 → binary32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 == 0 { 1.0 } else { -1.0 };
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    match exp {
        // Subnormal: mant · 2⁻²⁴ (exact in f32).
        0 => sign * f32::from(h & 0x3ff) * (1.0 / 16_777_216.0),
        0x1f if mant == 0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => f32::from_bits((u32::from(h >> 15) << 31) | ((exp + 112) << 23) | (mant << 13)),
    }
}

/// C-order strides (in elements) of `shape`.
fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * shape[k + 1];
    }
    strides
}

/// Flat C-order index of the element stored at Fortran-order position `s`.
fn fortran_to_c_index(shape: &[usize], mut s: usize) -> usize {
    let strides = c_strides(shape);
    let mut c = 0;
    for (&d, &stride) in shape.iter().zip(&strides) {
        c += (s % d) * stride;
        s /= d;
    }
    c
}

/// Reorder Fortran-order (first axis fastest) values into C order.
/// `values.len()` must equal the product of `shape` (≥ 2 dimensions, none 0
/// unless `values` is empty).
fn fortran_to_c(shape: &[usize], values: &[f32]) -> Vec<f32> {
    let strides = c_strides(shape);
    let mut out = vec![0.0; values.len()];
    let mut idx = vec![0_usize; shape.len()];
    let mut c = 0;
    for &v in values {
        out[c] = v;
        // Advance the multi-index with axis 0 fastest, tracking the C offset.
        for ((i, &d), &stride) in idx.iter_mut().zip(shape).zip(&strides) {
            *i += 1;
            c += stride;
            if *i < d {
                break;
            }
            c -= stride * d;
            *i = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests;
