//! `multipart/form-data` (RFC 7578) split in place: the body is read whole, once, into
//! one buffer of its `Content-Length` ([`super::budget::read_body`]), and each part is a
//! slice of that buffer (`Bytes::slice`, no copy).
//!
//! A streaming reader (multer, behind axum's `Multipart`) copies every byte twice: into
//! its window as chunks arrive, then into each field's growing buffer. For a 60 MB image
//! part that was two more 60 MB buffers, one of them grown by doubling.
//!
//! Accepted: an optional preamble; parts `--boundary CRLF headers CRLF CRLF content`;
//! the close delimiter `--boundary--` and an epilogue. Each part needs a
//! `Content-Disposition: form-data; name="…"` header. Refused with 400 (`malformed multipart
//! body: …`): no boundary parameter, no delimiter, a part not closed by a delimiter,
//! headers over 8 KiB or not UTF-8, a part without a name, more than [`MAX_PARTS`] parts.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;

use super::budget::ReadBody;
use crate::error::ApiError;

/// A `multipart/form-data` body read whole, not yet split.
#[derive(Debug)]
pub struct RawMultipart {
    /// The body and its reservation.
    pub body: ReadBody,
    boundary: String,
}

impl RawMultipart {
    /// Splits the body into its parts: a scan of the whole body, so callers run it on the
    /// compute pool, not on the async runtime.
    ///
    /// # Errors
    /// 400 for a malformed body.
    pub fn parts(&self) -> Result<Vec<Part>, ApiError> {
        parse(&self.body.bytes, &self.boundary)
    }
}

/// Reads a `multipart/form-data` request whole (at most `limit` bytes, see
/// [`super::budget::read_body`]); the boundary is checked first, the split is left to
/// [`RawMultipart::parts`]. The body's reservation comes with it.
///
/// # Errors
/// 400 for a content type without a boundary, 408/413/503 from reading the body.
pub async fn read(req: Request, limit: u64) -> Result<RawMultipart, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = boundary(ct)?;
    let body = super::budget::read_body(req, limit).await?;
    Ok(RawMultipart { body, boundary })
}

/// Most parts in one body (the endpoints take at most `max_images` + 1 or 4).
pub const MAX_PARTS: usize = 256;
/// Largest header block of one part.
const MAX_HEADER_BYTES: usize = 8 << 10;

/// One part: its name and content.
#[derive(Debug, Clone)]
pub struct Part {
    /// `name` of its `Content-Disposition`.
    pub name: String,
    /// The content, a slice of the body.
    pub data: Bytes,
}

fn malformed(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("malformed multipart body: {detail}"))
}

/// The `boundary` parameter of a `multipart/form-data` content type.
///
/// # Errors
/// 400 when it is missing, empty or longer than 70 characters (RFC 2046).
pub fn boundary(content_type: &str) -> Result<String, ApiError> {
    let b = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .ok_or_else(|| malformed("the content type has no boundary parameter"))?;
    if b.is_empty() || b.len() > 70 {
        return Err(malformed("the boundary must have 1 to 70 characters"));
    }
    Ok(b)
}

/// Splits `body` into its parts.
///
/// # Errors
/// 400 for a body that is not well-formed multipart (see the module doc).
pub fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, ApiError> {
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    let find = |from: usize, pat: &[u8]| memchr::memmem::find(&body[from..], pat).map(|i| from + i);
    // The first delimiter: at the start, or after a preamble line.
    let mut at = if body.starts_with(delim.as_bytes()) {
        0
    } else {
        find(0, next_delim.as_bytes())
            .map(|i| i + 2)
            .ok_or_else(|| malformed(format!("no delimiter `{delim}` in the body")))?
    } + delim.len();
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then CRLF.
        while matches!(body.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err(malformed("a delimiter is not followed by CRLF"));
        }
        at += 2;
        if parts.len() == MAX_PARTS {
            return Err(malformed(format!("more than {MAX_PARTS} parts")));
        }
        let (headers, content) = if body[at..].starts_with(b"\r\n") {
            (&body[at..at], at + 2)
        } else {
            let end = find(at, b"\r\n\r\n")
                .filter(|&e| e - at <= MAX_HEADER_BYTES)
                .ok_or_else(|| malformed("a part's headers do not end (or exceed 8 KiB)"))?;
            (&body[at..end], end + 4)
        };
        let name = part_name(headers)?;
        let end = find(content, next_delim.as_bytes())
            .ok_or_else(|| malformed(format!("part `{name}` is not closed by a delimiter")))?;
        parts.push(Part {
            name,
            data: body.slice(content..end),
        });
        at = end + next_delim.len();
    }
}

/// The `name` of a part's `Content-Disposition: form-data` header.
fn part_name(headers: &[u8]) -> Result<String, ApiError> {
    let text = std::str::from_utf8(headers).map_err(|_| malformed("part headers are not UTF-8"))?;
    let disposition = text
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
        .map(|(_, v)| v.trim())
        .ok_or_else(|| malformed("a part has no Content-Disposition header"))?;
    let mut params = disposition.split(';');
    if !params
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("form-data"))
    {
        return Err(malformed(format!(
            "Content-Disposition `{disposition}` is not form-data"
        )));
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("name"))
        .map(|(_, v)| unquote(v.trim()))
        .ok_or_else(|| malformed(format!("Content-Disposition `{disposition}` has no name")))
}

/// A token, or a quoted string with `\` escapes.
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        None => v.to_string(),
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Bytes {
        Bytes::from(s.replace('\n', "\r\n"))
    }

    #[test]
    fn parts_are_slices_of_the_body_in_order() {
        let b = body(
            "preamble\n--XyZ\ncontent-disposition: form-data; name=\"image\"; filename=\"a.png\"\ncontent-type: image/png\n\n\x01\x02\n--XyZ\nContent-Disposition: form-data; name=spec\n\n{\"a\":1}\n--XyZ--\nepilogue",
        );
        let parts = parse(&b, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "image");
        assert_eq!(&parts[0].data[..], b"\x01\x02");
        assert_eq!(parts[1].name, "spec");
        assert_eq!(&parts[1].data[..], b"{\"a\":1}");
        // A slice of the body, not a copy.
        let start = b.as_ptr() as usize;
        let p = parts[1].data.as_ptr() as usize;
        assert!(p >= start && p < start + b.len());
    }

    #[test]
    fn content_may_hold_crlf_and_dashes_short_of_the_delimiter() {
        let b = body("--b\ncontent-disposition: form-data; name=\"x\"\n\n--a\n-b\nx--b\n--b--\n");
        let parts = parse(&b, "b").unwrap();
        assert_eq!(&parts[0].data[..], b"--a\r\n-b\r\nx--b");
    }

    #[test]
    fn what_a_browser_or_curl_sends_parses() {
        let b = body("--b\ncontent-disposition: form-data; name=\"q\\\"x\"\n\n1\n--b  \ncontent-disposition: form-data; name=\"e\"\n\n\n--b--");
        let parts = parse(&b, "b").unwrap();
        assert_eq!(parts[0].name, "q\"x");
        assert_eq!(&parts[1].data[..], b"");
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\"").unwrap(),
            "a b"
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=x; BOUNDARY=z").unwrap(),
            "z"
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for (b, why) in [
            ("no delimiter at all", "no delimiter"),
            (
                "--b\ncontent-disposition: form-data; name=\"x\"\n\nunterminated",
                "not closed",
            ),
            ("--b\n\n\n--b--\n", "no Content-Disposition"),
            (
                "--b\ncontent-disposition: attachment; name=\"x\"\n\n1\n--b--",
                "not form-data",
            ),
            (
                "--b\ncontent-disposition: form-data\n\n1\n--b--",
                "has no name",
            ),
            ("--bX\n", "not followed by CRLF"),
        ] {
            let e = parse(&body(b), "b").unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.detail.contains(why), "{b:?}: {}", e.detail);
        }
        assert!(boundary("multipart/form-data").is_err());
        let many: String = (0..=MAX_PARTS)
            .map(|_| "--b\ncontent-disposition: form-data; name=\"x\"\n\n1\n")
            .collect::<String>()
            + "--b--";
        assert!(parse(&body(&many), "b")
            .unwrap_err()
            .detail
            .contains("more than"));
    }
}
