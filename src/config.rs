//! Settings: `config/default.toml` (embedded) → optional file → `CONVD_*` env → CLI flags.
//!
//! The CLI is generated from the default file itself: every key `name` becomes a flag
//! `--name` with env `CONVD_NAME`, so a setting can never be added without its overrides.
//! Raw values are merged as TOML, then deserialized once into typed, validated [`Settings`].

use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::Deserialize;
use toml::{Table, Value};

/// The defaults, compiled in so that the binary runs with no files around it.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// All settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listening and logging.
    pub server: ServerSettings,
    /// The compute pool.
    pub compute: ComputeSettings,
    /// Request limits.
    pub limits: Limits,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `host:port`.
    pub bind: String,
    /// EnvFilter directive.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Grace period for in-flight requests at shutdown, seconds.
    pub shutdown_grace_secs: u64,
    /// Bearer keys accepted on the API; empty = no authentication.
    pub api_keys: Vec<ApiKey>,
    /// Whether `GET /metrics` needs a key too (when keys are configured).
    pub metrics_require_key: bool,
    /// Origins allowed by CORS: `["*"]` = any, `[]` = none, else exact origins.
    pub cors_allow_origins: Vec<String>,
    /// Open connections at most (also capped by the file limit).
    pub max_connections: usize,
    /// Seconds to send a complete request head.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay idle between requests.
    pub keepalive_idle_secs: u64,
    /// Seconds every request body gets before the minimum rate applies.
    pub body_read_timeout_secs: u64,
    /// Bytes per second a request body must average after `body_read_timeout_secs`.
    pub body_min_bytes_per_sec: u64,
}

impl ServerSettings {
    /// The connection limits of [`crate::serve`], before the file-limit cap.
    pub fn conn_limits(&self) -> crate::serve::ConnLimits {
        crate::serve::ConnLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            keepalive_idle: Duration::from_secs(self.keepalive_idle_secs),
        }
    }
}

/// An API key. Its `Debug` form is redacted so that settings can be logged safely.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Shortest API key accepted: a guessable key is worse than none, since it looks safe.
pub const MIN_API_KEY_LEN: usize = 16;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[compute]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSettings {
    /// Rayon threads; 0 = available parallelism.
    pub threads: usize,
    /// Jobs running at once; 0 = `threads`.
    pub max_running_jobs: usize,
    /// Jobs waiting beyond the running ones.
    pub queue_depth: usize,
    /// Per-request deadline, milliseconds.
    pub deadline_ms: u64,
    /// Retry-After seconds on overload.
    pub retry_after_secs: u64,
    /// Bytes of large buffers kept for reuse between requests; 0 = none.
    pub buffer_cache_bytes: u64,
    /// Seconds a cached buffer may stay unused before it is freed.
    pub buffer_cache_idle_secs: u64,
    /// Pin each compute thread to its own CPU when the process may run on exactly
    /// `threads` CPUs (see `worker::affinity`).
    pub pin_threads: bool,
}

impl ComputeSettings {
    /// Threads with 0 resolved to the number of cores.
    pub fn resolved_threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        }
    }

    /// Running jobs with 0 resolved to the thread count.
    pub fn resolved_running_jobs(&self) -> usize {
        if self.max_running_jobs == 0 {
            self.resolved_threads()
        } else {
            self.max_running_jobs
        }
    }

    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// `[limits]`: every check runs before allocation or queueing.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Request body bytes.
    pub max_body_bytes: u64,
    /// Bytes of request bodies in flight at once, over all requests.
    pub max_inflight_body_bytes: u64,
    /// Numbers in one input tensor.
    pub max_tensor_elements: u64,
    /// Elements of any layer's output or padded input.
    pub max_output_elements: u64,
    /// Total multiply-accumulates per request.
    pub max_macs: u64,
    /// Kernel height or width.
    pub max_kernel_side: u64,
    /// Channels in or out of a layer.
    pub max_channels: u64,
    /// Layers in a stack.
    pub max_layers: u64,
    /// Image parts per request.
    pub max_images: u64,
    /// Pixels per image.
    pub max_image_pixels: u64,
    /// Image width or height.
    pub max_image_side: u32,
    /// Bytes one image job with a picture output may hold at its peak, as its plan
    /// estimates them before decoding (`crate::pipeline::Estimate`).
    pub max_job_bytes: u64,
}

/// Errors while loading settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path given.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong type.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Settings from the embedded defaults only (tests start from these).
pub fn defaults() -> Settings {
    load_from(Table::new(), None).expect("embedded defaults are valid")
}

fn default_table() -> Table {
    DEFAULT_TOML.parse().expect("embedded default.toml parses")
}

/// The command line: `convd [--config FILE] [--<key> VALUE]...`, one flag per setting.
pub fn command() -> Command {
    let mut cmd = Command::new("convd")
        .about("HTTP microservice for exact, fast 2-D convolution on images and tensors")
        .version(env!("CARGO_PKG_VERSION"))
        .arg(
            Arg::new("config")
                .long("config")
                .env("CONVD_CONFIG")
                .help("TOML file overriding config/default.toml"),
        )
        .subcommand(Command::new("healthcheck").about(
            "GET /healthz on the configured port of localhost; exit 0 if healthy (for container HEALTHCHECK)",
        ));
    for (section, table) in default_table() {
        let Value::Table(table) = table else { continue };
        for (key, value) in table {
            cmd = cmd.arg(
                Arg::new(key.clone())
                    .long(key.replace('_', "-"))
                    .env(format!("CONVD_{}", key.to_ascii_uppercase()))
                    .action(ArgAction::Set)
                    .help(format!("[{section}] {key} (default {value})")),
            );
        }
    }
    cmd
}

/// Loads settings from parsed command-line matches (which include the environment).
///
/// # Errors
/// Unreadable file, bad TOML, or a value of the wrong type.
pub fn load(matches: &ArgMatches) -> Result<Settings, ConfigError> {
    let mut overrides = Table::new();
    let defaults = default_table();
    for (section, table) in &defaults {
        let Value::Table(table) = table else { continue };
        for (key, default) in table {
            if let Some(raw) = matches.get_one::<String>(key) {
                let v = typed_value(raw, default).map_err(|e| {
                    ConfigError::Invalid(format!("{key} (CONVD_{}): {e}", key.to_ascii_uppercase()))
                })?;
                section_mut(&mut overrides, section).insert(key.clone(), v);
            }
        }
    }
    let file = matches.get_one::<String>("config").cloned();
    load_from(overrides, file.as_deref())
}

fn section_mut<'a>(t: &'a mut Table, section: &str) -> &'a mut Table {
    let entry = t
        .entry(section.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    match entry {
        Value::Table(t) => t,
        _ => unreachable!("sections are tables"),
    }
}

fn typed_value(raw: &str, default: &Value) -> Result<Value, String> {
    Ok(match default {
        Value::Integer(_) => Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not an integer"))?,
        ),
        Value::Boolean(_) => Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not true/false"))?,
        ),
        Value::Float(_) => Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not a number"))?,
        ),
        // Lists (`api_keys`, `cors_allow_origins`) come comma-separated from env and flags:
        // `CONVD_API_KEYS=key1,key2`. Blank items are dropped, so `""` means an empty list.
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    })
}

fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn load_from(overrides: Table, file: Option<&str>) -> Result<Settings, ConfigError> {
    let mut table = default_table();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        let t: Table = text
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("{path}: {e}")))?;
        merge(&mut table, t);
    }
    merge(&mut table, overrides);
    let settings: Settings = Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
    settings.bind_is_valid()?;
    settings.server.log_level_is_valid()?;
    settings.server.keys_are_valid()?;
    settings.server.origins_are_valid()?;
    settings.budgets_are_valid()?;
    Ok(settings)
}

impl Settings {
    /// Connection and body limits and the deadline are positive, and one body of
    /// `max_body_bytes` fits the bytes in flight (else the largest requests could never be
    /// read).
    fn budgets_are_valid(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        for (name, v) in [
            ("max_connections", s.max_connections as u64),
            ("header_read_timeout_secs", s.header_read_timeout_secs),
            ("keepalive_idle_secs", s.keepalive_idle_secs),
            ("body_read_timeout_secs", s.body_read_timeout_secs),
            ("body_min_bytes_per_sec", s.body_min_bytes_per_sec),
            // 0 would refuse every body, or stop every computation as it starts.
            ("max_body_bytes", self.limits.max_body_bytes),
            ("deadline_ms", self.compute.deadline_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        let l = &self.limits;
        if l.max_inflight_body_bytes < l.max_body_bytes {
            return Err(ConfigError::Invalid(format!(
                "max_inflight_body_bytes ({}) must be at least max_body_bytes ({})",
                l.max_inflight_body_bytes, l.max_body_bytes
            )));
        }
        Ok(())
    }

    fn bind_is_valid(&self) -> Result<(), ConfigError> {
        if !self.server.bind.contains(':') {
            return Err(ConfigError::Invalid(format!(
                "bind `{}` must be host:port",
                self.server.bind
            )));
        }
        Ok(())
    }
}

impl ServerSettings {
    /// `log_level` is an `EnvFilter` directive list, checked at start rather than
    /// ignored in part when logging begins.
    fn log_level_is_valid(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map(drop)
            .map_err(|e| ConfigError::Invalid(format!("log_level `{}`: {e}", self.log_level)))
    }

    /// Keys are bearer tokens (RFC 6750 `token68` characters) of at least
    /// [`MIN_API_KEY_LEN`] characters, so that a typo like a quoted TOML list in an
    /// environment variable is refused at start instead of becoming a key.
    fn keys_are_valid(&self) -> Result<(), ConfigError> {
        for (i, ApiKey(k)) in self.api_keys.iter().enumerate() {
            let token68 = k
                .trim_end_matches('=')
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
            if k.len() < MIN_API_KEY_LEN || !token68 {
                return Err(ConfigError::Invalid(format!(
                    "api_keys[{i}] must be at least {MIN_API_KEY_LEN} characters of A-Z a-z 0-9 - . _ ~ + / (then optional =)"
                )));
            }
        }
        Ok(())
    }

    /// `["*"]`, or origins `scheme://host[:port]` (no path, no trailing slash).
    fn origins_are_valid(&self) -> Result<(), ConfigError> {
        let o = &self.cors_allow_origins;
        if o.iter().any(|x| x == "*") {
            if o.len() > 1 {
                return Err(ConfigError::Invalid(
                    "cors_allow_origins: \"*\" must stand alone".into(),
                ));
            }
            return Ok(());
        }
        for origin in o {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                !r.is_empty() && !r.contains('/') && r.bytes().all(|b| b.is_ascii_graphic())
            });
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "cors_allow_origins: `{origin}` is not an origin like https://example.com or http://localhost:3000"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_listen_on_8080() {
        let s = defaults();
        assert_eq!(s.server.bind, "0.0.0.0:8080");
        assert!(s.limits.max_body_bytes > 0);
    }

    #[test]
    fn every_key_has_a_flag_and_an_env_variable() {
        let m = command()
            .try_get_matches_from([
                "convd",
                "--bind",
                "127.0.0.1:9",
                "--max-macs",
                "5",
                "--threads",
                "3",
            ])
            .unwrap();
        let s = load(&m).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:9");
        assert_eq!(s.limits.max_macs, 5);
        assert_eq!(s.compute.threads, 3);
    }

    #[test]
    fn list_settings_come_comma_separated_from_flags() {
        let m = command()
            .try_get_matches_from([
                "convd",
                "--api-keys",
                "0123456789abcdef, fedcba9876543210,",
                "--cors-allow-origins",
                "https://a.example,http://localhost:3000",
            ])
            .unwrap();
        let s = load(&m).unwrap();
        assert_eq!(
            s.server.api_keys,
            [
                ApiKey("0123456789abcdef".into()),
                ApiKey("fedcba9876543210".into())
            ]
        );
        assert_eq!(
            s.server.cors_allow_origins,
            ["https://a.example", "http://localhost:3000"]
        );
        assert!(!format!("{:?}", s.server).contains("0123456789abcdef"));
    }

    #[test]
    fn short_or_malformed_keys_and_origins_are_refused() {
        for (flag, value) in [
            ("--api-keys", "short"),
            ("--api-keys", "[\"0123456789abcdef\"]"),
            ("--cors-allow-origins", "example.com"),
            ("--cors-allow-origins", "https://a.example/"),
            ("--cors-allow-origins", "*,https://a.example"),
        ] {
            let m = command()
                .try_get_matches_from(["convd", flag, value])
                .unwrap();
            assert!(load(&m).is_err(), "{flag} {value}");
        }
    }

    #[test]
    fn defaults_have_no_keys_and_allow_any_origin() {
        let s = defaults();
        assert!(s.server.api_keys.is_empty());
        assert!(!s.server.metrics_require_key);
        assert_eq!(s.server.cors_allow_origins, ["*"]);
    }

    #[test]
    fn a_bad_value_is_refused_at_start_naming_its_key() {
        for (arg, key) in [
            ("--max-macs=-1", "max_macs"),
            ("--log-format=xml", "log_format"),
            ("--log-level=info,x=[", "log_level"),
            ("--max-body-bytes=0", "max_body_bytes"),
            ("--deadline-ms=0", "deadline_ms"),
            ("--max-image-side=5000000000", "max_image_side"),
            ("--queue-depth=-3", "queue_depth"),
            ("--threads=many", "threads"),
            ("--bind=nope", "bind"),
            ("--keepalive-idle-secs=0", "keepalive_idle_secs"),
        ] {
            let m = command().try_get_matches_from(["convd", arg]).unwrap();
            let e = load(&m)
                .err()
                .unwrap_or_else(|| panic!("{arg} was accepted"));
            assert!(e.to_string().contains(key), "{arg}: {e}");
        }
    }

    #[test]
    fn a_non_integer_override_is_refused() {
        let m = command()
            .try_get_matches_from(["convd", "--threads", "many"])
            .unwrap();
        assert!(load(&m).is_err());
    }
}
