//! Configuration of who may call and how much: limits per key, team and model, subscription
//! tiers, the Valkey-down policy, the admin credential and the OIDC/JWT auth mode. Raw serde
//! structs (strict) and their validated forms live together here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Env, duration, parse_sha256_hex, sha256};

/// Limits of one subject (a key, a team, a team's use of one model). `None` = unlimited.
/// Token counts are input + output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_tokens: Option<u64>,
    /// The original service's tier quota: requests per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_requests: Option<u64>,
    /// Money a UTC day / month, in micro-units of `spend.currency` (written as a decimal amount,
    /// `"50"` or `"0.25"`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::config::price::opt_amount")]
    pub daily_spend: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::config::price::opt_amount")]
    pub monthly_spend: Option<u64>,
    /// A price ceiling: deployments dearer than this (input + output price per million tokens,
    /// in micro-units of `spend.currency`, what the `cheapest` strategy orders by) are never
    /// routed to. Zero allows only free deployments.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::config::price::opt_amount")]
    pub max_price_per_mtok: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Each field from `self`, else from `fallback`.
    pub fn or(self, fallback: Limits) -> Limits {
        Limits {
            rpm: self.rpm.or(fallback.rpm),
            tpm: self.tpm.or(fallback.tpm),
            max_concurrent: self.max_concurrent.or(fallback.max_concurrent),
            daily_tokens: self.daily_tokens.or(fallback.daily_tokens),
            monthly_tokens: self.monthly_tokens.or(fallback.monthly_tokens),
            daily_requests: self.daily_requests.or(fallback.daily_requests),
            daily_spend: self.daily_spend.or(fallback.daily_spend),
            monthly_spend: self.monthly_spend.or(fallback.monthly_spend),
            max_price_per_mtok: self.max_price_per_mtok.or(fallback.max_price_per_mtok),
        }
    }

    /// Rejects zero (write nothing for "unlimited"); `path` prefixes the message.
    pub fn check(&self, path: &str) -> Result<(), ConfigError> {
        for (field, value) in [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("max_concurrent", self.max_concurrent),
            ("daily_tokens", self.daily_tokens),
            ("monthly_tokens", self.monthly_tokens),
            ("daily_requests", self.daily_requests),
            ("daily_spend", self.daily_spend),
            ("monthly_spend", self.monthly_spend),
        ] {
            if value == Some(0) {
                return Err(ConfigError(format!("{path}.{field}: must be at least 1 (leave it out for no limit)")));
            }
            if value.is_some_and(|v| v > MAX_LIMIT) {
                return Err(ConfigError(format!("{path}.{field}: must be at most {MAX_LIMIT}")));
            }
        }
        if self.max_price_per_mtok.is_some_and(|v| v > MAX_LIMIT) {
            return Err(ConfigError(format!("{path}.max_price_per_mtok: must be at most {}", MAX_LIMIT / 1_000_000)));
        }
        Ok(())
    }

    /// The lower of two price ceilings (either may be absent).
    pub fn ceiling(&self, other: &Limits) -> Option<u64> {
        match (self.max_price_per_mtok, other.max_price_per_mtok) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Keeps every count exact in Lua's numbers (doubles, exact to 2^53).
pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;

/// A subscription tier: default limits, the models it may call and where its requests go.
#[derive(Debug, Clone, Default)]
pub struct Tier {
    pub limits: Limits,
    pub models: Option<Vec<String>>,
    pub model_overrides: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    #[serde(default)]
    pub limits: Limits,
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub model_overrides: BTreeMap<String, String>,
}

/// The original service's tiers: free 10 requests a day, pro 1,000, enterprise unlimited. Their
/// model routing names deployments, so it is configuration (`tiers.free.model_overrides`).
pub fn builtin_tiers() -> BTreeMap<String, Tier> {
    let tier = |daily_requests| Tier { limits: Limits { daily_requests, ..Limits::default() }, ..Tier::default() };
    [("free", tier(Some(10))), ("pro", tier(Some(1000))), ("enterprise", tier(None))]
        .into_iter()
        .map(|(name, tier)| (name.to_owned(), tier))
        .collect()
}

/// The built-in tiers, each replaced whole by a configured tier of the same name.
pub fn tiers(raw: BTreeMap<String, RawTier>) -> Result<BTreeMap<String, Tier>, ConfigError> {
    let mut tiers = builtin_tiers();
    for (name, t) in raw {
        t.limits.check(&format!("tiers.{name}.limits"))?;
        tiers.insert(name, Tier { limits: t.limits, models: t.models, model_overrides: t.model_overrides });
    }
    Ok(tiers)
}

/// What happens to limits while Valkey cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValkeyDownPolicy {
    /// Each replica enforces limit / replicas on its own (loudly: log, metric, /health).
    FailOpen,
    /// Limited requests get 503 until Valkey answers again.
    FailClosed,
}

impl ValkeyDownPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail-open",
            Self::FailClosed => "fail-closed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub on_valkey_down: ValkeyDownPolicy,
    /// How many replicas share the limits: each enforces 1/replicas of them while Valkey is down.
    pub replicas: u32,
    /// Completion tokens reserved when a request names no `max_tokens`.
    pub default_max_tokens: u64,
    /// Request-rate burst: a bucket holds this much time's worth of requests (`rpm` × burst / 60s).
    /// Token buckets always hold a full minute, so any request within the TPM can be admitted.
    pub request_burst: Duration,
    /// A concurrency lease expires this long after its replica last renewed it (crash safety).
    pub lease_ttl: Duration,
    /// Whether replicas take allowances of shared counters ahead of demand (`limits/allowance.rs`).
    pub allowances: bool,
    /// `spend.currency`, named in money budgets' refusals and in `/quota`.
    pub currency: String,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            on_valkey_down: ValkeyDownPolicy::FailOpen,
            replicas: 1,
            default_max_tokens: 1024,
            request_burst: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
            allowances: true,
            currency: crate::config::price::CATALOGUE_CURRENCY.to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitSettings {
    /// `fail-open` (default) or `fail-closed`.
    pub on_valkey_down: Option<String>,
    pub replicas: Option<u32>,
    pub default_max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub request_burst: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub lease_ttl: Option<Duration>,
    pub allowances: Option<bool>,
}

pub fn limit_settings(raw: Option<&RawLimitSettings>, env: &dyn Env) -> Result<LimitSettings, ConfigError> {
    let mut s = LimitSettings::default();
    let err = |field: &str, msg: &str| ConfigError(format!("limits.{field}: {msg}"));
    if let Some(raw) = raw {
        if let Some(policy) = &raw.on_valkey_down {
            s.on_valkey_down = match policy.as_str() {
                "fail-open" | "fail_open" => ValkeyDownPolicy::FailOpen,
                "fail-closed" | "fail_closed" => ValkeyDownPolicy::FailClosed,
                other => {
                    return Err(err(
                        "on_valkey_down",
                        &format!("unknown policy {other:?} (expected fail-open or fail-closed)"),
                    ));
                }
            };
        }
        s.replicas = raw.replicas.unwrap_or(s.replicas);
        s.default_max_tokens = raw.default_max_tokens.unwrap_or(s.default_max_tokens);
        s.request_burst = raw.request_burst.unwrap_or(s.request_burst);
        s.lease_ttl = raw.lease_ttl.unwrap_or(s.lease_ttl);
        s.allowances = raw.allowances.unwrap_or(s.allowances);
    }
    if let Some(n) = env.var("LLM_GATEWAY_REPLICAS") {
        s.replicas = n.parse().map_err(|_| ConfigError(format!("LLM_GATEWAY_REPLICAS: {n:?} is not a number")))?;
    }
    if s.replicas == 0 {
        return Err(err("replicas", "must be at least 1"));
    }
    if s.request_burst.is_zero() || s.request_burst > Duration::from_secs(60) {
        return Err(err("request_burst", "must be above 0 and at most 60s"));
    }
    if s.lease_ttl < Duration::from_secs(3) {
        return Err(err("lease_ttl", "must be at least 3s"));
    }
    if s.default_max_tokens > MAX_LIMIT {
        return Err(err("default_max_tokens", &format!("must be at most {MAX_LIMIT}")));
    }
    Ok(s)
}

/// The admin API's credential, as a SHA-256 hash.
#[derive(Clone)]
pub struct AdminSettings {
    pub key_sha256: [u8; 32],
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("AdminSettings { key_sha256: <redacted> }")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    pub key_env: Option<String>,
}

pub fn admin_settings(
    raw: Option<&RawAdmin>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Option<AdminSettings>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let given = [raw.key.is_some(), raw.key_sha256.is_some(), raw.key_env.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ConfigError("admin: exactly one of key, key_sha256 or key_env is required".into()));
    }
    let hash = if let Some(k) = &raw.key {
        if k.is_empty() {
            return Err(ConfigError("admin.key: must not be empty".into()));
        }
        sha256(k.as_bytes())
    } else if let Some(hex) = &raw.key_sha256 {
        parse_sha256_hex(hex).ok_or_else(|| ConfigError("admin.key_sha256: must be 64 hex digits".into()))?
    } else {
        let var = raw.key_env.as_deref().unwrap_or_default();
        match env.var(var) {
            Some(k) => sha256(k.as_bytes()),
            None => {
                warnings.push(format!("admin.key_env: environment variable {var} is not set; the admin API is off"));
                return Ok(None);
            }
        }
    };
    Ok(Some(AdminSettings { key_sha256: hash }))
}

/// Which credentials `/v1` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// API keys only (static and admin-created).
    Keys,
    /// OIDC bearer JWTs only (the blueprint's `keycloak` mode).
    Jwt,
    /// Both: a bearer that looks like a JWT is verified as one, anything else is a key.
    Hybrid,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// How long a replica trusts what it read about an admin-created key (revocation delay).
    pub key_cache_ttl: Duration,
    pub oidc: Option<OidcSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { mode: AuthMode::Keys, key_cache_ttl: Duration::from_millis(500), oidc: None }
    }
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: Vec<String>,
    pub jwks_url: String,
    /// Dotted path of the claim naming the team (`groups`, `team`, `realm_access.roles`).
    pub team_claim: String,
    /// Claim value → team, matched exactly (a Keycloak group's full path `/platform/team-a`).
    /// Empty: a claim value names the team of exactly that name.
    pub teams: BTreeMap<String, String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway: Duration,
    pub refresh: Duration,
    /// Limits of each token subject (user), on top of the team's.
    pub limits: Limits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `keys` (default), `keycloak` (alias `jwt`), or `hybrid`.
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub key_cache_ttl: Option<Duration>,
    pub oidc: Option<RawOidc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer_url: Option<String>,
    #[serde(default)]
    pub audience: OneOrMany,
    pub jwks_url: Option<String>,
    pub team_claim: Option<String>,
    /// Claim value → team name, each value matched exactly as the token carries it.
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub leeway: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub refresh: Option<Duration>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

/// The `auth` section, with the `LLM_GATEWAY_AUTH_MODE` / `LLM_GATEWAY_OIDC_*`
/// environment variables as overrides (the Helm chart renders the section itself).
pub fn auth_settings(raw: Option<&RawAuth>, env: &dyn Env) -> Result<AuthSettings, ConfigError> {
    let mut s = AuthSettings::default();
    let empty = RawOidc::default();
    let raw_oidc = raw.and_then(|r| r.oidc.as_ref()).unwrap_or(&empty);
    let mode = env.var("LLM_GATEWAY_AUTH_MODE").or_else(|| raw.and_then(|r| r.mode.clone()));
    if let Some(mode) = mode {
        s.mode = auth_mode(&mode)?;
    }
    if let Some(ttl) = raw.and_then(|r| r.key_cache_ttl) {
        s.key_cache_ttl = ttl;
    }
    let err = |field: &str, msg: String| ConfigError(format!("auth.oidc.{field}: {msg}"));
    let issuer = env.var("LLM_GATEWAY_OIDC_ISSUER_URL").or_else(|| raw_oidc.issuer_url.clone());
    let configured = issuer.is_some() || raw.is_some_and(|r| r.oidc.is_some());
    if s.mode == AuthMode::Keys && !configured {
        return Ok(s);
    }
    let issuer = issuer.filter(|i| !i.is_empty()).ok_or_else(|| {
        err("issuer_url", "required when auth.mode is keycloak or hybrid (or set LLM_GATEWAY_OIDC_ISSUER_URL)".into())
    })?;
    let audience: Vec<String> = match env.var("LLM_GATEWAY_OIDC_AUDIENCE") {
        Some(a) => vec![a],
        None => raw_oidc.audience.to_vec(),
    };
    if audience.is_empty() || audience.iter().any(String::is_empty) {
        return Err(err("audience", "required: the client id tokens are issued for".into()));
    }
    let jwks_url = env.var("LLM_GATEWAY_OIDC_JWKS_URL").or_else(|| raw_oidc.jwks_url.clone()).unwrap_or_else(|| {
        // Keycloak's certificate endpoint below the realm issuer.
        format!("{}/protocol/openid-connect/certs", issuer.trim_end_matches('/'))
    });
    for (field, url) in [("issuer_url", &issuer), ("jwks_url", &jwks_url)] {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(err(field, format!("{url:?} must start with https:// or http://")));
        }
    }
    let team_claim = env
        .var("LLM_GATEWAY_OIDC_TEAM_CLAIM")
        .or_else(|| raw_oidc.team_claim.clone())
        .unwrap_or_else(|| "groups".into());
    for (value, team) in &raw_oidc.teams {
        if value.is_empty() || team.is_empty() {
            return Err(err(
                "teams",
                format!("{value:?}: {team:?}: neither the claim value nor the team may be empty"),
            ));
        }
    }
    let algorithms = algorithms(&raw_oidc.algorithms)?;
    raw_oidc.limits.check("auth.oidc.limits")?;
    let refresh = raw_oidc.refresh.unwrap_or(Duration::from_secs(300));
    if refresh < Duration::from_secs(1) {
        return Err(err("refresh", "must be at least 1s".into()));
    }
    s.oidc = Some(OidcSettings {
        issuer,
        audience,
        jwks_url,
        team_claim,
        teams: raw_oidc.teams.clone(),
        algorithms,
        leeway: raw_oidc.leeway.unwrap_or(Duration::from_secs(30)),
        refresh,
        limits: raw_oidc.limits,
    });
    Ok(s)
}

fn auth_mode(mode: &str) -> Result<AuthMode, ConfigError> {
    Ok(match mode {
        "keys" | "masterKey" => AuthMode::Keys,
        "keycloak" | "jwt" | "oidc" => AuthMode::Jwt,
        "hybrid" => AuthMode::Hybrid,
        other => {
            return Err(ConfigError(format!("auth.mode: unknown mode {other:?} (expected keys, keycloak or hybrid)")));
        }
    })
}

/// The signature algorithms tokens may use: asymmetric ones only (RS256 and ES256 by default).
fn algorithms(names: &[String]) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
    use jsonwebtoken::Algorithm::*;
    if names.is_empty() {
        return Ok(vec![RS256, ES256]);
    }
    let mut algorithms = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        algorithms.push(match name.as_str() {
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            other => {
                return Err(ConfigError(format!(
                    "auth.oidc.algorithms[{i}]: {other:?} is not allowed (asymmetric RS*, PS*, ES256 or ES384 only)"
                )));
            }
        });
    }
    Ok(algorithms)
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(a) => vec![a.clone()],
            OneOrMany::Many(list) => list.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, &HashMap::<&str, &str>::from([("ADMIN", "sk-admin")]))
    }

    #[test]
    fn teams_take_tier_defaults_and_keep_their_own() {
        let c = load(
            "tiers: { pro: { limits: { daily_requests: 5, rpm: 10 }, model_overrides: { big: small } } }\n\
             teams:\n  a: { tier: pro, models: ['*'], limits: { rpm: 60 }, model_overrides: { x: small } }\n  \
             b: { tier: free, models: ['*'] }\n\
             keys: [{ key: k, team: a, limits: { max_concurrent: 2 }, models: ['small'], expires_at: '2030-01-01' }]\n\
             models: { small: { deployments: [{ provider: m }] }, big: { deployments: [{ provider: m }] } }\n\
             providers: { m: { dialect: mock } }\n",
        )
        .unwrap();
        let a = &c.teams["a"];
        assert_eq!(a.limits, Limits { rpm: Some(60), daily_requests: Some(5), ..Limits::default() });
        assert_eq!(a.model_overrides.get("big").map(String::as_str), Some("small"));
        assert_eq!(a.model_overrides.get("x").map(String::as_str), Some("small"));
        assert_eq!(c.teams["b"].limits.daily_requests, Some(10), "the built-in free tier");
        assert_eq!(c.keys[0].limits.max_concurrent, Some(2));
        assert_eq!(c.keys[0].expires_at, Some(1_893_456_000));
    }

    #[test]
    fn the_issue_example_is_accepted() {
        let env = HashMap::from([("LLM_GATEWAY_ADMIN_KEY", "sk-admin"), ("TEAM_A_CI_KEY", "sk-ci")]);
        let c = Config::from_yaml(
            r#"
valkey: { url: "redis://127.0.0.1:6379" }
admin: { key_env: LLM_GATEWAY_ADMIN_KEY }
teams:
  team-a: { models: ["*"], limits: { rpm: 600, tpm: 100000, max_concurrent: 20, daily_tokens: 2000000 } }
keys:
  - { key_env: TEAM_A_CI_KEY, team: team-a, limits: { rpm: 60 } }
"#,
            &env,
        )
        .unwrap();
        assert_eq!(c.teams["team-a"].limits.max_concurrent, Some(20));
        assert_eq!(c.keys[0].limits.rpm, Some(60));
        assert_eq!(c.keys[0].sha256, sha256(b"sk-ci"));
        assert!(c.admin.is_some() && c.valkey.is_some());
    }

    #[test]
    fn rejects_bad_limits_with_their_path() {
        let base = "teams: { a: { models: ['*'], limits: { rpm: 0 } } }\n";
        assert_eq!(
            load(base).unwrap_err().to_string(),
            "teams.a.limits.rpm: must be at least 1 (leave it out for no limit)"
        );
        let e = load("teams: { a: { tier: gold } }\n").unwrap_err().to_string();
        assert_eq!(e, "teams.a.tier: unknown tier \"gold\" (known: enterprise, free, pro)");
        let e = load("limits: { on_valkey_down: maybe }\n").unwrap_err().to_string();
        assert!(e.starts_with("limits.on_valkey_down: unknown policy"), "{e}");
        let e = load("teams: { a: { limits: { rpn: 5 } } }\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `rpn`"), "{e}");
    }

    #[test]
    fn auth_modes_and_admin() {
        let c = load("admin: { key_env: ADMIN }\n").unwrap();
        assert_eq!(c.admin.unwrap().key_sha256, sha256(b"sk-admin"));
        let e = load("auth: { mode: hybrid }\n").unwrap_err().to_string();
        assert!(e.starts_with("auth.oidc.issuer_url: required"), "{e}");
        let c = load("auth: { mode: keycloak, oidc: { issuer_url: 'https://kc/realms/p', audience: gw } }\n").unwrap();
        let oidc = c.auth.oidc.unwrap();
        assert_eq!(c.auth.mode, AuthMode::Jwt);
        assert_eq!(oidc.jwks_url, "https://kc/realms/p/protocol/openid-connect/certs");
        assert_eq!(oidc.team_claim, "groups");
        let e = load("auth: { mode: hybrid, oidc: { issuer_url: 'https://kc', audience: gw, algorithms: [HS256] } }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("auth.oidc.algorithms[0]: \"HS256\" is not allowed"), "{e}");
    }

    #[test]
    fn oidc_team_mapping_names_configured_teams() {
        let oidc = |teams: &str| {
            load(&format!(
                "teams: {{ team-a: {{ models: ['*'] }} }}\n\
                 auth: {{ mode: keycloak, oidc: {{ issuer_url: 'https://kc/realms/p', audience: gw, teams: {teams} }} }}\n"
            ))
        };
        let c = oidc("{ '/platform/team-a': team-a }").unwrap();
        assert_eq!(c.auth.oidc.unwrap().teams["/platform/team-a"], "team-a");
        let e = oidc("{ '/platform/team-b': team-b }").unwrap_err().to_string();
        assert_eq!(e, "auth.oidc.teams./platform/team-b: unknown team \"team-b\"");
        let e = oidc("{ '': team-a }").unwrap_err().to_string();
        assert!(e.starts_with("auth.oidc.teams: "), "{e}");
    }
}
