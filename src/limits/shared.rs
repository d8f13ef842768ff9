//! The shared side of limits: Valkey holds every counter, changed only by the Lua scripts next to
//! this file (integer units, Valkey's clock, one round trip per admission and one per
//! settlement). Also: whether Valkey is reachable right now, the live concurrency leases this
//! replica renews, and paying back budget spent locally while Valkey was down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Script;

use super::Verdict;
use super::local::Retry;
use super::plan::{self, Check, Kind};
use crate::kv::{Kv, KvError};

pub struct Shared {
    kv: Kv,
    admit: Script,
    settle: Script,
    renew: Script,
    peek: Script,
    healthy: AtomicBool,
    /// Live leases this replica holds: lease id → lease set.
    leases: Mutex<HashMap<i64, String>>,
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
        } else if let Some(check) = checks.iter().find(|c| c.kind() == Kind::Concurrency) {
            self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(lease_id, check.key.clone());
        }
        Ok(verdict)
    }

    /// Corrects token counters by `delta` and releases the lease (it is no longer renewed even
    /// when this fails, so it expires by itself).
    pub async fn settle(
        &self,
        held: &[super::Held],
        lease: Option<(&str, i64)>,
        delta: i64,
        now_ms: u64,
    ) -> Result<(), KvError> {
        let mut keys: Vec<&str> = Vec::new();
        let mut args = vec![0, lease.map(|l| l.1).unwrap_or(0)];
        if let Some((key, id)) = lease {
            self.leases.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            keys.push(key);
            args.extend(plan::settle_args(Kind::Concurrency, 0, 0, now_ms, 0));
        }
        if delta != 0 {
            for h in held {
                keys.push(&h.key);
                args.extend(plan::settle_args(h.kind, h.limit, h.window_end_ms, now_ms, delta));
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        args[0] = keys.len() as i64;
        self.kv.eval::<i64>(&self.settle, &keys, &args).await.map(drop)
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
            for (id, set) in leases.iter() {
                by_set.entry(set.clone()).or_default().push(*id);
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
            let args = plan::settle_args(Kind::Window, 0, window_end_ms, now_ms, units);
            let mut all = vec![1, 0];
            all.extend(args);
            self.kv.eval::<i64>(&self.settle, &[key.as_str()], &all).await?;
        }
        Ok(())
    }
}

fn non_negative(v: Option<&i64>) -> u64 {
    v.copied().unwrap_or(0).max(0) as u64
}
