//! The per-replica side of limits. Two jobs:
//! - the shield: a `governor` GCRA per request-rate limit at the full shared rate, checked
//!   before Valkey. One replica can never rightly admit more than the whole limit, so what the
//!   shield refuses Valkey would refuse too, and a hammering client costs no round trip. (The
//!   shield also counts requests Valkey then refused for another limit, such as tokens; those can
//!   make it refuse a request up to one request interval early.)
//! - the in-process limiter: the same rules as the Lua scripts over local state, used when there
//!   is no Valkey (one replica) or, with each limit divided by the replica count, while Valkey is
//!   down under the fail-open policy. Token budgets spent meanwhile are kept as a debt and added
//!   to the shared counters once Valkey is back.
//!
//! A budget (a calendar window) does not start from zero when Valkey goes away: while Valkey
//! answers, the limiter remembers here the last shared level it saw of each budget (`remember`),
//! and the per-replica count of a budget starts from this replica's share of it, divided as the
//! limit is. A team that had spent 90% of its day keeps 10% of it (of its share, per replica), not
//! a fresh day. A budget this replica never saw in Valkey still starts from zero: nothing better
//! is known without Valkey.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::gcra::Decision;
use super::plan::{Check, Dim, Kind};
use super::{Retry, Verdict};

/// Entries kept per map before expired ones are swept (and, for the shield, all dropped).
const MAX_ENTRIES: usize = 100_000;

pub struct Local {
    shield: RwLock<HashMap<String, Shield>>,
    state: Mutex<State>,
    /// Budgets: counter name → the last level Valkey reported (apart from `state`, which only
    /// the fallback uses, so that remembering takes no lock the fallback holds).
    seen: Mutex<HashMap<String, Seen>>,
    epoch: Instant,
}

/// A shared budget's level as Valkey last reported it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    used: u64,
    /// The shared limit it was used against.
    limit: u64,
    window_end_ms: u64,
}

struct Shield {
    limit: u64,
    capacity: u64,
    limiter: Arc<DefaultDirectRateLimiter>,
}

#[derive(Default)]
struct State {
    /// Rate buckets: counter name → TAT (µs since `epoch`).
    rates: HashMap<String, f64>,
    /// Concurrency: counter name → leases held.
    leases: HashMap<String, u64>,
    /// Budgets: counter name → (used, window end ms).
    windows: HashMap<String, (u64, u64)>,
    /// Budget units spent while Valkey was down: counter name → (units, window end ms).
    debt: HashMap<String, (i64, u64)>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            shield: RwLock::new(HashMap::new()),
            state: Mutex::new(State::default()),
            seen: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }
}

impl Local {
    fn now_us(&self) -> f64 {
        self.epoch.elapsed().as_micros() as f64
    }

    /// The request-rate checks through the shield: `Some((check index, wait))` when one refuses.
    pub fn shield(&self, checks: &[Check]) -> Option<(usize, Duration)> {
        for (i, check) in checks.iter().enumerate().filter(|(_, c)| c.dim == Dim::Rpm) {
            let limiter = self.shield_for(check)?;
            if let Err(not_until) = limiter.check() {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                return Some((i, wait));
            }
        }
        None
    }

    fn shield_for(&self, check: &Check) -> Option<Arc<DefaultDirectRateLimiter>> {
        {
            let map = self.shield.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(&check.key)
                && s.limit == check.limit
                && s.capacity == check.capacity
            {
                return Some(s.limiter.clone());
            }
        }
        let per_unit = Duration::from_micros(super::plan::MINUTE_MS * 1000 / check.limit.max(1));
        let burst = NonZeroU32::new(u32::try_from(check.capacity).unwrap_or(u32::MAX).max(1))?;
        let quota = Quota::with_period(per_unit.max(Duration::from_nanos(1)))?.allow_burst(burst);
        let limiter = Arc::new(RateLimiter::direct(quota));
        let mut map = self.shield.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            check.key.clone(),
            Shield { limit: check.limit, capacity: check.capacity, limiter: limiter.clone() },
        );
        Some(limiter)
    }

    /// Records the shared level of a budget (`check` at its shared limit): `used` units of it.
    pub fn remember(&self, check: &Check, used: u64, now_ms: u64) {
        let level = Seen { used, limit: check.limit, window_end_ms: check.window_end_ms };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = seen.get_mut(&check.key) {
            *s = level;
            return;
        }
        if seen.len() >= MAX_ENTRIES {
            seen.retain(|_, s| s.window_end_ms > now_ms);
            if seen.len() >= MAX_ENTRIES {
                // Full of live windows: this budget falls back from zero, as before any was seen.
                return;
            }
        }
        seen.insert(check.key.clone(), level);
    }

    /// Starts the per-replica count of each budget of `checks` not counted here yet from this
    /// replica's share of its last shared level: `used × local limit / shared limit`, rounded up
    /// (the local limit being the shared one divided by the replica count).
    fn seed(&self, state: &mut State, checks: &[Check]) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.is_empty() {
            return;
        }
        for check in checks.iter().filter(|c| c.kind() == Kind::Window) {
            if state.windows.contains_key(&check.key) {
                continue;
            }
            if let Some(s) = seen.get(&check.key).filter(|s| s.window_end_ms == check.window_end_ms) {
                let share = (u128::from(s.used) * u128::from(check.limit)).div_ceil(u128::from(s.limit.max(1)));
                let used = u64::try_from(share).unwrap_or(u64::MAX);
                state.windows.insert(check.key.clone(), (used, check.window_end_ms));
            }
        }
    }

    /// Valkey is back and the debt paid: the next fallback starts each budget afresh from the
    /// shared levels seen until then, not from what this replica counted during the last one.
    pub fn forget_budgets(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).windows.clear();
    }

    /// Admits all of `checks` or none. `owe` records budget spending as a debt to Valkey.
    pub fn admit(&self, checks: &[Check], now_ms: u64, owe: bool) -> Verdict {
        let now_us = self.now_us();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.sweep(now_us, now_ms);
        self.seed(&mut state, checks);
        let mut verdict = Verdict::admitted(checks.len());
        let mut new_tats = Vec::new();
        for (i, check) in checks.iter().enumerate() {
            let (remaining, reset_ms, retry) = match check.kind() {
                Kind::Rate => match check.rate().check(state.rates.get(&check.key).copied(), now_us, check.cost) {
                    Decision::Admit { tat_us, remaining, reset_ms } => {
                        new_tats.push((i, tat_us));
                        (remaining, reset_ms, Retry::No)
                    }
                    Decision::Deny { retry_ms, remaining, reset_ms } => {
                        (remaining, reset_ms, retry_ms.map_or(Retry::Never, Retry::After))
                    }
                },
                Kind::Concurrency => {
                    let held = state.leases.get(&check.key).copied().unwrap_or(0);
                    if held >= check.limit {
                        (0, 0, Retry::After(1000))
                    } else {
                        (check.limit - held - 1, 0, Retry::No)
                    }
                }
                Kind::Window => {
                    let used = state.windows.get(&check.key).map(|w| w.0).unwrap_or(0);
                    let until_end = check.window_end_ms.saturating_sub(now_ms);
                    if used + check.cost > check.limit {
                        (check.limit.saturating_sub(used), until_end, Retry::After(until_end.max(1)))
                    } else {
                        (check.limit - used - check.cost, until_end, Retry::No)
                    }
                }
            };
            verdict.levels[i] = Some((remaining, reset_ms));
            verdict.refuse(i, retry);
        }
        if verdict.admitted {
            for (i, tat) in new_tats {
                state.rates.insert(checks[i].key.clone(), tat);
            }
            for check in checks {
                match check.kind() {
                    Kind::Rate => {}
                    Kind::Concurrency => *state.leases.entry(check.key.clone()).or_default() += 1,
                    Kind::Window => {
                        state.windows.entry(check.key.clone()).or_insert((0, check.window_end_ms)).0 += check.cost;
                        if owe {
                            state.debt.entry(check.key.clone()).or_insert((0, check.window_end_ms)).0 +=
                                check.cost as i64;
                        }
                    }
                }
            }
        }
        verdict
    }

    /// Corrects a local reservation by `delta` units and releases its leases.
    pub fn settle(&self, held: &[super::Held], leases: &[(String, i64)], delta: i64, owe: bool) {
        let now_us = self.now_us();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (key, _) in leases {
            if let Some(n) = state.leases.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.leases.remove(key);
                }
            }
        }
        if delta == 0 {
            return;
        }
        for h in held {
            match h.kind {
                Kind::Rate => {
                    let rate =
                        super::gcra::Rate { limit: h.limit, period_ms: super::plan::MINUTE_MS, capacity: h.limit };
                    match rate.adjust(state.rates.get(&h.key).copied(), now_us, delta) {
                        Some(tat) => state.rates.insert(h.key.clone(), tat),
                        None => state.rates.remove(&h.key),
                    };
                }
                Kind::Window => {
                    if let Some(w) = state.windows.get_mut(&h.key) {
                        w.0 = w.0.saturating_add_signed(delta);
                    }
                    if owe && let Some(d) = state.debt.get_mut(&h.key) {
                        d.0 += delta;
                    }
                }
                Kind::Concurrency => {}
            }
        }
    }

    /// Per check: (used, remaining, reset ms), without changing anything.
    pub fn peek(&self, checks: &[Check], now_ms: u64) -> Vec<(u64, u64, u64)> {
        let now_us = self.now_us();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.seed(&mut state, checks);
        checks
            .iter()
            .map(|check| match check.kind() {
                Kind::Rate => {
                    let tat = state.rates.get(&check.key).copied().unwrap_or(now_us).max(now_us);
                    let interval = super::plan::MINUTE_MS as f64 * 1000.0 / check.limit.max(1) as f64;
                    let used = ((tat - now_us) / interval).ceil() as u64;
                    (used, check.capacity.saturating_sub(used), ((tat - now_us) / 1000.0).ceil() as u64)
                }
                Kind::Concurrency => {
                    let held = state.leases.get(&check.key).copied().unwrap_or(0);
                    (held, check.limit.saturating_sub(held), 0)
                }
                Kind::Window => {
                    let used = state.windows.get(&check.key).map(|w| w.0).unwrap_or(0);
                    (used, check.limit.saturating_sub(used), check.window_end_ms.saturating_sub(now_ms))
                }
            })
            .collect()
    }

    /// Budget spending owed to the shared counters: (counter, units, window end ms).
    pub fn take_debt(&self) -> Vec<(String, i64, u64)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.debt.drain().filter(|(_, (units, _))| *units > 0).map(|(k, (units, end))| (k, units, end)).collect()
    }

    /// Puts back debt taken by `take_debt` that could not be paid (added to what was spent
    /// since).
    pub fn owe_again(&self, unpaid: Vec<(String, i64, u64)>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (key, units, end) in unpaid {
            state.debt.entry(key).or_insert((0, end)).0 += units;
        }
    }
}

impl State {
    /// Drops full buckets and ended windows once a map grows large.
    fn sweep(&mut self, now_us: f64, now_ms: u64) {
        if self.rates.len() >= MAX_ENTRIES {
            self.rates.retain(|_, tat| *tat > now_us);
        }
        if self.windows.len() >= MAX_ENTRIES {
            self.windows.retain(|_, (_, end)| *end > now_ms);
        }
        if self.debt.len() >= MAX_ENTRIES {
            self.debt.retain(|_, (_, end)| *end > now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn check(dim: Dim, key: &str, limit: u64, capacity: u64, cost: u64) -> Check {
        Check { dim, scope: Arc::from("team t"), key: key.into(), limit, capacity, cost, window_end_ms: 5_000 }
    }

    #[test]
    fn all_or_nothing_and_settles() {
        let local = Local::default();
        let checks = [check(Dim::Concurrency, "c", 1, 1, 1), check(Dim::DailyTokens, "d", 100, 100, 60)];
        assert!(local.admit(&checks, 0, true).admitted);
        let second = local.admit(&checks, 0, true);
        assert!(!second.admitted);
        assert_eq!(second.denied, Some(1), "the budget's refusal is reported: it waits longest");
        assert_eq!(local.peek(&checks, 0), [(1, 0, 0), (60, 40, 5000)]);
        let held = [super::super::Held {
            kind: Kind::Window,
            key: "d".into(),
            limit: 100,
            window_end_ms: 5_000,
            money: false,
        }];
        local.settle(&held, &[("c".to_owned(), 0)], -50, true);
        assert_eq!(local.peek(&checks, 0), [(0, 1, 0), (10, 90, 5000)]);
        assert_eq!(local.take_debt(), [("d".to_owned(), 10, 5_000)]);
        assert!(local.take_debt().is_empty());
    }

    /// A debt whose payment to Valkey failed is owed still, with what was spent since.
    #[test]
    fn unpaid_debt_is_owed_again() {
        let local = Local::default();
        let checks = [check(Dim::DailyTokens, "d", 100, 100, 30)];
        assert!(local.admit(&checks, 0, true).admitted);
        let unpaid = local.take_debt();
        assert_eq!(unpaid, [("d".to_owned(), 30, 5_000)]);
        assert!(local.admit(&checks, 0, true).admitted);
        local.owe_again(unpaid);
        assert_eq!(local.take_debt(), [("d".to_owned(), 60, 5_000)]);
    }

    #[test]
    fn a_fallback_budget_starts_from_its_share_of_the_last_shared_level() {
        let local = Local::default();
        // Valkey said: 900 of the shared 1,000 tokens of this day are used.
        local.remember(&check(Dim::DailyTokens, "d", 1000, 1000, 0), 900, 0);
        // Alone, one of two replicas: half the limit, and half what was used (no debt for it).
        let half = [check(Dim::DailyTokens, "d", 500, 500, 40)];
        assert_eq!(local.peek(&half, 0), [(450, 50, 5000)]);
        assert!(local.admit(&half, 0, true).admitted);
        assert!(!local.admit(&half, 0, true).admitted, "490 of 500: 40 more do not fit");
        assert_eq!(local.take_debt(), [("d".to_owned(), 40, 5_000)], "only what was spent alone is owed");
        // A level of another window says nothing about this one.
        local.remember(&check(Dim::DailyTokens, "e", 1000, 1000, 0), 900, 0);
        let next = Check { key: "e".into(), window_end_ms: 9_000, ..half[0].clone() };
        assert_eq!(local.peek(&[next], 0), [(0, 500, 9000)]);
        // Valkey back: the next fallback starts again from the shared level, not from this one's.
        local.remember(&check(Dim::DailyTokens, "d", 1000, 1000, 0), 960, 0);
        local.forget_budgets();
        assert_eq!(local.peek(&half, 0), [(480, 20, 5000)]);
    }

    #[test]
    fn the_shield_passes_the_burst_then_refuses() {
        let local = Local::default();
        let checks = [check(Dim::Rpm, "r", 60, 5, 1)];
        for _ in 0..5 {
            assert_eq!(local.shield(&checks), None);
        }
        let (i, wait) = local.shield(&checks).unwrap();
        assert_eq!(i, 0);
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
    }
}
