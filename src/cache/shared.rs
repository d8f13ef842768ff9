//! The cache in Valkey, shared by every replica. Keys (prefix: `valkey.key_prefix`, if any, then
//! `cache.key_prefix`, `llmgw:cache` by default):
//!
//! - `<prefix>:x:<sha256>` — exact tier: the encoded answer, expiring at its absolute deadline.
//! - `<prefix>:{<partition>}:e:<id>` — a semantic entry, a hash: `v` the vector (f32 LE), `r` the
//!   encoded answer, `p` the partition, `t` created and `x` expiry (ms), `em` the embedder; it
//!   expires at `x`. The partition is the cluster hash tag, so a partition lives on one slot.
//! - `<prefix>:log` — a stream of changes (`op put` with the vector, `op del`) that replicas
//!   tail to keep their in-memory index in step; bounded by `MAXLEN ~`.
//!
//! Every error is returned to the caller, which treats it as a miss (never a failed request).

use super::entry::Stored;
use super::key::PartitionId;
use crate::kv::{Kv, KvError};

/// Length the change log is trimmed to (approximately). A replica that falls further behind
/// rescans the keyspace instead.
pub const LOG_MAXLEN: usize = 20_000;

#[derive(Clone)]
pub struct Shared {
    pub kv: Kv,
    pub prefix: String,
}

/// One change as carried by the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put { partition: PartitionId, id: u64, expires_ms: u64, vector: Vec<f32> },
    Del { partition: PartitionId, id: u64 },
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex16(text: &str) -> Option<PartitionId> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn vector_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    v.iter().all(|x| x.is_finite()).then_some(v)
}

impl Shared {
    pub fn exact_key(&self, hash: &[u8; 32]) -> String {
        format!("{}:x:{}", self.prefix, hex(hash))
    }

    pub fn entry_key(&self, partition: &PartitionId, id: u64) -> String {
        format!("{}:{{{}}}:e:{:016x}", self.prefix, hex(partition), id)
    }

    pub fn log_key(&self) -> String {
        format!("{}:log", self.prefix)
    }

    /// `SCAN MATCH` pattern of every semantic entry.
    pub fn entry_pattern(&self) -> String {
        format!("{}:{{*}}:e:*", self.prefix)
    }

    /// `(partition, id)` of an entry key.
    pub fn parse_entry_key(&self, key: &str) -> Option<(PartitionId, u64)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (partition, rest) = rest.split_once("}:e:")?;
        Some((unhex16(partition)?, u64::from_str_radix(rest, 16).ok()?))
    }

    pub async fn get_exact(&self, hash: &[u8; 32], max_bytes: usize) -> Result<Option<Stored>, KvError> {
        let value: Option<Vec<u8>> = self.kv.query(redis::cmd("GET").arg(self.exact_key(hash))).await?;
        Ok(value.and_then(|v| Stored::decode(&v, max_bytes).ok()))
    }

    pub async fn put_exact(&self, hash: &[u8; 32], stored: &Stored) -> Result<(), KvError> {
        self.kv
            .query(redis::cmd("SET").arg(self.exact_key(hash)).arg(stored.encode()).arg("PXAT").arg(stored.expires_ms))
            .await
    }

    /// Writes a semantic entry, then announces it on the change log.
    pub async fn put_entry(
        &self,
        partition: &PartitionId,
        id: u64,
        vector: &[f32],
        stored: &Stored,
        embedder: &str,
    ) -> Result<(), KvError> {
        let key = self.entry_key(partition, id);
        let v = vector_bytes(vector);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("v")
            .arg(&v)
            .arg("r")
            .arg(stored.encode())
            .arg("p")
            .arg(hex(partition))
            .arg("t")
            .arg(stored.created_ms)
            .arg("x")
            .arg(stored.expires_ms)
            .arg("em")
            .arg(embedder)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(stored.expires_ms)
            .ignore();
        self.kv.query_pipe::<()>(&pipe).await?;
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.log_key()).arg("MAXLEN").arg("~").arg(LOG_MAXLEN).arg("*");
        xadd.arg("op").arg("put").arg("p").arg(hex(partition)).arg("id").arg(format!("{id:016x}"));
        xadd.arg("x").arg(stored.expires_ms).arg("v").arg(v);
        self.kv.query::<String>(&xadd).await.map(drop)
    }

    /// Deletes a semantic entry everywhere: in Valkey, and (through the log) in every replica's
    /// index.
    pub async fn delete_entry(&self, partition: &PartitionId, id: u64) -> Result<(), KvError> {
        self.kv.query::<i64>(redis::cmd("DEL").arg(self.entry_key(partition, id))).await?;
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.log_key()).arg("MAXLEN").arg("~").arg(LOG_MAXLEN).arg("*");
        xadd.arg("op").arg("del").arg("p").arg(hex(partition)).arg("id").arg(format!("{id:016x}"));
        self.kv.query::<String>(&xadd).await.map(drop)
    }

    /// The stored answer of a candidate, if it still exists and has not expired: what makes a
    /// semantic candidate servable.
    pub async fn confirm(
        &self,
        partition: &PartitionId,
        id: u64,
        now_ms: u64,
        max_bytes: usize,
    ) -> Result<Option<Stored>, KvError> {
        let value: Option<Vec<u8>> =
            self.kv.query(redis::cmd("HGET").arg(self.entry_key(partition, id)).arg("r")).await?;
        Ok(value.and_then(|v| Stored::decode(&v, max_bytes).ok()).filter(|s| s.expires_ms > now_ms))
    }

    /// The vector and expiry of an entry (for loading the index).
    pub async fn entry_vector(&self, key: &str) -> Result<Option<(Vec<f32>, u64)>, KvError> {
        let (v, x): (Option<Vec<u8>>, Option<u64>) =
            self.kv.query(redis::cmd("HMGET").arg(key).arg("v").arg("x")).await?;
        Ok(match (v.and_then(|v| vector_from_bytes(&v)), x) {
            (Some(v), Some(x)) => Some((v, x)),
            _ => None,
        })
    }
}

/// Parses one change-log message.
pub fn parse_change(map: &std::collections::HashMap<String, redis::Value>) -> Option<Change> {
    let text = |field: &str| -> Option<String> { redis::from_redis_value_ref::<String>(map.get(field)?).ok() };
    let partition = unhex16(&text("p")?)?;
    let id = u64::from_str_radix(&text("id")?, 16).ok()?;
    match text("op")?.as_str() {
        "put" => {
            let expires_ms = text("x")?.parse().ok()?;
            let bytes = redis::from_redis_value_ref::<Vec<u8>>(map.get("v")?).ok()?;
            Some(Change::Put { partition, id, expires_ms, vector: vector_from_bytes(&bytes)? })
        }
        "del" => Some(Change::Del { partition, id }),
        _ => None,
    }
}

/// The valkey-search module's KNN, when the module is loaded: same keys, no in-process index.
pub mod module {
    use super::*;

    pub fn index_name(shared: &Shared, dims: usize) -> String {
        format!("{}:idx:{dims}", shared.prefix)
    }

    /// Whether the module answers (`FT._LIST`).
    pub async fn present(shared: &Shared) -> bool {
        shared.kv.query::<redis::Value>(&redis::cmd("FT._LIST")).await.is_ok()
    }

    /// Creates the vector index over the entry hashes (no TEXT fields: valkey-search < 1.2 lacks
    /// them). "Index already exists" is success.
    pub async fn ensure_index(shared: &Shared, dims: usize) -> Result<(), KvError> {
        let mut cmd = redis::cmd("FT.CREATE");
        cmd.arg(index_name(shared, dims))
            .arg("ON")
            .arg("HASH")
            .arg("PREFIX")
            .arg(1)
            .arg(format!("{}:{{", shared.prefix))
            .arg("SCHEMA")
            .arg("p")
            .arg("TAG")
            .arg("v")
            .arg("VECTOR")
            .arg("HNSW")
            .arg(6)
            .arg("TYPE")
            .arg("FLOAT32")
            .arg("DIM")
            .arg(dims)
            .arg("DISTANCE_METRIC")
            .arg("COSINE");
        match shared.kv.query::<redis::Value>(&cmd).await {
            Ok(_) => Ok(()),
            Err(KvError::Redis(e)) if e.to_string().to_lowercase().contains("exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn knn_query(partition: &PartitionId, k: usize) -> String {
        format!("@p:{{{}}}=>[KNN {k} @v $q AS d]", hex(partition))
    }

    /// `(id, similarity)` of the nearest entries of `partition`.
    pub async fn search(
        shared: &Shared,
        partition: &PartitionId,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(u64, f32)>, KvError> {
        let mut cmd = redis::cmd("FT.SEARCH");
        cmd.arg(index_name(shared, vector.len()))
            .arg(knn_query(partition, k))
            .arg("PARAMS")
            .arg(2)
            .arg("q")
            .arg(vector_bytes(vector))
            .arg("RETURN")
            .arg(1)
            .arg("d")
            .arg("DIALECT")
            .arg(2);
        let reply: redis::Value = shared.kv.query(&cmd).await?;
        Ok(parse_search_reply(shared, &reply))
    }

    /// `[total, key, [field, value, ...], key, [...], ...]` → `(id, 1 - cosine distance)`.
    pub fn parse_search_reply(shared: &Shared, reply: &redis::Value) -> Vec<(u64, f32)> {
        let redis::Value::Array(items) = reply else { return Vec::new() };
        let mut out = Vec::new();
        let mut rest = items.iter().skip(1);
        while let (Some(key), Some(fields)) = (rest.next(), rest.next()) {
            let Ok(key) = redis::from_redis_value_ref::<String>(key) else { continue };
            let Some((_, id)) = shared.parse_entry_key(&key) else { continue };
            let Ok(fields) = redis::from_redis_value_ref::<Vec<String>>(fields) else { continue };
            let distance = fields.chunks(2).find(|kv| kv[0] == "d").and_then(|kv| kv.get(1)?.parse::<f32>().ok());
            if let Some(d) = distance {
                out.push((id, 1.0 - d));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ValkeySettings;

    fn shared() -> Shared {
        let settings = ValkeySettings {
            urls: vec!["redis://127.0.0.1:1".into()],
            cluster: false,
            timeout: std::time::Duration::from_millis(50),
            key_prefix: String::new(),
        };
        Shared { kv: Kv::new(&settings).unwrap(), prefix: "llmgw:cache".into() }
    }

    #[tokio::test]
    async fn keys_round_trip_and_share_a_hash_tag() {
        let s = shared();
        let p = [0xab; 16];
        let key = s.entry_key(&p, 0x1234);
        assert_eq!(key, format!("llmgw:cache:{{{}}}:e:0000000000001234", "ab".repeat(16)));
        assert_eq!(s.parse_entry_key(&key), Some((p, 0x1234)));
        assert_eq!(s.parse_entry_key("llmgw:cache:x:00"), None);
        assert_eq!(vector_from_bytes(&vector_bytes(&[1.0, -2.5])), Some(vec![1.0, -2.5]));
        assert_eq!(vector_from_bytes(&[1, 2, 3]), None);
    }

    #[tokio::test]
    async fn module_reply_parsing() {
        let s = shared();
        let key = s.entry_key(&[1; 16], 7);
        let reply = redis::Value::Array(vec![
            redis::Value::Int(1),
            redis::Value::BulkString(key.into_bytes()),
            redis::Value::Array(vec![
                redis::Value::BulkString(b"d".to_vec()),
                redis::Value::BulkString(b"0.03".to_vec()),
            ]),
        ]);
        let found = module::parse_search_reply(&s, &reply);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 7);
        assert!((found[0].1 - 0.97).abs() < 1e-6);
        assert_eq!(module::knn_query(&[0; 16], 4), format!("@p:{{{}}}=>[KNN 4 @v $q AS d]", "00".repeat(16)));
    }
}
