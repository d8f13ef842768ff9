//! The config file as written: strict serde structs (unknown fields are errors with their path).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub teams: BTreeMap<String, RawTeam>,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    /// Provider that serves every model name not listed under `models`.
    pub default_backend: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub shutdown_grace: Option<Duration>,
    /// `info`, `debug`, ... or a full tracing filter.
    pub log_level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    pub key_env: Option<String>,
    pub team: String,
    /// A non-secret name for logs; defaults to a prefix of the key's hash.
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    #[serde(default)]
    pub models: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub vendor: Option<String>,
    pub dialect: Option<String>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub auth: Option<String>,
    pub auth_header: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    pub stream_usage: Option<String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub connect: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub first_byte: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub idle: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub total: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub deployments: Vec<RawDeployment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    /// The name the upstream expects; defaults to the client-facing name.
    pub model: Option<String>,
}
