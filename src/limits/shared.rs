//! The shared side of limits: Valkey holds every counter, changed only by the Lua scripts next to
//! this file (integer units, Valkey's clock, one round trip per admission and one per
//! settlement). Also: whether Valkey is reachable right now, the live concurrency leases this
//! replica renews, and paying back budget spent locally while Valkey was down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
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
    admit: Script,
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
            kv,
            admit: Script::new(include_str!("admit.lua")),
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

    pub async fn admit(&self, checks: &[Check], lease_id: i64, now_ms: u64) -> Result<Verdict, KvError> {
        let keys: Vec<&str> = checks.iter().map(|c| c.key.as_str()).collect();
        let mut args = Vec::with_capacity(2 + 5 * checks.len());
        args.extend([checks.len() as i64, lease_id]);
        for check in checks {
            args.extend(check.script_args(now_ms, self.lease_ttl));
        }
        let reply: Vec<i64> = self.kv.eval(&self.admit, &keys, &args).await?;
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

fn non_negative(v: Option<&i64>) -> u64 {
    v.copied().unwrap_or(0).max(0) as u64
}
