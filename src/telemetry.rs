//! Logging: one structured line per request (from the trace middleware), text or JSON.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, ServerSettings};

/// Installs the global subscriber. `RUST_LOG` wins over the configured level.
pub fn init(s: &ServerSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&s.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match s.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
