//! `responses:` — where stored Responses API responses are kept (`store: true`, the default):
//! in process memory (at most `max_stored`, least recently used dropped first), or in Valkey
//! when `valkey` is configured (each for `ttl`, under `valkey.key_prefix`).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, duration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponses {
    pub max_stored: Option<usize>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsesSettings {
    /// Responses kept in process memory (without Valkey).
    pub max_stored: usize,
    /// How long a response is kept in Valkey.
    pub ttl: Duration,
}

impl Default for ResponsesSettings {
    fn default() -> Self {
        Self { max_stored: 10_000, ttl: Duration::from_secs(30 * 86_400) }
    }
}

pub fn validate(raw: Option<RawResponses>) -> Result<ResponsesSettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let defaults = ResponsesSettings::default();
    let settings = ResponsesSettings {
        max_stored: raw.max_stored.unwrap_or(defaults.max_stored),
        ttl: raw.ttl.unwrap_or(defaults.ttl),
    };
    if settings.ttl < Duration::from_secs(1) {
        return Err(ConfigError("responses.ttl: must be at least 1s".into()));
    }
    Ok(settings)
}
