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
// Header

/// Element type of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    F2,
    F4,
    F8,
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
    U8,
    Bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dtype {
    scalar: Scalar,
    big_endian: bool,
}

impl Dtype {
    /// Item size in bytes.
    fn size(self) -> usize {
        match self.scalar {
            Scalar::I1 | Scalar::U1 | Scalar::Bool => 1,
            Scalar::F2 | Scalar::I2 | Scalar::U2 => 2,
            Scalar::F4 | Scalar::I4 | Scalar::U4 => 4,
            Scalar::F8 | Scalar::I8 | Scalar::U8 => 8,
        }
    }

    /// Parse a NumPy type string such as `<f4`, `>i2`, `|u1`, `|b1`.
    fn parse(descr: &str) -> Result<Self, NpyError> {
        let unsupported = || NpyError::UnsupportedDtype(format!("`{descr}`"));
        let (order, rest) = match descr.as_bytes().first() {
            Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (c, &descr[1..]),
            _ => (b'=', descr),
        };
        let scalar = match rest {
            "f2" | "e" => Scalar::F2,
            "f4" | "f" => Scalar::F4,
            "f8" | "d" => Scalar::F8,
            "i1" | "b" => Scalar::I1,
            "i2" | "h" => Scalar::I2,
            "i4" => Scalar::I4,
            "i8" | "q" => Scalar::I8,
            "u1" | "B" => Scalar::U1,
            "u2" | "H" => Scalar::U2,
            "u4" => Scalar::U4,
            "u8" | "Q" => Scalar::U8,
            "b1" | "?" => Scalar::Bool,
            _ => return Err(unsupported()),
        };
        let dtype = Self {
            scalar,
            big_endian: order == b'>',
        };
        if order == b'|' && dtype.size() > 1 {
            return Err(unsupported());
        }
        Ok(dtype)
    }
}

struct Header {
    dtype: Dtype,
    fortran: bool,
    /// Dimensions as claimed, not yet checked against any limit.
    shape: Vec<u64>,
}

/// Split the file into header dict bytes and data bytes.
fn split_header(bytes: &[u8]) -> Result<(&[u8], &[u8]), NpyError> {
    let malformed = |m: &str| NpyError::Malformed(m.to_owned());
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("missing \\x93NUMPY magic"))?;
    let (version, rest) = split(rest, 2).ok_or_else(|| malformed("truncated version"))?;
    let (major, minor) = (version[0], version[1]);
    let (len, rest) = match major {
        1 => split(rest, 2).map(|(l, r)| (usize::from(u16::from_le_bytes([l[0], l[1]])), r)),
        2 | 3 => split(rest, 4).map(|(l, r)| {
            let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
            (usize::try_from(len).unwrap_or(usize::MAX), r)
        }),
        _ => {
            return Err(NpyError::Malformed(format!(
                "unsupported .npy version {major}.{minor}"
            )))
        }
    }
    .ok_or_else(|| malformed("truncated header length"))?;
    split(rest, len).ok_or_else(|| {
        NpyError::Malformed(format!(
            "header length {len} exceeds the {} bytes available",
            rest.len()
        ))
    })
}

/// `(bytes[..n], bytes[n..])`, or `None` if too short.
fn split(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

/// Parse the header dict: exactly the keys `descr`, `fortran_order`, `shape`
/// in any order, optional trailing comma, then only whitespace.
fn parse_header(text: &[u8]) -> Result<Header, NpyError> {
    let mut cur = Cursor { s: text, pos: 0 };
    let (mut dtype, mut fortran, mut shape) = (None, None, None);
    cur.expect(b'{')?;
    loop {
        if cur.eat(b'}') {
            break;
        }
        let key = cur.string()?;
        cur.expect(b':')?;
        let dup = match key {
            "descr" => dtype.replace(cur.descr()?).is_some(),
            "fortran_order" => fortran.replace(cur.boolean()?).is_some(),
            "shape" => shape.replace(cur.tuple()?).is_some(),
            other => return Err(cur.error(&format!("unexpected key '{other}'"))),
        };
        if dup {
            return Err(cur.error(&format!("duplicate key '{key}'")));
        }
        if !cur.eat(b',') {
            cur.expect(b'}')?;
            break;
        }
    }
    cur.skip_ws();
    if cur.pos != text.len() {
        return Err(cur.error("unexpected text after the header dict"));
    }
    let missing = |k: &str| NpyError::Malformed(format!("header dict lacks key '{k}'"));
    Ok(Header {
        dtype: dtype.ok_or_else(|| missing("descr"))?,
        fortran: fortran.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// Bounds-checked cursor over the header text. Every method skips leading
/// whitespace.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, what: &str) -> NpyError {
        NpyError::Malformed(format!("header dict: {what} at byte {}", self.pos))
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) -> Result<(), NpyError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", char::from(b))))
        }
    }

    /// A `'…'` or `"…"` literal without escapes.
    fn string(&mut self) -> Result<&'a str, NpyError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        let start = self.pos + 1;
        let len = self
            .s
            .get(start..)
            .and_then(|r| r.iter().position(|&c| c == quote));
        let Some(len) = len else {
            return Err(self.error("unterminated string"));
        };
        self.pos = start + len + 1;
        std::str::from_utf8(&self.s[start..start + len])
            .map_err(|_| self.error("string is not UTF-8"))
    }

    fn descr(&mut self) -> Result<Dtype, NpyError> {
        match self.peek() {
            Some(b'[') => Err(NpyError::UnsupportedDtype("(structured dtype)".to_owned())),
            _ => Dtype::parse(self.string()?),
        }
    }

    fn word(&mut self) -> &'a [u8] {
        self.skip_ws();
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_alphanumeric) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn boolean(&mut self) -> Result<bool, NpyError> {
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            _ => Err(self.error("expected True or False")),
        }
    }

    /// `(d0, d1, …)` of non-negative integers (Python 2 `3L` accepted).
    /// Values beyond `u64` saturate so the size check reports them.
    fn tuple(&mut self) -> Result<Vec<u64>, NpyError> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            let word = self.word();
            let digits = word.strip_suffix(b"L").unwrap_or(word);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(self.error("expected a non-negative integer dimension"));
            }
            if dims.len() == MAX_NDIM {
                return Err(self.error(&format!("more than {MAX_NDIM} dimensions")));
            }
            dims.push(digits.iter().fold(0_u64, |acc, &d| {
                acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            }));
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `.npy` file with the given version, raw header text and data bytes.
    fn file(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(header.len()).unwrap().to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn header(descr: &str, fortran: bool, shape: &str) -> String {
        let f = if fortran { "True" } else { "False" };
        format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}          \n")
    }

    fn simple(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        file(1, &header(descr, false, shape), data)
    }

    fn bytes_of<const N: usize>(items: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
        items.into_iter().flatten().collect()
    }

    fn malformed(bytes: &[u8]) -> String {
        match read_npy(bytes, 1_000_000) {
            Err(NpyError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn written_files_round_trip_for_several_shapes() {
        let cases: [(&[usize], Vec<f32>); 5] = [
            (
                &[2, 3],
                vec![0.0, 1.5, -2.0, 3.25, f32::MAX, f32::MIN_POSITIVE],
            ),
            (&[4], vec![1.0, 2.0, 3.0, 4.0]),
            (&[], vec![42.0]),
            (&[0, 3], vec![]),
            (&[1, 2, 1, 2], vec![9.0, 8.0, 7.0, 6.0]),
        ];
        for (shape, data) in cases {
            let bytes = write_npy_f32(shape, &data);
            let (s, d) = read_npy(&bytes, 100).unwrap();
            assert_eq!((s.as_slice(), d), (shape, data));
        }
    }

    #[test]
    fn written_files_have_a_numpy_style_v1_header_aligned_to_64_bytes() {
        let bytes = write_npy_f32(&[2, 3], &[0.0; 6]);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        assert_eq!((10 + len) % 64, 0);
        let text = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(text.ends_with(" \n"));
        assert_eq!(bytes.len(), 10 + len + 24);
        let one_d = write_npy_f32(&[5], &[0.0; 5]);
        assert!(std::str::from_utf8(&one_d[10..80])
            .unwrap()
            .contains("'shape': (5,), }"));
    }

    #[test]
    fn writer_switches_to_v2_when_the_header_exceeds_65535_bytes() {
        let shape = vec![1_usize; 30_000];
        let bytes = write_npy_f32(&shape, &[7.0]);
        assert_eq!(&bytes[6..8], &[2, 0]);
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!((12 + len) % 64, 0);
        assert_eq!(&bytes[12 + len..], &7.0_f32.to_le_bytes());
    }

    #[test]
    #[should_panic(expected = "does not match data length")]
    fn writer_panics_when_shape_and_data_disagree() {
        let _ = write_npy_f32(&[2, 2], &[1.0]);
    }

    #[test]
    fn every_supported_dtype_is_converted_to_f32() {
        let half = |h: u16| h.to_le_bytes();
        let cases: Vec<(&str, Vec<u8>, Vec<f32>)> = vec![
            (
                "<f4",
                bytes_of([1.5_f32.to_le_bytes(), (-2.0_f32).to_le_bytes()]),
                vec![1.5, -2.0],
            ),
            (
                ">f4",
                bytes_of([1.5_f32.to_be_bytes(), (-2.0_f32).to_be_bytes()]),
                vec![1.5, -2.0],
            ),
            (
                "<f8",
                bytes_of([0.1_f64.to_le_bytes(), 1e30_f64.to_le_bytes()]),
                vec![0.1, 1e30],
            ),
            (
                ">f8",
                bytes_of([(-3.0_f64).to_be_bytes(), 1e-50_f64.to_be_bytes()]),
                vec![-3.0, 0.0],
            ),
            (
                "<f2",
                bytes_of([
                    half(0x3c00),
                    half(0xc000),
                    half(0x7bff),
                    half(0x0001),
                    half(0x8000),
                ]),
                vec![1.0, -2.0, 65504.0, 2.0_f32.powi(-24), -0.0],
            ),
            (
                ">f2",
                bytes_of([0x3555_u16.to_be_bytes()]),
                vec![0.333_251_95],
            ),
            ("|i1", vec![0x80, 0x7f, 0xff], vec![-128.0, 127.0, -1.0]),
            (
                "<i2",
                bytes_of([(-300_i16).to_le_bytes(), 300_i16.to_le_bytes()]),
                vec![-300.0, 300.0],
            ),
            (">i2", bytes_of([(-300_i16).to_be_bytes()]), vec![-300.0]),
            (
                "<i4",
                bytes_of([(-70_000_i32).to_le_bytes()]),
                vec![-70_000.0],
            ),
            (">i4", bytes_of([70_000_i32.to_be_bytes()]), vec![70_000.0]),
            (
                "<i8",
                bytes_of([(-5_i64).to_le_bytes(), (1_i64 << 40).to_le_bytes()]),
                vec![-5.0, 1_099_511_627_776.0],
            ),
            (">i8", bytes_of([(-5_i64).to_be_bytes()]), vec![-5.0]),
            ("|u1", vec![0, 255], vec![0.0, 255.0]),
            ("<u2", bytes_of([65_535_u16.to_le_bytes()]), vec![65_535.0]),
            (">u2", bytes_of([258_u16.to_be_bytes()]), vec![258.0]),
            (
                "<u4",
                bytes_of([4_000_000_000_u32.to_le_bytes()]),
                vec![4e9],
            ),
            (">u4", bytes_of([16_u32.to_be_bytes()]), vec![16.0]),
            (
                "<u8",
                bytes_of([(1_u64 << 60).to_le_bytes()]),
                vec![1_152_921_504_606_846_976.0],
            ),
            (">u8", bytes_of([3_u64.to_be_bytes()]), vec![3.0]),
            ("|b1", vec![0, 1, 2], vec![0.0, 1.0, 1.0]),
            ("=f4", bytes_of([2.0_f32.to_le_bytes()]), vec![2.0]),
            ("<i1", vec![0xfe], vec![-2.0]),
        ];
        for (descr, data, expected) in cases {
            let bytes = simple(descr, &format!("({},)", expected.len()), &data);
            let (shape, values) = read_npy(&bytes, 100).unwrap_or_else(|e| panic!("{descr}: {e}"));
            assert_eq!(shape, [expected.len()], "{descr}");
            assert_eq!(values, expected, "{descr}");
        }
    }

    #[test]
    fn fortran_order_data_is_transposed_into_c_order() {
        // C-order array [[0,1,2],[3,4,5]] stored column-major: 0,3,1,4,2,5.
        let data = bytes_of([0_i16, 3, 1, 4, 2, 5].map(i16::to_le_bytes));
        let bytes = file(1, &header("<i2", true, "(2, 3)"), &data);
        let (shape, values) = read_npy(&bytes, 100).unwrap();
        assert_eq!(shape, [2, 3]);
        assert_eq!(values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

        // 2×3×4 with value = C-order flat index, stored Fortran order.
        let (d0, d1, d2) = (2, 3, 4);
        let mut stored = Vec::new();
        for k in 0..d2 {
            for j in 0..d1 {
                for i in 0..d0 {
                    stored.push(u8::try_from(i * d1 * d2 + j * d2 + k).unwrap());
                }
            }
        }
        let bytes = file(1, &header("|u1", true, "(2, 3, 4)"), &stored);
        let (shape, values) = read_npy(&bytes, 100).unwrap();
        assert_eq!(shape, [2, 3, 4]);
        assert_eq!(values, (0..24).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn scalar_and_zero_sized_arrays_are_read() {
        let bytes = simple("<f8", "()", &2.5_f64.to_le_bytes());
        assert_eq!(read_npy(&bytes, 1).unwrap(), (vec![], vec![2.5]));
        let bytes = simple("<f4", "(0, 3)", &[]);
        assert_eq!(read_npy(&bytes, 3).unwrap(), (vec![0, 3], vec![]));
        let bytes = file(1, &header("<f4", true, "(3, 0, 2)"), &[]);
        assert_eq!(read_npy(&bytes, 10).unwrap(), (vec![3, 0, 2], vec![]));
    }

    #[test]
    fn v2_and_v3_headers_and_python2_style_dimensions_are_accepted() {
        let data = bytes_of([1.0_f32, 2.0].map(f32::to_le_bytes));
        for major in [2, 3] {
            let bytes = file(major, &header("<f4", false, "(1, 2)"), &data);
            assert_eq!(read_npy(&bytes, 10).unwrap(), (vec![1, 2], vec![1.0, 2.0]));
        }
        let text = "{\"shape\":(2L,),\"fortran_order\":False,\"descr\":\"<f4\"}\n";
        assert_eq!(
            read_npy(&file(1, text, &data), 10).unwrap(),
            (vec![2], vec![1.0, 2.0])
        );
    }

    #[test]
    fn data_length_must_match_the_shape_exactly() {
        let data = bytes_of([1.0_f32, 2.0, 3.0].map(f32::to_le_bytes));
        let m = malformed(&simple("<f4", "(2, 2)", &data));
        assert!(m.contains("has 12 bytes, expected 16"), "{m}");
        let mut long = data.clone();
        long.push(0);
        let m = malformed(&simple("<f4", "(3,)", &long));
        assert!(m.contains("has 13 bytes, expected 12"), "{m}");
    }

    #[test]
    fn huge_claimed_shapes_are_too_large_before_any_allocation() {
        let big = simple("<f4", "(1099511627776, 1099511627776)", &[]);
        assert!(matches!(
            read_npy(&big, 1 << 20),
            Err(NpyError::TooLarge {
                limit: 1_048_576,
                actual: u64::MAX
            })
        ));
        let over = simple("<f4", "(100000, 100000)", &[]);
        assert!(matches!(
            read_npy(&over, 1 << 20),
            Err(NpyError::TooLarge {
                actual: 10_000_000_000,
                ..
            })
        ));
        let digits = simple("<f4", "(99999999999999999999999999999,)", &[]);
        assert!(matches!(
            read_npy(&digits, 10),
            Err(NpyError::TooLarge {
                actual: u64::MAX,
                ..
            })
        ));
        let empty_but_wide = simple("<f4", "(0, 18446744073709551615)", &[]);
        assert!(matches!(
            read_npy(&empty_but_wide, 10),
            Err(NpyError::TooLarge { .. })
        ));
        let at_limit = simple("|u1", "(2, 2)", &[1, 2, 3, 4]);
        assert!(read_npy(&at_limit, 4).is_ok());
        assert!(matches!(
            read_npy(&at_limit, 3),
            Err(NpyError::TooLarge {
                limit: 3,
                actual: 4
            })
        ));
    }

    #[test]
    fn nan_infinity_and_out_of_range_doubles_are_reported_by_c_order_index() {
        let f4 = bytes_of([1.0_f32, f32::NAN].map(f32::to_le_bytes));
        assert!(matches!(
            read_npy(&simple("<f4", "(2,)", &f4), 9),
            Err(NpyError::NonFinite { index: 1 })
        ));
        let f8 = bytes_of([0.0, 1.0, 1e39_f64].map(f64::to_le_bytes));
        assert!(matches!(
            read_npy(&simple("<f8", "(3,)", &f8), 9),
            Err(NpyError::NonFinite { index: 2 })
        ));
        let f2 = bytes_of([0x7c00_u16].map(u16::to_le_bytes));
        assert!(matches!(
            read_npy(&simple("<f2", "(1,)", &f2), 9),
            Err(NpyError::NonFinite { index: 0 })
        ));
        // Fortran storage position 1 of a 2×3 array is C-order element [1][0] = 3.
        let f = bytes_of([0.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0].map(f32::to_le_bytes));
        let bytes = file(1, &header("<f4", true, "(2, 3)"), &f);
        assert!(matches!(
            read_npy(&bytes, 9),
            Err(NpyError::NonFinite { index: 3 })
        ));
    }

    #[test]
    fn unsupported_dtypes_are_named_in_the_error() {
        for descr in ["<c8", "<U3", "|O", "|S4", "<M8[ns]", ">f16", "|i2", ""] {
            let err = read_npy(&simple(descr, "(1,)", &[0; 8]), 9).unwrap_err();
            assert!(
                matches!(err, NpyError::UnsupportedDtype(_)),
                "{descr}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("`{descr}`")), "{err}");
        }
        let structured = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n";
        assert!(matches!(
            read_npy(&file(1, structured, &[0; 4]), 9),
            Err(NpyError::UnsupportedDtype(_))
        ));
    }

    #[test]
    fn garbage_and_broken_headers_are_malformed() {
        let ok_header = header("<f4", false, "(1,)");
        let data = 1.0_f32.to_le_bytes();
        assert!(malformed(b"").contains("magic"));
        assert!(malformed(b"PK\x03\x04 not npy at all").contains("magic"));
        assert!(malformed(b"\x93NUMPY\x01").contains("version"));
        assert!(malformed(b"\x93NUMPY\x01\x00\x10").contains("header length"));
        assert!(malformed(b"\x93NUMPY\x01\x00\xff\x00{").contains("exceeds"));
        assert!(malformed(&file(4, &ok_header, &data)).contains("version 4.0"));
        let broken = [
            ("not a dict", "expected '{'"),
            (
                "{'descr': '<f4', 'fortran_order': False}",
                "lacks key 'shape'",
            ),
            (
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
                "duplicate",
            ),
            (
                "{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}",
                "True or False",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                "unexpected key",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
                "non-negative",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,) 'x'}",
                "expected '}'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk",
                "after the header",
            ),
            ("{'descr: '<f4'}", "expected ':'"),
            ("{'descr': '<f4", "unterminated"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
                "expected '('",
            ),
        ];
        for (text, needle) in broken {
            let m = malformed(&file(1, text, &data));
            assert!(m.contains(needle), "{text}: {m}");
        }
        let many_dims = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}) }}",
            "1,".repeat(65)
        );
        assert!(malformed(&file(1, &many_dims, &data)).contains("more than 64 dimensions"));
    }

    #[test]
    fn every_truncation_and_single_byte_corruption_is_handled_without_panicking() {
        let valid = file(1, &header("<i2", true, "(2, 3)"), &[1; 12]);
        for end in 0..valid.len() {
            assert!(
                read_npy(&valid[..end], 100).is_err(),
                "prefix {end} should fail"
            );
        }
        for pos in 0..valid.len() {
            for byte in [0, b' ', b'(', b')', b',', b'\'', b'9', b'{', b'}', 0xff] {
                let mut corrupt = valid.clone();
                corrupt[pos] = byte;
                let _ = read_npy(&corrupt, 100);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = read_npy(&bytes, 1000);
        }

        #[test]
        fn arbitrary_header_text_never_panics(
            text in "[{}():,'\" <>|=a-zA-Z0-9_\n]{0,90}",
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = read_npy(&file(1, &text, &data), 1000);
            let _ = read_npy(&file(3, &text, &data), 1000);
        }
    }
}
