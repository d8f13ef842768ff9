//! What the pool knows about its sessions, apart from the processes themselves: each one's
//! state for `/sessions` (kept a while after it ended), and the pool's lifetime counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::time::Instant;

use crate::upstream::cli::session::{Session, StderrTail};

/// Ended sessions kept in the listing.
const ENDED_KEPT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Starting,
    Warm,
    Busy,
    Dead,
}

/// Lifetime counters. `started`, `warm`, `failed`, `crashed`, `killed` and `recycled` are the
/// `status` values of the `llm_sessions_total` metric.
#[derive(Debug, Default)]
pub struct Totals {
    /// Processes spawned (pool, and cold starts for requests).
    pub started: AtomicU64,
    /// Pool sessions that became warm.
    pub warm: AtomicU64,
    /// Starts that failed (spawn error, or no answer to the warm-up).
    pub failed: AtomicU64,
    /// Sessions that exited on their own or broke the protocol.
    pub crashed: AtomicU64,
    /// Sessions the gateway killed: a request ended mid-answer (timeout, client gone), or a
    /// keep-alive ping went unanswered.
    pub killed: AtomicU64,
    /// Sessions ended in good health: request budget spent, or surplus after overflow.
    pub recycled: AtomicU64,
    pub cold_starts: AtomicU64,
    pub requests: AtomicU64,
    pub pings: AtomicU64,
}

impl Totals {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn report(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "started": get(&self.started),
            "warm": get(&self.warm),
            "failed": get(&self.failed),
            "crashed": get(&self.crashed),
            "killed": get(&self.killed),
            "recycled": get(&self.recycled),
            "cold_starts": get(&self.cold_starts),
            "requests": get(&self.requests),
            "pings": get(&self.pings),
        })
    }
}

/// What the listing shows of one session.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) pid: Option<u32>,
    pub(super) state: SessionState,
    /// What a starting or busy session is doing: `warm-up`, `cold start`, `request`, `ping`.
    pub(super) doing: &'static str,
    /// Started by the pool ahead of demand (not cold-started for a waiting request).
    pub(super) prewarmed: bool,
    pub(super) started: Instant,
    pub(super) started_unix_ms: u64,
    /// Last request or ping answered (or start): keep-alive is due `keep_alive_interval` later.
    pub(super) last_active: Instant,
    /// Last request answered (or start): a partition's session is closed
    /// `partition_idle_timeout` later.
    pub(super) last_request: Instant,
    /// Whose requests it serves, once it served one.
    pub(super) partition: Option<super::Partition>,
    pub(super) served: u32,
    pub(super) last_error: Option<String>,
    /// Why and when a dead session ended.
    pub(super) ended: Option<(String, Instant)>,
    pub(super) stderr: Option<Arc<StderrTail>>,
}

impl Entry {
    pub(super) fn new(prewarmed: bool, now: Instant) -> Self {
        Self {
            pid: None,
            state: SessionState::Starting,
            doing: if prewarmed { "warm-up" } else { "cold start" },
            prewarmed,
            started: now,
            started_unix_ms: unix_ms(),
            last_active: now,
            last_request: now,
            partition: None,
            served: 0,
            last_error: None,
            ended: None,
            stderr: None,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) closed: bool,
    pub(super) entries: BTreeMap<u64, Entry>,
    /// Warm sessions, least recently used first.
    pub(super) idle: VecDeque<Session>,
    /// Requests waiting for a pre-warming session instead of cold-starting their own.
    pub(super) waiters: usize,
    /// Pool starts that failed in a row: the restart backoff's exponent.
    pub(super) failures: u32,
    pub(super) restart_at: Option<Instant>,
}

impl State {
    pub(super) fn live(&self) -> usize {
        self.entries.values().filter(|e| e.state != SessionState::Dead).count()
    }

    pub(super) fn count(&self, state: SessionState) -> usize {
        self.entries.values().filter(|e| e.state == state).count()
    }

    pub(super) fn prewarming(&self) -> usize {
        self.entries.values().filter(|e| e.state == SessionState::Starting && e.prewarmed).count()
    }

    /// With more sessions than `pool_size`, whether `id` stays anyway: pool sessions do while the
    /// cold-started ones still running are enough to bring the pool back to size as they finish.
    pub(super) fn keep_on_surplus(&self, id: u64, pool_size: usize) -> bool {
        let surplus = self.live().saturating_sub(pool_size);
        let cold = self.entries.values().filter(|e| e.state != SessionState::Dead && !e.prewarmed).count();
        self.entries.get(&id).is_some_and(|e| e.prewarmed) && cold >= surplus
    }

    /// Marks `id` dead and forgets the oldest ended sessions beyond `ENDED_KEPT`.
    pub(super) fn end(&mut self, id: u64, reason: String, error: Option<String>) {
        let now = Instant::now();
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.state = SessionState::Dead;
            entry.doing = "";
            entry.ended = Some((reason, now));
            if error.is_some() {
                entry.last_error = error;
            }
        }
        let mut ended: Vec<(Instant, u64)> =
            self.entries.iter().filter_map(|(id, e)| e.ended.as_ref().map(|(_, at)| (*at, *id))).collect();
        if ended.len() > ENDED_KEPT {
            ended.sort();
            for (_, id) in &ended[..ended.len() - ENDED_KEPT] {
                self.entries.remove(id);
            }
        }
    }
}

impl Entry {
    /// One session in `/sessions`.
    pub(super) fn report(&self, id: u64, now: Instant) -> serde_json::Value {
        // A session that is still starting may be telling why on stderr (a login prompt...).
        let stderr =
            (self.state == SessionState::Starting).then(|| self.stderr.as_ref().and_then(|t| t.quote())).flatten();
        let until = self.ended.as_ref().map_or(now, |(_, at)| *at);
        serde_json::json!({
            "id": id,
            "pid": self.pid,
            "state": self.state,
            "doing": (!self.doing.is_empty()).then_some(self.doing),
            "prewarmed": self.prewarmed,
            // The team whose requests it serves (null: no one yet); never a key.
            "team": self.partition.as_ref().map(|p| &*p.team),
            "started_unix_ms": self.started_unix_ms,
            "age_ms": until.duration_since(self.started).as_millis() as u64,
            "idle_ms": (self.state == SessionState::Warm).then(|| now.duration_since(self.last_active).as_millis() as u64),
            "requests_served": self.served,
            "last_error": self.last_error,
            "stderr": stderr,
            "ended": self.ended.as_ref().map(|(why, _)| why),
        })
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
