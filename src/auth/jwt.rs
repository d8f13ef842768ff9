//! OIDC bearer tokens (the blueprint's `keycloak` and `hybrid` modes): a JWT is accepted when
//! its signature verifies against the issuer's JWKS with an allowed asymmetric algorithm (never
//! `none`, never HMAC), its issuer and audience match, it is within its validity (with leeway),
//! and a configured claim names a team (its value matched exactly, never by a part of it). The
//! JWKS is fetched at start, refreshed periodically, and re-fetched when a token names a key id
//! it does not know: one fetch at a time, in a task of its own, joined by every request that
//! needs it meanwhile and never waited for by a token whose key is known; a new one starts at
//! the earliest a second after the last one ended.
//!
//! Verified tokens are cached, keyed by a SHA-256 of the token (never the token itself), so a
//! client that sends the same token on every request pays for one signature check a minute rather
//! than one per request. An entry is used only while the token is before its `exp` (by the
//! gateway's clock, without leeway: past `exp` the token is verified again, and refused once the
//! leeway is over), for at most `CACHE_TTL`, and only while the key that verified it is still
//! published: a JWKS refresh that drops a key flushes the cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{Grant, Principal, Teams};
use crate::clock::Clock;
use crate::config::limits::OidcSettings;

/// A refetch triggered by an unknown key id starts at least this long after the last one ended.
const MIN_REFETCH: Duration = Duration::from_secs(1);
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// A verified token is trusted without a new signature check for at most this long.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Verified tokens kept at most (least recently used ones go first).
const CACHE_CAPACITY: u64 = 10_000;

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
    /// SHA-256 of the JWK as published: tells a key apart from a new one under the same `kid`.
    fingerprint: [u8; 32],
    kid: Option<String>,
    /// The `alg` the JWKS pins the key to, if any.
    alg: Option<Algorithm>,
    family: jsonwebtoken::AlgorithmFamily,
    key: DecodingKey,
}

/// A token that passed verification: who it is, until when, and which key signed it.
struct Verified {
    principal: Principal,
    /// The token's `exp` (Unix seconds).
    exp: u64,
    /// When it was verified (the gateway clock's Unix milliseconds).
    at_ms: u64,
    /// The fingerprint of the published key its signature verified against.
    key: [u8; 32],
}

/// A JWKS fetch under way or done: when it ended, and how many keys it installed (or why not).
type Fetch = Shared<BoxFuture<'static, (Instant, Result<usize, String>)>>;

/// How bearer tokens fared: checked in full, answered from the cache, or refused.
#[derive(Default)]
struct Stats {
    verified: AtomicU64,
    cached: AtomicU64,
    rejected: AtomicU64,
}

pub struct JwtVerifier {
    settings: OidcSettings,
    teams: Teams,
    /// Shared with the fetch task, which installs what it fetched.
    keys: Arc<ArcSwap<Vec<PublicKey>>>,
    /// The last fetch, under way or done: a request that needs the JWKS joins the one under way
    /// rather than start another (held only to look, never across a fetch).
    last_fetch: Mutex<Option<Fetch>>,
    http: reqwest::Client,
    /// Decides `exp` and `nbf` (and the cache's age), like key expiry elsewhere.
    clock: Arc<dyn Clock>,
    /// SHA-256 of a token → what its verification found.
    verified: moka::future::Cache<[u8; 32], Arc<Verified>>,
    stats: Stats,
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

/// The issuer's signing keys (RSA and EC, not those marked for encryption) from its JWKS.
async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<PublicKey>, String> {
    let mut response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
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
                fingerprint: crate::config::sha256(&serde_json::to_vec(jwk).ok()?),
                kid: jwk.common.key_id.clone(),
                alg: jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok()),
                family,
                key: DecodingKey::from_jwk(jwk).ok()?,
            })
        })
        .collect())
}

/// Whether a bearer credential is a JWT (three base64url parts, a JSON header) rather than a key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

impl JwtVerifier {
    pub fn new(settings: OidcSettings, teams: Teams, clock: Arc<dyn Clock>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        // The cache's own TTL bounds memory in real time; `usable` enforces it by `clock` too.
        let verified = moka::future::Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(CACHE_TTL).build();
        Self {
            settings,
            teams,
            keys: Arc::new(ArcSwap::from_pointee(Vec::new())),
            last_fetch: Mutex::new(None),
            http,
            clock,
            verified,
            stats: Stats::default(),
        }
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

    /// Fetches the JWKS, or joins the fetch under way; a fetch that ended within `min_age` is
    /// not repeated. Returns how many keys the JWKS holds.
    pub async fn refetch(&self, min_age: Duration) -> Result<usize, JwtError> {
        let fetch = {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            match last.as_ref().map(|f| (f, f.peek().map(|(ended, _)| *ended))) {
                Some((under_way, None)) => under_way.clone(),
                Some((_, Some(ended))) if ended.elapsed() < min_age => return Ok(self.keys.load().len()),
                _ => last.insert(self.start_fetch()).clone(),
            }
        };
        fetch.await.1.map_err(JwtError::Jwks)
    }

    /// A fetch in a task of its own: it runs to its end (bounded by `JWKS_TIMEOUT`) and installs
    /// what it got even when every request waiting for it has gone.
    fn start_fetch(&self) -> Fetch {
        let (http, url) = (self.http.clone(), self.settings.jwks_url.clone());
        let (keys, verified) = (self.keys.clone(), self.verified.clone());
        let task = tokio::spawn(async move {
            let fetched = fetch(&http, &url).await.map(|new| {
                let n = new.len();
                let old = keys.swap(Arc::new(new));
                let current = keys.load();
                if old.iter().any(|o| !current.iter().any(|k| k.fingerprint == o.fingerprint)) {
                    // A key is gone (or was replaced under its kid): nothing it verified is
                    // trusted any more. (An entry cached concurrently from the old set is caught
                    // by `usable`.)
                    verified.invalidate_all();
                }
                n
            });
            (Instant::now(), fetched)
        });
        async move { task.await.unwrap_or_else(|e| (Instant::now(), Err(format!("the fetch task failed: {e}")))) }
            .boxed()
            .shared()
    }

    /// The principal of a valid bearer token: from the cache when this token was verified
    /// recently, else by a full verification (which is then cached).
    pub async fn verify(&self, token: &str) -> Result<Principal, JwtError> {
        let id = crate::config::sha256(token.as_bytes());
        let now_ms = self.clock.now_ms();
        if let Some(hit) = self.verified.get(&id).await {
            if self.usable(&hit, now_ms) {
                self.stats.cached.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.principal.clone());
            }
            self.verified.invalidate(&id).await;
        }
        match self.verify_fully(token, now_ms).await {
            Ok(verified) => {
                self.stats.verified.fetch_add(1, Ordering::Relaxed);
                let principal = verified.principal.clone();
                // A token accepted only thanks to the leeway is not cached: it is checked again.
                if now_ms < verified.exp.saturating_mul(1000) {
                    self.verified.insert(id, Arc::new(verified)).await;
                }
                Ok(principal)
            }
            Err(e) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Whether a cached verification still holds: before the token's `exp`, within the cache's
    /// age limit, and its key still published.
    fn usable(&self, v: &Verified, now_ms: u64) -> bool {
        now_ms < v.exp.saturating_mul(1000)
            && now_ms >= v.at_ms
            && now_ms - v.at_ms < CACHE_TTL.as_millis() as u64
            && self.keys.load().iter().any(|k| k.fingerprint == v.key)
    }

    /// `llm_gateway_jwt_verifications_total`: bearer tokens by how they were decided.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::telemetry::metrics::{encode_into, labels::Verdict, mirror, register};
        use prometheus_client::metrics::{counter::Counter, family::Family};
        let verdicts = Family::<Verdict, Counter>::default();
        for (result, n) in
            [("verified", &self.stats.verified), ("cached", &self.stats.cached), ("rejected", &self.stats.rejected)]
        {
            mirror(&verdicts.get_or_create(&result.into()), n.load(Ordering::Relaxed));
        }
        let mut registry = prometheus_client::registry::Registry::default();
        register(
            &mut registry,
            "llm_gateway_jwt_verifications_total",
            "Bearer JWTs by outcome: verified (a full signature check), cached (a recent verification reused), rejected.",
            verdicts,
        );
        encode_into(out, &registry);
    }

    async fn verify_fully(&self, token: &str, now_ms: u64) -> Result<Verified, JwtError> {
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
        // `exp` and `nbf` are checked below against the gateway's clock, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut first_error = None;
        for i in matching {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &keys[i].key, &validation) {
                Ok(data) => {
                    let exp = self.check_times(&data.claims, now_ms / 1000)?;
                    let principal = self.principal(&data.claims)?;
                    return Ok(Verified { principal, exp, at_ms: now_ms, key: keys[i].fingerprint });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        use jsonwebtoken::errors::ErrorKind::*;
        let reason = match first_error.as_ref().map(|e| e.kind()) {
            Some(InvalidAudience) => "it was issued for another audience",
            Some(InvalidIssuer) => "it comes from another issuer",
            Some(InvalidSignature) => "its signature does not verify",
            Some(MissingRequiredClaim(_)) => "a required claim (exp, iss, aud) is missing",
            _ => "it cannot be verified",
        };
        Err(JwtError::Rejected(reason))
    }

    /// The token's `exp` if it is within its validity at `now` (Unix seconds), with the leeway.
    fn check_times(&self, claims: &serde_json::Map<String, Value>, now: u64) -> Result<u64, JwtError> {
        let leeway = self.settings.leeway.as_secs();
        let exp = claims.get("exp").and_then(Value::as_u64).ok_or(JwtError::Rejected("it cannot be verified"))?;
        if exp.saturating_add(leeway) < now {
            return Err(JwtError::Rejected("it has expired"));
        }
        match claims.get("nbf") {
            None => {}
            Some(nbf) => match nbf.as_u64() {
                Some(nbf) if nbf <= now.saturating_add(leeway) => {}
                Some(_) => return Err(JwtError::Rejected("it is not valid yet")),
                None => return Err(JwtError::Rejected("it cannot be verified")),
            },
        }
        Ok(exp)
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

    /// The first value of the team claim that names a configured team, matched exactly: through
    /// `teams` (claim value → team) when it is configured, else by the team's own name. Never by
    /// a part of the value: a group `/evil/team-a` that anyone able to create groups can make is
    /// not the group `/platform/team-a`.
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
        let mapped = &self.settings.teams;
        values.into_iter().find_map(|v| {
            let team = if mapped.is_empty() { Some(v) } else { mapped.get(v).map(String::as_str) };
            team.filter(|t| self.teams.contains_key(*t)).map(str::to_owned)
        })
    }
}
