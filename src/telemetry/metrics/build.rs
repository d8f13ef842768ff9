//! The gateway's own metric families, each registered once under the name Prometheus sees.

use std::collections::BTreeSet;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::{DecidedBy, Outcome, Reason};
use super::series::Series;
use super::{CHECK_BUCKETS, Metrics, latency_histogram, register, token_histogram};

impl Metrics {
    /// The families, empty; `known_models` are the configured client-facing names (any other is
    /// `other`), `team_label` whether tokens are counted per team.
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
            spend: None,
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
}
