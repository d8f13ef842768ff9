//! Configuration: the YAML file (strict, see `raw`), the original service's environment
//! variables as an overlay, secrets by reference, all validated into immutable runtime types.

pub mod cache;
pub mod cli;
pub mod duration;
pub mod limits;
pub mod metering;
pub mod raw;
pub mod request_log;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::providers::{self, ModelInfo};
pub use cli::{CliProtocol, CliSpec};
use raw::{RawConfig, RawProvider};

pub const DEFAULT_PORT: u16 = 5005;
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// nginx's keep-alive timeout: longer than the 60 s idle timeout of the common cloud load
/// balancers, so a balancer never sends a request on a connection the gateway is closing.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(75);
/// What one stream event may hold by default (`providers.<name>.max_event_bytes`).
pub use crate::api::sse::DEFAULT_MAX_EVENT_BYTES;
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// Subscription tiers by name (built-in free / pro / enterprise unless configured).
    pub tiers: BTreeMap<String, limits::Tier>,
    pub limits: limits::LimitSettings,
    /// `None` = no admin API.
    pub admin: Option<limits::AdminSettings>,
    pub auth: limits::AuthSettings,
    pub spend: crate::spend::SpendSettings,
    /// Problems that do not stop the gateway (a secret's variable unset, ...): logged at start.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: String,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// A client connection's next request head must arrive within this, from the moment the
    /// connection is ready for it (accepted, or its last answer sent); else it is closed. It
    /// bounds slow-header clients and how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    pub log_level: String,
    /// Serving threads, each with an event loop of its own.
    pub threads: usize,
    /// A request body must arrive within this of its head, else 408: slow uploads cannot pin
    /// memory.
    pub body_read_timeout: Duration,
    /// A client connection (HTTP/1 or HTTP/2) that starts no request for this long is closed
    /// (gracefully: what it has in flight finishes).
    pub idle_timeout: Duration,
    /// Requests in flight at once; past it, a 503 with `Retry-After` (`None`: no cap).
    pub max_in_flight: Option<usize>,
    /// Where `/metrics` and `/sessions` are served instead of the API port (`None`: on it).
    pub management_listen: Option<String>,
}

#[derive(Clone)]
pub struct ValkeySettings {
    /// One URL (standalone) or the cluster's seed nodes; passwords never appear in `Debug`.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub timeout: Duration,
    /// Put before the name of every key the gateway reads or writes (with a `:` after it), so
    /// installations sharing a Valkey share nothing; empty: no prefix (the names of old).
    pub key_prefix: String,
}

impl fmt::Debug for ValkeySettings {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let redacted: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("ValkeySettings")
            .field("urls", &redacted)
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    /// Label token metrics with the team.
    pub team_label: bool,
    pub otlp: Option<OtlpSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Http,
    Grpc,
}

#[derive(Clone)]
pub struct OtlpSettings {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// The resource's other attributes (never `service.name`), by key.
    pub resource_attributes: Vec<(String, String)>,
    pub batch_delay: Duration,
    /// Spans per export request.
    pub max_batch_spans: usize,
    /// Spans at most in complete batches waiting for the exporter.
    pub max_queue_spans: usize,
    /// One export, from connecting to the collector's answer.
    pub export_timeout: Duration,
    /// The share of requests without a client trace decision that are traced.
    pub sample_ratio: f64,
}

impl fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // Header values are usually credentials.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field("batch_delay", &self.batch_delay)
            .field("max_batch_spans", &self.max_batch_spans)
            .field("max_queue_spans", &self.max_queue_spans)
            .field("export_timeout", &self.export_timeout)
            .field("sample_ratio", &self.sample_ratio)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct KeySpec {
    pub sha256: [u8; 32],
    pub team: String,
    pub id: String,
    /// The key's own limits, enforced on top of its team's.
    pub limits: limits::Limits,
    /// Narrows the team's models for this key.
    pub models: Option<Vec<String>>,
    /// Unix seconds from which the key is refused.
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct TeamPolicy {
    pub models: Vec<String>,
    /// Requested model → the model group this team is routed to instead.
    pub model_overrides: BTreeMap<String, String>,
    pub tier: Option<String>,
    /// The team's limits (its tier's where it sets none).
    pub limits: limits::Limits,
    /// Limits of the team's use of one client-facing model name.
    pub model_limits: BTreeMap<String, limits::Limits>,
}

impl TeamPolicy {
    /// Whether `model` matches one of the team's glob patterns (`*` matches any run of characters).
    pub fn allows(&self, model: &str) -> bool {
        self.models.iter().any(|pattern| glob_match(pattern, model))
    }
}

pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    /// Anthropic's Messages API (`{base_url}/v1/messages`, `x-api-key`, `anthropic-version`).
    Anthropic,
    Mock,
    /// A pool of command-line model client sessions (see `cli`).
    Cli,
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
    pub timeouts: Timeouts,
    /// What one event of a streamed answer may hold; past it the stream fails in-band.
    pub max_event_bytes: usize,
    pub known_models: BTreeMap<String, ModelInfo>,
    pub health_check: Option<HealthCheck>,
    /// The command and session pool settings: set for (and only for) the `cli` dialect.
    pub cli: Option<Arc<CliSpec>>,
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
    pub price: Option<crate::spend::Price>,
    /// What the `cheapest` strategy orders by (`spend::sort_price`).
    pub sort_price: u64,
}

impl DeploymentSpec {
    /// A deployment for a model name nobody listed (the default backend).
    pub fn catch_all(provider: Arc<ProviderSpec>, model: &str) -> Self {
        Self {
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

    // server, with the original service's overrides.
    let mut listen = raw.server.listen.clone().unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}"));
    if let Some(l) = env.var("LLM_GATEWAY_LISTEN") {
        listen = l;
    }
    if let Some(port) = env.var("PORT") {
        let port: u16 = port.parse().map_err(|_| err("PORT".into(), format!("{port:?} is not a port number")))?;
        let host = listen.rsplit_once(':').map(|(h, _)| h.to_owned()).unwrap_or_else(|| "0.0.0.0".into());
        listen = format!("{host}:{port}");
    }
    if listen.parse::<SocketAddr>().is_err()
        && listen.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none()
    {
        return Err(err("server.listen".into(), format!("{listen:?} is not HOST:PORT")));
    }
    let max_body_bytes = match raw.server.max_body_bytes {
        Some(0) => {
            return Err(err("server.max_body_bytes".into(), "must be greater than 0".into()));
        }
        Some(n) => usize::try_from(n).map_err(|_| err("server.max_body_bytes".into(), "too large".into()))?,
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let total_override = match env.var("LLM_REQUEST_TIMEOUT") {
        Some(v) => Some(duration::parse(&v).map_err(|e| err("LLM_REQUEST_TIMEOUT".into(), e))?),
        None => None,
    };
    let threads = match raw.server.threads {
        Some(0) => return Err(err("server.threads".into(), "must be at least 1".into())),
        Some(n) if n > 1024 => return Err(err("server.threads".into(), "must be at most 1024".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    };
    let header_read_timeout = match raw.server.header_read_timeout {
        Some(d) if d.is_zero() => {
            return Err(err("server.header_read_timeout".into(), "must be greater than 0".into()));
        }
        Some(d) => d,
        None => DEFAULT_HEADER_READ_TIMEOUT,
    };
    let positive = |value: Option<Duration>, name: &str, default: Duration| match value {
        Some(d) if d.is_zero() => Err(err(format!("server.{name}"), "must be greater than 0".into())),
        Some(d) => Ok(d),
        None => Ok(default),
    };
    let body_read_timeout = positive(raw.server.body_read_timeout, "body_read_timeout", DEFAULT_BODY_READ_TIMEOUT)?;
    let idle_timeout = positive(raw.server.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT)?;
    if let Some(management) = &raw.server.management_listen
        && management.parse::<SocketAddr>().is_err()
    {
        return Err(err("server.management_listen".into(), format!("{management:?} is not IP:PORT")));
    }
    if raw.server.max_in_flight == Some(0) {
        return Err(err("server.max_in_flight".into(), "must be at least 1".into()));
    }
    let server = ServerSettings {
        listen,
        threads,
        max_body_bytes,
        shutdown_grace: raw.server.shutdown_grace.unwrap_or(Duration::from_secs(30)),
        header_read_timeout,
        log_level: raw.server.log_level.clone().unwrap_or_else(|| "info".into()),
        body_read_timeout,
        idle_timeout,
        max_in_flight: raw.server.max_in_flight,
        management_listen: raw.server.management_listen.clone(),
    };

    // tiers and teams
    let tiers = limits::tiers(raw.tiers)?;
    let mut teams: BTreeMap<String, TeamPolicy> = BTreeMap::new();
    for (name, team) in raw.teams {
        let path = format!("teams.{name}");
        team.limits.check(&format!("{path}.limits"))?;
        for (model, l) in &team.model_limits {
            l.check(&format!("{path}.model_limits.{model}"))?;
        }
        let tier = match &team.tier {
            Some(t) => Some(tiers.get(t).ok_or_else(|| {
                let known: Vec<&str> = tiers.keys().map(String::as_str).collect();
                err(format!("{path}.tier"), format!("unknown tier {t:?} (known: {})", known.join(", ")))
            })?),
            None => None,
        };
        let mut model_overrides = tier.map(|t| t.model_overrides.clone()).unwrap_or_default();
        model_overrides.extend(team.model_overrides);
        // Per-model limits apply to a model group, whatever name a client uses for it: an
        // alias here stands for its group.
        let mut model_limits = BTreeMap::new();
        for (model, l) in team.model_limits {
            let group = raw.aliases.get(&model).cloned().unwrap_or_else(|| model.clone());
            if model_limits.insert(group.clone(), l).is_some() {
                return Err(err(
                    format!("{path}.model_limits.{model}"),
                    format!("the model group {group:?} has limits under another of its names"),
                ));
            }
        }
        let policy = TeamPolicy {
            models: team.models.or_else(|| tier.and_then(|t| t.models.clone())).unwrap_or_default(),
            model_overrides,
            tier: team.tier.clone(),
            limits: team.limits.or(tier.map(|t| t.limits).unwrap_or_default()),
            model_limits,
        };
        teams.insert(name, policy);
    }

    // keys
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (i, key) in raw.keys.iter().enumerate() {
        let path = format!("keys[{i}]");
        if !teams.contains_key(&key.team) {
            return Err(err(format!("{path}.team"), format!("unknown team {:?}", key.team)));
        }
        let given = [key.key.is_some(), key.key_sha256.is_some(), key.key_env.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(err(path, "exactly one of key, key_sha256 or key_env is required".into()));
        }
        let sha256 = if let Some(k) = &key.key {
            if k.is_empty() {
                return Err(err(format!("{path}.key"), "must not be empty".into()));
            }
            sha256(k.as_bytes())
        } else if let Some(hex) = &key.key_sha256 {
            parse_sha256_hex(hex).ok_or_else(|| err(format!("{path}.key_sha256"), "must be 64 hex digits".into()))?
        } else {
            let var = key.key_env.as_deref().unwrap_or_default();
            match env.var(var) {
                Some(k) => sha256(k.as_bytes()),
                None => {
                    warnings
                        .push(format!("{path}.key_env: environment variable {var} is not set; this key is disabled"));
                    continue;
                }
            }
        };
        let id = key.id.clone().unwrap_or_else(|| key_id(&sha256));
        key.limits.check(&format!("{path}.limits"))?;
        let expires_at =
            match &key.expires_at {
                None => None,
                Some(v) => Some(v.as_u64().or_else(|| v.as_str().and_then(crate::clock::parse_timestamp)).ok_or_else(
                    || err(format!("{path}.expires_at"), "must be Unix seconds or an RFC 3339 UTC time".into()),
                )?),
            };
        keys.push(KeySpec {
            sha256,
            team: key.team.clone(),
            id,
            limits: key.limits,
            models: key.models.clone(),
            expires_at,
        });
    }

    // providers
    let mut providers = BTreeMap::new();
    for (name, provider) in &raw.providers {
        let spec = build_provider(name, provider, total_override, env, &mut warnings)?;
        providers.insert(name.clone(), Arc::new(spec));
    }

    // models
    let default_breaker = breaker_policy(BreakerPolicy::default(), raw.circuit_breaker.as_ref(), "circuit_breaker")?;
    let default_retry = retry_policy(RetryPolicy::default(), raw.retry.as_ref(), "retry")?;
    let mut models = BTreeMap::new();
    for (name, model) in raw.models {
        let path = format!("models.{name}");
        if model.deployments.is_empty() {
            return Err(err(format!("{path}.deployments"), "at least one deployment is required".into()));
        }
        let strategy = match model.strategy.as_deref().unwrap_or("weighted") {
            "weighted" => Strategy::Weighted,
            "least-busy" => Strategy::LeastBusy,
            "latency" => Strategy::Latency,
            "priority" => Strategy::Priority,
            "cheapest" => Strategy::Cheapest,
            other => {
                return Err(err(
                    format!("{path}.strategy"),
                    format!(
                        "unknown strategy {other:?} (expected weighted, least-busy, latency, priority or cheapest)"
                    ),
                ));
            }
        };
        let mut deployments = Vec::with_capacity(model.deployments.len());
        for (i, d) in model.deployments.into_iter().enumerate() {
            let dpath = format!("{path}.deployments[{i}]");
            let provider = providers
                .get(&d.provider)
                .cloned()
                .ok_or_else(|| err(format!("{dpath}.provider"), format!("unknown provider {:?}", d.provider)))?;
            let upstream = d.model.unwrap_or_else(|| name.clone());
            if upstream.is_empty() {
                return Err(err(format!("{dpath}.model"), "must not be empty".into()));
            }
            let weight = d.weight.unwrap_or(1.0);
            if !weight.is_finite() || weight < 0.0 {
                return Err(err(format!("{dpath}.weight"), format!("must be a number >= 0, not {weight}")));
            }
            let context_window =
                d.context_window.or_else(|| provider.known_models.get(&upstream).and_then(|m| m.context_window));
            let breaker =
                breaker_policy(default_breaker, d.circuit_breaker.as_ref(), &format!("{dpath}.circuit_breaker"))?;
            let price = match (&d.price, d.free) {
                (Some(_), Some(true)) => {
                    return Err(err(format!("{dpath}.free"), "a deployment has either a price or free: true".into()));
                }
                (_, Some(true)) => Some(crate::spend::Price::FREE),
                (Some(price), _) => Some(price.to_price()),
                (None, _) => None,
            };
            let sort_price = crate::spend::sort_price(&provider, &upstream, price);
            deployments.push(DeploymentSpec {
                id: format!("{}/{}", provider.name, upstream),
                provider,
                model: upstream,
                weight,
                priority: d.priority.unwrap_or(0),
                context_window,
                breaker,
                price,
                sort_price,
            });
        }
        if deployments.iter().all(|d| d.weight == 0.0) {
            return Err(err(format!("{path}.deployments"), "at least one deployment needs a weight above 0".into()));
        }
        let retry = retry_policy(default_retry, model.retry.as_ref(), &format!("{path}.retry"))?;
        models.insert(
            name.clone(),
            ModelSpec {
                name,
                strategy,
                deployments,
                fallbacks: model.fallbacks,
                context_window_fallbacks: model.context_window_fallbacks,
                content_policy_fallbacks: model.content_policy_fallbacks,
                retry,
            },
        );
    }

    // aliases and fallbacks must land on a model group, and fallbacks must not loop.
    for (alias, target) in &raw.aliases {
        if models.contains_key(alias) {
            return Err(err(format!("aliases.{alias}"), "an alias cannot shadow a model of the same name".into()));
        }
        if !models.contains_key(target) {
            return Err(err(format!("aliases.{alias}"), format!("unknown model {target:?}")));
        }
    }
    let resolve = |name: &str| -> Option<String> {
        if models.contains_key(name) { Some(name.to_owned()) } else { raw.aliases.get(name).cloned() }
    };
    let mut resolved_models = models.clone();
    for (name, model) in resolved_models.iter_mut() {
        for (field, list) in [
            ("fallbacks", &mut model.fallbacks),
            ("context_window_fallbacks", &mut model.context_window_fallbacks),
            ("content_policy_fallbacks", &mut model.content_policy_fallbacks),
        ] {
            for (i, target) in list.iter_mut().enumerate() {
                *target = resolve(target)
                    .ok_or_else(|| err(format!("models.{name}.{field}[{i}]"), format!("unknown model {target:?}")))?;
                if target == name {
                    return Err(err(
                        format!("models.{name}.{field}[{i}]"),
                        "a model cannot fall back to itself".into(),
                    ));
                }
            }
        }
    }
    let models = resolved_models;
    if let Some(cycle) = fallback_cycle(&models) {
        return Err(err(format!("models.{}.fallbacks", cycle[0]), format!("fallback cycle: {}", cycle.join(" -> "))));
    }
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
    let spend = crate::spend::SpendSettings::validate(raw.spend).map_err(ConfigError)?;
    let limit_settings = limits::LimitSettings { currency: spend.currency.clone(), ..limit_settings };
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
        other => {
            return Err(err("dialect", format!("unknown dialect {other:?} (expected openai, anthropic, mock or cli)")));
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
    let base_url = raw.base_url.clone().or_else(|| descriptor.and_then(|d| d.base_url.clone())).unwrap_or_default();
    let base_url = base_url.trim_end_matches('/').to_owned();
    if matches!(dialect, Dialect::OpenAi | Dialect::Anthropic) {
        if base_url.is_empty() {
            return Err(err("base_url", "required for this dialect".into()));
        }
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(err("base_url", format!("{base_url:?} must start with http:// or https://")));
        }
    }
    let auth_name = raw.auth.as_deref().or(descriptor.and_then(|d| d.auth.as_deref())).unwrap_or("bearer");
    let auth_header = raw.auth_header.clone().or_else(|| descriptor.and_then(|d| d.auth_header.clone()));
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
    let api_key = match &key_env {
        Some(var) => match env.var(var) {
            Some(v) => Some(Secret::new(v)),
            None => {
                if auth != AuthStyle::None && matches!(dialect, Dialect::OpenAi | Dialect::Anthropic) {
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
        timeouts,
        max_event_bytes,
        known_models: descriptor.map(|d| d.models.clone()).unwrap_or_default(),
        cli,
    })
}

/// Spans per export request unless configured: four times the OpenTelemetry SDK's 512. An
/// export costs the gateway and the collector a request each (a system call, an HTTP exchange, a
/// wake-up) whatever its size; 2,048 spans (~600 KB) is still far below a collector's limits.
pub const DEFAULT_MAX_BATCH_SPANS: usize = 2048;
/// Spans waiting in complete batches unless configured: this many, or 16 batches when more.
pub const DEFAULT_MAX_QUEUE_SPANS: usize = 32_768;
/// The largest batch accepted (a few MB of protobuf: collectors refuse larger requests).
const MAX_BATCH_SPANS_LIMIT: usize = 16_384;

/// OTLP from the config, else from the standard `OTEL_EXPORTER_OTLP_*` variables;
/// `OTEL_SDK_DISABLED=true` turns it off either way.
fn otlp_settings(raw: Option<&raw::RawOtlp>, env: &dyn Env) -> Result<Option<OtlpSettings>, ConfigError> {
    if env.var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let endpoint = match raw {
        Some(r) => r.endpoint.clone(),
        None => {
            match env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env.var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                Some(e) => e,
                None => return Ok(None),
            }
        }
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(ConfigError(format!("telemetry.otlp.endpoint: {endpoint:?} must start with http:// or https://")));
    }
    let protocol_name = raw
        .and_then(|r| r.protocol.clone())
        .or_else(|| env.var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| env.var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http".into());
    let protocol = match protocol_name.as_str() {
        "http" | "http/protobuf" => OtlpProtocol::Http,
        "grpc" => OtlpProtocol::Grpc,
        other => {
            return Err(ConfigError(format!(
                "telemetry.otlp.protocol: unknown protocol {other:?} (expected http or grpc)"
            )));
        }
    };
    let mut headers = match env.var("OTEL_EXPORTER_OTLP_HEADERS") {
        Some(list) => otel_pairs("OTEL_EXPORTER_OTLP_HEADERS", &list)?,
        None => Vec::new(),
    };
    if let Some(r) = raw {
        for (k, v) in &r.headers {
            let value = match v.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(var) => env.var(var).ok_or_else(|| {
                    ConfigError(format!("telemetry.otlp.headers.{k}: environment variable {var} is not set"))
                })?,
                None => v.clone(),
            };
            headers.push((k.clone(), value));
        }
    }
    // The resource: `OTEL_RESOURCE_ATTRIBUTES`, then the config's (the same key: the config's wins).
    let mut resource: BTreeMap<String, String> = match env.var("OTEL_RESOURCE_ATTRIBUTES") {
        Some(list) => otel_pairs("OTEL_RESOURCE_ATTRIBUTES", &list)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    if let Some(r) = raw {
        resource.extend(r.resource_attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    // `service.name`: the config's key, `OTEL_SERVICE_NAME`, or one of the resource attributes.
    let named = resource.remove("service.name");
    let service_name = raw
        .and_then(|r| r.service_name.clone())
        .or_else(|| env.var("OTEL_SERVICE_NAME"))
        .or(named)
        .unwrap_or_else(|| "llm-gateway".into());
    let resource_attributes = resource.into_iter().collect();
    // The batch processor's settings: the config's, else the standard `OTEL_BSP_*` variables
    // (milliseconds and span counts), else our defaults.
    let env_number = |name: &str| -> Result<Option<u64>, ConfigError> {
        env.var(name)
            .map(|v| v.trim().parse().map_err(|_| ConfigError(format!("{name}: {v:?} is not a whole number"))))
            .transpose()
    };
    let env_millis = |name: &str| env_number(name).map(|ms| ms.map(Duration::from_millis));
    let env_count = |name: &str| env_number(name).map(|n| n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)));
    let batch_delay = match raw.and_then(|r| r.batch_delay) {
        Some(delay) => delay,
        None => env_millis("OTEL_BSP_SCHEDULE_DELAY")?.unwrap_or(Duration::from_secs(5)),
    };
    let export_timeout = match raw.and_then(|r| r.export_timeout) {
        Some(timeout) => timeout,
        None => env_millis("OTEL_BSP_EXPORT_TIMEOUT")?.unwrap_or(Duration::from_secs(10)),
    };
    if export_timeout.is_zero() {
        return Err(ConfigError("telemetry.otlp.export_timeout: must be more than 0".into()));
    }
    let max_batch_spans = match raw.and_then(|r| r.max_export_batch_size) {
        Some(n) => n,
        None => env_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?.unwrap_or(DEFAULT_MAX_BATCH_SPANS),
    };
    if !(1..=MAX_BATCH_SPANS_LIMIT).contains(&max_batch_spans) {
        return Err(ConfigError(format!(
            "telemetry.otlp.max_export_batch_size: {max_batch_spans} is not between 1 and {MAX_BATCH_SPANS_LIMIT}"
        )));
    }
    let max_queue_spans = match raw.and_then(|r| r.max_queue_size) {
        Some(n) => n,
        None => env_count("OTEL_BSP_MAX_QUEUE_SIZE")?.unwrap_or(DEFAULT_MAX_QUEUE_SPANS.max(16 * max_batch_spans)),
    };
    if max_queue_spans < max_batch_spans {
        return Err(ConfigError(format!(
            "telemetry.otlp.max_queue_size: {max_queue_spans} spans cannot hold one batch of max_export_batch_size \
             {max_batch_spans}"
        )));
    }
    let sample_ratio = match raw.and_then(|r| r.sample_ratio) {
        Some(ratio) => ratio,
        // The standard sampler variables, for the ratio samplers and the two constant ones.
        None => match env.var("OTEL_TRACES_SAMPLER").as_deref() {
            Some("always_off" | "parentbased_always_off") => 0.0,
            Some("traceidratio" | "parentbased_traceidratio") => {
                let arg = env.var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|| "1".into());
                arg.trim().parse().map_err(|_| {
                    ConfigError(format!("OTEL_TRACES_SAMPLER_ARG: {arg:?} is not a number between 0 and 1"))
                })?
            }
            _ => 1.0,
        },
    };
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(ConfigError(format!("telemetry.otlp.sample_ratio: {sample_ratio} is not between 0 and 1")));
    }
    Ok(Some(OtlpSettings {
        endpoint,
        protocol,
        headers,
        service_name,
        resource_attributes,
        batch_delay,
        max_batch_spans,
        max_queue_spans,
        export_timeout,
        sample_ratio,
    }))
}

/// The list format of `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES` (variable
/// `name`): `key=value` pairs separated by commas, values percent-encoded (the W3C Baggage octet
/// format the specification names: `Authorization=Basic%20...`). Spaces around keys and values
/// are ignored; an empty list is no pairs. In order (a key given twice: the last one counts).
fn otel_pairs(name: &str, list: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let invalid = |why: String| ConfigError(format!("{name}: {why}"));
    let mut out = Vec::new();
    for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| invalid(format!("{:?} is not key=value", pair.trim())))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(format!("{:?} has no key", pair.trim())));
        }
        let value = percent_decoded(value.trim())
            .ok_or_else(|| invalid(format!("the value of {key:?} is not valid percent-encoded UTF-8")))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// `%XX` escapes decoded (the rest as is); `None` for a broken escape or bytes that are not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Valkey from the config, or from the original service's `VALKEY_URL` / `REDIS_URL`.
fn valkey_settings(raw: Option<&raw::RawValkey>, env: &dyn Env) -> Result<Option<ValkeySettings>, ConfigError> {
    let from_env = env.var("VALKEY_URL").or_else(|| env.var("REDIS_URL"));
    let (mut urls, cluster, timeout, password_env, key_prefix) = match raw {
        Some(v) => {
            let mut urls: Vec<String> = v.url.iter().cloned().collect();
            urls.extend(v.urls.iter().cloned());
            (urls, v.cluster, v.timeout, v.password_env.clone(), v.key_prefix.clone().unwrap_or_default())
        }
        None => (Vec::new(), false, None, None, String::new()),
    };
    // Braces would move keys off their hash tag's slot, glob characters would turn the cache's
    // SCAN patterns into other patterns: a prefix is a plain name.
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/');
    if key_prefix.len() > 128 || !key_prefix.bytes().all(plain) {
        return Err(ConfigError(format!(
            "valkey.key_prefix: {key_prefix:?} must be at most 128 letters, digits and - _ . : /"
        )));
    }
    if let Some(url) = from_env {
        urls.insert(0, url);
        urls.dedup();
    }
    if urls.is_empty() {
        return match raw {
            Some(_) => Err(ConfigError("valkey.url: required (or set VALKEY_URL)".into())),
            None => Ok(None),
        };
    }
    if let Some(var) = password_env {
        let Some(password) = env.var(&var) else {
            return Err(ConfigError(format!("valkey.password_env: environment variable {var} is not set")));
        };
        urls = urls
            .into_iter()
            .map(|u| match u.split_once("://") {
                Some((scheme, rest)) if !rest.contains('@') => format!("{scheme}://:{password}@{rest}"),
                _ => u,
            })
            .collect();
    }
    for (i, url) in urls.iter().enumerate() {
        if redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err() {
            return Err(ConfigError(format!("valkey.urls[{i}]: {:?} is not a redis:// URL", redact_url(url))));
        }
    }
    let timeout = timeout.unwrap_or(Duration::from_millis(250));
    Ok(Some(ValkeySettings { urls, cluster, timeout, key_prefix }))
}

fn breaker_policy(
    base: BreakerPolicy,
    raw: Option<&raw::RawBreaker>,
    path: &str,
) -> Result<BreakerPolicy, ConfigError> {
    let Some(raw) = raw else { return Ok(base) };
    let err = |field: &str, msg: &str| ConfigError(format!("{path}.{field}: {msg}"));
    let policy = BreakerPolicy {
        consecutive_failures: raw.consecutive_failures.unwrap_or(base.consecutive_failures),
        failure_ratio: raw.failure_ratio.or(base.failure_ratio),
        window: raw.window.unwrap_or(base.window),
        open_for: raw.open_for.unwrap_or(base.open_for),
        max_open_for: raw.max_open_for.unwrap_or(base.max_open_for),
        half_open_probes: raw.half_open_probes.unwrap_or(base.half_open_probes),
    };
    if policy.consecutive_failures == 0 {
        return Err(err("consecutive_failures", "must be at least 1"));
    }
    if let Some(r) = policy.failure_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return Err(err("failure_ratio", "must be in (0, 1]"));
    }
    if policy.window == 0 {
        return Err(err("window", "must be at least 1"));
    }
    if policy.open_for.is_zero() || policy.max_open_for < policy.open_for {
        return Err(err("max_open_for", "must be at least open_for, which must be above 0"));
    }
    if policy.half_open_probes == 0 {
        return Err(err("half_open_probes", "must be at least 1"));
    }
    Ok(policy)
}

fn retry_policy(base: RetryPolicy, raw: Option<&raw::RawRetry>, path: &str) -> Result<RetryPolicy, ConfigError> {
    let Some(raw) = raw else { return Ok(base) };
    let policy = RetryPolicy {
        max_attempts: raw.max_attempts.unwrap_or(base.max_attempts),
        backoff: raw.backoff.unwrap_or(base.backoff),
        max_backoff: raw.max_backoff.unwrap_or(base.max_backoff),
    };
    if policy.max_attempts == 0 {
        return Err(ConfigError(format!("{path}.max_attempts: must be at least 1")));
    }
    Ok(policy)
}

/// A loop through `fallbacks` / `context_window_fallbacks` / `content_policy_fallbacks`, if any.
fn fallback_cycle(models: &BTreeMap<String, ModelSpec>) -> Option<Vec<String>> {
    fn visit<'a>(
        name: &'a str,
        models: &'a BTreeMap<String, ModelSpec>,
        stack: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if !done.insert(name) {
            return None;
        }
        stack.push(name);
        let model = models.get(name)?;
        let next = model.fallbacks.iter().chain(&model.context_window_fallbacks).chain(&model.content_policy_fallbacks);
        for target in next {
            if let Some(cycle) = visit(target, models, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for name in models.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(name, models, &mut stack, &mut done) {
            return Some(cycle);
        }
    }
    None
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A key's public id: the first 12 hex digits of its SHA-256 (safe to log).
pub fn key_id(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
