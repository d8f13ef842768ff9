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
    /// Other names for model groups (e.g. OpenAI names for internal models).
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Default breaker settings; a deployment may override them.
    pub circuit_breaker: Option<RawBreaker>,
    /// Default retry settings; a model may override them.
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// Absent = single replica, in-process state only.
    pub valkey: Option<RawValkey>,
    /// Usage events to OpenMeter (see `config::metering`).
    pub metering: Option<super::metering::RawMetering>,
    /// One row per request in PostgreSQL (see `config::request_log`).
    pub request_log: Option<super::request_log::RawRequestLog>,
    /// Response caching; absent = off.
    pub cache: Option<super::cache::RawCache>,
    /// Stored Responses API responses (see `config::responses`).
    pub responses: Option<super::responses::RawResponses>,
    /// Subscription tiers (the built-in free / pro / enterprise, replaced by name).
    #[serde(default)]
    pub tiers: BTreeMap<String, super::limits::RawTier>,
    /// How limits behave across replicas and without Valkey.
    pub limits: Option<super::limits::RawLimitSettings>,
    /// The admin API's credential; absent = no admin API.
    pub admin: Option<super::limits::RawAdmin>,
    /// Which credentials `/v1` accepts (keys, OIDC JWTs, or both).
    pub auth: Option<super::limits::RawAuth>,
    /// The currency of prices, costs and money budgets.
    pub spend: Option<crate::config::price::RawSpend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValkey {
    /// `redis://host:port/db` (or `rediss://`); for a cluster, any seed node.
    pub url: Option<String>,
    /// More cluster seed nodes.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub cluster: bool,
    /// Environment variable holding the password (kept out of the URL).
    pub password_env: Option<String>,
    /// Per-command timeout (default 250ms).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub timeout: Option<Duration>,
    /// Before every key name (`<prefix>:lg:...`); absent or empty: none.
    pub key_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Traces to an OpenTelemetry collector; the standard `OTEL_*` variables also enable it.
    pub otlp: Option<RawOtlp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// `http://collector:4318` (http) or `http://collector:4317` (grpc).
    pub endpoint: String,
    /// `http` (protobuf over HTTP, default) or `grpc`.
    pub protocol: Option<String>,
    /// Extra headers (e.g. an auth header for a hosted collector); values may be `${ENV}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub service_name: Option<String>,
    /// Attributes of the resource (the gateway's process) on every export, beside `service.name`:
    /// `deployment.environment.name`, `k8s.namespace.name`, ... (over `OTEL_RESOURCE_ATTRIBUTES`).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// How long spans wait in the batch before export (default 5s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub batch_delay: Option<Duration>,
    /// Spans per export request (default 2048): a serving thread's batch is sent as soon as it
    /// holds this many.
    pub max_export_batch_size: Option<usize>,
    /// Spans at most in complete batches waiting to be sent (default 32768, or 16 batches when
    /// more); beyond it a batch is dropped and counted.
    pub max_queue_size: Option<usize>,
    /// One export, from connecting to the collector's answer (default 10s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub export_timeout: Option<Duration>,
    /// The share of requests traced (0 to 1, default 1), unless the client's `traceparent`
    /// decided: a sampled parent is always continued, an unsampled one never.
    pub sample_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Label token counters with the team (off by default: teams may be many).
    #[serde(default)]
    pub team_label: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub shutdown_grace: Option<Duration>,
    /// A client's request head must arrive within this (also how long an idle connection stays).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub header_read_timeout: Option<Duration>,
    /// `info`, `debug`, ... or a full tracing filter.
    pub log_level: Option<String>,
    /// Serving threads (one event loop each); default: the CPUs the process may use.
    pub threads: Option<usize>,
    /// A request body must arrive in full within this of its head (default 30s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub body_read_timeout: Option<Duration>,
    /// A connection with no new request for this long is closed (default 120s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub idle_timeout: Option<Duration>,
    /// Requests in flight at once, over all clients; past it, 503 with Retry-After (default: no cap).
    pub max_in_flight: Option<usize>,
    /// A second listener for /metrics and /sessions (then not on `listen`); /health and /ready
    /// are on both.
    pub management_listen: Option<String>,
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
    /// The key's own limits, on top of its team's.
    #[serde(default)]
    pub limits: super::limits::Limits,
    /// Narrows the team's models for this key (globs).
    pub models: Option<Vec<String>>,
    /// Unix seconds or an RFC 3339 UTC time; the key is refused from then on.
    pub expires_at: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    /// Absent = the tier's models (none without a tier).
    pub models: Option<Vec<String>>,
    /// `free`, `pro`, `enterprise` or a configured tier: default limits, models and routing.
    pub tier: Option<String>,
    #[serde(default)]
    pub limits: super::limits::Limits,
    /// Limits of this team's use of one model (client-facing name), on top of the team's.
    #[serde(default)]
    pub model_limits: BTreeMap<String, super::limits::Limits>,
    /// Requests of this team for the key model go to the value model instead.
    #[serde(default)]
    pub model_overrides: BTreeMap<String, String>,
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
    /// Overrides the vendor's `responses_api`.
    pub responses_api: Option<bool>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// What one event of a streamed answer may hold (its data, its name, the line being read).
    pub max_event_bytes: Option<u64>,
    pub health_check: Option<RawHealthCheck>,

    // dialects `bedrock` and `vertex`: where the platform serves.
    /// Bedrock's AWS region (`us-east-1`).
    pub region: Option<String>,
    /// Vertex AI's Google Cloud project.
    pub project: Option<String>,
    /// Vertex AI's location (`us-central1`, or `global`).
    pub location: Option<String>,
    /// Bedrock's API for Claude models: `auto` (default), `converse` or `invoke`.
    pub api: Option<String>,

    // dialect `cli` only: a pool of command-line model client sessions.
    /// Program and arguments, run directly (never through a shell).
    pub command: Option<Vec<String>>,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables of the gateway's environment the command gets as they are (e.g. a CLI's own
    /// API key).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Whether the command inherits the gateway's environment, less its secrets (default false).
    pub inherit_env: Option<bool>,
    /// Where each session's own working directory is made (default: the system temp dir).
    pub cwd: Option<String>,
    /// Whose requests a session serves: `team` (default) or `key` (team and key).
    pub partition_by: Option<String>,
    /// A session bound to a team (or key) is closed after this long without a request of it
    /// (default 5m).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub partition_idle_timeout: Option<Duration>,
    /// `claude-stream-json` (default) | `plain-text`.
    pub protocol: Option<String>,
    /// Sessions kept warm (default 2; `LLM_POOL_SIZE` overrides).
    pub pool_size: Option<u32>,
    /// Extra sessions cold-started when every warm one is busy (default: `pool_size`, at least 1).
    pub max_overflow: Option<u32>,
    /// Answer one prompt before a session counts as warm (default true for stream-json).
    pub warm_up: Option<bool>,
    /// Idle sessions are pinged this often (default 300s; 0 = never; `LLM_KEEP_ALIVE_INTERVAL`
    /// overrides, in seconds).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub keep_alive_interval: Option<Duration>,
    /// What the warm-up and keep-alive pings send.
    pub keep_alive_prompt: Option<String>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub ping_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub startup_timeout: Option<Duration>,
    /// A session is replaced after serving this many requests.
    pub max_requests_per_session: Option<u32>,
    /// First delay before restarting after a failed start; doubles up to `max_restart_backoff`.
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub restart_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub max_restart_backoff: Option<Duration>,
    /// Longest output line accepted from the command.
    pub max_line_bytes: Option<u64>,
    /// Most output accepted from the command for one request.
    pub max_output_bytes: Option<u64>,
}

impl RawProvider {
    /// The `cli`-only fields that are set, for rejecting them on other dialects.
    pub fn cli_fields_set(&self) -> Vec<&'static str> {
        let set = [
            ("command", self.command.is_some()),
            ("env", !self.env.is_empty()),
            ("pass_env", !self.pass_env.is_empty()),
            ("inherit_env", self.inherit_env.is_some()),
            ("cwd", self.cwd.is_some()),
            ("partition_by", self.partition_by.is_some()),
            ("partition_idle_timeout", self.partition_idle_timeout.is_some()),
            ("protocol", self.protocol.is_some()),
            ("pool_size", self.pool_size.is_some()),
            ("max_overflow", self.max_overflow.is_some()),
            ("warm_up", self.warm_up.is_some()),
            ("keep_alive_interval", self.keep_alive_interval.is_some()),
            ("keep_alive_prompt", self.keep_alive_prompt.is_some()),
            ("ping_timeout", self.ping_timeout.is_some()),
            ("startup_timeout", self.startup_timeout.is_some()),
            ("max_requests_per_session", self.max_requests_per_session.is_some()),
            ("restart_backoff", self.restart_backoff.is_some()),
            ("max_restart_backoff", self.max_restart_backoff.is_some()),
            ("max_line_bytes", self.max_line_bytes.is_some()),
            ("max_output_bytes", self.max_output_bytes.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect()
    }
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
    /// weighted (default) | least-busy | latency | priority
    pub strategy: Option<String>,
    /// Groups to try, in order, when every deployment of this one failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Groups to use when the prompt does not fit this group's context window.
    #[serde(default)]
    pub context_window_fallbacks: Vec<String>,
    /// Groups to use when an upstream refuses the content (content filter / policy).
    #[serde(default)]
    pub content_policy_fallbacks: Vec<String>,
    pub retry: Option<RawRetry>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    /// Open when this share of the last `window` outcomes failed (0 < ratio <= 1).
    pub failure_ratio: Option<f64>,
    pub window: Option<u32>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub open_for: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub max_open_for: Option<Duration>,
    pub half_open_probes: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Upstream attempts per request, across deployments and fallbacks (first try included).
    pub max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub max_backoff: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Below the provider's base URL; default `/models`.
    pub path: Option<String>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    /// The name the upstream expects; defaults to the client-facing name.
    pub model: Option<String>,
    /// Relative share of traffic within its priority tier (default 1; 0 = only when alone).
    pub weight: Option<f64>,
    /// Tier: lower tiers are used first, higher ones only when the lower are unavailable.
    pub priority: Option<u32>,
    /// Overrides the catalogue's context window for this deployment.
    pub context_window: Option<u64>,
    pub circuit_breaker: Option<RawBreaker>,
    /// Overrides the catalogue's price (per million tokens, in `spend.currency`).
    pub price: Option<crate::config::price::RawPrice>,
    /// Costs nothing (exclusive with `price`).
    pub free: Option<bool>,
}
