//! `providers`: each provider's dialect, endpoint, credentials, headers, timeouts and health
//! check, from its own settings over its vendor's catalogue entry; and the provider
//! `LLM_BACKEND` stands for when the config lists no models.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawProvider, RawTimeouts};
use super::{
    AuthStyle, ConfigError, DEFAULT_MAX_EVENT_BYTES, Dialect, Env, HealthCheck, ProviderSpec, Secret, StreamUsage,
    Timeouts, cli, cloud,
};
use crate::providers::{self, Descriptor};

/// The provider `LLM_BACKEND` names: a configured one, or the original service's `mock`,
/// `api` (Anthropic) or `cli`.
pub(super) fn backend_from_env(
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

/// A field error under `providers.<name>`.
struct At<'a>(&'a str);

impl At<'_> {
    fn err(&self, field: &str, msg: String) -> ConfigError {
        ConfigError(format!("{}.{field}: {msg}", self.0))
    }
}

pub(super) fn build_provider(
    name: &str,
    raw: &RawProvider,
    total_override: Option<Duration>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<ProviderSpec, ConfigError> {
    let path = format!("providers.{name}");
    let at = At(&path);
    let descriptor = match &raw.vendor {
        Some(vendor) => Some(providers::lookup(vendor).map_err(|e| at.err("vendor", e))?),
        None => None,
    };
    let dialect_name = raw
        .dialect
        .as_deref()
        .or(descriptor.map(|d| d.dialect.as_str()))
        .ok_or_else(|| ConfigError(format!("{path}: either dialect or vendor is required")))?;
    let dialect = dialect_of(dialect_name, &at)?;
    let cli = cli_spec(&at, raw, dialect, dialect_name, env)?;
    let cloud = cloud::build(&path, dialect, raw)?;
    let base_url = raw.base_url.clone().or_else(|| descriptor.and_then(|d| d.base_url.clone()));
    let base_url = base_url.or_else(|| cloud.default_base_url(dialect)).unwrap_or_default();
    let base_url = base_url.trim_end_matches('/').to_owned();
    if matches!(dialect, Dialect::OpenAi | Dialect::Anthropic) || dialect.is_cloud() {
        if base_url.is_empty() {
            return Err(at.err("base_url", "required for this dialect".into()));
        }
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(at.err("base_url", format!("{base_url:?} must start with http:// or https://")));
        }
    }
    let auth = auth_style(&at, raw, descriptor, dialect)?;
    let api_key = api_key(&at, raw, descriptor, dialect, &auth, env, warnings);
    let stream_usage = stream_usage(&at, raw, descriptor, dialect)?;
    let mut headers: BTreeMap<String, String> = descriptor.map(|d| d.headers.clone()).unwrap_or_default();
    headers.extend(raw.headers.clone());
    for (k, v) in &headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() || http::HeaderValue::from_str(v).is_err() {
            return Err(at.err(&format!("headers.{k}"), "not a valid HTTP header".into()));
        }
    }
    let mut query: BTreeMap<String, String> = descriptor.map(|d| d.query.clone()).unwrap_or_default();
    query.extend(raw.query.clone());
    // (Below 1 KiB even ordinary chunks would be refused.)
    let max_event_bytes = match raw.max_event_bytes {
        None => DEFAULT_MAX_EVENT_BYTES,
        Some(n) if n < 1024 => return Err(at.err("max_event_bytes", "must be at least 1024".into())),
        Some(n) => usize::try_from(n).map_err(|_| at.err("max_event_bytes", "too large".into()))?,
    };
    Ok(ProviderSpec {
        name: name.to_owned(),
        health_check: health_check(&at, raw)?,
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
        timeouts: timeouts(&at, &raw.timeouts, total_override)?,
        max_event_bytes,
        known_models: descriptor.map(|d| d.models.clone()).unwrap_or_default(),
        cli,
        cloud,
    })
}

fn dialect_of(name: &str, at: &At) -> Result<Dialect, ConfigError> {
    Ok(match name {
        "openai" => Dialect::OpenAi,
        "mock" => Dialect::Mock,
        "anthropic" => Dialect::Anthropic,
        "cli" => Dialect::Cli,
        "gemini" => Dialect::Gemini,
        "bedrock" => Dialect::Bedrock,
        "vertex" => Dialect::Vertex,
        other => {
            return Err(at.err(
                "dialect",
                format!("unknown dialect {other:?} (expected openai, anthropic, gemini, bedrock, vertex, mock or cli)"),
            ));
        }
    })
}

/// The CLI settings of a `cli` provider; any other dialect must not set them (nor a `cli`
/// provider the HTTP ones).
fn cli_spec(
    at: &At,
    raw: &RawProvider,
    dialect: Dialect,
    dialect_name: &str,
    env: &dyn Env,
) -> Result<Option<Arc<cli::CliSpec>>, ConfigError> {
    if dialect != Dialect::Cli {
        if let Some(field) = raw.cli_fields_set().first() {
            return Err(at.err(field, format!("only for dialect cli (this provider's dialect is {dialect_name})")));
        }
        return Ok(None);
    }
    if let Some(field) = ["base_url", "api_key_env", "auth", "auth_header", "stream_usage"]
        .into_iter()
        .zip([&raw.base_url, &raw.api_key_env, &raw.auth, &raw.auth_header, &raw.stream_usage])
        .find_map(|(name, value)| value.as_ref().map(|_| name))
    {
        return Err(at.err(field, "not used by the cli dialect (it runs a command, not HTTP)".into()));
    }
    if raw.health_check.is_some() {
        return Err(at.err("health_check", "the cli dialect checks its sessions itself (see /sessions)".into()));
    }
    Ok(Some(Arc::new(cli::build(at.0, raw, env)?)))
}

fn auth_style(
    at: &At,
    raw: &RawProvider,
    descriptor: Option<&Descriptor>,
    dialect: Dialect,
) -> Result<AuthStyle, ConfigError> {
    let auth_name = raw.auth.as_deref().or(descriptor.and_then(|d| d.auth.as_deref()));
    let auth_name = auth_name.unwrap_or(if dialect == Dialect::Gemini { "api-key" } else { "bearer" });
    let auth_header = raw.auth_header.clone().or_else(|| descriptor.and_then(|d| d.auth_header.clone()));
    let auth_header = auth_header.or_else(|| (dialect == Dialect::Gemini).then(|| "x-goog-api-key".into()));
    let auth = match auth_name {
        "bearer" => AuthStyle::Bearer,
        "none" => AuthStyle::None,
        "api-key" => AuthStyle::Header(auth_header.unwrap_or_else(|| "api-key".into())),
        other => {
            return Err(at.err("auth", format!("unknown auth style {other:?} (expected bearer, api-key or none)")));
        }
    };
    if let AuthStyle::Header(h) = &auth
        && http::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        return Err(at.err("auth_header", format!("{h:?} is not a valid header name")));
    }
    Ok(auth)
}

/// The key from the environment variable the provider (or its vendor) names; a missing one is
/// a warning for the dialects that need a key.
fn api_key(
    at: &At,
    raw: &RawProvider,
    descriptor: Option<&Descriptor>,
    dialect: Dialect,
    auth: &AuthStyle,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Option<Secret> {
    let key_env = raw.api_key_env.clone().or_else(|| descriptor.and_then(|d| d.api_key_env.clone()));
    let var = key_env.or_else(|| cloud::default_key_env(dialect).map(str::to_owned))?;
    let value = env.var(&var);
    if value.is_none()
        && *auth != AuthStyle::None
        && matches!(dialect, Dialect::OpenAi | Dialect::Anthropic | Dialect::Gemini)
    {
        warnings.push(format!(
            "{}.api_key_env: environment variable {var} is not set; requests go without credentials",
            at.0
        ));
    }
    value.map(Secret::new)
}

fn stream_usage(
    at: &At,
    raw: &RawProvider,
    descriptor: Option<&Descriptor>,
    dialect: Dialect,
) -> Result<StreamUsage, ConfigError> {
    Ok(
        match raw
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
                return Err(at.err(
                    "stream_usage",
                    format!("unknown value {other:?} (expected stream_options, always or none)"),
                ));
            }
        },
    )
}

fn timeouts(at: &At, raw: &RawTimeouts, total_override: Option<Duration>) -> Result<Timeouts, ConfigError> {
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        connect: raw.connect.unwrap_or(defaults.connect),
        first_byte: raw.first_byte.unwrap_or(defaults.first_byte),
        idle: raw.idle.unwrap_or(defaults.idle),
        total: total_override.or(raw.total).unwrap_or(defaults.total),
    };
    for (field, d) in [
        ("timeouts.connect", timeouts.connect),
        ("timeouts.first_byte", timeouts.first_byte),
        ("timeouts.idle", timeouts.idle),
        ("timeouts.total", timeouts.total),
    ] {
        if d.is_zero() {
            return Err(at.err(field, "must be greater than 0".into()));
        }
    }
    Ok(timeouts)
}

fn health_check(at: &At, raw: &RawProvider) -> Result<Option<HealthCheck>, ConfigError> {
    let Some(h) = &raw.health_check else { return Ok(None) };
    let path = h.path.clone().unwrap_or_else(|| "/models".into());
    if !path.starts_with('/') {
        return Err(at.err("health_check.path", format!("{path:?} must start with /")));
    }
    Ok(Some(HealthCheck {
        path,
        interval: h.interval.unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100)),
        timeout: h.timeout.unwrap_or(Duration::from_secs(5)),
    }))
}
