//! Content negotiation and small response helpers shared by the handlers.

use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue};

use crate::error::{ApiError, ProblemKind};

/// Picks the response media type from `Accept` among `offered` (first = default).
///
/// Honours q-values and `type/*`, `*/*`; no `Accept` header means the default.
///
/// # Errors
/// 406 when `Accept` admits none of `offered`.
pub fn negotiate(
    headers: &HeaderMap,
    offered: &[&'static str],
) -> Result<Option<&'static str>, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let mut best: Option<(f32, usize, &'static str)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
            })
            .next()
            .unwrap_or(1.0);
        if q <= 0.0 || media.is_empty() {
            continue;
        }
        for (rank, &o) in offered.iter().enumerate() {
            let matches = media == o
                || media == "*/*"
                || media
                    .strip_suffix("/*")
                    .is_some_and(|t| o.split('/').next() == Some(t));
            // Exact matches beat wildcards at equal q; earlier offers win ties.
            let specificity = if media == o { 0 } else { 1 };
            if matches {
                let key = (q, specificity * offered.len() + rank, o);
                if best.is_none_or(|b| key.0 > b.0 || (key.0 == b.0 && key.1 < b.1)) {
                    best = Some(key);
                }
            }
        }
    }
    match best {
        Some((_, _, o)) => Ok(Some(o)),
        None => Err(ApiError::new(
            ProblemKind::NotAcceptable,
            format!("Accept `{accept}` admits none of: {}", offered.join(", ")),
        )
        .at("/headers/accept")),
    }
}

/// The media type of a request without parameters, lower-cased.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// A stage at least this long (ms) is logged at `info` when it ends, so a long job (a
/// 50 MP photo takes about a second) shows its progress in the logs; shorter ones at
/// `debug`.
pub const SLOW_STAGE_MS: f64 = 250.0;

/// Collects `Server-Timing` stages (`name;dur=ms`, or `name;desc="…";dur=ms`) and logs each
/// as it ends (in the request's span: `request_id`).
#[derive(Debug, Default, Clone)]
pub struct Timings {
    stages: Vec<(&'static str, f64)>,
    /// Descriptions by stage index (the conv stage names the algorithms that ran).
    descs: Vec<(usize, String)>,
}

impl Timings {
    /// Records a stage that started at `since`.
    pub fn record(&mut self, stage: &'static str, since: Instant) {
        self.record_span(stage, since, Instant::now());
    }

    /// Records a stage that ran from `since` to `until`.
    pub fn record_span(&mut self, stage: &'static str, since: Instant, until: Instant) {
        let ms = until.saturating_duration_since(since).as_secs_f64() * 1e3;
        let total: f64 = self.stages.iter().map(|(_, d)| d).sum::<f64>() + ms;
        let (ms_1, total_1) = (format!("{ms:.1}"), format!("{total:.1}"));
        if ms >= SLOW_STAGE_MS {
            tracing::info!(stage, ms = %ms_1, total_ms = %total_1, "stage done");
        } else {
            tracing::debug!(stage, ms = %ms_1, total_ms = %total_1, "stage done");
        }
        self.stages.push((stage, ms));
    }

    /// Records a stage with a description (a token: letters, digits, `_`, `+`).
    pub fn record_described(&mut self, stage: &'static str, since: Instant, desc: String) {
        self.record(stage, since);
        self.describe_last(desc);
    }

    /// Describes the stage recorded last (a token: letters, digits, `_`, `+`).
    pub fn describe_last(&mut self, desc: String) {
        self.descs.push((self.stages.len() - 1, desc));
    }

    /// Runs `f` and records it as `stage`.
    pub fn time<T>(&mut self, stage: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.record(stage, t);
        out
    }

    /// The recorded stages: name and milliseconds.
    pub fn stages(&self) -> &[(&'static str, f64)] {
        &self.stages
    }

    /// The header value, e.g. `parse;dur=0.12, conv;desc="gemm_im2col";dur=3.40`.
    pub fn header(&self) -> HeaderValue {
        let s = self
            .stages
            .iter()
            .enumerate()
            .map(
                |(i, (n, d))| match self.descs.iter().find(|(j, _)| *j == i) {
                    Some((_, desc)) => format!("{n};desc=\"{desc}\";dur={d:.3}"),
                    None => format!("{n};dur={d:.3}"),
                },
            )
            .collect::<Vec<_>>()
            .join(", ");
        HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    const OFFERS: &[&str] = &["application/json", "application/x-npy"];

    #[test]
    fn no_accept_header_means_the_default() {
        assert_eq!(negotiate(&HeaderMap::new(), OFFERS).unwrap(), None);
    }

    #[test]
    fn an_exact_type_beats_a_wildcard() {
        let h = accept("*/*;q=0.9, application/x-npy");
        assert_eq!(negotiate(&h, OFFERS).unwrap(), Some("application/x-npy"));
    }

    #[test]
    fn q_values_are_honoured() {
        let h = accept("application/x-npy;q=0.2, application/json;q=0.8");
        assert_eq!(negotiate(&h, OFFERS).unwrap(), Some("application/json"));
    }

    #[test]
    fn slow_stages_are_logged_at_info_with_the_running_total() {
        use std::sync::{Arc, Mutex};
        use std::time::Duration;
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut t = Timings::default();
            t.record("decode", Instant::now() - Duration::from_millis(600));
            t.record("conv", Instant::now());
            t.record("encode", Instant::now() - Duration::from_millis(300));
        });
        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines[0].contains("stage=\"decode\"") && lines[0].contains("stage done"));
        assert!(lines[1].contains("stage=\"encode\"") && lines[1].contains("total_ms=9"));
    }

    #[test]
    fn nothing_acceptable_is_406() {
        let e = negotiate(&accept("text/html"), OFFERS).unwrap_err();
        assert_eq!(e.status.as_u16(), 406);
    }
}
