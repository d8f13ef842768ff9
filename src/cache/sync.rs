//! Keeps a replica's in-memory index in step with Valkey: note the change log's position, load
//! every entry (SCAN on each primary), then tail the log (`XREAD BLOCK`) from that position —
//! anything written during the scan is replayed, and applying a change twice is harmless. After a
//! connection loss, or when the log was trimmed past our position, start over with a full
//! rescan. Runs on its own connection, because a blocking read would stall every other command
//! sharing one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::index::Index;
use super::metrics::CacheMetrics;
use super::shared::{Change, Shared, parse_change};
use crate::kv::KvError;

const BLOCK_MS: u64 = 1000;
const READ_COUNT: usize = 512;
const SCAN_COUNT: usize = 1000;
/// How often the tail checks whether the log was trimmed past it.
const TRIM_CHECK: Duration = Duration::from_secs(10);

pub struct Sync {
    /// A dedicated connection (its timeout covers `XREAD BLOCK`).
    pub shared: Shared,
    pub index: Arc<Index>,
    pub max_vectors: usize,
    pub hnsw_min: usize,
    pub metrics: Arc<CacheMetrics>,
}

/// A stream entry id, ordered.
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl Sync {
    /// Runs until the task is aborted (on shutdown).
    pub async fn run(self) {
        loop {
            match self.load().await {
                Ok(position) => {
                    if let Err(e) = self.tail(position).await {
                        tracing::warn!(error = %e, "cache index sync lost Valkey; will rescan");
                        self.metrics.errors.get_or_create(&"sync".into()).inc();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cache index load failed; retrying");
                    self.metrics.errors.get_or_create(&"sync".into()).inc();
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Loads every live entry into a fresh index and swaps it in; returns the log position to
    /// tail from.
    async fn load(&self) -> Result<String, KvError> {
        let log = self.shared.log_key();
        let last: Vec<(String, redis::Value)> =
            self.shared.kv.query(redis::cmd("XREVRANGE").arg(&log).arg("+").arg("-").arg("COUNT").arg(1)).await?;
        let position = last.into_iter().next().map(|(id, _)| id).unwrap_or_else(|| "0-0".into());
        let fresh = Index::for_bulk_load(self.max_vectors, self.hnsw_min);
        let pattern = self.shared.entry_pattern();
        for node in self.shared.kv.primaries().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
                let (next, keys): (u64, Vec<String>) = self.shared.kv.query_on(node.as_ref(), &scan).await?;
                let loaded: Vec<_> = futures_util::stream::iter(keys)
                    .map(|key| async move {
                        let parsed = self.shared.parse_entry_key(&key);
                        (parsed, self.shared.entry_vector(&key).await)
                    })
                    .buffer_unordered(32)
                    .collect()
                    .await;
                for (parsed, vector) in loaded {
                    if let (Some((partition, id)), Some((vector, expires_ms))) = (parsed, vector?) {
                        let _ = fresh.insert(partition, id, &vector, expires_ms);
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        // Large partitions get their graphs in one parallel build, off the async threads.
        let fresh = tokio::task::spawn_blocking(move || {
            fresh.settle();
            fresh
        })
        .await
        .map_err(|e| KvError::Redis(redis::RedisError::from(std::io::Error::other(e.to_string()))))?;
        let count = fresh.len();
        self.index.replace_with(fresh);
        tracing::info!(vectors = count, partitions = self.index.partition_count(), "cache index loaded from Valkey");
        Ok(position)
    }

    async fn tail(&self, mut position: String) -> Result<(), KvError> {
        let log = self.shared.log_key();
        let mut checked = tokio::time::Instant::now();
        loop {
            let mut read = redis::cmd("XREAD");
            read.arg("COUNT").arg(READ_COUNT).arg("BLOCK").arg(BLOCK_MS).arg("STREAMS").arg(&log).arg(&position);
            let reply: Option<redis::streams::StreamReadReply> = self.shared.kv.query(&read).await?;
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in stream.ids {
                    match parse_change(&entry.map) {
                        Some(Change::Put { partition, id, expires_ms, vector }) => {
                            if let Err(e) = self.index.insert(partition, id, &vector, expires_ms) {
                                tracing::debug!(error = %e, "cache index insert skipped");
                                self.metrics.index_rejects.inc();
                            }
                        }
                        Some(Change::Del { partition, id }) => self.index.remove(&partition, id),
                        None => {}
                    }
                    position = entry.id;
                }
            }
            if checked.elapsed() >= TRIM_CHECK {
                checked = tokio::time::Instant::now();
                let first: Vec<(String, redis::Value)> =
                    self.shared.kv.query(redis::cmd("XRANGE").arg(&log).arg("-").arg("+").arg("COUNT").arg(1)).await?;
                if let Some((first, _)) = first.first()
                    && parse_id(first) > parse_id(&position)
                    && position != "0-0"
                {
                    // Entries we never saw were trimmed away: only a rescan can recover them.
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids_order_numerically() {
        assert!(super::parse_id("10-0") > super::parse_id("9-5"));
        assert!(super::parse_id("9-10") > super::parse_id("9-9"));
    }
}
