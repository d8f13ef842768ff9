//! Authentication: `Authorization: Bearer <key>` or `x-api-key: <key>` → a `Principal`.
//! Keys are stored and compared only as SHA-256 hashes; the plaintext is never kept or logged.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::{self, Config, TeamPolicy};
use crate::error::GatewayError;

/// Who is calling: the team, a loggable key id, and the team's policy.
#[derive(Debug, Clone)]
pub struct Principal {
    pub team: Arc<str>,
    pub key_id: Arc<str>,
    pub policy: Arc<TeamPolicy>,
}

pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl Authenticator {
    pub fn new(config: &Config) -> Self {
        let policies: HashMap<&str, Arc<TeamPolicy>> =
            config.teams.iter().map(|(name, policy)| (name.as_str(), Arc::new(policy.clone()))).collect();
        let by_hash = config
            .keys
            .iter()
            .filter_map(|k| {
                let policy = policies.get(k.team.as_str())?.clone();
                Some((k.sha256, Principal { team: k.team.as_str().into(), key_id: k.id.as_str().into(), policy }))
            })
            .collect();
        Self { by_hash }
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, GatewayError> {
        let presented = presented_key(headers).ok_or_else(|| {
            GatewayError::Unauthorized(
                "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.".into(),
            )
        })?;
        let hash = config::sha256(presented.as_bytes());
        // The map is keyed by a hash of the secret, so lookup timing reveals nothing usable about
        // the key; the final comparison is constant-time all the same.
        match self.by_hash.get_key_value(&hash) {
            Some((stored, principal)) if bool::from(stored.ct_eq(&hash)) => Ok(principal.clone()),
            _ => Err(GatewayError::Unauthorized("Incorrect API key provided.".into())),
        }
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value).trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let config = Config::from_yaml(
            "keys:\n  - { key: sk-a, team: a }\nteams:\n  a: { models: ['*'] }\n",
            &HashMap::<&str, &str>::new(),
        )
        .unwrap();
        Authenticator::new(&config)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn accepts_bearer_and_x_api_key() {
        let auth = authenticator();
        assert_eq!(&*auth.authenticate(&headers(&[("authorization", "Bearer sk-a")])).unwrap().team, "a");
        assert_eq!(&*auth.authenticate(&headers(&[("x-api-key", "sk-a")])).unwrap().team, "a");
    }

    #[test]
    fn refuses_missing_and_wrong_keys_without_echoing_them() {
        let auth = authenticator();
        assert!(matches!(auth.authenticate(&headers(&[])), Err(GatewayError::Unauthorized(_))));
        let err = auth.authenticate(&headers(&[("authorization", "Bearer sk-secret-wrong")])).unwrap_err();
        assert!(!err.to_string().contains("sk-secret-wrong"));
    }
}
