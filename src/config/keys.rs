//! `keys` and `teams`: API keys (by hash: the config never needs the key itself) and the teams
//! they belong to, with each team's models, overrides and limits (its tier's where it sets none).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{ConfigError, Env, limits, raw};

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

/// The `teams` section, each with what its tier gives it.
pub(super) fn teams(
    raw_teams: BTreeMap<String, raw::RawTeam>,
    tiers: &BTreeMap<String, limits::Tier>,
    aliases: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, TeamPolicy>, ConfigError> {
    let err = |path: String, msg: String| ConfigError(format!("{path}: {msg}"));
    let mut teams: BTreeMap<String, TeamPolicy> = BTreeMap::new();
    for (name, team) in raw_teams {
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
            let group = aliases.get(&model).cloned().unwrap_or_else(|| model.clone());
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
    Ok(teams)
}

/// The `keys` section; a key whose variable is unset is left out, with a warning.
pub(super) fn keys(
    raw_keys: &[raw::RawKey],
    teams: &BTreeMap<String, TeamPolicy>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Vec<KeySpec>, ConfigError> {
    let err = |path: String, msg: String| ConfigError(format!("{path}: {msg}"));
    let mut keys = Vec::with_capacity(raw_keys.len());
    for (i, key) in raw_keys.iter().enumerate() {
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
    Ok(keys)
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
