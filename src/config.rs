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
mod provider;
pub mod raw;
pub mod request_log;
pub mod responses;
mod server;
mod valkey;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::providers::ModelInfo;
pub use cli::{CliProtocol, CliSpec};
pub(crate) use keys::parse_sha256_hex;
pub use keys::{KeySpec, TeamPolicy, glob_match, key_id, sha256};
use otlp::otlp_settings;
pub use otlp::{DEFAULT_MAX_BATCH_SPANS, DEFAULT_MAX_QUEUE_SPANS, OtlpProtocol, OtlpSettings, TelemetrySettings};
use raw::RawConfig;
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

/// Each section checked and built, in the order they depend on one another. (Long only by the
/// `Config` literal at its end, one line per section.)
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
        let spec = provider::build_provider(name, provider, total_override, env, &mut warnings)?;
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

    let default_backend =
        default_backend(&raw.default_backend, &providers, models.is_empty(), total_override, env, &mut warnings)?;

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
    if valkey.is_some() {
        warn_single_replica(&limit_settings, &mut warnings);
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

/// The provider requests go to when no model matches: the config's `default_backend`, else
/// the original service's `LLM_BACKEND` when no models are listed.
fn default_backend(
    name: &Option<String>,
    providers: &BTreeMap<String, Arc<ProviderSpec>>,
    no_models: bool,
    total_override: Option<Duration>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Option<Arc<ProviderSpec>>, ConfigError> {
    match name {
        Some(name) => Ok(Some(
            providers
                .get(name)
                .cloned()
                .ok_or_else(|| ConfigError(format!("default_backend: unknown provider {name:?}")))?,
        )),
        None if no_models => match env.var("LLM_BACKEND") {
            None => Ok(None),
            Some(backend) => Ok(Some(provider::backend_from_env(&backend, providers, total_override, env, warnings)?)),
        },
        None => Ok(None),
    }
}

/// With Valkey and fail-open limits, `replicas` decides each replica's share while Valkey is
/// down: left at 1, every replica enforces the whole limits.
fn warn_single_replica(settings: &limits::LimitSettings, warnings: &mut Vec<String>) {
    if settings.replicas == 1 && settings.on_valkey_down == limits::ValkeyDownPolicy::FailOpen {
        warnings.push(
            "limits.replicas: 1 with valkey configured; while Valkey is down every replica enforces the whole limits \
             (set it, or LLM_GATEWAY_REPLICAS, to the replica count)"
                .into(),
        );
    }
}

#[cfg(test)]
mod tests;
