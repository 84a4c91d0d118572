//! The one error type of the service, rendered as RFC 9457 `application/problem+json`.
//!
//! Every refusal carries a stable `type` URI, a `title`, the HTTP `status`, a `detail`
//! written for the caller, and, where one field is at fault, a JSON Pointer to it in
//! `pointer` (e.g. `/layers/1/stride`). Limit violations add `limit` and `actual`.
//! 5xx bodies are opaque: the cause is logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problem type slug of an error response, left in the response's extensions for
/// the metrics middleware (rejections by reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemKind(pub &'static str);

/// A refused or failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status (4xx for the caller's mistakes, 5xx for ours or for overload).
    pub status: StatusCode,
    /// Short machine-readable slug, the last part of the `type` URI.
    pub kind: &'static str,
    /// Explanation for the caller.
    pub detail: String,
    /// JSON Pointer (RFC 6901) to the field at fault, or the multipart part name.
    pub pointer: Option<String>,
    /// Extra members (`limit`, `actual`, `known`, …).
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header (503).
    pub retry_after: Option<u64>,
    /// Whether the response closes the connection (`Connection: close`): a body refused
    /// unread, or read too slowly, cannot be skipped to reach the next request.
    pub close: bool,
}

impl ApiError {
    /// An error of any status.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            pointer: None,
            extra: Map::new(),
            retry_after: None,
            close: false,
        }
    }

    /// The same error with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The same error, closing the connection after the response.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// 400: the body is not well-formed (JSON syntax, wrong types, multipart framing).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed-request", detail)
    }

    /// 422: well-formed, but the spec is impossible (shapes, parameters).
    pub fn invalid_spec(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-spec", detail)
    }

    /// 415: a content type (or image format) the endpoint does not take.
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
    }

    /// 413 or 422 for a request over a configured limit, with `limit` and `actual`.
    pub fn over_limit(status: StatusCode, what: &str, limit: u64, actual: u64) -> Self {
        let mut e = Self::new(
            status,
            "limit-exceeded",
            format!("{what} is {actual}, over the limit of {limit}"),
        );
        e.extra.insert("limit".into(), json!(limit));
        e.extra.insert("actual".into(), json!(actual));
        e.extra.insert("limit_name".into(), json!(what));
        e
    }

    /// 503: too many jobs admitted; retry later.
    pub fn overloaded(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the service is at capacity; retry after the delay in Retry-After",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 504: the request ran past its deadline; its computation was stopped.
    pub fn deadline(ms: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            format!("the request did not finish within its deadline of {ms} ms; its computation was stopped"),
        )
    }

    /// 500 with an opaque body; `cause` is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }

    /// Sets the JSON Pointer to the field at fault.
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    /// Adds a member to the problem body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// The problem body.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            json!(format!("urn:convd:problem:{}", self.kind)),
        );
        m.insert(
            "title".into(),
            json!(self.status.canonical_reason().unwrap_or("Error")),
        );
        m.insert("status".into(), json!(self.status.as_u16()));
        m.insert("detail".into(), json!(self.detail));
        if let Some(p) = &self.pointer {
            m.insert("pointer".into(), json!(p));
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            serde_json::to_vec(&self.body()).unwrap_or_default(),
        )
            .into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res.extensions_mut().insert(ProblemKind(self.kind));
        res
    }
}

/// Converts a `serde_path_to_error` path (`layers[0].stride`) into a JSON Pointer
/// (`/layers/0/stride`).
pub fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// Parses JSON into `T`. Syntax errors and truncated bodies are 400; a well-formed document
/// that does not fit the schema (unknown fields, wrong types, ragged arrays, numbers that
/// are not finite in float32) is 422. Both carry the pointer of the field at fault, prefixed
/// with `base` (e.g. the multipart part name).
///
/// # Errors
/// 400 `malformed-request` or 422 `invalid-spec`, with `pointer` set.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], base: &str) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let pointer = format!("{base}{}", json_pointer(e.path()));
        let inner = e.into_inner();
        let shown = if pointer.is_empty() { "/" } else { &pointer };
        if inner.is_data() {
            ApiError::invalid_spec(format!("`{shown}`: {inner}")).at(pointer)
        } else {
            ApiError::bad_request(format!("malformed JSON: {inner}")).at(pointer)
        }
    })?;
    // Without this, `{...} garbage` would be accepted: one document, then only whitespace.
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")).at(base))?;
    Ok(value)
}

/// Deserializes an already-parsed JSON value (small specs), with the same error mapping
/// as [`parse_json`]; pointers are prefixed with `base`.
///
/// # Errors
/// 422 `invalid-spec` with `pointer` set.
pub fn parse_value<T: serde::de::DeserializeOwned>(
    value: Value,
    base: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = format!("{base}{}", json_pointer(e.path()));
        let shown = if pointer.is_empty() {
            "/".to_string()
        } else {
            pointer.clone()
        };
        ApiError::invalid_spec(format!("`{shown}`: {}", e.into_inner())).at(pointer)
    })
}
