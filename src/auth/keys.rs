//! API keys made through the admin API. Only a key's SHA-256 hash is stored (the plaintext is
//! returned once, at creation): in Valkey when configured, so every replica sees them, else in
//! process. Replicas cache what they read for `auth.key_cache_ttl` (500 ms by default), so a
//! revocation takes effect everywhere within that time.
//!
//! Keys found and keys not found are cached apart, each bounded with its own eviction (moka's
//! TinyLFU): a client cycling random keys fills only the cache of misses, where its one-off keys
//! do not displace the ones seen again and again, and never costs a real key its cached lookup.
//!
//! Valkey layout (each name under `valkey.key_prefix`): `lg:key:<sha256 hex>` → the key's record
//! (JSON); `lg:keys` → hash of key id → sha256 hex (the index the admin API lists and revokes by).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;

use serde::{Deserialize, Serialize};

use super::{Grant, Principal, Teams};
use crate::clock::Clock;
use crate::config::limits::Limits;
use crate::config::{self};
use crate::kv::{Kv, KvError};

/// Cached lookups kept per replica: of keys found, and of keys not found.
const MAX_CACHED: u64 = 10_000;
/// Under the fail-open policy a cached key stays usable this long while Valkey is unreachable.
const STALE_GRACE: Duration = Duration::from_secs(60);
/// Keys the admin API lists at most.
pub const MAX_LISTED: usize = 10_000;
const MAX_METADATA: usize = 32;
const MAX_METADATA_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("the key store is unreachable ({0})")]
    Unavailable(#[from] KvError),
    #[error("{0}")]
    Invalid(String),
    #[error("a stored key record is unreadable: {0}")]
    Corrupt(String),
}

/// A key as stored: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    pub id: String,
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Limits,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// The admin API's request to create a key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub team: String,
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Limits,
    /// Unix seconds or an RFC 3339 UTC time.
    pub expires_at: Option<serde_json::Value>,
    /// Or a lifetime: `30d`, `12h`, ...
    pub expires_in: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

enum Backend {
    Valkey(Kv),
    Memory(Mutex<HashMap<[u8; 32], StoredKey>>),
}

#[derive(Clone)]
struct Cached {
    read_at: Instant,
    principal: Principal,
}

pub struct KeyStore {
    backend: Backend,
    /// Key hash → the key's principal, when it was read.
    known: Cache<[u8; 32], Cached>,
    /// Key hash → when it was found to be no key.
    unknown: Cache<[u8; 32], Instant>,
    ttl: Duration,
    teams: Teams,
    clock: Arc<dyn Clock>,
    /// Serve cached keys a while longer when Valkey is unreachable (the fail-open policy).
    fail_open: bool,
}

impl KeyStore {
    pub fn new(kv: Option<Kv>, ttl: Duration, teams: Teams, clock: Arc<dyn Clock>, fail_open: bool) -> Self {
        let backend = match kv {
            Some(kv) => Backend::Valkey(kv),
            None => Backend::Memory(Mutex::new(HashMap::new())),
        };
        // Entries live (in real time) as long as any lookup may use them, fresh or stale.
        let lifetime = ttl.max(STALE_GRACE);
        let known = Cache::builder().max_capacity(MAX_CACHED).time_to_live(lifetime).build();
        let unknown = Cache::builder().max_capacity(MAX_CACHED).time_to_live(lifetime).build();
        Self { backend, known, unknown, ttl, teams, clock, fail_open }
    }

    /// The principal of an admin-made key, `None` when no such key exists (or it was revoked).
    pub async fn lookup(&self, hash: &[u8; 32]) -> Result<Option<Principal>, KeyStoreError> {
        let cached = match self.known.get(hash).await {
            Some(c) => Some((c.read_at, Some(c.principal))),
            None => self.unknown.get(hash).await.map(|at| (at, None)),
        };
        // Which cache held it: Some(true) the found, Some(false) the not found.
        let held = cached.as_ref().map(|(_, principal)| principal.is_some());
        let stale = match cached {
            Some((at, principal)) if at.elapsed() < self.ttl => return Ok(principal),
            Some((at, principal)) if at.elapsed() < STALE_GRACE => Some(principal),
            _ => None,
        };
        let record = match self.read(hash).await {
            Ok(r) => r,
            Err(KeyStoreError::Unavailable(_)) if self.fail_open && stale.is_some() => {
                return Ok(stale.flatten());
            }
            Err(e) => return Err(e),
        };
        let principal = record.and_then(|r| self.principal(&r));
        let now = Instant::now();
        match &principal {
            Some(p) => {
                if held == Some(false) {
                    self.unknown.invalidate(hash).await;
                }
                self.known.insert(*hash, Cached { read_at: now, principal: p.clone() }).await;
            }
            None => {
                // Revoked (or its team is gone) since it was read.
                if held == Some(true) {
                    self.known.invalidate(hash).await;
                }
                self.unknown.insert(*hash, now).await;
            }
        }
        Ok(principal)
    }

    fn principal(&self, record: &StoredKey) -> Option<Principal> {
        // A key whose team left the config authenticates no one.
        let policy = self.teams.get(&record.team)?.clone();
        let grant = Grant {
            subject: format!("k:{}", record.id).into(),
            limits: record.limits,
            models: record.models.clone(),
            expires_at: record.expires_at,
        };
        Some(Principal {
            team: record.team.as_str().into(),
            key_id: record.id.as_str().into(),
            policy,
            grant: Arc::new(grant),
        })
    }

    async fn read(&self, hash: &[u8; 32]) -> Result<Option<StoredKey>, KeyStoreError> {
        match &self.backend {
            Backend::Memory(keys) => Ok(keys.lock().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()),
            Backend::Valkey(kv) => {
                let raw: Option<String> = kv.query(redis::cmd("GET").arg(record_key(kv, &hex(hash)))).await?;
                raw.map(|r| serde_json::from_str(&r).map_err(|e| KeyStoreError::Corrupt(e.to_string()))).transpose()
            }
        }
    }

    /// Makes a key: returns its plaintext (never stored) and its record.
    pub async fn create(&self, new: NewKey) -> Result<(String, StoredKey), KeyStoreError> {
        let invalid = |m: String| KeyStoreError::Invalid(m);
        if !self.teams.contains_key(&new.team) {
            return Err(invalid(format!("Unknown team {:?}.", new.team)));
        }
        new.limits.check("limits").map_err(|e| invalid(e.0))?;
        if new.metadata.len() > MAX_METADATA
            || new.metadata.iter().any(|(k, v)| k.len() > MAX_METADATA_LEN || v.len() > MAX_METADATA_LEN)
        {
            return Err(invalid(format!(
                "metadata: at most {MAX_METADATA} entries of at most {MAX_METADATA_LEN} bytes each."
            )));
        }
        if new.models.as_ref().is_some_and(|m| m.is_empty() || m.len() > 256) {
            return Err(invalid("models: between 1 and 256 patterns (leave it out for the team's models).".into()));
        }
        let now_s = self.clock.now_ms() / 1000;
        let expires_at = match (&new.expires_at, &new.expires_in) {
            (Some(_), Some(_)) => return Err(invalid("Give expires_at or expires_in, not both.".into())),
            (Some(at), None) => Some(
                at.as_u64()
                    .or_else(|| at.as_str().and_then(crate::clock::parse_timestamp))
                    .ok_or_else(|| invalid("expires_at: Unix seconds or an RFC 3339 UTC time.".into()))?,
            ),
            (None, Some(within)) => Some(
                now_s + config::duration::parse(within).map_err(|e| invalid(format!("expires_in: {e}")))?.as_secs(),
            ),
            (None, None) => None,
        };
        if expires_at.is_some_and(|at| at <= now_s) {
            return Err(invalid("The expiry is in the past.".into()));
        }
        let plaintext = new_key_text()?;
        let hash = config::sha256(plaintext.as_bytes());
        let record = StoredKey {
            id: config::key_id(&hash),
            team: new.team,
            models: new.models,
            limits: new.limits,
            expires_at,
            metadata: new.metadata,
            created_at: now_s,
        };
        match &self.backend {
            Backend::Memory(keys) => {
                keys.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, record.clone());
            }
            Backend::Valkey(kv) => {
                let json = serde_json::to_string(&record).map_err(|e| KeyStoreError::Corrupt(e.to_string()))?;
                // Index first: a key that exists can always be listed and revoked.
                let _: () = kv.query(redis::cmd("HSET").arg(index_key(kv)).arg(&record.id).arg(hex(&hash))).await?;
                let _: () = kv.query(redis::cmd("SET").arg(record_key(kv, &hex(&hash))).arg(json)).await?;
            }
        }
        Ok((plaintext, record))
    }

    /// Every admin-made key (at most `MAX_LISTED`), by id.
    pub async fn list(&self) -> Result<Vec<StoredKey>, KeyStoreError> {
        let mut out = match &self.backend {
            Backend::Memory(keys) => keys.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
            Backend::Valkey(kv) => {
                let index: HashMap<String, String> = kv.query(redis::cmd("HGETALL").arg(index_key(kv))).await?;
                let mut out = Vec::new();
                for hash_hex in index.values().take(MAX_LISTED) {
                    let raw: Option<String> = kv.query(redis::cmd("GET").arg(record_key(kv, hash_hex))).await?;
                    if let Some(r) = raw {
                        out.push(serde_json::from_str(&r).map_err(|e| KeyStoreError::Corrupt(e.to_string()))?);
                    }
                }
                out
            }
        };
        out.sort_by(|a: &StoredKey, b| a.id.cmp(&b.id));
        out.truncate(MAX_LISTED);
        Ok(out)
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredKey>, KeyStoreError> {
        match &self.backend {
            Backend::Memory(keys) => {
                Ok(keys.lock().unwrap_or_else(|p| p.into_inner()).values().find(|k| k.id == id).cloned())
            }
            Backend::Valkey(kv) => {
                let Some(hash_hex) = kv.query::<Option<String>>(redis::cmd("HGET").arg(index_key(kv)).arg(id)).await?
                else {
                    return Ok(None);
                };
                let raw: Option<String> = kv.query(redis::cmd("GET").arg(record_key(kv, &hash_hex))).await?;
                raw.map(|r| serde_json::from_str(&r).map_err(|e| KeyStoreError::Corrupt(e.to_string()))).transpose()
            }
        }
    }

    /// Revokes a key by id; false when there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool, KeyStoreError> {
        let hash = match &self.backend {
            Backend::Memory(keys) => {
                let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
                let Some(hash) = keys.iter().find(|(_, k)| k.id == id).map(|(h, _)| *h) else { return Ok(false) };
                keys.remove(&hash);
                Some(hash)
            }
            Backend::Valkey(kv) => {
                let Some(hash_hex) = kv.query::<Option<String>>(redis::cmd("HGET").arg(index_key(kv)).arg(id)).await?
                else {
                    return Ok(false);
                };
                let _: i64 = kv.query(redis::cmd("DEL").arg(record_key(kv, &hash_hex))).await?;
                let _: i64 = kv.query(redis::cmd("HDEL").arg(index_key(kv)).arg(id)).await?;
                config::parse_sha256_hex(&hash_hex)
            }
        };
        // This replica forgets it at once; the others within their cache TTL.
        if let Some(hash) = hash {
            self.known.invalidate(&hash).await;
        }
        Ok(true)
    }
}

/// The record of the key whose SHA-256 is `hash_hex`.
fn record_key(kv: &Kv, hash_hex: &str) -> String {
    kv.key(&format!("lg:key:{hash_hex}"))
}

/// Key id → SHA-256 hex of every admin-made key.
fn index_key(kv: &Kv) -> String {
    kv.key("lg:keys")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sk-lg-` and 64 hex digits from the operating system's CSPRNG.
fn new_key_text() -> Result<String, KeyStoreError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyStoreError::Invalid("no randomness available".into()))?;
    Ok(format!("sk-lg-{}", hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::TeamPolicy;

    fn store() -> KeyStore {
        let teams: Teams = Arc::new([("a".to_owned(), Arc::new(TeamPolicy::default()))].into());
        KeyStore::new(None, Duration::from_millis(500), teams, Arc::new(ManualClock::new(1_000_000)), true)
    }

    #[tokio::test]
    async fn creates_looks_up_and_revokes_by_hash_only() {
        let store = store();
        let (key, record) = store
            .create(NewKey { team: "a".into(), expires_in: Some("1d".into()), ..NewKey::default() })
            .await
            .unwrap();
        assert!(key.starts_with("sk-lg-") && key.len() == 70);
        assert_eq!(record.expires_at, Some(1_000 + 86_400));
        let hash = config::sha256(key.as_bytes());
        assert_eq!(&*store.lookup(&hash).await.unwrap().unwrap().key_id, record.id);
        assert!(!serde_json::to_string(&store.list().await.unwrap()).unwrap().contains(&key));
        assert!(store.revoke(&record.id).await.unwrap());
        assert!(store.lookup(&hash).await.unwrap().is_none());
        assert!(!store.revoke(&record.id).await.unwrap());
    }

    #[tokio::test]
    async fn refuses_unknown_teams_and_past_expiries() {
        let store = store();
        let e = store.create(NewKey { team: "b".into(), ..NewKey::default() }).await.unwrap_err();
        assert_eq!(e.to_string(), "Unknown team \"b\".");
        let e = store
            .create(NewKey { team: "a".into(), expires_at: Some(serde_json::json!(5)), ..NewKey::default() })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "The expiry is in the past.");
    }
}
