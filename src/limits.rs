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

    /// The caller's limits, what is used and what remains (`GET /quota`).
    pub async fn quota(&self, principal: &Principal) -> serde_json::Value {
        let now_ms = self.clock.now_ms();
        let (checks, report) = match &self.shared {
            Some(shared) if shared.is_healthy() => {
                let checks = plan::checks(principal, None, Units::default(), &self.settings, now_ms, 1);
                match shared.peek(&checks, now_ms).await {
                    Ok(r) => {
                        self.remember_budgets(checks.iter().zip(&r).map(|(c, (used, _, _))| (c, *used)));
                        (checks, r)
                    }
                    Err(e) => {
                        self.store_failed(&e);
                        self.local_quota(principal, now_ms)
                    }
                }
            }
            _ => self.local_quota(principal, now_ms),
        };
        let mut scopes = serde_json::Map::new();
        for (check, (used, remaining, reset_ms)) in checks.iter().zip(report) {
            let mut value = serde_json::json!({"limit": check.limit, "used": used, "remaining": remaining});
            if check.dim.counts_money() {
                value["currency"] = self.settings.currency.clone().into();
            }
            if check.dim.is_budget() {
                value["resets_at"] = clock::format_timestamp(check.window_end_ms / 1000).into();
            } else if check.kind() == Kind::Rate {
                value["burst"] = check.capacity.into();
                value["resets_in"] = crate::api::ratelimit::format_reset(reset_ms).into();
            }
            let scope = scopes.entry(check.scope.to_string()).or_insert_with(|| serde_json::json!({}));
            scope[check.dim.name()] = value;
        }
        serde_json::json!({
            "team": &*principal.team,
            "key_id": &*principal.key_id,
            "tier": principal.policy.tier,
            "mode": self.mode(),
            "limits": scopes,
        })
    }

    /// The caller's `x-ratelimit-*` levels as they stand, taking nothing from them: for
    /// `GET /v1/models` and `GET /v1/models/{id}`, so a client sees its limits wherever it looks.
    ///
    /// Decision: listing models is not a model request and does not count against the
    /// requests-per-minute limit (a client that lists models before each call would otherwise
    /// spend half its budget on listings, and a 429 on a listing helps nobody). The headers are a
    /// peek — one read-only script on Valkey, or the in-process buckets — of the same request and
    /// token buckets an admission reports. `model`: that model's per-team limits count too; the
    /// listing (`None`) is about no one model, so only the key's and the team's limits show.
    /// Valkey down: under fail-open the per-replica buckets in force are reported; under
    /// fail-closed nothing is known and no headers are sent.
    pub async fn peek_headers(&self, principal: &Principal, model: Option<&str>) -> RateHeaders {
        let now_ms = self.clock.now_ms();
        let rates = |divisor: u64| -> Vec<Check> {
            let checks = match model {
                Some(m) => plan::checks(principal, Some(m), Units::default(), &self.settings, now_ms, divisor),
                None => plan::subject_checks(principal, &self.settings, now_ms, divisor),
            };
            checks.into_iter().filter(|c| matches!(c.dim, Dim::Rpm | Dim::Tpm)).collect()
        };
        let mut peeked = None;
        if let Some(shared) = self.shared.as_ref().filter(|s| s.is_healthy()) {
            let checks = rates(1);
            if checks.is_empty() {
                return RateHeaders::default();
            }
            match shared.peek(&checks, now_ms).await {
                Ok(levels) => peeked = Some((checks, levels)),
                Err(e) => self.store_failed(&e),
            }
        }
        let (checks, levels) = match peeked {
            Some(p) => p,
            None if self.shared.is_some() && self.settings.on_valkey_down == ValkeyDownPolicy::FailClosed => {
                return RateHeaders::default();
            }
            None => {
                let checks = rates(u64::from(self.settings.replicas));
                let levels = self.local.peek(&checks, now_ms);
                (checks, levels)
            }
        };
        let mut headers = RateHeaders::default();
        for (check, (_, remaining, reset_ms)) in checks.iter().zip(levels) {
            let bucket = Bucket { limit: check.limit, remaining, reset_ms };
            match check.dim {
                Dim::Rpm => headers.add_requests(bucket),
                _ => headers.add_tokens(bucket),
            }
        }
        headers
    }

    fn local_quota(&self, principal: &Principal, now_ms: u64) -> (Vec<Check>, Vec<(u64, u64, u64)>) {
        let divisor = u64::from(self.settings.replicas);
        let checks = plan::checks(principal, None, Units::default(), &self.settings, now_ms, divisor);
        let report = self.local.peek(&checks, now_ms);
        (checks, report)
    }
}

/// Units to add to the token counters at the end: usage − estimate (negative refunds). A
/// request that failed without usage used nothing. (One that reached an upstream without a
/// final usage arrives counted by `Settler`; without that count, it would keep its reservation,
/// or what a partial usage reported when that is more.)
fn settle_delta(estimate: u64, outcome: &Outcome) -> i64 {
    let used = match outcome.usage {
        Some(u) if outcome.usage_partial => u.total_tokens.max(u.prompt_tokens + u.completion_tokens).max(estimate),
        Some(u) => u.total_tokens.max(u.prompt_tokens + u.completion_tokens),
        None if outcome.status >= 400 => 0,
        None => estimate,
    };
    i64::try_from(used).unwrap_or(i64::MAX) - i64::try_from(estimate).unwrap_or(i64::MAX)
}

/// Micro-units to add to the money budgets at the end: the real cost − the reservation. Without
/// a cost, a failed request cost nothing and any other keeps its reservation.
fn money_delta(reserved: u64, outcome: &Outcome, cost: Option<u64>) -> i64 {
    let used = match cost {
        Some(cost) => cost,
        None if outcome.status >= 400 && outcome.usage.is_none() => 0,
        None => reserved,
    };
    i64::try_from(used).unwrap_or(i64::MAX) - i64::try_from(reserved).unwrap_or(i64::MAX)
}

fn spend_message(check: &Check, used: Option<u64>, currency: &str, wait: &str) -> String {
    let amount = |m: u64| format!("{} {currency}", crate::spend::price::format_micros(m));
    let (scope, budget) = (&check.scope, amount(check.limit));
    let period = if check.dim == Dim::DailySpend { "daily" } else { "monthly" };
    let spent = used.map(|u| format!(", spent {}", amount(u))).unwrap_or_default();
    format!(
        "The {period} spend budget of {scope} is exhausted: budget {budget}{spent}, this request may cost up to {}. \
         It resets at {} (in {wait}).",
        amount(check.cost),
        clock::format_timestamp(check.window_end_ms / 1000)
    )
}

fn refusal_message(check: &Check, retry_after_ms: Option<u64>, used: Option<u64>, currency: &str) -> String {
    let wait = retry_after_ms.map(crate::api::ratelimit::format_reset).unwrap_or_default();
    let scope = &check.scope;
    let limit = check.limit;
    match check.dim {
        Dim::Rpm => format!(
            "Rate limit reached for requests per minute (RPM) on {scope}: limit {limit}. Please try again in {wait}."
        ),
        Dim::Tpm if retry_after_ms.is_none() => format!(
            "Request too large for tokens per minute (TPM) on {scope}: limit {limit}, requested {} (prompt plus max_tokens). Lower max_tokens or shorten the prompt.",
            check.cost
        ),
        Dim::Tpm => format!(
            "Rate limit reached for tokens per minute (TPM) on {scope}: limit {limit}, requested {}. Please try again in {wait}.",
            check.cost
        ),
        Dim::Concurrency => {
            format!("Too many concurrent requests on {scope}: limit {limit}. Please try again in {wait}.")
        }
        Dim::DailyTokens => format!(
            "Daily token budget exhausted on {scope}: {limit} tokens a day, this request reserves {}. It resets in {wait}.",
            check.cost
        ),
        Dim::MonthlyTokens => format!(
            "Monthly token budget exhausted on {scope}: {limit} tokens a month, this request reserves {}. It resets in {wait}.",
            check.cost
        ),
        Dim::DailyRequests => {
            format!("Daily request quota reached on {scope}: {limit} requests a day. It resets in {wait}.")
        }
        Dim::DailySpend | Dim::MonthlySpend => spend_message(check, used, currency, &wait),
    }
}

/// Settles each request's reservation when it ends (wired in `app`), with what it used: the
/// upstream's usage, else the gateway's own count of what it relayed (the same count metering
/// charges), never the bare estimate — a stream cut before its usage, with no `max_tokens`, would
/// otherwise be charged its default while the upstream produced far more.
pub struct Settler {
    limiter: Arc<Limiter>,
    count: Arc<dyn LocalCount>,
    prices: Arc<crate::spend::Prices>,
}

impl Settler {
    pub fn new(limiter: Arc<Limiter>, count: Arc<dyn LocalCount>, prices: Arc<crate::spend::Prices>) -> Self {
        Self { limiter, count, prices }
    }
}

/// What the request cost (micro-units): nothing for a cache hit; `None` without usage.
fn real_cost(prices: &crate::spend::Prices, deployment: Option<&str>, outcome: &Outcome) -> Option<u64> {
    let usage = outcome.usage.as_ref()?;
    if outcome.cached {
        return Some(0);
    }
    Some(crate::spend::cost(&prices.of(deployment?).price, usage))
}

impl Observer for Settler {
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let Some(reservation) = &ctx.reservation else { return };
        if !outcome.counted_locally(ctx) {
            let cost = real_cost(&self.prices, ctx.deployment.as_deref(), outcome);
            self.limiter.settle_costing(reservation, outcome, cost);
            return;
        }
        // The concurrency lease goes back now; the tokens once they are counted.
        let (leases, tokens) = reservation.split();
        self.limiter.settle(&leases, outcome);
        let (limiter, count, reservation, prices) =
            (self.limiter.clone(), self.count.clone(), tokens, self.prices.clone());
        let (deployment, endpoint, body) = (ctx.deployment.clone().unwrap_or_default(), ctx.endpoint, ctx.body.clone());
        let mut outcome = outcome.clone();
        let mut settle = move || {
            let usage = count.usage(&deployment, endpoint, &body, outcome.generated.as_ref(), outcome.usage.as_ref());
            outcome.usage = Some(usage);
            outcome.usage_partial = false;
            let cost = real_cost(&prices, Some(&deployment).filter(|d| !d.is_empty()).map(String::as_str), &outcome);
            limiter.settle_costing(&reservation, &outcome, cost);
        };
        // Counting a long answer takes a tokenizer pass: off the serving threads.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(settle)),
            Err(_) => settle(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::settle_delta;
    use crate::api::Usage;
    use crate::ctx::Outcome;

    fn streamed(usage: Option<Usage>, partial: bool) -> Outcome {
        Outcome { status: 200, usage, usage_partial: partial, ..Outcome::failed(200, "ok") }
    }

    fn usage(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Default::default()
        }
    }

    #[test]
    fn reservations_settle_to_what_was_used() {
        // Final usage: refund the unused part of a 1,000-token reservation, or charge the excess.
        assert_eq!(settle_delta(1000, &streamed(Some(usage(100, 50)), false)), -850);
        assert_eq!(settle_delta(100, &streamed(Some(usage(100, 50)), false)), 50);
        // No usage from a stream: what it used is unknown, the reservation stands.
        assert_eq!(settle_delta(1000, &streamed(None, false)), 0);
        // A failure without usage used nothing.
        assert_eq!(settle_delta(1000, &Outcome::failed(502, "upstream_unreachable")), -1000);
    }

    #[test]
    fn partial_usage_keeps_the_reservation_unless_it_reported_more() {
        // An Anthropic stream cut after message_start (input 100, output 1 so far).
        assert_eq!(settle_delta(1000, &streamed(Some(usage(100, 1)), true)), 0);
        assert_eq!(settle_delta(50, &streamed(Some(usage(100, 1)), true)), 51);
    }
}
