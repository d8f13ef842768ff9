//! Prometheus metrics on prometheus-client: the families and their typed label sets, registered
//! once, and the text exposition (version 0.0.4) for `GET /metrics`. A request finds its series
//! through handles kept per configured model and deployment (`series`), not by label lookup.

pub mod encode;
pub mod labels;
pub mod metering;
pub mod observer;
pub mod series;

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
use labels::{
    Attempt, DecidedBy, Deployment, GenAiTokens, Model, Outcome, Policy, Reason, Session, StatusModel, Tokens,
};
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

fn token_histogram() -> Histogram {
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
    // Long, but one registration per metric and nothing else.
    pub fn new(known_models: BTreeSet<String>, team_label: bool) -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let requests = Family::default();
        register(
            r,
            "llm_requests_total",
            "Requests answered, by HTTP status and client-facing model.",
            requests.clone(),
        );
        let request_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        register(
            r,
            "llm_request_duration_seconds",
            "Time from request arrival to the last byte of the answer.",
            request_duration.clone(),
        );
        let time_to_first_token = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        register(
            r,
            "llm_gateway_time_to_first_token_seconds",
            "Time from request arrival to the first streamed chunk sent to the client.",
            time_to_first_token.clone(),
        );
        let tokens = Family::default();
        register(
            r,
            "llm_gateway_tokens_total",
            "Tokens reported by upstreams, by type (input, output, cached_input, reasoning).",
            tokens.clone(),
        );
        let token_usage = Family::new_with_constructor(token_histogram as fn() -> Histogram);
        register(
            r,
            "gen_ai_client_token_usage",
            "Tokens per request (GenAI gen_ai.client.token.usage), by token type.",
            token_usage.clone(),
        );
        let in_flight = Gauge::default();
        register(r, "llm_gateway_in_flight_requests", "Requests being answered right now.", in_flight.clone());
        let upstream_attempts = Family::default();
        register(
            r,
            "llm_gateway_upstream_attempts_total",
            "Attempts sent to each deployment, by outcome.",
            upstream_attempts.clone(),
        );
        let upstream_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        register(
            r,
            "llm_gateway_upstream_first_byte_seconds",
            "Time from sending to a deployment to its first byte.",
            upstream_latency.clone(),
        );
        let breaker_state = Family::default();
        register(
            r,
            "llm_gateway_breaker_state",
            "Circuit breaker state per deployment: 0 closed, 1 open, 2 half-open.",
            breaker_state.clone(),
        );
        let outcomes = Family::<Outcome, Counter>::default();
        register(
            r,
            "llm_gateway_stream_outcomes_total",
            "How streams ended: completed, upstream_error, client_gone.",
            outcomes.clone(),
        );
        let inter_chunk_gap = Family::default();
        register(
            r,
            "llm_gateway_inter_chunk_gap_seconds",
            "Time between consecutive chunks of a stream sent to the client.",
            inter_chunk_gap.clone(),
        );
        let sessions = Family::default();
        register(
            r,
            "llm_sessions_total",
            "CLI backend session events by provider and status (started, warm, failed, crashed, killed, recycled, cold_start).",
            sessions.clone(),
        );
        let rate_limited = Family::default();
        register(
            r,
            "llm_gateway_rate_limited_total",
            "Requests refused by the gateway's own limits, by the limit that refused them.",
            rate_limited.clone(),
        );
        let limits_fallback = Family::default();
        register(
            r,
            "llm_gateway_limits_fallback_total",
            "Limit checks decided by the Valkey-down policy (fail-open: per-replica limits; fail-closed: 503).",
            limits_fallback.clone(),
        );
        let admissions = Family::<DecidedBy, Counter>::default();
        register(
            r,
            "llm_gateway_limit_decisions_total",
            "Shared-limit decisions (admitted or refused) by where they were made: `allowance` (capacity this replica took ahead, no round trip) or `valkey`.",
            admissions.clone(),
        );
        let limits_degraded = Gauge::default();
        register(
            r,
            "llm_gateway_limits_degraded",
            "1 while Valkey is unreachable and limits follow the configured fail-open or fail-closed policy.",
            limits_degraded.clone(),
        );
        let limits_settle_failures = Counter::default();
        register(
            r,
            "llm_gateway_limits_settle_failures_total",
            "End-of-request settlements (refunds, lease releases) that did not reach Valkey.",
            limits_settle_failures.clone(),
        );
        let valkey_errors = Counter::default();
        register(
            r,
            "llm_gateway_valkey_errors_total",
            "Valkey commands that failed or timed out.",
            valkey_errors.clone(),
        );
        let limit_check = Histogram::new(CHECK_BUCKETS.iter().copied());
        register(
            r,
            "llm_gateway_limit_check_seconds",
            "Time to admit or refuse a request against its limits (a Valkey round trip when shared).",
            limit_check.clone(),
        );
        let exported = Counter::default();
        register(r, "llm_gateway_trace_spans_exported_total", "Spans the OTLP collector accepted.", exported.clone());
        let dropped = Family::<Reason, Counter>::default();
        register(
            r,
            "llm_gateway_trace_spans_dropped_total",
            "Spans not exported: too many batches were waiting to be sent (or the trace ended after shutdown), or the collector refused or did not answer.",
            dropped.clone(),
        );
        let trace_spans = [
            exported,
            dropped.get_or_create_owned(&Reason::from("queue_full")),
            dropped.get_or_create_owned(&Reason::from("export_failed")),
        ];
        Self {
            team_label,
            series: Series::new(&known_models, &BTreeSet::new()),
            requests,
            request_duration,
            time_to_first_token,
            tokens,
            token_usage,
            in_flight,
            upstream_attempts,
            upstream_latency,
            breaker_state,
            stream_outcomes: ["completed", "upstream_error", "client_gone"]
                .map(|outcome| outcomes.get_or_create_owned(&Outcome::from(outcome))),
            inter_chunk_gap,
            sessions,
            metering: None,
            rate_limited,
            limits_fallback,
            limits_admissions: ["allowance", "valkey"].map(|by| admissions.get_or_create_owned(&DecidedBy::from(by))),
            limits_degraded,
            limits_settle_failures,
            limit_check,
            valkey_errors,
            trace_spans,
            registry,
        }
    }

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
        out
    }
}

/// Sets a counter to a count kept elsewhere (read at scrape time).
pub fn mirror(counter: &Counter, n: u64) {
    counter.inner().store(n, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
