//! The playground: one self-contained page at `GET /` for trying convolutions in a browser,
//! and the sample pictures it offers at `GET /samples/{name}`.
//!
//! The page (`playground/index.html`: HTML, CSS and vanilla JS inline) is compiled into the
//! binary, so it works offline and needs no build step. It only speaks the public API
//! (`GET /v1/kernels`, `POST /v1/convolve`, `POST /v1/conv2d/shape`), so everything it
//! shows can be reproduced with the `curl` command it prints.
//!
//! The page is served with a strict Content-Security-Policy: everything from this origin
//! only, inline script and style (the page is one file by design), and `blob:`/`data:`
//! images (results arrive as blobs). No third-party origin can be reached from it.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ProblemKind};

/// The page, compiled in.
pub const INDEX_HTML: &str = include_str!("playground/index.html");

/// The Content-Security-Policy of the page.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The bundled sample pictures (small copies of images under `tests/fixtures/images/`),
/// by the name used in `/samples/{name}`.
pub const SAMPLES: &[(&str, &[u8])] = &[
    // 256×256 grayscale: a downscaled copy of `camera.png` (the cameraman).
    (
        "camera.png",
        include_bytes!("playground/samples/camera.png"),
    ),
    // 300×200 RGB: a downscaled copy of `coffee.png`; not square, so the page's
    // true-aspect-ratio display is visible.
    (
        "coffee.png",
        include_bytes!("playground/samples/coffee.png"),
    ),
    // 50×50 grayscale: the textbook's black/white boundary (`app1_edge_input.png`).
    ("edge.png", include_bytes!("playground/samples/edge.png")),
];

/// `GET /`: the playground page.
pub async fn index() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        INDEX_HTML,
    )
        .into_response()
}

/// `GET /samples/{name}`: a bundled sample picture (PNG), or 404 `not-found`.
pub async fn sample(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, bytes) = SAMPLES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let known: Vec<&str> = SAMPLES.iter().map(|(n, _)| *n).collect();
        ApiError::new(
            ProblemKind::NotFound,
            format!("no sample named `{name}`; samples: {}", known.join(", ")),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            // The samples are compiled in and never change within one binary.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        *bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_a_png() {
        for (name, bytes) in SAMPLES {
            assert!(name.ends_with(".png"), "{name}");
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        }
    }

    #[test]
    fn the_page_names_only_bundled_samples() {
        for (name, _) in SAMPLES {
            assert!(
                INDEX_HTML.contains(&format!("data-sample=\"{name}\"")),
                "{name}"
            );
        }
    }

    #[test]
    fn the_page_loads_nothing_from_other_origins() {
        for needle in [
            "http://",
            "https://",
            "<script src",
            "stylesheet",
            "@import",
        ] {
            assert!(!INDEX_HTML.contains(needle), "page contains {needle}");
        }
    }
}
