//! The shared side of limits: Valkey holds every counter, changed only by the Lua scripts next to
//! this file (integer units, Valkey's clock, at most one round trip per admission and one per
//! settlement). Also: whether Valkey is reachable right now, the live concurrency leases this
//! replica renews, and paying back budget spent locally while Valkey was down.
//!
//! How admission reaches Valkey. One script (`admit.lua`) decides a request against all its
//! limits at once, on Valkey's clock, and grants allowances (`allowance.rs`) in the same call.
//! Admissions are coalesced per hash tag (`Batcher`): requests of one tag that arrive while a
//! call for it is in flight wait for the next call and go together; the script reads each
//! counter once, decides the requests one by one in arrival order exactly as separate calls
//! would (all or nothing per request), and writes each changed counter once. Under load one
//! round trip and one pass over the counters serve many requests; alone, a request goes at once.
//! Settlements (token corrections, lease releases) that an allowance does not absorb are batched
//! per hash tag off the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;

use super::allowance::{self, Allowances, Part};
use super::plan::{self, Check, Kind};
use super::{Leases, Retry, Verdict};
use crate::kv::{Kv, KvError};

/// What an ended request gives back: its token corrections and its leases.
#[derive(Debug)]
pub struct Settlement {
    /// Token counters and the units to add to each (usage − estimate, less what an allowance
    /// in hand absorbed).
    pub held: Vec<(super::Held, i64)>,
    pub leases: super::Leases,
}

pub struct Shared {
    kv: Kv,
    batcher: Batcher,
    settle: Script,
    renew: Script,
    peek: Script,
    healthy: AtomicBool,
    /// Live leases this replica holds (a request's, or slots in hand): lease id → its lease sets.
    leases: Arc<Mutex<HashMap<i64, Vec<String>>>>,
    lease_ttl: Duration,
    allowances: Arc<Allowances>,
    /// Why the last background top-up failed, until an admission reports it.
    top_up_failed: Arc<Mutex<Option<String>>>,
}

/// An admission's verdict and, when admitted, the leases the request holds.
pub struct Admission {
    pub verdict: Verdict,
    pub leases: Leases,
    /// Decided from allowances in hand, without a round trip.
    pub local: bool,
}

impl Shared {
    pub fn new(kv: Kv, lease_ttl: Duration, replicas: u32, allowances: bool) -> Self {
        Self {
            batcher: Batcher { kv: kv.clone(), script: Script::new(include_str!("admit.lua")), tags: Arc::default() },
            kv,
            settle: Script::new(include_str!("settle.lua")),
            renew: Script::new(include_str!("renew.lua")),
            peek: Script::new(include_str!("peek.lua")),
            healthy: AtomicBool::new(true),
            leases: Arc::default(),
            lease_ttl,
            allowances: Arc::new(Allowances::new(replicas, allowances)),
            top_up_failed: Arc::default(),
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

    /// Admits one request. First from the allowances this replica holds (see `allowance.rs`):
    /// when they pay for every check, no round trip at all. Otherwise Valkey decides, with what
    /// the allowances paid taken off the request's cost. Requests of one hash tag that arrive
    /// while a call for it is in flight go together in the next call (see `admit.lua`): under
    /// load one round trip and one pass over the counters serve many requests, decided one by
    /// one as separate calls would be.
    pub async fn admit(&self, checks: &[Check], lease_id: i64, now_ms: u64) -> Result<Admission, KvError> {
        if let Some(why) = self.top_up_failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(KvError::Batch(why));
        }
        let Some(first) = checks.first() else {
            return Ok(Admission { verdict: Verdict::admitted(0), leases: Leases::default(), local: true });
        };
        let now = Instant::now();
        let taken = self.allowances.take(checks, now);
        if taken.top_up {
            self.top_up(checks, now_ms);
        }
        if taken.full {
            let mut verdict = Verdict::admitted(checks.len());
            verdict.levels = taken.levels;
            let leases = checks.iter().zip(&taken.parts).filter_map(|(c, p)| slot(c, *p)).collect();
            return Ok(Admission { verdict, leases: Leases(leases), local: true });
        }
        let mut args = Vec::with_capacity(8 * checks.len());
        for (check, part) in checks.iter().zip(&taken.parts) {
            args.extend(self.args(check, *part, now_ms, true));
        }
        let pending = Pending { keys: checks.iter().map(|c| c.key.clone()).collect(), args, lease_id, reply: None };
        let reply = match self.batcher.submit(plan::tag_of(&first.key), pending).await {
            Ok(reply) => reply,
            Err(e) => {
                self.allowances.give_back(checks, &taken.parts);
                return Err(e);
            }
        };
        let mut verdict = Verdict::admitted(checks.len());
        if reply.first() == Some(&0) {
            let denied = reply.get(1).map(|i| (*i - 1).max(0) as usize).unwrap_or(0);
            let retry = match reply.get(2) {
                Some(-1) => Retry::Never,
                other => Retry::After(non_negative(other)),
            };
            verdict.refuse(denied, retry);
            self.allowances.give_back(checks, &taken.parts);
        }
        record_grants(&self.allowances, &self.leases, checks, &reply, lease_id, now);
        for (i, level) in verdict.levels.iter_mut().enumerate() {
            let at = 3 + 3 * i;
            let in_hand = self.allowances.in_hand(&checks[i].key);
            *level = Some((non_negative(reply.get(at)) + in_hand, non_negative(reply.get(at + 1))));
        }
        if !verdict.admitted {
            return Ok(Admission { verdict, leases: Leases::default(), local: false });
        }
        let leases: Vec<(String, i64)> = checks
            .iter()
            .zip(&taken.parts)
            .filter(|(c, _)| c.kind() == Kind::Concurrency)
            .map(|(c, p)| slot(c, *p).unwrap_or_else(|| (c.key.clone(), lease_id)))
            .collect();
        let own: Vec<String> = leases.iter().filter(|(_, id)| *id == lease_id).map(|(s, _)| s.clone()).collect();
        if !own.is_empty() {
            self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(lease_id, own);
        }
        Ok(Admission { verdict, leases: Leases(leases), local: false })
    }

    /// The eight integers of one check in an admission call: `Check::script_args`, then whether
    /// an allowance paid for it, and the allowance to ask for (`want`, `keep`).
    fn args(&self, check: &Check, part: Part, now_ms: u64, charge: bool) -> [i64; 8] {
        let covered = !charge || allowance::covers(check, part);
        let mut five = check.script_args(now_ms, self.lease_ttl);
        if let Part::Units(n) = part {
            // What the allowance paid comes off the cost (rates: 5th integer; budgets: 4th).
            let cost = if check.kind() == Kind::Rate { &mut five[4] } else { &mut five[3] };
            *cost = (*cost - i64::try_from(n).unwrap_or(i64::MAX)).max(0);
        }
        let (want, keep) = if self.allowances.needs(&check.key) { self.allowances.ask(check) } else { (0, 0) };
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let [kind, a, b, c, d] = five;
        [kind, a, b, c, d, i64::from(covered), i(want), i(keep)]
    }

    /// Tops up the allowances of `checks` in the background: an admission call that charges
    /// nothing and only asks for allowances.
    fn top_up(&self, checks: &[Check], now_ms: u64) {
        let Some(first) = checks.first() else { return };
        let mut args = Vec::with_capacity(8 * checks.len());
        for check in checks {
            args.extend(self.args(check, Part::Nothing, now_ms, false));
        }
        let lease_id = new_lease_id();
        let pending = Pending { keys: checks.iter().map(|c| c.key.clone()).collect(), args, lease_id, reply: None };
        let (batcher, tag, checks) = (self.batcher.clone(), plan::tag_of(&first.key).to_owned(), checks.to_vec());
        let (allowances, leases, failed) = (self.allowances.clone(), self.leases.clone(), self.top_up_failed.clone());
        tokio::spawn(async move {
            let reply = batcher.submit(&tag, pending).await;
            if let Err(e) = &reply {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
            if let Ok(reply) = &reply {
                record_grants(&allowances, &leases, &checks, reply, lease_id, Instant::now());
            }
            for check in &checks {
                allowances.topped_up(&check.key);
            }
        });
    }

    /// Corrects token counters by `delta` from the allowances in hand where they are live
    /// (refunds go into them, overruns are paid from them); returns what Valkey must still get.
    pub fn settle_in_hand(&self, held: &[super::Held], delta: i64) -> Vec<(super::Held, i64)> {
        let now = Instant::now();
        held.iter()
            .filter_map(|h| {
                let rest = self.allowances.absorb(&h.key, delta, now);
                (rest != 0).then(|| (h.clone(), rest))
            })
            .collect()
    }

    /// Keeps the lease slots of an ended request that its sets' allowances can use again;
    /// returns the leases to release in Valkey.
    pub fn keep_slots(&self, leases: &Leases) -> Leases {
        let now = Instant::now();
        Leases(leases.0.iter().filter(|(set, id)| !self.allowances.keep_slot(set, *id, now)).cloned().collect())
    }

    /// Settlements giving back the allowances whose time is up (all of them, `all`).
    pub fn leftovers(&self, all: bool) -> Vec<Settlement> {
        self.allowances
            .expire(Instant::now(), all)
            .into_iter()
            .map(|l| {
                let units = -i64::try_from(l.units).unwrap_or(i64::MAX);
                let held = super::Held {
                    kind: l.kind,
                    key: l.key.clone(),
                    limit: l.limit,
                    window_end_ms: l.window_end_ms,
                    money: false,
                };
                Settlement {
                    held: if units != 0 { vec![(held, units)] } else { Vec::new() },
                    leases: Leases(l.slots.iter().map(|id| (l.key.clone(), *id)).collect()),
                }
            })
            .collect()
    }

    /// Settles a batch of ended requests: one script call per hash tag, corrections of the same
    /// counter summed. Their leases are no longer renewed even when this fails, so they expire.
    pub async fn settle(&self, batch: &[Settlement], now_ms: u64) -> Result<(), KvError> {
        {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            for (set, id) in batch.iter().flat_map(|s| &s.leases.0) {
                if let Some(sets) = leases.get_mut(id) {
                    sets.retain(|s| s != set);
                    if sets.is_empty() {
                        leases.remove(id);
                    }
                }
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
            for (set, id) in &s.leases.0 {
                let call = calls.entry(plan::tag_of(set)).or_default();
                call.keys.push(set);
                call.args.extend(plan::release_args(*id));
            }
            for (h, delta) in s.held.iter().filter(|(_, d)| *d != 0) {
                let call = calls.entry(plan::tag_of(&h.key)).or_default();
                match call.items.get(h.key.as_str()) {
                    Some(&item) => call.args[item * 5 + 4] += delta,
                    None => {
                        call.items.insert(&h.key, call.keys.len());
                        call.keys.push(&h.key);
                        call.args.extend(plan::settle_args(h.kind, h.limit, h.window_end_ms, now_ms, *delta));
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
        // What this replica holds in hand is spent in Valkey but not used: report it as remaining.
        Ok(reply
            .chunks(3)
            .zip(checks)
            .map(|(c, check)| {
                let in_hand = self.allowances.in_hand(&check.key);
                let (used, remaining) = (non_negative(c.first()), non_negative(c.get(1)));
                (used.saturating_sub(in_hand), remaining + in_hand.min(used), non_negative(c.get(2)))
            })
            .collect())
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

    /// Adds budget spent while Valkey was down to the shared counters. On a failure, returns
    /// the error and what is still unpaid (the entries already added are not).
    pub async fn pay_debt(
        &self,
        debt: Vec<(String, i64, u64)>,
        now_ms: u64,
    ) -> Result<(), (KvError, Vec<(String, i64, u64)>)> {
        let mut debt = debt.into_iter();
        while let Some((key, units, window_end_ms)) = debt.next() {
            let mut args = vec![1];
            args.extend(plan::settle_args(Kind::Window, 0, window_end_ms, now_ms, units));
            if let Err(e) = self.kv.eval::<i64>(&self.settle, &[key.as_str()], &args).await {
                let unpaid = std::iter::once((key, units, window_end_ms)).chain(debt).collect();
                return Err((e, unpaid));
            }
        }
        Ok(())
    }
}

/// Most requests one admission call carries.
const MAX_BATCH: usize = 256;

/// One request waiting for its admission.
struct Pending {
    keys: Vec<String>,
    /// Eight integers per check (`Shared::args`).
    args: Vec<i64>,
    lease_id: i64,
    reply: Option<tokio::sync::oneshot::Sender<Result<Vec<i64>, KvError>>>,
}

/// Coalesces admissions per hash tag: at most one call in flight per tag; whoever arrives
/// meanwhile waits for the next. The calls run in their own task, so a request that goes away
/// (its client disconnected) never strands the others.
#[derive(Clone)]
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
    let mut args: Vec<i64> = Vec::with_capacity(1 + batch.iter().map(|p| 2 + p.args.len() * 9 / 8).sum::<usize>());
    args.push(batch.len() as i64);
    for p in &batch {
        args.extend([p.keys.len() as i64, p.lease_id]);
        for (key, eight) in p.keys.iter().zip(p.args.chunks(8)) {
            let at = *index.entry(key.as_str()).or_insert_with(|| {
                keys.push(key.as_str());
                keys.len() as i64
            });
            args.push(at);
            args.extend_from_slice(eight);
        }
    }
    let result: Result<Vec<i64>, KvError> = kv.eval(script, &keys, &args).await;
    drop((keys, index));
    match result {
        Ok(reply) => {
            let mut at = 0;
            for p in &mut batch {
                let len = 3 + 3 * p.keys.len();
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

/// A new lease id: below 2^52, so that the slots named after it (`id + 1`, ...) are exact in
/// Lua's numbers.
pub fn new_lease_id() -> i64 {
    fastrand::i64(1..1 << 52)
}

/// Records the allowances `admit.lua` granted with a call (three integers per check after the
/// three of the verdict: remaining, reset, granted); granted lease slots are renewed from now on.
fn record_grants(
    allowances: &Allowances,
    leases: &Mutex<HashMap<i64, Vec<String>>>,
    checks: &[Check],
    reply: &[i64],
    lease_id: i64,
    now: Instant,
) {
    for (i, check) in checks.iter().enumerate() {
        let at = 3 + 3 * i;
        let granted = non_negative(reply.get(at + 2));
        let level = (non_negative(reply.get(at)), non_negative(reply.get(at + 1)));
        if granted > 0 && check.kind() == Kind::Concurrency {
            let mut leases = leases.lock().unwrap_or_else(|p| p.into_inner());
            for j in 1..=granted as i64 {
                leases.insert(lease_id + j, vec![check.key.clone()]);
            }
        }
        allowances.grant(check, granted, lease_id, level, now);
    }
}

/// The lease a slot part gives a concurrency check.
fn slot(check: &Check, part: Part) -> Option<(String, i64)> {
    match part {
        Part::Slot(id) => Some((check.key.clone(), id)),
        _ => None,
    }
}

fn non_negative(v: Option<&i64>) -> u64 {
    v.copied().unwrap_or(0).max(0) as u64
}
