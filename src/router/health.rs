//! Live state of each deployment, shared by all requests: its breaker, requests in flight,
//! peak-EWMA time to first byte, and a cool-down after an upstream 429. (Also where what is
//! worked out once per deployment is kept: its attempt spans' constant attributes.)

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::breaker::{Breaker, Permit, State};
use crate::config::BreakerPolicy;
use crate::telemetry::trace::AttributeBlock;

/// Time constant of the latency average: old samples weigh e^-1 after this long.
const EWMA_DECAY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct DeploymentHealth {
    pub id: String,
    in_flight: AtomicU32,
    inner: Mutex<Inner>,
    /// The attempt span's attributes that are the same on every request here, encoded when
    /// first traced (by the pipeline, which records the span).
    pub span_attributes: OnceLock<AttributeBlock>,
}

#[derive(Debug)]
struct Inner {
    breaker: Breaker,
    /// Peak-EWMA of time to first byte, in milliseconds; 0 = no sample yet.
    latency_ms: f64,
    latency_at: Option<Instant>,
    cooldown_until: Option<Instant>,
}

impl DeploymentHealth {
    pub fn new(id: String, policy: BreakerPolicy) -> Self {
        Self {
            id,
            in_flight: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                breaker: Breaker::new(policy),
                latency_ms: 0.0,
                latency_at: None,
                cooldown_until: None,
            }),
            span_attributes: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn latency_ms(&self) -> f64 {
        self.lock().latency_ms
    }

    /// Whether the router may pick this deployment now (breaker lets requests through and no
    /// 429 cool-down is running).
    pub fn available(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        inner.cooldown_until.is_none_or(|t| now >= t) && inner.breaker.available(now)
    }

    /// How long until this deployment is usable again: `(cool-down left, breaker open left)`.
    pub fn wait_hint(&self, now: Instant) -> (Option<Duration>, Option<Duration>) {
        let inner = self.lock();
        let cooldown = inner.cooldown_until.filter(|t| *t > now).map(|t| t - now);
        (cooldown, inner.breaker.open_remaining(now))
    }

    pub fn breaker_state(&self, now: Instant) -> State {
        self.lock().breaker.state(now)
    }

    /// Takes a breaker permit and counts the request as in flight.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Option<AttemptGuard> {
        let permit = {
            let mut inner = self.lock();
            if inner.cooldown_until.is_some_and(|t| now < t) {
                return None;
            }
            inner.breaker.acquire(now)?
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(AttemptGuard {
            health: self.clone(),
            permit,
            started: Instant::now(),
            first_byte_micros: std::sync::atomic::AtomicU64::new(u64::MAX),
            settled: false,
        })
    }

    pub fn health_check(&self, ok: bool, now: Instant, detail: &str) {
        let mut inner = self.lock();
        if ok {
            inner.breaker.on_health_ok(now);
        } else {
            inner.breaker.on_failure(Permit::Normal, now, &format!("health check: {detail}"));
        }
    }

    /// For `/health`: state, trip count and the last trip's reason.
    pub fn report(&self, now: Instant) -> serde_json::Value {
        let mut inner = self.lock();
        let state = inner.breaker.state(now);
        let open_remaining_ms = inner.breaker.open_remaining(now).map(|d| d.as_millis() as u64);
        serde_json::json!({
            "deployment": self.id,
            "breaker": state.name(),
            "open_remaining_ms": open_remaining_ms,
            "trips": inner.breaker.trips,
            "last_trip_reason": inner.breaker.last_trip_reason,
            "in_flight": self.in_flight(),
            "ttfb_ewma_ms": (inner.latency_ms * 10.0).round() / 10.0,
            "cooling_down": inner.cooldown_until.is_some_and(|t| now < t),
        })
    }
}

/// One attempt on one deployment. Settle it with `success` or `failure`; dropping it unsettled
/// (client gone, client error) frees its breaker probe without a verdict.
#[derive(Debug)]
pub struct AttemptGuard {
    health: Arc<DeploymentHealth>,
    permit: Permit,
    started: Instant,
    /// Time to first byte once seen (`u64::MAX` until then).
    first_byte_micros: std::sync::atomic::AtomicU64,
    settled: bool,
}

impl AttemptGuard {
    /// The upstream's first byte arrived: feeds the latency average.
    pub fn first_byte(&self) {
        let elapsed = self.started.elapsed();
        self.first_byte_micros.store(elapsed.as_micros() as u64, Ordering::Relaxed);
        let sample = elapsed.as_secs_f64() * 1000.0;
        let now = Instant::now();
        let mut inner = self.health.lock();
        inner.latency_ms = match inner.latency_at {
            None => sample,
            // Peak: a slower sample takes over at once; faster ones pull it down gradually.
            Some(_) if sample > inner.latency_ms => sample,
            Some(at) => {
                let w = (-(now.saturating_duration_since(at).as_secs_f64()) / EWMA_DECAY.as_secs_f64()).exp();
                inner.latency_ms * w + sample * (1.0 - w)
            }
        };
        inner.latency_at = Some(now);
    }

    /// How long the deployment took to its first byte, if it got there.
    pub fn first_byte_after(&self) -> Option<Duration> {
        match self.first_byte_micros.load(Ordering::Relaxed) {
            u64::MAX => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    pub fn success(mut self) {
        self.settled = true;
        self.health.lock().breaker.on_success(self.permit);
    }

    pub fn failure(mut self, reason: &str) {
        self.settled = true;
        self.health.lock().breaker.on_failure(self.permit, Instant::now(), reason);
    }

    /// The upstream asked us to back off (429): skip it until then.
    pub fn cool_down(self, for_: Duration) {
        {
            let mut inner = self.health.lock();
            let until = Instant::now() + for_;
            inner.cooldown_until = Some(inner.cooldown_until.map_or(until, |t| t.max(until)));
        }
        drop(self);
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.health.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.settled {
            self.health.lock().breaker.on_abandoned(self.permit);
        }
    }
}
