//! Authentication: `Authorization: Bearer <credential>` or `x-api-key: <key>` → a `Principal`.
//! Credentials are API keys — static ones from the config, and ones made through the admin API
//! (`keys`) — or, in the `keycloak` / `hybrid` modes, OIDC JWTs (`jwt`). Keys are stored and
//! compared only as SHA-256 hashes; no credential is ever kept, logged or echoed.

pub mod jwt;
pub mod keys;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::config::limits::AuthMode;
use crate::config::{self, Config, TeamPolicy};
use crate::error::GatewayError;

pub use crate::ctx::{Grant, Principal};

/// Team name → policy, shared by every way of authenticating.
pub type Teams = Arc<HashMap<String, Arc<TeamPolicy>>>;

pub struct Authenticator {
    mode: AuthMode,
    by_hash: HashMap<[u8; 32], Principal>,
    keys: Option<Arc<keys::KeyStore>>,
    jwt: Option<Arc<jwt::JwtVerifier>>,
    admin: Option<[u8; 32]>,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    /// `keys`: the admin-made key store, when there is one.
    pub fn new(config: &Config, clock: Arc<dyn Clock>, keys: Option<Arc<keys::KeyStore>>) -> Self {
        let teams = teams(config);
        let by_hash = config
            .keys
            .iter()
            .filter_map(|k| {
                let policy = teams.get(k.team.as_str())?.clone();
                let grant = Grant {
                    subject: format!("k:{}", k.id).into(),
                    limits: k.limits,
                    models: k.models.clone(),
                    expires_at: k.expires_at,
                };
                let principal = Principal {
                    team: k.team.as_str().into(),
                    key_id: k.id.as_str().into(),
                    policy,
                    grant: Arc::new(grant),
                };
                Some((k.sha256, principal))
            })
            .collect();
        let jwt = match (&config.auth.oidc, config.auth.mode) {
            (Some(oidc), AuthMode::Jwt | AuthMode::Hybrid) => {
                Some(Arc::new(jwt::JwtVerifier::new(oidc.clone(), teams, clock.clone())))
            }
            _ => None,
        };
        Self { mode: config.auth.mode, by_hash, keys, jwt, admin: config.admin.as_ref().map(|a| a.key_sha256), clock }
    }

    /// The admin-made key store, when there is one.
    pub fn keys(&self) -> Option<&Arc<keys::KeyStore>> {
        self.keys.as_ref()
    }

    pub fn jwt(&self) -> Option<&Arc<jwt::JwtVerifier>> {
        self.jwt.as_ref()
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, GatewayError> {
        let presented = presented_key(headers).ok_or_else(|| {
            GatewayError::Unauthorized(
                "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.".into(),
            )
        })?;
        if let Some(verifier) = &self.jwt
            && jwt::looks_like_jwt(presented)
        {
            return verifier.verify(presented).await.map_err(|e| GatewayError::Unauthorized(e.to_string()));
        }
        if self.mode == AuthMode::Jwt {
            return Err(GatewayError::Unauthorized(
                "A bearer token (JWT) from the identity provider is required.".into(),
            ));
        }
        let hash = config::sha256(presented.as_bytes());
        // The map is keyed by a hash of the secret, so lookup timing reveals nothing usable about
        // the key; the final comparison is constant-time all the same.
        let principal = match self.by_hash.get_key_value(&hash) {
            Some((stored, principal)) if bool::from(stored.ct_eq(&hash)) => principal.clone(),
            _ => match &self.keys {
                Some(store) => store
                    .lookup(&hash)
                    .await
                    .map_err(|e| GatewayError::StoreUnavailable(format!("API keys cannot be checked right now: {e}")))?
                    .ok_or_else(incorrect_key)?,
                None => return Err(incorrect_key()),
            },
        };
        if principal.grant.expires_at.is_some_and(|at| self.clock.now_ms() / 1000 >= at) {
            return Err(GatewayError::Unauthorized("The API key has expired.".into()));
        }
        Ok(principal)
    }

    /// Whether the request carries the admin credential.
    pub fn is_admin(&self, headers: &HeaderMap) -> Option<bool> {
        let admin = self.admin.as_ref()?;
        let presented = presented_key(headers).map(|k| config::sha256(k.as_bytes())).unwrap_or([0; 32]);
        Some(bool::from(admin.ct_eq(&presented)))
    }
}

fn incorrect_key() -> GatewayError {
    GatewayError::Unauthorized("Incorrect API key provided.".into())
}

/// Team name → policy, built once from the config.
pub fn teams(config: &Config) -> Teams {
    Arc::new(config.teams.iter().map(|(name, policy)| (name.clone(), Arc::new(policy.clone()))).collect())
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
    use crate::clock::ManualClock;

    fn authenticator(clock: Arc<ManualClock>) -> Authenticator {
        let config = Config::from_yaml(
            "keys:\n  - { key: sk-a, team: a }\n  - { key: sk-old, team: a, expires_at: 1000, models: ['m-*'] }\n\
             teams:\n  a: { models: ['*'] }\nadmin: { key: sk-admin }\n",
            &HashMap::<&str, &str>::new(),
        )
        .unwrap();
        Authenticator::new(&config, clock, None)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn accepts_bearer_and_x_api_key() {
        let auth = authenticator(Arc::new(ManualClock::new(0)));
        assert_eq!(&*auth.authenticate(&headers(&[("authorization", "Bearer sk-a")])).await.unwrap().team, "a");
        assert_eq!(&*auth.authenticate(&headers(&[("x-api-key", "sk-a")])).await.unwrap().team, "a");
    }

    #[tokio::test]
    async fn refuses_missing_wrong_and_expired_keys_without_echoing_them() {
        let clock = Arc::new(ManualClock::new(999_000));
        let auth = authenticator(clock.clone());
        assert!(matches!(auth.authenticate(&headers(&[])).await, Err(GatewayError::Unauthorized(_))));
        let err = auth.authenticate(&headers(&[("authorization", "Bearer sk-secret-wrong")])).await.unwrap_err();
        assert!(!err.to_string().contains("sk-secret-wrong"));
        let old = auth.authenticate(&headers(&[("authorization", "Bearer sk-old")])).await.unwrap();
        assert!(old.allows("m-1") && !old.allows("n-1"), "the key narrows its team's models");
        clock.set(1_000_000);
        let err = auth.authenticate(&headers(&[("authorization", "Bearer sk-old")])).await.unwrap_err();
        assert_eq!(err.to_string(), "The API key has expired.");
    }

    #[test]
    fn recognises_the_admin_key_only() {
        let auth = authenticator(Arc::new(ManualClock::new(0)));
        assert_eq!(auth.is_admin(&headers(&[("authorization", "Bearer sk-admin")])), Some(true));
        assert_eq!(auth.is_admin(&headers(&[("authorization", "Bearer sk-a")])), Some(false));
        assert_eq!(auth.is_admin(&headers(&[])), Some(false));
    }
}
