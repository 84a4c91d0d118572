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

/// Every kind of problem convd answers with: its HTTP status, the slug of its `type` URI
/// (`urn:convd:problem:<slug>`) and its coarse reason for
/// `convd_rejected_requests_total{reason}`. A closed set, so that a new kind cannot be a
/// typo that the metrics would count as "invalid". Left in the response's extensions for
/// the metrics middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: not well-formed (JSON syntax, types, multipart framing, headers).
    MalformedRequest,
    /// 422: well-formed, but impossible (shapes, parameters).
    InvalidSpec,
    /// 415: a content type or image format the endpoint does not take.
    UnsupportedMediaType,
    /// 406: no acceptable representation.
    NotAcceptable,
    /// 413: over a configured limit; 422 where the excess is not what was sent but what
    /// the spec implies (an output, the padded input, the MACs).
    LimitExceeded,
    /// 422: an output value does not fit float32 where JSON cannot carry it.
    OutputNotFinite,
    /// 401: a missing or wrong API key.
    Unauthorized,
    /// 404: no such route or sample.
    NotFound,
    /// 405: a route without this method.
    MethodNotAllowed,
    /// 408: a request body slower than the minimum rate.
    BodyTooSlow,
    /// 503: the bytes of request bodies in flight are at their budget.
    BodiesInFlight,
    /// 503: the compute pool's admission is full.
    Overloaded,
    /// 503: the computation was cancelled.
    Cancelled,
    /// 504: past the request's deadline.
    DeadlineExceeded,
    /// 500: a bug; the cause is logged.
    Internal,
}

impl ProblemKind {
    /// Every kind.
    pub const ALL: [Self; 15] = [
        Self::MalformedRequest,
        Self::InvalidSpec,
        Self::UnsupportedMediaType,
        Self::NotAcceptable,
        Self::LimitExceeded,
        Self::OutputNotFinite,
        Self::Unauthorized,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::BodyTooSlow,
        Self::BodiesInFlight,
        Self::Overloaded,
        Self::Cancelled,
        Self::DeadlineExceeded,
        Self::Internal,
    ];

    /// The HTTP status of a problem of this kind ([`ProblemKind::LimitExceeded`] is 422
    /// when the excess is implied, see [`ApiError::from`]).
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedRequest => StatusCode::BAD_REQUEST,
            Self::InvalidSpec | Self::OutputNotFinite => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::LimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::BodiesInFlight | Self::Overloaded | Self::Cancelled => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The slug of the problem's `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed-request",
            Self::InvalidSpec => "invalid-spec",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::NotAcceptable => "not-acceptable",
            Self::LimitExceeded => "limit-exceeded",
            Self::OutputNotFinite => "output-not-finite",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::BodyTooSlow => "body-too-slow",
            Self::BodiesInFlight => "bodies-in-flight",
            Self::Overloaded => "overloaded",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Internal => "internal",
        }
    }

    /// The coarse reason, the `reason` label of `convd_rejected_requests_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::BodiesInFlight => "body_budget",
            Self::BodyTooSlow => "body_too_slow",
            Self::DeadlineExceeded => "deadline",
            Self::Cancelled => "cancelled",
            Self::LimitExceeded => "limit",
            Self::Unauthorized => "unauthorized",
            Self::NotFound | Self::MethodNotAllowed => "not_found",
            Self::Internal => "internal",
            Self::MalformedRequest
            | Self::InvalidSpec
            | Self::UnsupportedMediaType
            | Self::NotAcceptable
            | Self::OutputNotFinite => "invalid",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.slug())
    }
}

/// A refused or failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status (4xx for the caller's mistakes, 5xx for ours or for overload).
    pub status: StatusCode,
    /// The kind of problem (the `type` URI's slug).
    pub kind: ProblemKind,
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
    /// What went wrong inside (500 only): logged when the response is made, in the
    /// request's span, never sent.
    pub cause: Option<String>,
}

impl ApiError {
    /// An error of this kind, with the kind's status.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            status: kind.status(),
            kind,
            detail: detail.into(),
            pointer: None,
            extra: Map::new(),
            retry_after: None,
            close: false,
            cause: None,
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
        Self::new(ProblemKind::MalformedRequest, detail)
    }

    /// 422: well-formed, but the spec is impossible (shapes, parameters).
    pub fn invalid_spec(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::InvalidSpec, detail)
    }

    /// 415: a content type (or image format) the endpoint does not take.
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::UnsupportedMediaType, detail)
    }

    /// 413 for a request over a configured limit, with `limit`, `actual` and `limit_name`.
    pub fn over_limit(what: &str, limit: u64, actual: u64) -> Self {
        let mut e = Self::new(
            ProblemKind::LimitExceeded,
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
            ProblemKind::Overloaded,
            "the service is at capacity; retry after the delay in Retry-After",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 504: the request ran past its deadline; its computation was stopped.
    pub fn deadline(ms: u64) -> Self {
        Self::new(
            ProblemKind::DeadlineExceeded,
            format!("the request did not finish within its deadline of {ms} ms; its computation was stopped"),
        )
    }

    /// 500 with an opaque body; `cause` is logged when the response is made (so with the
    /// request's id), not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            ProblemKind::Internal,
            "an internal error occurred; it has been logged",
        );
        e.cause = Some(cause.to_string());
        e
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
            json!(format!("urn:convd:problem:{}", self.kind.slug())),
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
        if let Some(cause) = &self.cause {
            tracing::error!(%cause, "internal error");
        }
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
        res.extensions_mut().insert(self.kind);
        res
    }
}

impl From<crate::spec::SpecError> for ApiError {
    /// The one place a refused spec becomes a problem: 400 `malformed-request`, 422
    /// `invalid-spec` (an unknown preset adds `known`), 413/422 `limit-exceeded` with
    /// `limit`, `actual` and `limit_name`; the pointer of the member at fault in each.
    fn from(e: crate::spec::SpecError) -> Self {
        use crate::spec::SpecError;
        match e {
            SpecError::Malformed { detail, pointer } => Self::bad_request(detail).at(pointer),
            SpecError::Invalid { detail, pointer } => Self::invalid_spec(detail).at(pointer),
            SpecError::UnknownPreset { detail, pointer } => Self::invalid_spec(detail)
                .at(pointer)
                .with("known", json!(crate::conv::presets::PRESET_NAMES)),
            SpecError::OverLimit {
                what,
                limit,
                actual,
                pointer,
                sent,
            } => {
                let mut e = Self::over_limit(&what, limit, actual).at(pointer);
                if !sent {
                    e.status = StatusCode::UNPROCESSABLE_ENTITY;
                }
                e
            }
            SpecError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// Parses JSON into `T` ([`crate::spec::json::from_slice`]), refusals as problems.
///
/// # Errors
/// 400 `malformed-request` or 422 `invalid-spec`, with `pointer` set.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], base: &str) -> Result<T, ApiError> {
    Ok(crate::spec::json::from_slice(bytes, base)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_kind_answers_with_its_own_status() {
        for k in ProblemKind::ALL {
            let e = ApiError::new(k, "x");
            assert_eq!(e.status, k.status(), "{k:?}");
            assert_eq!(e.body()["status"], json!(k.status().as_u16()), "{k:?}");
            // The server's own troubles (5xx) are counted apart from the caller's mistakes.
            let ours = [
                "overloaded",
                "body_budget",
                "cancelled",
                "deadline",
                "internal",
            ];
            assert_eq!(
                k.status().is_server_error(),
                ours.contains(&k.reason()),
                "{k:?}"
            );
        }
        let implied = ApiError::from(crate::spec::SpecError::over_limit("x", 1, 2, "", false));
        assert_eq!(implied.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(implied.kind, ProblemKind::LimitExceeded);
    }

    #[test]
    fn every_problem_kind_has_its_own_slug_a_known_reason_and_is_documented() {
        let openapi = include_str!("../openapi.yaml");
        let mut seen = std::collections::HashSet::new();
        for k in ProblemKind::ALL {
            assert!(seen.insert(k.slug()), "{k:?}: slug used twice");
            assert!(k
                .slug()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert!(
                [
                    "overloaded",
                    "body_budget",
                    "body_too_slow",
                    "deadline",
                    "cancelled",
                    "limit",
                    "invalid",
                    "unauthorized",
                    "not_found",
                    "internal"
                ]
                .contains(&k.reason()),
                "{k:?}: reason {} is not in README's list",
                k.reason()
            );
            assert!(
                openapi.contains(&format!("`{}`", k.slug()))
                    || openapi.contains(&format!("problem:{}", k.slug())),
                "{k:?} is not in openapi.yaml"
            );
        }
    }
}
