//! Limits: admit a request or refuse it with 429, before it is routed. Each key (or token
//! subject), its team and the team's use of a model may set requests and tokens per minute,
//! concurrent requests, and daily / monthly token and daily request budgets.
//!
//! Token limits reserve an estimate at admission (the prompt counted locally plus `max_tokens`,
//! or a default) and are settled at the end of the request with the usage the upstream reported:
//! the unused part is refunded, an overrun charged. Concurrency is a lease released exactly once
//! at the end. With Valkey the counters are shared by every replica and changed atomically by
//! Lua scripts; without it (or while it is down, under the fail-open policy) each replica keeps
//! its own, each limit divided by the configured replica count (and, when Valkey went down, each
//! budget starting from this replica's share of the last level Valkey reported: `local.rs`).

pub mod allowance;
pub mod gcra;
pub mod local;
pub mod plan;
mod quota;
mod settle;
pub mod shared;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use crate::api::ratelimit::{Bucket, RateHeaders};
use crate::clock::{self, Clock};
use crate::config::limits::{LimitSettings, ValkeyDownPolicy};
use crate::ctx::Principal;
use crate::ctx::{LocalCount, Observer, Outcome, RequestCtx};
use crate::error::GatewayError;
use crate::kv::Kv;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::Trace;
use local::Local;
use plan::{Check, Dim, Kind};
pub use plan::{Demand, Units};
pub use settle::Settler;
use settle::{money_delta, refusal_message, settle_delta};
use shared::{Settlement, Shared};

/// Settlements waiting for the worker; beyond this they are dropped (leases then expire by TTL).
const SETTLE_QUEUE: usize = 16_384;
/// Settlement calls in flight to Valkey at once.
const SETTLE_CONCURRENCY: usize = 16;
/// Ended requests settled by one call (per team) at most: under load, settlements that queued up
/// while a call was in flight go together, their corrections of one counter summed.
const SETTLE_BATCH: usize = 256;
/// A money budget this much used (after an admission's reservation) is reported once per
/// window and replica: `llm_gateway_spend_budget_alerts_total` and a warning.
pub const SPEND_ALERT_PERCENT: u64 = 80;
/// How often an unreachable Valkey is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a concurrency refusal waits, at most, for this replica's lease releases still on
/// their way to Valkey before it is decided again.
const RELEASE_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("{message}")]
    Exceeded { dim: Dim, message: String, retry_after_ms: Option<u64>, headers: Box<RateHeaders> },
    #[error(
        "Limits cannot be checked right now: the shared store is unreachable and the policy is fail-closed. Try again shortly."
    )]
    Unavailable,
}

impl From<LimitError> for GatewayError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Exceeded { dim, message, retry_after_ms, headers } => GatewayError::RateLimited {
                message,
                reason: dim.name(),
                quota: dim.is_budget(),
                retry_after_ms,
                headers,
            },
            LimitError::Unavailable => GatewayError::StoreUnavailable(e.to_string()),
        }
    }
}

/// What an admitted request holds until it ends.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Tokens reserved.
    pub estimate: u64,
    /// Money reserved (micro-units): the worst case at the dearest candidate's price.
    pub money: u64,
    /// The `x-ratelimit-*` values after admission.
    pub headers: RateHeaders,
    store: Store,
    held: Vec<Held>,
    leases: Leases,
}

impl Reservation {
    /// The reservation as two: its concurrency leases alone, and its token counters alone
    /// (settled separately when counting what was used takes a while).
    fn split(&self) -> (Reservation, Reservation) {
        let leases = Reservation { held: Vec::new(), ..self.clone() };
        let tokens = Reservation { leases: Leases::default(), ..self.clone() };
        (leases, tokens)
    }
}

/// The concurrency leases of one request: (lease set, lease id) in every set that limits it (its
/// key's, its team's, ...). Empty: no concurrency limit applies.
#[derive(Debug, Clone, Default)]
pub struct Leases(pub Vec<(String, i64)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Shared,
    /// In process; `owe`: admitted under the fail-open policy, budgets owed to Valkey.
    Local {
        owe: bool,
    },
}

/// A token counter charged at admission, corrected at settlement.
#[derive(Debug, Clone)]
pub struct Held {
    pub kind: Kind,
    pub key: String,
    pub limit: u64,
    pub window_end_ms: u64,
    /// A money budget (settled by the real cost), else a token counter.
    pub money: bool,
}

/// What a check says about a request: admit it now (`No` retry needed), retry after so many
/// milliseconds, or never (it can never fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    No,
    After(u64),
    Never,
}

/// The outcome of checking every limit of one request.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub admitted: bool,
    /// The check that refused (the one whose wait is longest).
    pub denied: Option<usize>,
    pub retry: Retry,
    /// Per check: (remaining, reset ms), when known.
    pub levels: Vec<Option<(u64, u64)>>,
}

impl Verdict {
    pub fn admitted(checks: usize) -> Self {
        Self { admitted: true, denied: None, retry: Retry::No, levels: vec![None; checks] }
    }

    /// Records a refusal by check `i`, keeping the one a client can do least about.
    pub fn refuse(&mut self, i: usize, retry: Retry) {
        let worse = match (self.retry, retry) {
            (_, Retry::No) | (Retry::Never, _) => false,
            (_, Retry::Never) | (Retry::No, _) => true,
            (Retry::After(current), Retry::After(new)) => new > current,
        };
        if worse {
            self.admitted = false;
            self.denied = Some(i);
            self.retry = retry;
        }
    }
}

pub struct Limiter {
    settings: LimitSettings,
    clock: Arc<dyn Clock>,
    shared: Option<Shared>,
    local: Local,
    metrics: Arc<Metrics>,
    check_latency: prometheus_client::metrics::histogram::Histogram,
    settle_tx: mpsc::Sender<Settlement>,
    settle_rx: Mutex<Option<mpsc::Receiver<Settlement>>>,
    releases: Releases,
    /// Money budget counters (one per window) past `SPEND_ALERT_PERCENT`, already reported.
    spend_alerts: Mutex<std::collections::HashSet<String>>,
}

/// Lease releases on their way to Valkey (through the settlement worker), counted when queued
/// and when done (applied or given up), so that a concurrency refusal can wait for the releases
/// of requests that ended before it: a client that sends its next request as soon as the last
/// one's answer arrived is not refused for the slot that answer just gave back.
#[derive(Default)]
struct Releases {
    queued: AtomicU64,
    done: AtomicU64,
    progress: Notify,
}

impl Releases {
    fn queued(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    fn done(&self, n: u64) {
        if n > 0 {
            self.done.fetch_add(n, Ordering::AcqRel);
            self.progress.notify_waiters();
        }
    }

    /// The releases queued so far, when some of them are not done yet.
    fn pending(&self) -> Option<u64> {
        let queued = self.queued.load(Ordering::Acquire);
        (self.done.load(Ordering::Acquire) < queued).then_some(queued)
    }

    /// Waits, at most `limit`, until as many releases are done as `queued`.
    async fn wait_for(&self, queued: u64, limit: Duration) {
        let caught_up = async {
            loop {
                let progress = self.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if self.done.load(Ordering::Acquire) >= queued {
                    return;
                }
                progress.await;
            }
        };
        let _ = tokio::time::timeout(limit, caught_up).await;
    }
}

impl Limiter {
    pub fn new(settings: LimitSettings, kv: Option<Kv>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        let (settle_tx, settle_rx) = mpsc::channel(SETTLE_QUEUE);
        Self {
            shared: kv.map(|kv| Shared::new(kv, settings.lease_ttl, settings.replicas.max(1), settings.allowances)),
            settings,
            clock,
            local: Local::default(),
            check_latency: metrics.limit_check.clone(),
            metrics,
            settle_tx,
            settle_rx: Mutex::new(Some(settle_rx)),
            releases: Releases::default(),
            spend_alerts: Mutex::default(),
        }
    }

    /// Starts the settlement worker, the lease renewer and the Valkey probe.
    pub fn spawn_background(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) {
        let Some(rx) = self.settle_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        if self.shared.is_none() {
            return;
        }
        let me = self.clone();
        tasks.spawn(async move {
            let batches = futures_util::stream::unfold(rx, |mut rx| async {
                let mut batch = vec![rx.recv().await?];
                while batch.len() < SETTLE_BATCH {
                    match rx.try_recv() {
                        Ok(s) => batch.push(s),
                        Err(_) => break,
                    }
                }
                Some((batch, rx))
            });
            batches
                .for_each_concurrent(SETTLE_CONCURRENCY, |batch| {
                    let me = &me;
                    async move {
                        let releases = batch.iter().filter(|s| !s.leases.0.is_empty()).count();
                        me.settle_shared(batch).await;
                        me.releases.done(releases as u64);
                    }
                })
                .await;
        });
        let me = self.clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(me.settings.lease_ttl / 3);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Some(shared) = me.shared.as_ref().filter(|s| s.is_healthy())
                    && let Err(e) = shared.renew_leases().await
                {
                    me.store_failed(&e);
                }
            }
        });
        let me = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                me.probe().await;
            }
        });
        let me = self.clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(allowance::LIFETIME / 2);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                me.give_back_allowances(false);
            }
        });
    }

    /// The policy in force: `shared`, `local` (no Valkey), or the Valkey-down policy in action.
    pub fn mode(&self) -> &'static str {
        match &self.shared {
            None => "local",
            Some(s) if s.is_healthy() => "shared",
            Some(_) => self.settings.on_valkey_down.as_str(),
        }
    }

    /// Whether Valkey answers, for `/ready`: `None` when no Valkey is configured. While the
    /// limits think it is up, a PING confirms it (bounded by the Valkey timeout); a failed PING
    /// switches the limits to their Valkey-down policy at once, as a failed admission would (the
    /// probe switches them back once Valkey answers). While they think it is down, it is.
    pub async fn store_reachable(&self) -> Option<bool> {
        let shared = self.shared.as_ref()?;
        if !shared.is_healthy() {
            return Some(false);
        }
        match shared.kv().query::<String>(&redis::cmd("PING")).await {
            Ok(_) => Some(true),
            Err(e) => {
                self.store_failed(&e);
                Some(false)
            }
        }
    }

    pub fn on_valkey_down(&self) -> ValkeyDownPolicy {
        self.settings.on_valkey_down
    }

    pub fn replicas(&self) -> u32 {
        self.settings.replicas
    }

    /// Checks every limit of `principal` for one request. `None`: nothing limits it.
    pub async fn admit(&self, principal: &Principal, demand: &Demand<'_>) -> Result<Option<Reservation>, LimitError> {
        self.admit_traced(principal, demand, &mut Trace::none()).await
    }

    /// `admit`, the check recorded as a `limits` span in the request's `trace`; a request with
    /// nothing to check gets none.
    pub async fn admit_traced(
        &self,
        principal: &Principal,
        demand: &Demand<'_>,
        trace: &mut Trace,
    ) -> Result<Option<Reservation>, LimitError> {
        let estimate = Units { tokens: demand.estimate(&self.settings), money: demand.worst_cost(&self.settings) };
        let now_ms = self.clock.now_ms();
        let checks = plan::checks(principal, Some(demand.model), estimate, &self.settings, now_ms, 1);
        if checks.is_empty() {
            return Ok(None);
        }
        let span = trace.child("limits");
        let started = Instant::now();
        let result = self.decide(principal, demand.model, estimate, checks, now_ms).await;
        self.check_latency.observe(started.elapsed().as_secs_f64());
        trace.end(span);
        if let Err(LimitError::Exceeded { dim, .. }) = &result {
            self.metrics.rate_limited(dim.name());
        }
        result.map(Some)
    }

    async fn decide(
        &self,
        principal: &Principal,
        model: &str,
        estimate: Units,
        checks: Vec<Check>,
        now_ms: u64,
    ) -> Result<Reservation, LimitError> {
        let replicas = u64::from(self.settings.replicas);
        let Some(shared) = &self.shared else {
            let checks = if replicas > 1 {
                plan::checks(principal, Some(model), estimate, &self.settings, now_ms, replicas)
            } else {
                checks
            };
            let verdict = self.local.admit(&checks, now_ms, false);
            return self.conclude(checks, verdict, estimate, Store::Local { owe: false }, None);
        };
        if shared.is_healthy() {
            if let Some((i, wait)) = self.local.shield(&checks) {
                let mut verdict = Verdict::admitted(checks.len());
                // Only the refusing bucket is known here; the others go unreported.
                verdict.levels[i] = Some((0, wait.as_millis() as u64));
                verdict.refuse(i, Retry::After((wait.as_millis() as u64).max(1)));
                return self.conclude(checks, verdict, estimate, Store::Shared, None);
            }
            // Releases queued before this admission was sent may reach Valkey after it.
            let pending = self.releases.pending();
            let mut admission = shared.admit(&checks, shared::new_lease_id(), now_ms).await;
            if let (Some(queued), Ok(a)) = (pending, &admission)
                && a.verdict.denied.is_some_and(|i| !a.verdict.admitted && checks[i].dim == Dim::Concurrency)
            {
                self.releases.wait_for(queued, RELEASE_WAIT).await;
                admission = shared.admit(&checks, shared::new_lease_id(), now_ms).await;
            }
            match admission {
                Ok(a) => {
                    self.metrics.limits_admissions[usize::from(!a.local)].inc();
                    let levels = checks.iter().zip(&a.verdict.levels);
                    self.remember_budgets(levels.filter_map(|(c, l)| Some((c, c.limit.saturating_sub(l.as_ref()?.0)))));
                    return self.conclude(checks, a.verdict, estimate, Store::Shared, Some(a.leases));
                }
                Err(e) => self.store_failed(&e),
            }
        }
        self.metrics.limits_fallback(self.settings.on_valkey_down.as_str());
        match self.settings.on_valkey_down {
            ValkeyDownPolicy::FailClosed => Err(LimitError::Unavailable),
            ValkeyDownPolicy::FailOpen => {
                let checks = plan::checks(principal, Some(model), estimate, &self.settings, now_ms, replicas);
                let verdict = self.local.admit(&checks, now_ms, true);
                self.conclude(checks, verdict, estimate, Store::Local { owe: true }, None)
            }
        }
    }

    /// Keeps the shared levels of budgets (check, units used) for the fail-open fallback to start
    /// from (see `local.rs`): only under that policy, the only one that uses them.
    fn remember_budgets<'a>(&self, levels: impl Iterator<Item = (&'a Check, u64)>) {
        if self.settings.on_valkey_down != ValkeyDownPolicy::FailOpen {
            return;
        }
        let now_ms = self.clock.now_ms();
        for (check, used) in levels.filter(|(c, _)| c.kind() == Kind::Window) {
            self.local.remember(check, used, now_ms);
        }
    }

    fn conclude(
        &self,
        checks: Vec<Check>,
        verdict: Verdict,
        estimate: Units,
        store: Store,
        leases: Option<Leases>,
    ) -> Result<Reservation, LimitError> {
        let mut headers = RateHeaders::default();
        for (check, level) in checks.iter().zip(&verdict.levels) {
            let Some((remaining, reset_ms)) = level else { continue };
            let bucket = Bucket { limit: check.limit, remaining: *remaining, reset_ms: *reset_ms };
            match check.dim {
                Dim::Rpm => headers.add_requests(bucket),
                Dim::Tpm => headers.add_tokens(bucket),
                Dim::DailySpend | Dim::MonthlySpend => {
                    headers.add_spend(bucket);
                    self.alert_spend(check, check.limit.saturating_sub(*remaining));
                }
                _ => {}
            }
        }
        if let Some(i) = verdict.denied.filter(|_| !verdict.admitted) {
            let check = &checks[i];
            let retry_after_ms = match verdict.retry {
                Retry::After(ms) => Some(ms),
                Retry::No | Retry::Never => None,
            };
            let used = verdict.levels[i].map(|(remaining, _)| check.limit.saturating_sub(remaining));
            return Err(LimitError::Exceeded {
                dim: check.dim,
                message: refusal_message(check, retry_after_ms, used, &self.settings.currency),
                retry_after_ms,
                headers: Box::new(headers),
            });
        }
        // In process, a lease is a count per set: the id is not used.
        let leases = leases.unwrap_or_else(|| {
            Leases(checks.iter().filter(|c| c.dim == Dim::Concurrency).map(|c| (c.key.clone(), 0)).collect())
        });
        let mut held = Vec::new();
        for check in checks {
            if check.dim.counts_tokens() || check.dim.counts_money() {
                held.push(Held {
                    kind: check.kind(),
                    key: check.key,
                    limit: check.limit,
                    window_end_ms: check.window_end_ms,
                    money: check.dim.counts_money(),
                });
            }
        }
        Ok(Reservation { estimate: estimate.tokens, money: estimate.money, headers, store, held, leases })
    }

    /// Reports a money budget past `SPEND_ALERT_PERCENT` once per window (per replica).
    fn alert_spend(&self, check: &Check, used: u64) {
        if u128::from(used) * 100 < u128::from(check.limit) * u128::from(SPEND_ALERT_PERCENT) {
            return;
        }
        let mut alerted = self.spend_alerts.lock().unwrap_or_else(|p| p.into_inner());
        if alerted.len() > 100_000 {
            alerted.clear();
        }
        if !alerted.insert(check.key.clone()) {
            return;
        }
        drop(alerted);
        if let Some(spend) = &self.metrics.spend {
            spend.budget_alert(check.dim.name());
        }
        let amount = crate::spend::price::format_micros;
        tracing::warn!(
            scope = %check.scope,
            budget = check.dim.name(),
            limit = %amount(check.limit),
            used = %amount(used),
            currency = %self.settings.currency,
            "spend: a money budget is {SPEND_ALERT_PERCENT}% used"
        );
    }

    /// Settles a reservation once its request has ended: in process at once, on Valkey through
    /// the settlement worker (never on the response path).
    pub fn settle(&self, reservation: &Reservation, outcome: &Outcome) {
        self.settle_costing(reservation, outcome, None);
    }

    /// `settle`, money budgets corrected to `cost` (micro-units; `None`: unknown, see
    /// `money_delta`).
    pub fn settle_costing(&self, reservation: &Reservation, outcome: &Outcome, cost: Option<u64>) {
        let delta = settle_delta(reservation.estimate, outcome);
        let money = money_delta(reservation.money, outcome, cost);
        let (money_held, token_held): (Vec<Held>, Vec<Held>) = reservation.held.iter().cloned().partition(|h| h.money);
        match reservation.store {
            Store::Local { owe } => {
                self.local.settle(&token_held, &reservation.leases.0, delta, owe);
                self.local.settle(&money_held, &[], money, owe);
            }
            Store::Shared => {
                // Lease slots the allowances can use again stay with this replica.
                let leases = match &self.shared {
                    Some(shared) if !reservation.leases.0.is_empty() => shared.keep_slots(&reservation.leases),
                    _ => reservation.leases.clone(),
                };
                let mut held = match &self.shared {
                    Some(shared) if delta != 0 => shared.settle_in_hand(&token_held, delta),
                    _ => Vec::new(),
                };
                if let Some(shared) = self.shared.as_ref().filter(|_| money != 0) {
                    held.extend(shared.settle_in_hand(&money_held, money));
                }
                if held.is_empty() && leases.0.is_empty() {
                    return;
                }
                self.queue(Settlement { held, leases });
            }
        }
    }

    /// Hands a settlement to the worker; a full queue drops it (its leases then expire by TTL).
    fn queue(&self, settlement: Settlement) {
        let releases = !settlement.leases.0.is_empty();
        if releases {
            self.releases.queued();
        }
        if self.settle_tx.try_send(settlement).is_err() {
            self.metrics.limits_settle_failures.inc();
            if releases {
                self.releases.done(1);
            }
        }
    }

    /// Gives back to Valkey the allowances whose time is up (every one, `all`), through the
    /// settlement worker.
    fn give_back_allowances(&self, all: bool) {
        let Some(shared) = &self.shared else { return };
        for settlement in shared.leftovers(all) {
            self.queue(settlement);
        }
    }

    /// At shutdown: gives back every allowance this replica holds, straight to Valkey.
    pub async fn shutdown(&self) {
        let Some(shared) = &self.shared else { return };
        let leftovers = shared.leftovers(true);
        if !leftovers.is_empty() && shared.is_healthy() {
            self.settle_shared(leftovers).await;
        }
    }

    async fn settle_shared(&self, batch: Vec<Settlement>) {
        let Some(shared) = &self.shared else { return };
        if let Err(e) = shared.settle(&batch, self.clock.now_ms()).await {
            self.metrics.limits_settle_failures.inc_by(batch.len() as u64);
            self.store_failed(&e);
        }
    }

    /// Valkey failed us: apply the configured policy from now on, loudly, until it answers.
    fn store_failed(&self, error: &crate::kv::KvError) {
        let Some(shared) = &self.shared else { return };
        if shared.set_healthy(false) {
            self.metrics.limits_degraded.set(1);
            tracing::error!(
                error = %error,
                policy = self.settings.on_valkey_down.as_str(),
                replicas = self.settings.replicas,
                "valkey unreachable: limits switch to the {} policy until it answers again",
                self.settings.on_valkey_down.as_str()
            );
        }
    }

    async fn probe(&self) {
        let Some(shared) = &self.shared else { return };
        if shared.is_healthy() || !shared.kv().ping().await {
            return;
        }
        let debt = self.local.take_debt();
        let owed = debt.len();
        if let Err((e, unpaid)) = shared.pay_debt(debt, self.clock.now_ms()).await {
            // Still owed: paid at the next recovery, not lost with this attempt.
            self.local.owe_again(unpaid);
            tracing::warn!(error = %e, "valkey answered a ping but not the budget catch-up; staying degraded");
            return;
        }
        self.local.forget_budgets();
        if shared.set_healthy(true) {
            self.metrics.limits_degraded.set(0);
            tracing::warn!(budgets_caught_up = owed, "valkey reachable again: shared limits resume");
        }
    }
}

#[cfg(test)]
mod tests;
