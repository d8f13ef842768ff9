//! The shared side of limits: Valkey holds every counter, changed only by the Lua scripts next to
//! this file (integer units, Valkey's clock, one round trip per admission and one per
//! settlement). Also: whether Valkey is reachable right now, the live concurrency leases this
//! replica renews, and paying back budget spent locally while Valkey was down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;

use super::plan::{self, Check, Kind};
use super::{Leases, Retry, Verdict};
use crate::kv::{Kv, KvError};

/// What an ended request gives back: its token corrections and its leases.
#[derive(Debug)]
pub struct Settlement {
    pub held: Vec<super::Held>,
    pub leases: super::Leases,
    /// Units to add to each held counter (usage − estimate).
    pub delta: i64,
}

pub struct Shared {
    kv: Kv,
    batcher: Batcher,
    settle: Script,
    renew: Script,
    peek: Script,
    healthy: AtomicBool,
    /// Live leases this replica holds: lease id → its lease sets.
    leases: Mutex<HashMap<i64, Vec<String>>>,
    lease_ttl: Duration,
}

impl Shared {
    pub fn new(kv: Kv, lease_ttl: Duration) -> Self {
        Self {
            batcher: Batcher { kv: kv.clone(), script: Script::new(include_str!("admit.lua")), tags: Arc::default() },
            kv,
            settle: Script::new(include_str!("settle.lua")),
            renew: Script::new(include_str!("renew.lua")),
            peek: Script::new(include_str!("peek.lua")),
            healthy: AtomicBool::new(true),
            leases: Mutex::new(HashMap::new()),
            lease_ttl,
        }
    }

    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Flips the health flag; true when this call changed it.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// Admits one request. Requests of one hash tag that arrive while a call for it is in flight
    /// go together in the next call (see `admit.lua`): under load one round trip and one pass
    /// over the counters serve many requests, decided one by one as separate calls would be.
    pub async fn admit(&self, checks: &[Check], lease_id: i64, now_ms: u64) -> Result<Verdict, KvError> {
        let Some(first) = checks.first() else { return Ok(Verdict::admitted(0)) };
        let mut args = Vec::with_capacity(5 * checks.len());
        for check in checks {
            args.extend(check.script_args(now_ms, self.lease_ttl));
        }
        let pending = Pending { keys: checks.iter().map(|c| c.key.clone()).collect(), args, lease_id, reply: None };
        let reply = self.batcher.submit(plan::tag_of(&first.key), pending).await?;
        let mut verdict = Verdict::admitted(checks.len());
        for (i, level) in verdict.levels.iter_mut().enumerate() {
            let at = 3 + 2 * i;
            *level = Some((non_negative(reply.get(at)), non_negative(reply.get(at + 1))));
        }
        if reply.first() == Some(&0) {
            let denied = reply.get(1).map(|i| (*i - 1).max(0) as usize).unwrap_or(0);
            let retry = match reply.get(2) {
                Some(-1) => Retry::Never,
                other => Retry::After(non_negative(other)),
            };
            verdict.refuse(denied, retry);
        } else {
            let sets: Vec<String> =
                checks.iter().filter(|c| c.kind() == Kind::Concurrency).map(|c| c.key.clone()).collect();
            if !sets.is_empty() {
                self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(lease_id, sets);
            }
        }
        Ok(verdict)
    }

    /// Settles a batch of ended requests: one script call per hash tag, corrections of the same
    /// counter summed. Their leases are no longer renewed even when this fails, so they expire.
    pub async fn settle(&self, batch: &[Settlement], now_ms: u64) -> Result<(), KvError> {
        {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            for s in batch.iter().filter(|s| !s.leases.sets.is_empty()) {
                leases.remove(&s.leases.id);
            }
        }
        #[derive(Default)]
        struct Call<'a> {
            keys: Vec<&'a str>,
            args: Vec<i64>,
            /// Token counter → its item, to sum corrections.
            items: HashMap<&'a str, usize>,
        }
        let mut calls: HashMap<&str, Call> = HashMap::new();
        for s in batch {
            let Leases { id, sets } = &s.leases;
            for set in sets {
                let call = calls.entry(plan::tag_of(set)).or_default();
                call.keys.push(set);
                call.args.extend(plan::release_args(*id));
            }
            if s.delta == 0 {
                continue;
            }
            for h in &s.held {
                let call = calls.entry(plan::tag_of(&h.key)).or_default();
                match call.items.get(h.key.as_str()) {
                    Some(&item) => call.args[item * 5 + 4] += s.delta,
                    None => {
                        call.items.insert(&h.key, call.keys.len());
                        call.keys.push(&h.key);
                        call.args.extend(plan::settle_args(h.kind, h.limit, h.window_end_ms, now_ms, s.delta));
                    }
                }
            }
        }
        let results = futures_util::future::join_all(calls.into_values().map(|call| async move {
            let mut args = Vec::with_capacity(1 + call.args.len());
            args.push(call.keys.len() as i64);
            args.extend(call.args);
            self.kv.eval::<i64>(&self.settle, &call.keys, &args).await
        }))
        .await;
        results.into_iter().find(Result::is_err).unwrap_or(Ok(0)).map(drop)
    }

    /// Per check: (used, remaining, reset ms), without changing anything.
    pub async fn peek(&self, checks: &[Check], now_ms: u64) -> Result<Vec<(u64, u64, u64)>, KvError> {
        let keys: Vec<&str> = checks.iter().map(|c| c.key.as_str()).collect();
        let mut args = vec![checks.len() as i64, 0];
        for check in checks {
            args.extend(check.script_args(now_ms, self.lease_ttl));
        }
        let reply: Vec<i64> = self.kv.eval(&self.peek, &keys, &args).await?;
        Ok(reply.chunks(3).map(|c| (non_negative(c.first()), non_negative(c.get(1)), non_negative(c.get(2)))).collect())
    }

    /// Pushes back the expiry of every lease this replica still holds.
    pub async fn renew_leases(&self) -> Result<(), KvError> {
        let by_set: HashMap<String, Vec<i64>> = {
            let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            let mut by_set: HashMap<String, Vec<i64>> = HashMap::new();
            for (id, sets) in leases.iter() {
                for set in sets {
                    by_set.entry(set.clone()).or_default().push(*id);
                }
            }
            by_set
        };
        for (set, ids) in by_set {
            // Bounded argument lists: renew in slices.
            for slice in ids.chunks(512) {
                let mut args = vec![self.lease_ttl.as_millis() as i64];
                args.extend_from_slice(slice);
                self.kv.eval::<i64>(&self.renew, &[set.as_str()], &args).await?;
            }
        }
        Ok(())
    }

    /// Adds budget spent while Valkey was down to the shared counters.
    pub async fn pay_debt(&self, debt: Vec<(String, i64, u64)>, now_ms: u64) -> Result<(), KvError> {
        for (key, units, window_end_ms) in debt {
            let mut args = vec![1];
            args.extend(plan::settle_args(Kind::Window, 0, window_end_ms, now_ms, units));
            self.kv.eval::<i64>(&self.settle, &[key.as_str()], &args).await?;
        }
        Ok(())
    }
}

/// Most requests one admission call carries.
const MAX_BATCH: usize = 256;

/// One request waiting for its admission.
struct Pending {
    keys: Vec<String>,
    /// Five integers per check (`Check::script_args`).
    args: Vec<i64>,
    lease_id: i64,
    reply: Option<tokio::sync::oneshot::Sender<Result<Vec<i64>, KvError>>>,
}

/// Coalesces admissions per hash tag: at most one call in flight per tag; whoever arrives
/// meanwhile waits for the next. The calls run in their own task, so a request that goes away
/// (its client disconnected) never strands the others.
struct Batcher {
    kv: Kv,
    script: Script,
    /// Tag → requests waiting for the next call; present while a call for the tag is in flight.
    tags: Arc<Mutex<HashMap<String, Vec<Pending>>>>,
}

impl Batcher {
    async fn submit(&self, tag: &str, mut pending: Pending) -> Result<Vec<i64>, KvError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        pending.reply = Some(tx);
        let start = {
            let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
            match tags.get_mut(tag) {
                Some(waiting) => {
                    waiting.push(pending);
                    None
                }
                None => {
                    tags.insert(tag.to_owned(), Vec::new());
                    Some(pending)
                }
            }
        };
        if let Some(first) = start {
            let (kv, script, tags, tag) = (self.kv.clone(), self.script.clone(), self.tags.clone(), tag.to_owned());
            tokio::spawn(async move {
                let mut batch = vec![first];
                loop {
                    call(&kv, &script, batch).await;
                    let mut waiting = tags.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(queue) = waiting.get_mut(&tag) else { return };
                    if queue.is_empty() {
                        waiting.remove(&tag);
                        return;
                    }
                    let take = queue.len().min(MAX_BATCH);
                    batch = queue.drain(..take).collect();
                }
            });
        }
        rx.await.unwrap_or_else(|_| Err(KvError::Dropped))
    }
}

/// One admission call for `batch`; each request gets its part of the reply (or the error).
async fn call(kv: &Kv, script: &Script, mut batch: Vec<Pending>) {
    let mut keys: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, i64> = HashMap::new();
    let mut args: Vec<i64> = Vec::with_capacity(1 + batch.iter().map(|p| 2 + p.args.len() * 6 / 5).sum::<usize>());
    args.push(batch.len() as i64);
    for p in &batch {
        args.extend([p.keys.len() as i64, p.lease_id]);
        for (key, five) in p.keys.iter().zip(p.args.chunks(5)) {
            let at = *index.entry(key.as_str()).or_insert_with(|| {
                keys.push(key.as_str());
                keys.len() as i64
            });
            args.push(at);
            args.extend_from_slice(five);
        }
    }
    let result: Result<Vec<i64>, KvError> = kv.eval(script, &keys, &args).await;
    drop((keys, index));
    match result {
        Ok(reply) => {
            let mut at = 0;
            for p in &mut batch {
                let len = 3 + 2 * p.keys.len();
                let part = reply.get(at..at + len).map(<[i64]>::to_vec).unwrap_or_default();
                at += len;
                if let Some(tx) = p.reply.take() {
                    let _ = tx.send(Ok(part));
                }
            }
        }
        Err(e) => {
            let text = e.to_string();
            for p in &mut batch {
                if let Some(tx) = p.reply.take() {
                    let _ = tx.send(Err(KvError::Batch(text.clone())));
                }
            }
        }
    }
}

fn non_negative(v: Option<&i64>) -> u64 {
    v.copied().unwrap_or(0).max(0) as u64
}
