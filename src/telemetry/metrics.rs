//! Prometheus metrics on prometheus-client: the families and their typed label sets, registered
//! once, and the text exposition (version 0.0.4) for `GET /metrics`. A request finds its series
//! through handles kept per configured model and deployment (`series`), not by label lookup.
//!
//! Names, types, labels and buckets are those of the hand-written exposition this replaced. One
//! difference: the encoder writes `le` as Go's clients do, so the bounds 0.00005 and 1048576 read
//! `5e-05` and `1.048576e+06` (Prometheus 3 stores every `le` in that form whatever it scraped).

mod build;
pub mod encode;
pub mod labels;
pub mod metering;
pub mod observer;
pub mod series;
pub mod spend;

use std::collections::BTreeSet;
use std::sync::Arc;

use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

pub use metering::MeteringMetrics;
pub use observer::RequestMetrics;

use encode::{GapHistogram, Listed};
use labels::{Attempt, Deployment, GenAiTokens, Model, Policy, Reason, Session, StatusModel, Tokens};
use series::Series;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets (seconds) shared by the request, first-token and upstream histograms.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Buckets (seconds) for the limit check: a Valkey round trip on loopback is tens of µs.
pub const CHECK_BUCKETS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5];
/// Token-count buckets, after the GenAI `gen_ai.client.token.usage` convention.
pub const TOKEN_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

/// A histogram of `LATENCY_BUCKETS` (a family's constructor).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

pub(crate) fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS.iter().copied())
}

/// Registers `metric` under the name Prometheus sees: prometheus-client adds `_total` to a
/// counter's name and a full stop to the help text, so both are taken off here.
pub fn register(registry: &mut Registry, name: &'static str, help: &'static str, metric: impl Metric) {
    let name = match metric.metric_type() {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    registry.register(name, help.strip_suffix('.').unwrap_or(help), Listed(metric));
}

/// Appends `registry` to a text exposition.
pub fn encode_into(out: &mut String, registry: &Registry) {
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(out, registry);
}

/// Every metric of the gateway itself (the cache and the JWT verifier add theirs).
#[derive(Debug)]
pub struct Metrics {
    team_label: bool,
    series: Series,
    pub requests: Family<StatusModel, Counter>,
    pub request_duration: Family<Model, Histogram>,
    pub time_to_first_token: Family<Model, Histogram>,
    pub tokens: Family<Tokens, Counter>,
    pub token_usage: Family<GenAiTokens, Histogram>,
    pub in_flight: Gauge,
    pub upstream_attempts: Family<Attempt, Counter>,
    pub upstream_latency: Family<Deployment, Histogram>,
    pub breaker_state: Family<Deployment, Gauge>,
    /// Completed, upstream_error, client_gone.
    pub stream_outcomes: [Counter; 3],
    pub inter_chunk_gap: Family<Model, GapHistogram>,
    pub sessions: Family<Session, Counter>,
    /// Rendered when metering is on.
    pub metering: Option<Arc<MeteringMetrics>>,
    /// Spend counters (`spend`), rendered when set.
    pub spend: Option<Arc<spend::SpendMetrics>>,
    pub rate_limited: Family<Reason, Counter>,
    pub limits_fallback: Family<Policy, Counter>,
    /// Decided by the `allowance` taken ahead, or by `valkey`.
    pub limits_admissions: [Counter; 2],
    pub limits_degraded: Gauge,
    pub limits_settle_failures: Counter,
    pub limit_check: Histogram,
    pub valkey_errors: Counter,
    /// Read from the trace exporter at scrape time: exported, dropped (queue full, export failed).
    trace_spans: [Counter; 3],
    registry: Registry,
}

impl Metrics {
    /// The deployments labelled by their id (any other is `<provider>/other`).
    pub fn with_deployments(mut self, ids: BTreeSet<String>) -> Self {
        let models = self.series.model_names();
        self.series = Series::new(&models, &ids);
        self
    }

    /// A model's label: its name when configured, else `other`.
    pub fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if self.series.is_known_model(model) { model } else { "other" }
    }

    /// A deployment's label: its id when configured, else its provider's name and `other`.
    pub fn deployment_label(&self, deployment: &str) -> Arc<str> {
        match self.series.deployment(deployment) {
            Some(known) => known.name.clone(),
            None => format!("{}/other", series::provider_of(deployment)).into(),
        }
    }

    /// Counts a request refused by the limit named `reason`.
    pub fn rate_limited(&self, reason: &'static str) {
        self.rate_limited.get_or_create(&Reason::from(reason)).inc();
    }

    /// Counts a limit check decided by the Valkey-down `policy`.
    pub fn limits_fallback(&self, policy: &'static str) {
        self.limits_fallback.get_or_create(&Policy::from(policy)).inc();
    }

    /// Sets a deployment's breaker state (read at scrape time).
    pub fn set_breaker_state(&self, deployment: &str, code: i64) {
        self.breaker_state.get_or_create(&Deployment { deployment: deployment.into() }).set(code);
    }

    /// Mirrors a CLI pool's session count (kept by the pool, read at scrape time).
    pub fn set_sessions(&self, provider: &str, status: &'static str, n: u64) {
        mirror(&self.sessions.get_or_create(&Session { provider: provider.into(), status }), n);
    }

    /// The text exposition (version 0.0.4), the trace exporter's counts read now.
    pub fn render(&self) -> String {
        let (exported, queue_full, export_failed) = crate::telemetry::trace::export::counts();
        for (counter, n) in self.trace_spans.iter().zip([exported, queue_full, export_failed]) {
            mirror(counter, n);
        }
        let mut out = String::with_capacity(16 * 1024);
        encode_into(&mut out, &self.registry);
        if let Some(metering) = &self.metering {
            metering.render(&mut out);
        }
        if let Some(spend) = &self.spend {
            spend.render(&mut out);
        }
        out
    }
}

/// Sets a counter to a count kept elsewhere (read at scrape time).
pub fn mirror(counter: &Counter, n: u64) {
    counter.inner().store(n, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
