//! The `.npy` header: magic, version, header length, and the Python dict literal
//! (`descr`, `fortran_order`, `shape`), read by a bounds-checked byte cursor.

use super::{NpyError, MAGIC, MAX_NDIM};

/// Element type of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scalar {
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
pub(super) struct Dtype {
    pub(super) scalar: Scalar,
    pub(super) big_endian: bool,
}

impl Dtype {
    /// Item size in bytes.
    pub(super) fn size(self) -> usize {
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

pub(super) struct Header {
    pub(super) dtype: Dtype,
    pub(super) fortran: bool,
    /// Dimensions as claimed, not yet checked against any limit.
    pub(super) shape: Vec<u64>,
}

/// Split the file into header dict bytes and data bytes.
pub(super) fn split_header(bytes: &[u8]) -> Result<(&[u8], &[u8]), NpyError> {
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
pub(super) fn parse_header(text: &[u8]) -> Result<Header, NpyError> {
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
