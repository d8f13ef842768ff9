//! Whether a cloud provider's credentials can be fetched: the last refresh's outcome and reason
//! for `/health`, and the count of failed refreshes for `/metrics`. A reason is the fetch's own
//! error text (an endpoint's status and answer, a file that cannot be read), never a secret:
//! neither keys nor tokens are ever part of one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;

/// How long a reason may be in `/health`.
const MAX_REASON: usize = 300;

pub(in crate::upstream) struct CredentialHealth {
    /// Where the credentials come from (`web identity`, `service account`, …).
    source: &'static str,
    failures: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The reason of the failure still current, and since when (Unix seconds).
    failing: Option<(String, u64)>,
    last_refresh: Option<u64>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl CredentialHealth {
    pub(in crate::upstream) fn new(source: &'static str) -> Self {
        Self { source, failures: AtomicU64::new(0), state: Mutex::default() }
    }

    /// A source that cannot work as configured (an unreadable key file): failing from the start.
    pub(in crate::upstream) fn broken(source: &'static str, reason: &str) -> Self {
        let health = Self::new(source);
        health.state.lock().unwrap_or_else(|e| e.into_inner()).failing = Some((cut(reason), now()));
        health
    }

    pub(in crate::upstream) fn failed(&self, reason: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let since = state.failing.as_ref().map_or_else(now, |(_, since)| *since);
        state.failing = Some((cut(reason), since));
    }

    pub(in crate::upstream) fn refreshed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failing = None;
        state.last_refresh = Some(now());
    }

    pub(in crate::upstream) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(in crate::upstream) fn is_failing(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).failing.is_some()
    }

    /// `{"provider", "source", "status": "ok" | "failing", "reason"?, "failing_since"?,
    /// "last_refresh"?, "refresh_failures"}`.
    pub(in crate::upstream) fn report(&self, provider: &str) -> serde_json::Value {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = serde_json::json!({
            "provider": provider,
            "source": self.source,
            "status": if state.failing.is_some() { "failing" } else { "ok" },
            "refresh_failures": self.failures(),
        });
        if let Some((reason, since)) = &state.failing {
            report["reason"] = reason.as_str().into();
            report["failing_since"] = (*since).into();
        }
        if let Some(at) = state.last_refresh {
            report["last_refresh"] = at.into();
        }
        report
    }
}

fn cut(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_owned(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Provider {
    provider: String,
}

/// `llm_gateway_credential_refresh_failures_total{provider}` for each provider given.
pub(in crate::upstream) fn render<'a>(
    out: &mut String,
    providers: impl Iterator<Item = (&'a str, &'a CredentialHealth)>,
) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use crate::telemetry::metrics::{encode_into, mirror, register};
    let family = Family::<Provider, Counter>::default();
    for (name, health) in providers {
        mirror(&family.get_or_create(&Provider { provider: name.to_owned() }), health.failures());
    }
    let mut registry = prometheus_client::registry::Registry::default();
    register(
        &mut registry,
        "llm_gateway_credential_refresh_failures_total",
        "Failed fetches of a cloud provider's credentials (STS, a container credentials endpoint, an OAuth token endpoint, the metadata server).",
        family,
    );
    encode_into(out, &registry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_a_refresh_succeeds_and_counted() {
        let health = CredentialHealth::new("web identity");
        assert_eq!(health.report("bedrock")["status"], "ok");
        health.failed("the credentials endpoint answered HTTP 503: down");
        health.failed(&"x".repeat(400));
        let report = health.report("bedrock");
        assert_eq!((report["status"].as_str(), report["refresh_failures"].as_u64()), (Some("failing"), Some(2)));
        assert_eq!(report["reason"].as_str().unwrap().chars().count(), MAX_REASON + 1);
        assert!(health.is_failing());
        health.refreshed();
        let report = health.report("bedrock");
        assert_eq!((report["status"].as_str(), report.get("reason")), (Some("ok"), None));
        let mut text = String::new();
        render(&mut text, [("bedrock", &health)].into_iter());
        assert!(text.contains("llm_gateway_credential_refresh_failures_total{provider=\"bedrock\"} 2"), "{text}");
    }
}
