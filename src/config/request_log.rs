//! The `request_log:` section: one row per finished request in PostgreSQL, through a durable
//! on-disk outbox. Raw structs as written, then validated settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::metering::{ByteSize, Fsync, WhenFull};
use super::{ConfigError, Env, Secret, duration};

pub const DEFAULT_URL_ENV: &str = "REQUEST_LOG_DATABASE_URL";
pub const DEFAULT_OUTBOX_DIR: &str = "/var/lib/llm-gateway/request-log";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestLog {
    pub postgres: Option<RawPostgres>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// Default true when the section is present.
    pub enabled: Option<bool>,
    /// The environment variable holding the connection URL; default `REQUEST_LOG_DATABASE_URL`.
    pub url_env: Option<String>,
    /// Default `llm_gateway`.
    pub schema: Option<String>,
    /// Whole days kept; older day partitions are dropped. Default 30.
    pub retention_days: Option<u32>,
    /// `metadata` (default) or `full` (adds the request and response bodies).
    pub capture: Option<String>,
    /// Regular expressions; each match in a body is replaced by `[REDACTED]` before anything is
    /// written (to the outbox or to PostgreSQL).
    #[serde(default)]
    pub redact: Vec<String>,
    /// Bytes kept of each body under `capture: full` (default 64KiB).
    pub max_body_bytes: Option<ByteSize>,
    /// Rows per `COPY` (default 1000).
    pub batch_max: Option<usize>,
    /// The longest a row waits for a fuller batch (default 1s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub flush_interval: Option<Duration>,
    /// Holds one outbox directory per replica (`<outbox_dir>/<replica>`).
    pub outbox_dir: Option<String>,
    /// The outbox's bound on disk (default 1GiB).
    pub max_outbox_bytes: Option<ByteSize>,
    /// `drop` (default: rows that do not fit are dropped and counted) or `reject` (503).
    pub when_full: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Capture {
    Metadata,
    Full { redact: Vec<regex::Regex>, max_body_bytes: usize },
}

#[derive(Debug, Clone)]
pub struct RequestLogSettings {
    pub url: Secret,
    pub schema: String,
    pub retention_days: u32,
    pub capture: Capture,
    pub batch_max: usize,
    pub flush_interval: Duration,
    pub outbox_dir: PathBuf,
    /// This replica's directory name inside `outbox_dir` (`POD_NAME`, else the hostname).
    pub replica: String,
    pub segment_bytes: u64,
    pub max_outbox_bytes: u64,
    pub when_full: WhenFull,
    pub fsync: Fsync,
    pub queue_capacity: usize,
}

impl RequestLogSettings {
    pub fn replica_dir(&self) -> PathBuf {
        self.outbox_dir.join(&self.replica)
    }
}

/// `None` when absent or `enabled: false`. `LLM_GATEWAY_REQUEST_LOG_DIR` overrides `outbox_dir`.
pub fn validate(raw: Option<RawRequestLog>, env: &dyn Env) -> Result<Option<RequestLogSettings>, ConfigError> {
    let Some(raw) = raw.and_then(|r| r.postgres) else { return Ok(None) };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let url_env = raw.url_env.unwrap_or_else(|| DEFAULT_URL_ENV.into());
    let url = postgres_url(&url_env, env)?;
    let schema = schema_name(raw.schema)?;
    let retention_days = raw.retention_days.unwrap_or(30);
    if retention_days == 0 {
        return Err(err("retention_days", "must be at least 1".into()));
    }
    let capture = capture_mode(raw.capture.as_deref(), &raw.redact, raw.max_body_bytes.map(|b| b.0))?;
    let batch_max = raw.batch_max.unwrap_or(1000);
    if !(1..=100_000).contains(&batch_max) {
        return Err(err("batch_max", "must be between 1 and 100000".into()));
    }
    let flush_interval = raw.flush_interval.unwrap_or(Duration::from_secs(1));
    let outbox_dir = PathBuf::from(
        env.var("LLM_GATEWAY_REQUEST_LOG_DIR").or(raw.outbox_dir).unwrap_or_else(|| DEFAULT_OUTBOX_DIR.into()),
    );
    let segment_bytes = 16 << 20;
    let max_outbox_bytes = raw.max_outbox_bytes.map(|b| b.0).unwrap_or(1 << 30);
    if max_outbox_bytes < 2 * segment_bytes {
        return Err(err("max_outbox_bytes", format!("must be at least twice the segment size ({segment_bytes})")));
    }
    let when_full = match raw.when_full.as_deref().unwrap_or("drop") {
        "drop" => WhenFull::Drop,
        "reject" => WhenFull::Reject,
        other => return Err(err("when_full", format!("unknown value {other:?} (expected drop or reject)"))),
    };
    let replica = replica_name(env);
    Ok(Some(RequestLogSettings {
        url: Secret::new(url),
        schema,
        retention_days,
        capture,
        batch_max,
        flush_interval,
        outbox_dir,
        replica,
        segment_bytes,
        max_outbox_bytes,
        when_full,
        fsync: Fsync::Interval(Duration::from_secs(1)),
        queue_capacity: 65_536,
    }))
}

/// An error naming the field under `request_log.postgres.`.
fn err(field: &str, msg: String) -> ConfigError {
    ConfigError(format!("request_log.postgres.{field}: {msg}"))
}

/// The PostgreSQL URL from the variable `url_env` names: set, parseable, and not asking for TLS.
fn postgres_url(url_env: &str, env: &dyn Env) -> Result<String, ConfigError> {
    let url = env.var(url_env).ok_or_else(|| err("url_env", format!("environment variable {url_env} is not set")))?;
    match url.parse::<tokio_postgres::Config>() {
        Err(e) => return Err(err("url_env", format!("{url_env} is not a valid PostgreSQL URL: {e}"))),
        Ok(c) if c.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
            return Err(err(
                "url_env",
                format!(
                    "{url_env} asks for sslmode=require, but the gateway connects without TLS (use disable or prefer)"
                ),
            ));
        }
        Ok(_) => {}
    }
    Ok(url)
}

/// The schema: a lowercase SQL identifier of at most 48 characters (default `llm_gateway`).
fn schema_name(schema: Option<String>) -> Result<String, ConfigError> {
    let schema = schema.unwrap_or_else(|| "llm_gateway".into());
    let identifier = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.len() <= 48
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !identifier(&schema) {
        return Err(err("schema", format!("{schema:?} must be a lowercase SQL identifier ([a-z_][a-z0-9_]*)")));
    }
    Ok(schema)
}

/// `capture`: metadata only (no `redact` allowed), or full bodies with the redaction patterns.
fn capture_mode(
    capture: Option<&str>,
    patterns: &[String],
    max_body_bytes: Option<u64>,
) -> Result<Capture, ConfigError> {
    let mut redact = Vec::with_capacity(patterns.len());
    for (i, pattern) in patterns.iter().enumerate() {
        redact.push(regex::Regex::new(pattern).map_err(|e| err(&format!("redact[{i}]"), e.to_string()))?);
    }
    match capture.unwrap_or("metadata") {
        "metadata" if redact.is_empty() => Ok(Capture::Metadata),
        "metadata" => Err(err("redact", "applies only with capture: full".into())),
        "full" => {
            let max = max_body_bytes.unwrap_or(64 << 10);
            Ok(Capture::Full { redact, max_body_bytes: usize::try_from(max).unwrap_or(usize::MAX) })
        }
        other => Err(err("capture", format!("unknown value {other:?} (expected metadata or full)"))),
    }
}

/// This replica's name as one path component: `POD_NAME`, else `HOSTNAME`, else `localhost`.
fn replica_name(env: &dyn Env) -> String {
    env.var("POD_NAME")
        .or_else(|| env.var("HOSTNAME"))
        .unwrap_or_else(|| "localhost".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(yaml: &str, url: &str) -> Result<Option<RequestLogSettings>, String> {
        let raw: RawRequestLog = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let env: HashMap<&str, &str> = [("REQUEST_LOG_DATABASE_URL", url), ("POD_NAME", "gw-0")].into_iter().collect();
        validate(Some(raw), &env).map_err(|e| e.0)
    }

    #[test]
    fn defaults_and_errors_that_name_the_field() {
        let s = settings("postgres: {}\n", "postgresql://gw@db:5432/app").unwrap().unwrap();
        assert_eq!((s.schema.as_str(), s.retention_days, s.batch_max), ("llm_gateway", 30, 1000));
        assert!(matches!(s.capture, Capture::Metadata) && s.when_full == WhenFull::Drop);
        assert_eq!(s.replica_dir(), PathBuf::from("/var/lib/llm-gateway/request-log/gw-0"));
        assert!(settings("postgres: { enabled: false }\n", "").unwrap().is_none());
        let e = settings("postgres: {}\n", "postgresql://gw@db/app?sslmode=require").unwrap_err();
        assert!(e.contains("request_log.postgres.url_env") && e.contains("sslmode=require"), "{e}");
        let e = settings("postgres: { schema: 'x; drop' }\n", "postgresql://gw@db/app").unwrap_err();
        assert!(e.contains("request_log.postgres.schema"), "{e}");
        let e = settings("postgres: { capture: full, redact: ['('] }\n", "postgresql://gw@db/app").unwrap_err();
        assert!(e.contains("request_log.postgres.redact[0]"), "{e}");
    }
}
