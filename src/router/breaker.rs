//! A per-deployment circuit breaker: closed → open after N consecutive upstream failures (or a
//! failure ratio over a window) → half-open after a backoff that doubles on each re-open up to a
//! cap → closed again after enough successful probes. Pure: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::BreakerPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32, successes: u32 },
}

impl State {
    /// 0 closed, 1 open, 2 half-open (the `llm_gateway_breaker_state` gauge).
    pub fn code(&self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }
}

/// Leave to send one request through the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Normal,
    Probe,
}

#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
    consecutive_failures: u32,
    recent: VecDeque<bool>,
    /// Consecutive trips without a full recovery, for the growing open period.
    reopenings: u32,
    pub trips: u64,
    pub last_trip_reason: Option<String>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: State::Closed,
            consecutive_failures: 0,
            recent: VecDeque::with_capacity(policy.window as usize),
            reopenings: 0,
            trips: 0,
            last_trip_reason: None,
        }
    }

    /// The state as of `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&mut self, now: Instant) -> State {
        if let State::Open { until } = self.state
            && now >= until
        {
            self.state = State::HalfOpen { probes_in_flight: 0, successes: 0 };
        }
        self.state
    }

    /// Whether a request could go through now, without taking a permit.
    pub fn available(&mut self, now: Instant) -> bool {
        match self.state(now) {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { probes_in_flight, .. } => probes_in_flight < self.policy.half_open_probes,
        }
    }

    pub fn acquire(&mut self, now: Instant) -> Option<Permit> {
        match self.state(now) {
            State::Closed => Some(Permit::Normal),
            State::Open { .. } => None,
            State::HalfOpen { probes_in_flight, successes } => {
                if probes_in_flight >= self.policy.half_open_probes {
                    return None;
                }
                self.state = State::HalfOpen { probes_in_flight: probes_in_flight + 1, successes };
                Some(Permit::Probe)
            }
        }
    }

    pub fn on_success(&mut self, permit: Permit) {
        self.consecutive_failures = 0;
        self.remember(true);
        if let (Permit::Probe, State::HalfOpen { probes_in_flight, successes }) = (permit, self.state) {
            let successes = successes + 1;
            if successes >= self.policy.half_open_probes {
                self.state = State::Closed;
                self.reopenings = 0;
                self.recent.clear();
            } else {
                self.state = State::HalfOpen { probes_in_flight: probes_in_flight.saturating_sub(1), successes };
            }
        }
    }

    pub fn on_failure(&mut self, permit: Permit, now: Instant, reason: &str) {
        self.consecutive_failures += 1;
        self.remember(false);
        match self.state {
            State::HalfOpen { .. } if permit == Permit::Probe => self.trip(now, format!("probe failed: {reason}")),
            State::Closed => {
                if self.consecutive_failures >= self.policy.consecutive_failures {
                    let n = self.consecutive_failures;
                    self.trip(now, format!("{n} consecutive failures, last: {reason}"));
                } else if let Some(ratio) = self.policy.failure_ratio {
                    let failed = self.recent.iter().filter(|ok| !**ok).count();
                    if self.recent.len() >= self.policy.window as usize
                        && failed as f64 >= ratio * self.recent.len() as f64
                    {
                        self.trip(
                            now,
                            format!("{failed} of the last {} requests failed, last: {reason}", self.recent.len()),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// A probe ended without a verdict (the client went away): free its slot.
    pub fn on_abandoned(&mut self, permit: Permit) {
        if let (Permit::Probe, State::HalfOpen { probes_in_flight, successes }) = (permit, self.state) {
            self.state = State::HalfOpen { probes_in_flight: probes_in_flight.saturating_sub(1), successes };
        }
    }

    /// An active health check answered: an open breaker may try probes right away.
    pub fn on_health_ok(&mut self, now: Instant) {
        if let State::Open { .. } = self.state(now) {
            self.state = State::HalfOpen { probes_in_flight: 0, successes: 0 };
        }
    }

    fn remember(&mut self, ok: bool) {
        if self.recent.len() == self.policy.window as usize {
            self.recent.pop_front();
        }
        self.recent.push_back(ok);
    }

    fn trip(&mut self, now: Instant, reason: String) {
        let factor = 1u32.checked_shl(self.reopenings.min(20)).unwrap_or(u32::MAX);
        let open_for = self.policy.open_for.saturating_mul(factor).min(self.policy.max_open_for);
        self.state = State::Open { until: now + open_for };
        self.reopenings += 1;
        self.trips += 1;
        self.last_trip_reason = Some(reason);
        self.consecutive_failures = 0;
    }

    /// How long until an open breaker lets probes through.
    pub fn open_remaining(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            failure_ratio: None,
            window: 10,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(25),
            half_open_probes: 1,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_recovers_through_a_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy());
        for _ in 0..2 {
            let p = b.acquire(t0).unwrap();
            b.on_failure(p, t0, "500");
        }
        let p = b.acquire(t0).unwrap();
        b.on_success(p);
        for _ in 0..2 {
            let p = b.acquire(t0).unwrap();
            b.on_failure(p, t0, "500");
        }
        assert_eq!(b.state(t0), State::Closed, "a success in between resets the count");
        let p = b.acquire(t0).unwrap();
        b.on_failure(p, t0, "500");
        assert!(matches!(b.state(t0), State::Open { .. }));
        assert!(b.acquire(t0 + Duration::from_secs(9)).is_none());

        let t1 = t0 + Duration::from_secs(10);
        let probe = b.acquire(t1).unwrap();
        assert_eq!(probe, Permit::Probe);
        assert!(b.acquire(t1).is_none(), "only one probe at a time");
        b.on_success(probe);
        assert_eq!(b.state(t1), State::Closed);
    }

    #[test]
    fn open_period_doubles_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerPolicy { consecutive_failures: 1, ..policy() });
        let p = b.acquire(t0).unwrap();
        b.on_failure(p, t0, "x");
        assert_eq!(b.open_remaining(t0), Some(Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(10);
        let p = b.acquire(t1).unwrap();
        b.on_failure(p, t1, "x");
        assert_eq!(b.open_remaining(t1), Some(Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(20);
        let p = b.acquire(t2).unwrap();
        b.on_failure(p, t2, "x");
        assert_eq!(b.open_remaining(t2), Some(Duration::from_secs(25)), "capped at max_open_for");
        assert_eq!(b.trips, 3);
        assert!(b.last_trip_reason.as_deref().unwrap().starts_with("probe failed"));
    }

    #[test]
    fn failure_ratio_over_window() {
        let t0 = Instant::now();
        let mut b =
            Breaker::new(BreakerPolicy { consecutive_failures: 100, failure_ratio: Some(0.5), window: 4, ..policy() });
        for ok in [true, false, true, false] {
            let p = b.acquire(t0).unwrap();
            if ok { b.on_success(p) } else { b.on_failure(p, t0, "503") }
        }
        assert!(matches!(b.state(t0), State::Open { .. }));
    }

    #[test]
    fn abandoned_probe_frees_its_slot_and_health_ok_half_opens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerPolicy { consecutive_failures: 1, ..policy() });
        let p = b.acquire(t0).unwrap();
        b.on_failure(p, t0, "x");
        b.on_health_ok(t0);
        let probe = b.acquire(t0).unwrap();
        assert!(b.acquire(t0).is_none());
        b.on_abandoned(probe);
        assert!(b.acquire(t0).is_some());
    }
}
