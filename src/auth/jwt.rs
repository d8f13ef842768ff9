//! OIDC bearer tokens (the blueprint's `keycloak` and `hybrid` modes): a JWT is accepted when
//! its signature verifies against the issuer's JWKS with an allowed asymmetric algorithm (never
//! `none`, never HMAC), its issuer and audience match, it is within its validity (with leeway),
//! and a configured claim names a team. The JWKS is fetched at start, refreshed periodically,
//! and re-fetched (at most once a second) when a token names a key id it does not know.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{Grant, Principal, Teams};
use crate::config::limits::OidcSettings;

/// Refetches triggered by unknown key ids are at least this far apart.
const MIN_REFETCH: Duration = Duration::from_secs(1);
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("Invalid bearer token: not a well-formed JWT.")]
    Malformed,
    #[error("Invalid bearer token: algorithm {0:?} is not accepted.")]
    Algorithm(Algorithm),
    #[error("Invalid bearer token: signed by a key the issuer does not publish.")]
    UnknownKey,
    #[error("Invalid bearer token: {0}.")]
    Rejected(&'static str),
    #[error("Invalid bearer token: claim {0:?} names no configured team.")]
    NoTeam(String),
    #[error("Invalid bearer token: it has no subject.")]
    NoSubject,
    #[error("the JWKS could not be fetched: {0}")]
    Jwks(String),
}

struct PublicKey {
    kid: Option<String>,
    /// The `alg` the JWKS pins the key to, if any.
    alg: Option<Algorithm>,
    family: jsonwebtoken::AlgorithmFamily,
    key: DecodingKey,
}

pub struct JwtVerifier {
    settings: OidcSettings,
    teams: Teams,
    keys: ArcSwap<Vec<PublicKey>>,
    /// When the JWKS was last fetched (held while fetching, so fetches never pile up).
    fetched: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

/// Indexes of the published keys that may have signed a token with this `kid` and `alg`.
fn candidates(keys: &[PublicKey], kid: Option<&str>, alg: Algorithm) -> Vec<usize> {
    keys.iter()
        .enumerate()
        .filter(|(_, k)| k.family == alg.family() && k.alg.is_none_or(|a| a == alg))
        .filter(|(_, k)| kid.is_none() || k.kid.as_deref() == kid)
        .map(|(i, _)| i)
        .collect()
}

/// Whether a bearer credential is a JWT (three base64url parts, a JSON header) rather than a key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

impl JwtVerifier {
    pub fn new(settings: OidcSettings, teams: Teams) -> Self {
        let http = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { settings, teams, keys: ArcSwap::from_pointee(Vec::new()), fetched: tokio::sync::Mutex::new(None), http }
    }

    /// Fetches the JWKS now and then every `refresh` (run as a background task).
    pub async fn keep_fresh(self: Arc<Self>) {
        loop {
            if let Err(e) = self.refetch(Duration::ZERO).await {
                tracing::warn!(error = %e, jwks_url = %self.settings.jwks_url, "JWKS refresh failed; keeping the previous keys");
            }
            tokio::time::sleep(self.settings.refresh).await;
        }
    }

    /// Fetches the JWKS unless it was fetched within `min_age`; returns how many keys it holds.
    pub async fn refetch(&self, min_age: Duration) -> Result<usize, JwtError> {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < min_age) {
            return Ok(self.keys.load().len());
        }
        *fetched = Some(Instant::now());
        let keys = self.fetch().await?;
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    async fn fetch(&self) -> Result<Vec<PublicKey>, JwtError> {
        let fail = |e: String| JwtError::Jwks(e);
        let mut response = self.http.get(&self.settings.jwks_url).send().await.map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("status {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(fail(format!("larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| fail(format!("not a JWKS: {e}")))?;
        Ok(set
            .keys
            .iter()
            .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .filter_map(|jwk| {
                let family = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => jsonwebtoken::AlgorithmFamily::Rsa,
                    AlgorithmParameters::EllipticCurve(_) => jsonwebtoken::AlgorithmFamily::Ec,
                    _ => return None,
                };
                Some(PublicKey {
                    kid: jwk.common.key_id.clone(),
                    alg: jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok()),
                    family,
                    key: DecodingKey::from_jwk(jwk).ok()?,
                })
            })
            .collect())
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let alg = header.alg;
        if !self.settings.algorithms.contains(&alg) {
            return Err(JwtError::Algorithm(alg));
        }
        let mut keys = self.keys.load_full();
        let mut matching = candidates(&keys, header.kid.as_deref(), alg);
        if matching.is_empty() {
            // Perhaps the issuer rotated its keys since we last looked.
            let _ = self.refetch(MIN_REFETCH).await;
            keys = self.keys.load_full();
            matching = candidates(&keys, header.kid.as_deref(), alg);
        }
        if matching.is_empty() {
            return Err(JwtError::UnknownKey);
        }
        let mut validation = Validation::new(alg);
        validation.set_audience(&self.settings.audience);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut first_error = None;
        for i in matching {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &keys[i].key, &validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        use jsonwebtoken::errors::ErrorKind::*;
        let reason = match first_error.as_ref().map(|e| e.kind()) {
            Some(ExpiredSignature) => "it has expired",
            Some(ImmatureSignature) => "it is not valid yet",
            Some(InvalidAudience) => "it was issued for another audience",
            Some(InvalidIssuer) => "it comes from another issuer",
            Some(InvalidSignature) => "its signature does not verify",
            Some(MissingRequiredClaim(_)) => "a required claim (exp, iss, aud) is missing",
            _ => "it cannot be verified",
        };
        Err(JwtError::Rejected(reason))
    }

    fn principal(&self, claims: &serde_json::Map<String, Value>) -> Result<Principal, JwtError> {
        let subject = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(JwtError::NoSubject)?;
        let team = self.team_of(claims).ok_or_else(|| JwtError::NoTeam(self.settings.team_claim.clone()))?;
        let policy =
            self.teams.get(&team).cloned().ok_or_else(|| JwtError::NoTeam(self.settings.team_claim.clone()))?;
        // The subject is the identity provider's user id: counted under a hash, logged as one.
        let id =
            crate::config::key_id(&crate::config::sha256(format!("{}\n{subject}", self.settings.issuer).as_bytes()));
        let grant =
            Grant { subject: format!("u:{id}").into(), limits: self.settings.limits, models: None, expires_at: None };
        Ok(Principal { team: team.into(), key_id: format!("jwt:{id}").into(), policy, grant: Arc::new(grant) })
    }

    /// The first value of the team claim that names a configured team. Keycloak group paths
    /// (`/platform/team-a`) match by their last segment.
    fn team_of(&self, claims: &serde_json::Map<String, Value>) -> Option<String> {
        let mut value = None;
        for (i, part) in self.settings.team_claim.split('.').enumerate() {
            value = if i == 0 { claims.get(part) } else { value?.get(part) };
        }
        let values: Vec<&str> = match value? {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let known: HashSet<&str> = self.teams.keys().map(String::as_str).collect();
        values.into_iter().find_map(|v| {
            let name = if known.contains(v) { v } else { v.rsplit('/').next().unwrap_or(v) };
            known.contains(name).then(|| name.to_owned())
        })
    }
}
