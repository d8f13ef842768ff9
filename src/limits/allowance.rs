//! Allowances: capacity of a shared counter that this replica took ahead of demand, so that far
//! from a limit most admissions are decided in process, without a round trip to Valkey.
//!
//! An allowance is taken by `admit.lua` along with an admission (or by a background top-up) and
//! counts as spent in Valkey from then on: a replica never admits more than Valkey granted it, so
//! the replicas together never exceed a limit. It is granted only while enough would remain for
//! everyone else (`keep`), so near a limit every admission is decided in Valkey, one by one,
//! exactly as without allowances. What a replica holds and does not use goes back within
//! `LIFETIME`. The cost of this: far from a limit, a counter's `used` reads what other replicas
//! hold as used (up to two grants each, a grant at most 1/32 of the limit) while they use it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::plan::{Check, Kind};

/// How long an allowance is kept unused (since its last grant or use) before it goes back.
pub const LIFETIME: Duration = Duration::from_millis(250);
/// A grant is at most this share of a limit (of a rate's burst capacity)...
const SHARE: u64 = 32;
/// ... and at most this many requests' worth.
const REQUESTS: u64 = 64;
/// Lease slots taken at once at most.
const SLOTS: u64 = 32;

/// What one request took from an allowance, per check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Nothing,
    /// Units of a rate or budget (possibly fewer than the request costs).
    Units(u64),
    /// A concurrency lease slot, by lease id.
    Slot(i64),
}

/// A request's take: one part per check.
#[derive(Debug)]
pub struct Taken {
    pub parts: Vec<Part>,
    /// Every check is paid in full: no call to Valkey needed.
    pub full: bool,
    /// Per check with an allowance: the level a client sees — what Valkey had left at the last
    /// call plus what is in hand.
    pub levels: Vec<Option<(u64, u64)>>,
    /// Some allowance ran low: top it up in the background.
    pub top_up: bool,
}

/// What an ended allowance gives back to Valkey.
#[derive(Debug)]
pub struct Leftover {
    pub key: String,
    pub kind: Kind,
    pub limit: u64,
    pub window_end_ms: u64,
    pub units: u64,
    pub slots: Vec<i64>,
}

struct Allowance {
    kind: Kind,
    limit: u64,
    window_end_ms: u64,
    units: u64,
    slots: Vec<i64>,
    /// The size of the last grant.
    want: u64,
    /// What Valkey had left for everyone else at the last call, and its reset ms.
    level: (u64, u64),
    expires: Instant,
    topping_up: bool,
}

impl Allowance {
    fn in_hand(&self) -> u64 {
        self.units + self.slots.len() as u64
    }
}

pub struct Allowances {
    map: Mutex<HashMap<String, Allowance>>,
    replicas: u64,
    /// `limits.allowances`: off, nothing is ever asked for and every admission is Valkey's.
    enabled: bool,
}

/// What `admit.lua` is asked to grant for a check: (want, keep). `want` 0: nothing.
pub fn ask(check: &Check, replicas: u64) -> (u64, u64) {
    let want = match check.kind() {
        Kind::Rate => (check.capacity / SHARE).min(REQUESTS * check.cost.max(1)),
        Kind::Window => (check.limit / SHARE).min(REQUESTS * check.cost.max(1)),
        Kind::Concurrency => (check.limit / SHARE).min(SLOTS),
    };
    // A grant that cannot pay for one more such request is not worth holding.
    let unit = if check.kind() == Kind::Concurrency { 1 } else { check.cost.max(1) };
    if want < unit.max(2) {
        return (0, 0);
    }
    (want, want.saturating_mul(2 * replicas.max(1)))
}

impl Allowances {
    pub fn new(replicas: u32, enabled: bool) -> Self {
        Self { map: Mutex::new(HashMap::new()), replicas: u64::from(replicas.max(1)), enabled }
    }

    pub fn ask(&self, check: &Check) -> (u64, u64) {
        if self.enabled { ask(check, self.replicas) } else { (0, 0) }
    }

    /// Takes what each check costs from the allowances in hand, as far as they go.
    pub fn take(&self, checks: &[Check], now: Instant) -> Taken {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken = Taken {
            parts: Vec::with_capacity(checks.len()),
            full: true,
            levels: Vec::with_capacity(checks.len()),
            top_up: false,
        };
        for check in checks {
            let part = match map.get_mut(&check.key).filter(|a| a.expires > now) {
                None => {
                    taken.levels.push(None);
                    Part::Nothing
                }
                Some(a) => {
                    let part = match a.kind {
                        Kind::Concurrency => a.slots.pop().map_or(Part::Nothing, Part::Slot),
                        _ if a.units == 0 => Part::Nothing,
                        _ => {
                            let units = a.units.min(check.cost);
                            a.units -= units;
                            Part::Units(units)
                        }
                    };
                    if part != Part::Nothing {
                        // In use: kept another lifetime.
                        a.expires = now + LIFETIME;
                    }
                    if !a.topping_up && a.want > 0 && a.in_hand() * 2 < a.want {
                        a.topping_up = true;
                        taken.top_up = true;
                    }
                    taken.levels.push(Some((a.level.0 + a.in_hand(), a.level.1)));
                    part
                }
            };
            taken.full &= covers(check, part);
            taken.parts.push(part);
        }
        taken
    }

    /// Puts back what a refused (or failed) request took.
    pub fn give_back(&self, checks: &[Check], parts: &[Part]) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (check, part) in checks.iter().zip(parts) {
            let Some(a) = map.get_mut(&check.key) else { continue };
            match *part {
                Part::Nothing => {}
                Part::Units(n) => a.units += n,
                Part::Slot(id) => a.slots.push(id),
            }
        }
    }

    /// Adds a grant from `admit.lua` (lease slots named `lease + 1 ..= lease + granted`), with
    /// the level Valkey reported.
    pub fn grant(&self, check: &Check, granted: u64, lease: i64, level: (u64, u64), now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let a = map.entry(check.key.clone()).or_insert_with(|| Allowance {
            kind: check.kind(),
            limit: check.limit,
            window_end_ms: check.window_end_ms,
            units: 0,
            slots: Vec::new(),
            want: 0,
            level,
            expires: now,
            topping_up: false,
        });
        a.level = level;
        if granted == 0 {
            return;
        }
        a.want = granted;
        a.expires = now + LIFETIME;
        match a.kind {
            Kind::Concurrency => a.slots.extend((1..=granted as i64).map(|j| lease + j)),
            _ => a.units += granted,
        }
    }

    /// Whether to ask for an allowance of `key` now: none yet, or what is in hand runs low.
    pub fn needs(&self, key: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).is_none_or(|a| a.want == 0 || a.in_hand() * 2 < a.want || a.expires <= Instant::now())
    }

    /// A top-up ended (granted or not): the counter may be topped up again.
    pub fn topped_up(&self, key: &str) {
        if let Some(a) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key) {
            a.topping_up = false;
        }
    }

    /// Units (or slots) of `key` in hand: spent in Valkey, not yet used here.
    pub fn in_hand(&self, key: &str) -> u64 {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(key).map_or(0, Allowance::in_hand)
    }

    /// Keeps an ended request's lease slot for the next request, when its set's allowance is
    /// live and not over-full. False: release it in Valkey.
    pub fn keep_slot(&self, set: &str, id: i64, now: Instant) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(set) {
            Some(a) if a.expires > now && (a.slots.len() as u64) < a.want => {
                a.slots.push(id);
                true
            }
            _ => false,
        }
    }

    /// Corrects a live allowance of `key` by `delta` units: a refund goes into it (up to twice a
    /// grant), an overrun is paid from it as far as it goes. Returns what is left for Valkey.
    pub fn absorb(&self, key: &str, delta: i64, now: Instant) -> i64 {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(a) = map.get_mut(key).filter(|a| a.expires > now && a.kind != Kind::Concurrency) else {
            return delta;
        };
        if delta < 0 {
            let room = (2 * a.want).saturating_sub(a.units);
            let kept = delta.unsigned_abs().min(room);
            a.units += kept;
            delta + kept as i64
        } else {
            let paid = (delta as u64).min(a.units);
            a.units -= paid;
            delta - paid as i64
        }
    }

    /// Removes the allowances whose time is up (or every one, `all`), with what they still hold.
    pub fn expire(&self, now: Instant, all: bool) -> Vec<Leftover> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> =
            map.iter().filter(|(_, a)| all || (a.expires <= now && !a.topping_up)).map(|(k, _)| k.clone()).collect();
        gone.into_iter()
            .filter_map(|key| {
                let a = map.remove(&key)?;
                Some(Leftover {
                    key,
                    kind: a.kind,
                    limit: a.limit,
                    window_end_ms: a.window_end_ms,
                    units: a.units,
                    slots: a.slots,
                })
            })
            .filter(|l| l.units > 0 || !l.slots.is_empty())
            .collect()
    }
}

/// Whether `part` pays all of what `check` costs.
pub fn covers(check: &Check, part: Part) -> bool {
    match part {
        Part::Nothing => false,
        Part::Slot(_) => true,
        Part::Units(n) => n >= check.cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::plan::Dim;

    fn check(dim: Dim, limit: u64, cost: u64) -> Check {
        Check {
            dim,
            scope: "team t".into(),
            key: format!("lg:{{t}}:{}", dim.name()),
            limit,
            capacity: limit,
            cost,
            window_end_ms: 0,
        }
    }

    #[test]
    fn grants_are_a_small_share_and_none_for_small_limits() {
        assert_eq!(ask(&check(Dim::Rpm, 6400, 1), 2), (64, 256));
        assert_eq!(ask(&check(Dim::Tpm, 100_000, 500), 1), (3125, 6250));
        assert_eq!(ask(&check(Dim::Concurrency, 1000, 1), 3), (31, 186));
        // A concurrency cap of 20, a budget that cannot hold two grants of one request: exact.
        assert_eq!(ask(&check(Dim::Concurrency, 20, 1), 1), (0, 0));
        assert_eq!(ask(&check(Dim::DailyTokens, 10_000, 500), 1), (0, 0));
    }

    #[test]
    fn requests_are_paid_from_what_is_in_hand_and_refusals_put_it_back() {
        let allowances = Allowances::new(1, true);
        let now = Instant::now();
        let (rpm, tpm, conc) =
            (check(Dim::Rpm, 6400, 1), check(Dim::Tpm, 100_000, 500), check(Dim::Concurrency, 1000, 1));
        let checks = [rpm.clone(), tpm.clone(), conc.clone()];
        let taken = allowances.take(&checks, now);
        assert!(!taken.full && taken.parts.iter().all(|p| *p == Part::Nothing));

        allowances.grant(&rpm, 32, 0, (100, 5), now);
        allowances.grant(&tpm, 1200, 0, (5000, 5), now);
        allowances.grant(&conc, 2, 70, (900, 0), now);
        let taken = allowances.take(&checks, now);
        assert!(taken.full, "{taken:?}");
        assert_eq!(taken.parts, [Part::Units(1), Part::Units(500), Part::Slot(72)]);
        assert_eq!(taken.levels[1], Some((5700, 5)), "what Valkey had left and what is in hand");

        // 200 tokens left: a request costing 500 takes them and asks Valkey for the rest.
        allowances.take(&checks, now);
        let taken = allowances.take(&checks, now);
        assert!(!taken.full);
        assert_eq!(taken.parts[1], Part::Units(200));
        assert_eq!(taken.parts[2], Part::Nothing);
        allowances.give_back(&checks, &taken.parts);
        assert_eq!(allowances.in_hand(&tpm.key), 200);
        assert_eq!(allowances.in_hand(&rpm.key), 30);
    }

    #[test]
    fn settlements_are_absorbed_by_a_live_allowance_as_far_as_it_goes() {
        let allowances = Allowances::new(1, true);
        let now = Instant::now();
        let tpm = check(Dim::Tpm, 100_000, 500);
        assert_eq!(allowances.absorb(&tpm.key, -400, now), -400, "no allowance: all to Valkey");
        allowances.grant(&tpm, 1000, 0, (5000, 5), now);
        // A refund fills it up to twice a grant; the rest goes to Valkey.
        assert_eq!(allowances.absorb(&tpm.key, -700, now), 0);
        assert_eq!(allowances.absorb(&tpm.key, -700, now), -400);
        assert_eq!(allowances.in_hand(&tpm.key), 2000);
        // An overrun is paid from it; what it cannot pay goes to Valkey.
        assert_eq!(allowances.absorb(&tpm.key, 2500, now), 500);
        assert_eq!(allowances.in_hand(&tpm.key), 0);
        assert_eq!(allowances.absorb(&tpm.key, -10, now + LIFETIME), -10, "expired: all to Valkey");
    }

    #[test]
    fn unused_allowances_go_back_when_their_time_is_up() {
        let allowances = Allowances::new(1, true);
        let now = Instant::now();
        let tpm = check(Dim::Tpm, 100_000, 500);
        allowances.grant(&tpm, 1000, 0, (5000, 5), now);
        assert!(allowances.expire(now, false).is_empty());
        let later = now + LIFETIME;
        let taken = allowances.take(std::slice::from_ref(&tpm), later);
        assert_eq!(taken.parts, [Part::Nothing], "an expired allowance pays for nothing");
        let back = allowances.expire(later, false);
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].units, back[0].kind), (1000, Kind::Rate));
        assert_eq!(allowances.in_hand(&tpm.key), 0);
    }
}
