//! Stored Responses API responses (`store: true`, the default): each response object with the
//! input it answered (the whole history, `previous_response_id` resolved), per team. Kept in
//! process memory (bounded, least recently used dropped first) and, when Valkey is configured,
//! in Valkey too (`{key_prefix}:responses:{team}:{id}`, with a TTL) so that every replica
//! finds it; memory answers first, so a chain continued on the same replica never waits for
//! the Valkey write. A module of its own rather than the cache's: the cache keeps answers it
//! may drop at any time, while this keeps state a client refers to by id.

mod items;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapter::responses::Keep;
use crate::api::RawObject;
use crate::config::responses::ResponsesSettings;
use crate::error::GatewayError;
use crate::kv::{Kv, KvError};

pub use items::{history, input_items, page, replayable};

/// One stored response: the object as the client got it, its input items (with ids), and
/// the deployment that produced it when that one serves `/responses` itself (a chain continued
/// there may use the upstream's own state: its ids and encrypted reasoning are valid only there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub response: Value,
    pub input: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// What a request's `previous_response_id` resolved to.
#[derive(Debug, Clone)]
pub enum Previous {
    /// Stored here: the body with the history before its input (the id stays, to be echoed),
    /// and the native deployment that produced the previous response, if one did.
    Found { resolved: RawObject, deployment: Option<String> },
    /// Not stored here (say, made by the upstream before the gateway stood in front of it, or
    /// evicted): only a native upstream may know it.
    Unknown(String),
}

pub struct ResponsesStore {
    memory: Mutex<Lru>,
    kv: Option<Kv>,
    ttl: Duration,
}

impl ResponsesStore {
    pub fn new(settings: &ResponsesSettings, kv: Option<Kv>) -> Self {
        Self { memory: Mutex::new(Lru::new(settings.max_stored)), kv, ttl: settings.ttl }
    }

    /// Stores `stored` under its response's id for `team`: in memory at once, in Valkey in the
    /// background (a failure there is logged; the response was already answered).
    pub fn put(&self, team: &str, stored: Stored) {
        let Some(id) = stored.response.get("id").and_then(Value::as_str).map(str::to_owned) else { return };
        let stored = Arc::new(stored);
        if let Some(kv) = &self.kv {
            let (kv, key, ttl) = (kv.clone(), kv.key(&valkey_key(team, &id)), self.ttl);
            let text = serde_json::to_vec(&*stored).unwrap_or_default();
            tokio::spawn(async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(text).arg("PX").arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
                if let Err(e) = kv.query::<()>(&cmd).await {
                    tracing::warn!(error = %e, "a stored response could not be written to valkey");
                }
            });
        }
        self.lock().insert(memory_key(team, &id), stored);
    }

    /// `team`'s response `id` (another team's is not found).
    pub async fn get(&self, team: &str, id: &str) -> Result<Option<Arc<Stored>>, KvError> {
        if let Some(stored) = self.lock().get(&memory_key(team, id)) {
            return Ok(Some(stored));
        }
        let Some(kv) = &self.kv else { return Ok(None) };
        let text: Option<Vec<u8>> = kv.query(redis::cmd("GET").arg(kv.key(&valkey_key(team, id)))).await?;
        Ok(text.and_then(|t| serde_json::from_slice(&t).ok()).map(Arc::new))
    }

    /// Deletes `team`'s response `id`; whether there was one.
    pub async fn delete(&self, team: &str, id: &str) -> Result<bool, KvError> {
        let mut found = self.lock().remove(&memory_key(team, id));
        if let Some(kv) = &self.kv {
            let removed: u64 = kv.query(redis::cmd("DEL").arg(kv.key(&valkey_key(team, id)))).await?;
            found |= removed > 0;
        }
        Ok(found)
    }

    /// What `body`'s `previous_response_id` (when it has one) resolves to for `team`.
    pub async fn resolve_previous(&self, team: &str, body: &RawObject) -> Result<Option<Previous>, GatewayError> {
        let param = "previous_response_id";
        let previous = body.parse::<String>(param).map_err(|_| {
            GatewayError::bad_request(format!("Invalid type for '{param}': expected a string."), Some(param))
        })?;
        let Some(previous) = previous else { return Ok(None) };
        let stored = self.get(team, &previous).await.map_err(|e| GatewayError::StoreUnavailable(e.to_string()))?;
        let Some(stored) = stored else { return Ok(Some(Previous::Unknown(previous))) };
        let mut items = history(&stored);
        match body.parse::<Value>("input").ok().flatten() {
            Some(Value::String(text)) => items.push(serde_json::json!({"role": "user", "content": text})),
            Some(Value::Array(more)) => items.extend(more),
            _ => {}
        }
        let mut resolved = body.clone();
        resolved.set("input", &items).map_err(|e| GatewayError::Internal(e.to_string()))?;
        Ok(Some(Previous::Found { resolved, deployment: stored.deployment.clone() }))
    }

    /// What keeps a finished response of `team`'s request `body` (unless it says `store:
    /// false`), made by the native `deployment` if one.
    pub fn keeper(self: &Arc<Self>, team: &Arc<str>, body: &RawObject, deployment: Option<&str>) -> Option<Keep> {
        if body.parse::<bool>("store").ok().flatten() == Some(false) {
            return None;
        }
        let (store, team, body) = (self.clone(), team.clone(), body.clone());
        let deployment = deployment.map(str::to_owned);
        Some(Box::new(move |response: &Value| {
            let id = response.get("id").and_then(Value::as_str).unwrap_or_default();
            let input = input_items(&body, id);
            store.put(&team, Stored { response: response.clone(), input, deployment });
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn memory_key(team: &str, id: &str) -> String {
    format!("{team}\u{0}{id}")
}

fn valkey_key(team: &str, id: &str) -> String {
    format!("responses:{team}:{id}")
}

/// A map bounded to `capacity` entries that drops the least recently used first.
struct Lru {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (u64, Arc<Stored>)>,
    /// Last use → key.
    order: BTreeMap<u64, String>,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self { capacity, tick: 0, entries: HashMap::new(), order: BTreeMap::new() }
    }

    fn insert(&mut self, key: String, value: Arc<Stored>) {
        if self.capacity == 0 {
            return;
        }
        self.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (self.tick, value));
    }

    fn get(&mut self, key: &str) -> Option<Arc<Stored>> {
        self.tick += 1;
        let (used, value) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = self.tick;
        self.order.insert(self.tick, key.to_owned());
        Some(value.clone())
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some((used, _)) => {
                self.order.remove(&used);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
