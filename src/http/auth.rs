//! API keys: `Authorization: Bearer <key>` on every route but the public ones.
//!
//! With `[server] api_keys` empty (the default) nothing is checked. Otherwise the public
//! routes are the probes (`/healthz`, `/readyz`), the playground pages (`/` and
//! `/samples/*`: pages are public, the API they call is not) and `/metrics` unless
//! `metrics_require_key`. Everything else, unknown paths included (a 404 would tell a
//! stranger which routes exist), answers 401 `unauthorized` with `WWW-Authenticate: Bearer`
//! to a missing or wrong key. CORS preflights never reach this layer: the CORS layer
//! outside it answers them, since browsers send preflights without credentials.
//!
//! # Constant time
//! A key is compared with [`subtle::ConstantTimeEq`] against *every* configured key, with
//! no early exit, so the time taken does not depend on how many leading bytes of a guess
//! are right nor on which key matched. `subtle`'s slice comparison does return early when
//! the lengths differ, which reveals at most the length of a key; keys are at least 16
//! characters (config validation), and knowing a key's length does not help guess it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{ApiKey, ServerSettings};
use crate::error::{ApiError, ProblemKind};

/// The keys in force and which routes are public.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
    metrics_require_key: bool,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.keys.len())
    }
}

impl ApiKeys {
    /// The keys of `[server]`.
    pub fn from_settings(s: &ServerSettings) -> Self {
        Self {
            keys: s
                .api_keys
                .iter()
                .map(|ApiKey(k)| k.as_bytes().to_vec())
                .collect(),
            metrics_require_key: s.metrics_require_key,
        }
    }

    /// Whether any key is configured (else every route is open).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Routes anyone may call.
    fn is_public(&self, path: &str) -> bool {
        matches!(path, "/healthz" | "/readyz" | "/")
            || path.starts_with("/samples/")
            || (path == "/metrics" && !self.metrics_require_key)
    }

    /// Whether `presented` equals one of the keys, in constant time (see the module doc).
    fn accepts(&self, presented: &[u8]) -> bool {
        let hit = self.keys.iter().fold(Choice::from(0), |acc, k| {
            acc | k.as_slice().ct_eq(presented)
        });
        bool::from(hit)
    }
}

/// The bearer token of an `Authorization` header (scheme case-insensitive, RFC 7235).
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Middleware: lets a request through when its route is public or its key is right.
pub async fn require_key(State(keys): State<Arc<ApiKeys>>, req: Request, next: Next) -> Response {
    if !keys.enabled() || keys.is_public(req.uri().path()) {
        return next.run(req).await;
    }
    match bearer(&req) {
        Some(token) if keys.accepts(token) => next.run(req).await,
        Some(_) => unauthorized(
            "the API key is not valid",
            r#"Bearer realm="convd", error="invalid_token""#,
        ),
        None => unauthorized(
            "this route needs an API key: send `Authorization: Bearer <key>`",
            r#"Bearer realm="convd""#,
        ),
    }
}

fn unauthorized(detail: &str, challenge: &'static str) -> Response {
    let mut res = ApiError::new(ProblemKind::Unauthorized, detail)
        .at("/headers/authorization")
        .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(metrics_require_key: bool) -> ApiKeys {
        ApiKeys {
            keys: vec![
                b"0123456789abcdef".to_vec(),
                b"another-key-0000000".to_vec(),
            ],
            metrics_require_key,
        }
    }

    #[test]
    fn only_an_exact_key_is_accepted() {
        let k = keys(false);
        assert!(k.accepts(b"0123456789abcdef"));
        assert!(k.accepts(b"another-key-0000000"));
        assert!(!k.accepts(b"0123456789abcdeF"));
        assert!(!k.accepts(b"0123456789abcde"));
        assert!(!k.accepts(b"0123456789abcdef0"));
        assert!(!k.accepts(b""));
    }

    #[test]
    fn probes_pages_and_metrics_are_public_unless_metrics_needs_a_key() {
        let open = keys(false);
        for p in [
            "/healthz",
            "/readyz",
            "/",
            "/samples/camera.png",
            "/metrics",
        ] {
            assert!(open.is_public(p), "{p}");
        }
        for p in [
            "/v1/conv2d",
            "/v1/limits",
            "/openapi.yaml",
            "/nope",
            "/healthz/x",
        ] {
            assert!(!open.is_public(p), "{p}");
        }
        assert!(!keys(true).is_public("/metrics"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        let req = |v: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, v)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(bearer(&req("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("bearer   abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer")), None);
        assert_eq!(bearer(&req("Bearer ")), None);
    }
}
