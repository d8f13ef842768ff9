//! Configuration: the YAML file (strict, see `raw`), the original service's environment
//! variables as an overlay, secrets by reference, all validated into immutable runtime types.

pub mod cache;
pub mod cli;
pub mod cloud;
pub mod duration;
pub mod limits;
pub mod metering;
mod keys;
mod models;
mod otlp;
pub mod price;
pub mod raw;
pub mod request_log;
pub mod responses;
mod server;
mod valkey;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::providers::{self, ModelInfo};
pub use cli::{CliProtocol, CliSpec};
pub(crate) use keys::parse_sha256_hex;
pub use keys::{KeySpec, TeamPolicy, glob_match, key_id, sha256};
use otlp::otlp_settings;
pub use otlp::{DEFAULT_MAX_BATCH_SPANS, DEFAULT_MAX_QUEUE_SPANS, OtlpProtocol, OtlpSettings, TelemetrySettings};
use raw::{RawConfig, RawProvider};
pub use server::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT,
    ServerSettings,
};
use valkey::valkey_settings;
pub use valkey::{ValkeySettings, redact_url};

/// What one stream event may hold by default (`providers.<name>.max_event_bytes`).
pub use crate::api::sse::DEFAULT_MAX_EVENT_BYTES;

/// A secret value: never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The validated, immutable configuration the gateway runs on.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub keys: Vec<KeySpec>,
    pub teams: BTreeMap<String, TeamPolicy>,
    pub providers: BTreeMap<String, Arc<ProviderSpec>>,
    pub models: BTreeMap<String, ModelSpec>,
    /// Serves every model name not under `models` (config `default_backend` or `LLM_BACKEND`).
    pub default_backend: Option<Arc<ProviderSpec>>,
    /// Alias → model group name.
    pub aliases: BTreeMap<String, String>,
    pub telemetry: TelemetrySettings,
    /// Shared state for replicas; `None` = in-process only.
    pub valkey: Option<ValkeySettings>,
    /// Usage events to OpenMeter (`None`: metering off).
    pub metering: Option<metering::MeteringSettings>,
    /// One row per finished request in PostgreSQL (`None`: off).
    pub request_log: Option<request_log::RequestLogSettings>,
    /// Response caching (exact and semantic); `None` = off.
    pub cache: Option<cache::CacheSettings>,
    /// Where stored Responses API responses are kept.
    pub responses: responses::ResponsesSettings,
    /// Subscription tiers by name (built-in free / pro / enterprise unless configured).
    pub tiers: BTreeMap<String, limits::Tier>,
    pub limits: limits::LimitSettings,
    /// `None` = no admin API.
    pub admin: Option<limits::AdminSettings>,
    pub auth: limits::AuthSettings,
    pub spend: crate::config::price::SpendSettings,
    /// Problems that do not stop the gateway (a secret's variable unset, ...): logged at start.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    /// Anthropic's Messages API (`{base_url}/v1/messages`, `x-api-key`, `anthropic-version`).
    Anthropic,
    Mock,
    /// A pool of command-line model client sessions (see `cli`).
    Cli,
    /// The Gemini API (`generateContent`, an `x-goog-api-key`).
    Gemini,
    /// Amazon Bedrock Converse (SigV4 or a Bedrock API key).
    Bedrock,
    /// Google Vertex AI (`generateContent` under a project and location, OAuth2).
    Vertex,
}

impl Dialect {
    /// A cloud platform's own API (`upstream::cloud`): it builds its own paths and credentials.
    pub fn is_cloud(self) -> bool {
        matches!(self, Self::Gemini | Self::Bedrock | Self::Vertex)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Ask with `stream_options.include_usage`.
    StreamOptions,
    /// The upstream sends usage without being asked.
    Always,
    /// The upstream never reports usage in streams.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStyle {
    None,
    Bearer,
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
pub struct ProviderSpec {
    pub name: String,
    pub vendor: Option<String>,
    pub dialect: Dialect,
    pub base_url: String,
    pub auth: AuthStyle,
    pub api_key: Option<Secret>,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub stream_usage: StreamUsage,
    /// Serves `/responses` itself (an `openai` dialect): Responses requests pass through.
    pub responses_api: bool,
    pub timeouts: Timeouts,
    /// What one event of a streamed answer may hold; past it the stream fails in-band.
    pub max_event_bytes: usize,
    pub known_models: BTreeMap<String, ModelInfo>,
    pub health_check: Option<HealthCheck>,
    /// The command and session pool settings: set for (and only for) the `cli` dialect.
    pub cli: Option<Arc<CliSpec>>,
    /// Where a cloud platform serves (Bedrock's region, Vertex's project and location).
    pub cloud: cloud::CloudSpec,
}

/// An active probe of a provider: `GET {base_url}{path}` every `interval`.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Weighted,
    LeastBusy,
    Latency,
    Priority,
    /// The lowest price first (`spend`), ties in random order.
    Cheapest,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub consecutive_failures: u32,
    pub failure_ratio: Option<f64>,
    pub window: u32,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: None,
            window: 20,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, backoff: Duration::from_millis(25), max_backoff: Duration::from_secs(1) }
    }
}

#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub strategy: Strategy,
    pub deployments: Vec<DeploymentSpec>,
    pub fallbacks: Vec<String>,
    pub context_window_fallbacks: Vec<String>,
    pub content_policy_fallbacks: Vec<String>,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    pub provider: Arc<ProviderSpec>,
    /// The model name the upstream expects.
    pub model: String,
    /// `provider/model`, as reported in `x-llm-gateway-deployment` and logs.
    pub id: String,
    pub weight: f64,
    pub priority: u32,
    /// Prompt plus completion tokens the deployment accepts, when known.
    pub context_window: Option<u64>,
    pub breaker: BreakerPolicy,
    /// The config's `price:` (or zero for `free: true`); `None`: the catalogue's, see `spend`.
    pub price: Option<crate::config::price::Price>,
    /// What the `cheapest` strategy orders by (`spend::sort_price`).
    pub sort_price: u64,
    /// What its tokens cost and where that came from, resolved once when the config is built
    /// (`price::resolve_deployments`): the hot path never looks a price up.
    pub priced: crate::config::price::Priced,
}

impl DeploymentSpec {
    /// A deployment for a model name nobody listed (the default backend), priced in `currency`.
    pub fn catch_all(provider: Arc<ProviderSpec>, model: &str, currency: &str) -> Self {
        Self {
            priced: crate::config::price::resolve(currency, &provider, model),
            id: format!("{}/{}", provider.name, model),
            context_window: provider.known_models.get(model).and_then(|m| m.context_window),
            provider,
            model: model.to_owned(),
            weight: 1.0,
            priority: 0,
            breaker: BreakerPolicy::default(),
            price: None,
            sort_price: 0,
        }
    }
}

/// A path-precise configuration error, e.g.
/// `models.gpt-4o.deployments[1].provider: unknown provider "x"`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where configuration reads the environment from (tests pass a map).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<&str, &str, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| (*v).to_owned())
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{path}: {e}")))?;
        Self::from_yaml(&text, env).map_err(|e| ConfigError(format!("{path}: {}", e.0)))
    }

    pub fn from_yaml(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            // serde_yaml_ng's messages already lead with the path (`models.x.deployments[1]: ...`)
            // and end with the line and column.
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError(e.to_string()))?
        };
        validate(raw, env)
    }
}

fn validate(raw: RawConfig, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let err = |path: String, msg: String| ConfigError(format!("{path}: {msg}"));

    let (server, total_override) = server::settings(&raw.server, env)?;

    let tiers = limits::tiers(raw.tiers)?;
    let teams = keys::teams(raw.teams, &tiers, &raw.aliases)?;

    let keys = keys::keys(&raw.keys, &teams, env, &mut warnings)?;

    // providers
    let mut providers = BTreeMap::new();
    for (name, provider) in &raw.providers {
        let spec = build_provider(name, provider, total_override, env, &mut warnings)?;
        providers.insert(name.clone(), Arc::new(spec));
    }

    let mut models =
        models::groups(raw.models, &raw.aliases, &providers, raw.circuit_breaker.as_ref(), raw.retry.as_ref())?;
    let resolve = |name: &str| models::resolve(&models, &raw.aliases, name);
    for (team, policy) in &teams {
        for (from, to) in &policy.model_overrides {
            if resolve(to).is_none() {
                return Err(err(format!("teams.{team}.model_overrides.{from}"), format!("unknown model {to:?}")));
            }
        }
    }

    // default backend: the config's, else the original service's LLM_BACKEND when no models are listed.
    let default_backend = match &raw.default_backend {
        Some(name) => Some(
            providers
                .get(name)
                .cloned()
                .ok_or_else(|| err("default_backend".into(), format!("unknown provider {name:?}")))?,
        ),
        None if models.is_empty() => match env.var("LLM_BACKEND") {
            None => None,
            Some(backend) => Some(backend_from_env(&backend, &providers, total_override, env, &mut warnings)?),
        },
        None => None,
    };

    for (team, policy) in &teams {
        if policy.models.is_empty() {
            warnings.push(format!("teams.{team}.models: empty, the team can call no model"));
        }
    }

    let telemetry = TelemetrySettings {
        team_label: raw.telemetry.metrics.team_label,
        otlp: otlp_settings(raw.telemetry.otlp.as_ref(), env)?,
    };
    let valkey = valkey_settings(raw.valkey.as_ref(), env)?;
    let metering = metering::validate(raw.metering, env, &mut warnings)?;
    let request_log = request_log::validate(raw.request_log, env)?;
    let responses = responses::validate(raw.responses)?;
    let cache = cache::validate(raw.cache.as_ref(), &models, &raw.aliases, &teams, default_backend.is_some(), env)?;
    let limit_settings = limits::limit_settings(raw.limits.as_ref(), env)?;
    if valkey.is_some()
        && limit_settings.replicas == 1
        && limit_settings.on_valkey_down == limits::ValkeyDownPolicy::FailOpen
    {
        warnings.push(
            "limits.replicas: 1 with valkey configured; while Valkey is down every replica enforces the whole limits \
             (set it, or LLM_GATEWAY_REPLICAS, to the replica count)"
                .into(),
        );
    }
    let admin = limits::admin_settings(raw.admin.as_ref(), env, &mut warnings)?;
    let auth = limits::auth_settings(raw.auth.as_ref(), env)?;
    let spend = crate::config::price::SpendSettings::validate(raw.spend).map_err(ConfigError)?;
    let limit_settings = limits::LimitSettings { currency: spend.currency.clone(), ..limit_settings };
    crate::config::price::resolve_deployments(&mut models, &spend.currency);
    for (value, team) in auth.oidc.iter().flat_map(|o| &o.teams) {
        if !teams.contains_key(team) {
            return Err(err(format!("auth.oidc.teams.{value}"), format!("unknown team {team:?}")));
        }
    }
    if keys.is_empty() && admin.is_none() && auth.oidc.is_none() {
        warnings.push("keys: no usable key is configured; every /v1 request will be refused with 401".into());
    }
    Ok(Config {
        server,
        keys,
        teams,
        providers,
        models,
        default_backend,
        aliases: raw.aliases,
        telemetry,
        valkey,
        metering,
        request_log,
        cache,
        responses,
        tiers,
        limits: limit_settings,
        admin,
        auth,
        spend,
        warnings,
    })
}

fn backend_from_env(
    backend: &str,
    providers: &BTreeMap<String, Arc<ProviderSpec>>,
    total_override: Option<Duration>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Arc<ProviderSpec>, ConfigError> {
    if let Some(p) = providers.get(backend) {
        return Ok(p.clone());
    }
    let raw = match backend {
        "mock" => RawProvider { dialect: Some("mock".into()), ..Default::default() },
        "api" => RawProvider { vendor: Some("anthropic".into()), ..Default::default() },
        // The Claude CLI logs in with ANTHROPIC_API_KEY when it is set: in this mode the gateway
        // holds it for the CLI (no other provider uses it), so it is passed on, alone.
        "cli" => RawProvider {
            dialect: Some("cli".into()),
            pass_env: vec!["ANTHROPIC_API_KEY".into()],
            ..Default::default()
        },
        other => {
            return Err(ConfigError(format!("LLM_BACKEND: unknown backend {other:?} (expected mock, api or cli)")));
        }
    };
    build_provider(backend, &raw, total_override, env, warnings)
        .map(Arc::new)
        .map_err(|e| ConfigError(format!("LLM_BACKEND={backend}: {}", e.0)))
}

fn build_provider(
    name: &str,
    raw: &RawProvider,
    total_override: Option<Duration>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<ProviderSpec, ConfigError> {
    let path = format!("providers.{name}");
    let err = |field: &str, msg: String| ConfigError(format!("{path}.{field}: {msg}"));
    let descriptor = match &raw.vendor {
        Some(vendor) => Some(providers::lookup(vendor).map_err(|e| err("vendor", e))?),
        None => None,
    };
    let dialect_name = raw
        .dialect
        .as_deref()
        .or(descriptor.map(|d| d.dialect.as_str()))
        .ok_or_else(|| ConfigError(format!("{path}: either dialect or vendor is required")))?;
    let dialect = match dialect_name {
        "openai" => Dialect::OpenAi,
        "mock" => Dialect::Mock,
        "anthropic" => Dialect::Anthropic,
        "cli" => Dialect::Cli,
        "gemini" => Dialect::Gemini,
        "bedrock" => Dialect::Bedrock,
        "vertex" => Dialect::Vertex,
        other => {
            return Err(err(
                "dialect",
                format!("unknown dialect {other:?} (expected openai, anthropic, gemini, bedrock, vertex, mock or cli)"),
            ));
        }
    };
    let cli = if dialect == Dialect::Cli {
        if let Some(field) = ["base_url", "api_key_env", "auth", "auth_header", "stream_usage"]
            .into_iter()
            .zip([&raw.base_url, &raw.api_key_env, &raw.auth, &raw.auth_header, &raw.stream_usage])
            .find_map(|(name, value)| value.as_ref().map(|_| name))
        {
            return Err(err(field, "not used by the cli dialect (it runs a command, not HTTP)".into()));
        }
        if raw.health_check.is_some() {
            return Err(err("health_check", "the cli dialect checks its sessions itself (see /sessions)".into()));
        }
        Some(Arc::new(cli::build(&path, raw, env)?))
    } else {
        if let Some(field) = raw.cli_fields_set().first() {
            return Err(err(field, format!("only for dialect cli (this provider's dialect is {dialect_name})")));
        }
        None
    };
    let cloud = cloud::build(&path, dialect, raw)?;
    let base_url = raw.base_url.clone().or_else(|| descriptor.and_then(|d| d.base_url.clone()));
    let base_url = base_url.or_else(|| cloud.default_base_url(dialect)).unwrap_or_default();
    let base_url = base_url.trim_end_matches('/').to_owned();
    if matches!(dialect, Dialect::OpenAi | Dialect::Anthropic) || dialect.is_cloud() {
        if base_url.is_empty() {
            return Err(err("base_url", "required for this dialect".into()));
        }
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(err("base_url", format!("{base_url:?} must start with http:// or https://")));
        }
    }
    let auth_name = raw.auth.as_deref().or(descriptor.and_then(|d| d.auth.as_deref()));
    let auth_name = auth_name.unwrap_or(if dialect == Dialect::Gemini { "api-key" } else { "bearer" });
    let auth_header = raw.auth_header.clone().or_else(|| descriptor.and_then(|d| d.auth_header.clone()));
    let auth_header = auth_header.or_else(|| (dialect == Dialect::Gemini).then(|| "x-goog-api-key".into()));
    let auth = match auth_name {
        "bearer" => AuthStyle::Bearer,
        "none" => AuthStyle::None,
        "api-key" => AuthStyle::Header(auth_header.unwrap_or_else(|| "api-key".into())),
        other => {
            return Err(err("auth", format!("unknown auth style {other:?} (expected bearer, api-key or none)")));
        }
    };
    if let AuthStyle::Header(h) = &auth
        && http::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        return Err(err("auth_header", format!("{h:?} is not a valid header name")));
    }
    let key_env = raw.api_key_env.clone().or_else(|| descriptor.and_then(|d| d.api_key_env.clone()));
    let key_env = key_env.or_else(|| cloud::default_key_env(dialect).map(str::to_owned));
    let api_key = match &key_env {
        Some(var) => match env.var(var) {
            Some(v) => Some(Secret::new(v)),
            None => {
                if auth != AuthStyle::None && matches!(dialect, Dialect::OpenAi | Dialect::Anthropic | Dialect::Gemini)
                {
                    warnings.push(format!(
                        "{path}.api_key_env: environment variable {var} is not set; requests go without credentials"
                    ));
                }
                None
            }
        },
        None => None,
    };
    let stream_usage = match raw
        .stream_usage
        .as_deref()
        .or(descriptor.and_then(|d| d.stream_usage.as_deref()))
        // The cli dialect always reports usage (the CLI's, or counted locally).
        .unwrap_or(if dialect == Dialect::Cli { "always" } else { "stream_options" })
    {
        "stream_options" => StreamUsage::StreamOptions,
        "always" => StreamUsage::Always,
        "none" => StreamUsage::None,
        other => {
            return Err(err(
                "stream_usage",
                format!("unknown value {other:?} (expected stream_options, always or none)"),
            ));
        }
    };
    let mut headers: BTreeMap<String, String> = descriptor.map(|d| d.headers.clone()).unwrap_or_default();
    headers.extend(raw.headers.clone());
    for (k, v) in &headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() || http::HeaderValue::from_str(v).is_err() {
            return Err(err(&format!("headers.{k}"), "not a valid HTTP header".into()));
        }
    }
    let mut query: BTreeMap<String, String> = descriptor.map(|d| d.query.clone()).unwrap_or_default();
    query.extend(raw.query.clone());
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        connect: raw.timeouts.connect.unwrap_or(defaults.connect),
        first_byte: raw.timeouts.first_byte.unwrap_or(defaults.first_byte),
        idle: raw.timeouts.idle.unwrap_or(defaults.idle),
        total: total_override.or(raw.timeouts.total).unwrap_or(defaults.total),
    };
    for (field, d) in [
        ("timeouts.connect", timeouts.connect),
        ("timeouts.first_byte", timeouts.first_byte),
        ("timeouts.idle", timeouts.idle),
        ("timeouts.total", timeouts.total),
    ] {
        if d.is_zero() {
            return Err(err(field, "must be greater than 0".into()));
        }
    }
    // (Below 1 KiB even ordinary chunks would be refused.)
    let max_event_bytes = match raw.max_event_bytes {
        None => DEFAULT_MAX_EVENT_BYTES,
        Some(n) if n < 1024 => return Err(err("max_event_bytes", "must be at least 1024".into())),
        Some(n) => usize::try_from(n).map_err(|_| err("max_event_bytes", "too large".into()))?,
    };
    let health_check = match &raw.health_check {
        None => None,
        Some(h) => {
            let path = h.path.clone().unwrap_or_else(|| "/models".into());
            if !path.starts_with('/') {
                return Err(err("health_check.path", format!("{path:?} must start with /")));
            }
            Some(HealthCheck {
                path,
                interval: h.interval.unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100)),
                timeout: h.timeout.unwrap_or(Duration::from_secs(5)),
            })
        }
    };
    Ok(ProviderSpec {
        name: name.to_owned(),
        health_check,
        vendor: raw.vendor.clone(),
        dialect,
        base_url,
        auth,
        api_key,
        headers: headers.into_iter().collect(),
        query: query.into_iter().collect(),
        stream_usage,
        responses_api: dialect == Dialect::OpenAi
            && raw.responses_api.or(descriptor.and_then(|d| d.responses_api)).unwrap_or(false),
        timeouts,
        max_event_bytes,
        known_models: descriptor.map(|d| d.models.clone()).unwrap_or_default(),
        cli,
        cloud,
    })
}

#[cfg(test)]
mod tests;
