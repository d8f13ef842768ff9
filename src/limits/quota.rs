//! What `GET /quota` and the `x-ratelimit-*` headers of a listing show: the caller's limits as
//! they stand, read from Valkey when it is healthy, else from this replica's counters.

use super::*;

impl Limiter {
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
