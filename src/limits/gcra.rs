//! GCRA (the generic cell rate algorithm) as arithmetic on one number per bucket, the theoretical
//! arrival time (TAT): the same rules as `admit.lua` / `settle.lua`, for the in-process limiter.
//! A bucket of `capacity` units refills at `limit` units per `period`; a request of `cost` units
//! fits when charging it leaves the TAT at most `capacity` intervals ahead of now.

/// A rate: `limit` units per `period_ms`, at most `capacity` units at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub period_ms: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Admitted: the bucket's new TAT, and what is left after this request.
    Admit { tat_us: f64, remaining: u64, reset_ms: u64 },
    /// Refused: wait this long (`None`: the cost exceeds the bucket and never fits).
    Deny { retry_ms: Option<u64>, remaining: u64, reset_ms: u64 },
}

impl Rate {
    /// Microseconds one unit takes to refill.
    fn interval_us(&self) -> f64 {
        (self.period_ms as f64) * 1000.0 / (self.limit.max(1) as f64)
    }

    pub fn check(&self, tat_us: Option<f64>, now_us: f64, cost: u64) -> Decision {
        let interval = self.interval_us();
        let tolerance = self.capacity as f64 * interval;
        let tat = tat_us.unwrap_or(now_us).max(now_us);
        let new_tat = tat + cost as f64 * interval;
        let level = |tat: f64| {
            let remaining = ((tolerance - (tat - now_us)) / interval).floor().max(0.0) as u64;
            (remaining, ((tat - now_us) / 1000.0).ceil().max(0.0) as u64)
        };
        if cost > self.capacity {
            let (remaining, reset_ms) = level(tat);
            return Decision::Deny { retry_ms: None, remaining, reset_ms };
        }
        if new_tat - now_us > tolerance {
            let (remaining, reset_ms) = level(tat);
            let retry_ms = ((new_tat - now_us - tolerance) / 1000.0).ceil() as u64;
            return Decision::Deny { retry_ms: Some(retry_ms.max(1)), remaining, reset_ms };
        }
        let (remaining, reset_ms) = level(new_tat);
        Decision::Admit { tat_us: new_tat, remaining, reset_ms }
    }

    /// The TAT after charging `delta` more units (negative refunds; never fuller than full).
    /// `None` when the bucket is full.
    pub fn adjust(&self, tat_us: Option<f64>, now_us: f64, delta: i64) -> Option<f64> {
        let tat = tat_us.unwrap_or(now_us).max(now_us);
        let new_tat = tat + delta as f64 * self.interval_us();
        (new_tat > now_us).then_some(new_tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: f64 = 1_000_000.0;

    fn admitted(rate: &Rate, tat: &mut Option<f64>, now: f64, cost: u64) -> bool {
        match rate.check(*tat, now, cost) {
            Decision::Admit { tat_us, .. } => {
                *tat = Some(tat_us);
                true
            }
            Decision::Deny { .. } => false,
        }
    }

    #[test]
    fn admits_the_burst_then_the_rate() {
        // 300 a minute with a 10-second burst: 50 at once, then one every 200 ms.
        let rate = Rate { limit: 300, period_ms: 60_000, capacity: 50 };
        let mut tat = None;
        let n = (0..100).filter(|_| admitted(&rate, &mut tat, 0.0, 1)).count();
        assert_eq!(n, 50);
        let mut total = n;
        let mut now = 0.0;
        while now < 20.0 * SECOND {
            now += 10_000.0;
            total += usize::from(admitted(&rate, &mut tat, now, 1));
        }
        assert_eq!(total, 150, "burst + 20 s × 5/s");
    }

    #[test]
    fn refunds_never_overfill_and_large_costs_never_fit() {
        let rate = Rate { limit: 10_000, period_ms: 60_000, capacity: 10_000 };
        let mut tat = None;
        assert!(admitted(&rate, &mut tat, 0.0, 9_000));
        assert!(!admitted(&rate, &mut tat, 0.0, 2_000));
        tat = rate.adjust(tat, 0.0, -8_000);
        assert!(admitted(&rate, &mut tat, 0.0, 2_000), "the refund made room");
        assert_eq!(rate.adjust(None, 0.0, -500), None);
        match rate.check(None, 0.0, 10_001) {
            Decision::Deny { retry_ms: None, remaining: 10_000, .. } => {}
            other => panic!("{other:?}"),
        }
        // 3,000 in use, 8,000 asked: wait until 1,000 have refilled (6 s at 10,000 a minute).
        match rate.check(tat, 0.0, 8_000) {
            Decision::Deny { retry_ms: Some(ms), remaining: 7_000, .. } => assert_eq!(ms, 6_000),
            other => panic!("{other:?}"),
        }
    }
}
