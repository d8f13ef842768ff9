//! Prometheus metrics: a small lock-light registry (atomics behind a read-mostly map per family)
//! and the text exposition for `GET /metrics`. Label values are bounded by construction: models
//! are the configured names (anything else is `other`), teams only when enabled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::ctx::{ChunkGaps, GAP_BOUNDS, Observer, Outcome, RequestCtx};

/// Latency buckets (seconds) shared by the request, first-token and upstream histograms.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Buckets (seconds) for the limit check: a Valkey round trip on loopback is tens of µs.
pub const CHECK_BUCKETS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5];
/// Token-count buckets, after the GenAI `gen_ai.client.token.usage` convention.
pub const TOKEN_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Mirrors a count kept elsewhere (read at scrape time).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum in millionths, to stay in integer atomics.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Adds a stream's locally bucketed gaps (same bounds as this histogram).
    pub fn merge(&self, gaps: &ChunkGaps) {
        for (bucket, n) in self.buckets.iter().zip(gaps.buckets) {
            bucket.fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(gaps.count, Ordering::Relaxed);
        self.sum_micros.fetch_add(gaps.sum.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One metric family: label values → a metric, created on first use.
pub struct Family<M> {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    make: fn() -> M,
    /// Keyed by the label values joined with U+001F (never in a label value we emit).
    series: RwLock<BTreeMap<String, Arc<M>>>,
}

impl<M> Family<M> {
    pub fn new(
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &'static [&'static str],
        make: fn() -> M,
    ) -> Self {
        Self { name, help, kind, labels, make, series: RwLock::new(BTreeMap::new()) }
    }

    pub fn with(&self, values: &[&str]) -> Arc<M> {
        debug_assert_eq!(values.len(), self.labels.len());
        thread_local! {
            // The joined label values, reused: looking a series up allocates nothing.
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    key.push('\u{1f}');
                }
                key.push_str(value);
            }
            {
                let series = self.series.read().unwrap_or_else(|p| p.into_inner());
                if let Some(m) = series.get(key.as_str()) {
                    return m.clone();
                }
            }
            let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
            series.entry(key.clone()).or_insert_with(|| Arc::new((self.make)())).clone()
        })
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<M>)> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let split = |k: &String| -> Vec<String> {
            if self.labels.is_empty() { Vec::new() } else { k.split('\u{1f}').map(str::to_owned).collect() }
        };
        series.iter().map(|(k, v)| (split(k), v.clone())).collect()
    }

    fn header(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
    }

    fn label_text(&self, values: &[String], extra: Option<(&str, &str)>) -> String {
        let mut pairs: Vec<String> =
            self.labels.iter().zip(values).map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        if let Some((k, v)) = extra {
            pairs.push(format!("{k}=\"{v}\""));
        }
        if pairs.is_empty() { String::new() } else { format!("{{{}}}", pairs.join(",")) }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() { "+Inf".into() } else { format!("{v}") }
}

impl Family<Counter> {
    pub fn render(&self, out: &mut String) {
        self.header(out);
        for (labels, c) in self.snapshot() {
            let _ = writeln!(out, "{}{} {}", self.name, self.label_text(&labels, None), c.get());
        }
    }
}

impl Family<Gauge> {
    pub fn render(&self, out: &mut String) {
        self.header(out);
        for (labels, g) in self.snapshot() {
            let _ = writeln!(out, "{}{} {}", self.name, self.label_text(&labels, None), g.get());
        }
    }
}

impl Family<Histogram> {
    pub fn render(&self, out: &mut String) {
        self.header(out);
        for (labels, h) in self.snapshot() {
            let mut cumulative = 0;
            for (bound, bucket) in h.bounds.iter().zip(h.buckets.iter()) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = fmt_f64(*bound);
                let _ =
                    writeln!(out, "{}_bucket{} {cumulative}", self.name, self.label_text(&labels, Some(("le", &le))));
            }
            let count = h.count();
            let _ = writeln!(out, "{}_bucket{} {count}", self.name, self.label_text(&labels, Some(("le", "+Inf"))));
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{}_sum{} {sum}", self.name, self.label_text(&labels, None));
            let _ = writeln!(out, "{}_count{} {count}", self.name, self.label_text(&labels, None));
        }
    }
}

/// The metering pipeline's health: how many events went where, and how far behind it is.
#[derive(Debug, Default)]
pub struct MeteringMetrics {
    /// Finished requests taken into the in-memory queue.
    pub queued: Counter,
    /// Events written to the on-disk outbox.
    pub persisted: Counter,
    /// Events OpenMeter accepted (2xx).
    pub sent: Counter,
    /// Events in batches that failed with a retryable error and will be sent again.
    pub retried: Counter,
    /// Events OpenMeter refused (400) and that went to the dead-letter file.
    pub dead_lettered: Counter,
    /// Events dropped because the queue or the outbox was full (`when_full: drop`).
    pub dropped_queue_full: Counter,
    pub dropped_outbox_full: Counter,
    /// Requests refused with 503 because the outbox was full (`when_full: reject`).
    pub rejected_requests: Counter,
    /// Events whose tokens were counted locally (no usage from the upstream).
    pub estimated: Counter,
    /// Events moved into this replica's outbox from that of a replica that is gone.
    pub adopted: Counter,
    /// Dead-letter entries deleted to keep the dead-letter files within their cap.
    pub dead_letters_dropped: Counter,
    /// Records waiting in memory for the outbox writer.
    pub queue_depth: Gauge,
    pub outbox_bytes: Gauge,
    /// Events in the outbox not yet accepted by OpenMeter (nor dead-lettered).
    pub undelivered: Gauge,
    /// Unix milliseconds of the oldest undelivered event (0: none).
    pub oldest_undelivered_unix_ms: Gauge,
    /// 1 while the outbox is at its disk cap.
    pub outbox_full: Gauge,
}

impl MeteringMetrics {
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &Counter); 9] = [
            ("records_queued_total", "Finished requests handed to metering.", &self.queued),
            ("events_persisted_total", "Usage events written to the on-disk outbox.", &self.persisted),
            ("events_sent_total", "Usage events accepted by OpenMeter.", &self.sent),
            ("events_retried_total", "Usage events in batches that failed with a retryable error.", &self.retried),
            (
                "events_dead_lettered_total",
                "Usage events refused by OpenMeter (400), in the dead-letter file.",
                &self.dead_lettered,
            ),
            ("events_estimated_total", "Usage events whose tokens were counted locally.", &self.estimated),
            (
                "events_adopted_total",
                "Usage events taken over from the outbox directory of a replica that is gone.",
                &self.adopted,
            ),
            (
                "dead_letters_dropped_total",
                "Dead-letter entries deleted to keep the dead-letter files within dead_letter_max_bytes.",
                &self.dead_letters_dropped,
            ),
            (
                "rejected_requests_total",
                "Requests refused with 503 because the metering outbox was full.",
                &self.rejected_requests,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP llm_gateway_metering_{name} {help}\n# TYPE llm_gateway_metering_{name} counter\nllm_gateway_metering_{name} {}",
                counter.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP llm_gateway_metering_events_dropped_total Usage events dropped (never silently: when_full: drop, or the queue overflowed).\n# TYPE llm_gateway_metering_events_dropped_total counter\nllm_gateway_metering_events_dropped_total{{reason=\"queue_full\"}} {}\nllm_gateway_metering_events_dropped_total{{reason=\"outbox_full\"}} {}",
            self.dropped_queue_full.get(),
            self.dropped_outbox_full.get()
        );
        let oldest = self.oldest_undelivered_unix_ms.get();
        let age = if oldest > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(oldest);
            (now - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        let gauges: [(&str, &str, String); 5] = [
            (
                "queue_depth",
                "Finished requests waiting in memory for the outbox writer.",
                self.queue_depth.get().to_string(),
            ),
            ("outbox_bytes", "Bytes of the on-disk metering outbox.", self.outbox_bytes.get().to_string()),
            (
                "undelivered_events",
                "Usage events in the outbox not yet accepted by OpenMeter.",
                self.undelivered.get().to_string(),
            ),
            (
                "oldest_undelivered_age_seconds",
                "Age of the oldest usage event not yet accepted by OpenMeter.",
                format!("{age}"),
            ),
            ("outbox_full", "1 while the metering outbox is at its disk cap.", self.outbox_full.get().to_string()),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP llm_gateway_metering_{name} {help}\n# TYPE llm_gateway_metering_{name} gauge\nllm_gateway_metering_{name} {value}"
            );
        }
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    /// Configured client-facing model names; other names are reported as `other`.
    known_models: BTreeSet<String>,
    /// The configured deployments: any other (a default backend serving names clients make
    /// up) is counted as `<provider>/other`, so that clients cannot add series at will.
    known_deployments: BTreeSet<String>,
    team_label: bool,
    pub requests: Family<Counter>,
    pub request_duration: Family<Histogram>,
    pub time_to_first_token: Family<Histogram>,
    pub tokens: Family<Counter>,
    pub token_usage: Family<Histogram>,
    pub in_flight: Gauge,
    pub upstream_attempts: Family<Counter>,
    pub upstream_latency: Family<Histogram>,
    pub breaker_state: Family<Gauge>,
    pub stream_outcomes: Family<Counter>,
    pub inter_chunk_gap: Family<Histogram>,
    pub sessions: Family<Counter>,
    /// Rendered when metering is on.
    pub metering: Option<Arc<MeteringMetrics>>,
    pub rate_limited: Family<Counter>,
    pub limits_fallback: Family<Counter>,
    pub limits_admissions: Family<Counter>,
    pub limits_degraded: Gauge,
    pub limits_settle_failures: Counter,
    pub limit_check: Family<Histogram>,
    pub valkey_errors: Counter,
}

impl Metrics {
    pub fn new(known_models: BTreeSet<String>, team_label: bool) -> Self {
        Self {
            known_models,
            known_deployments: BTreeSet::new(),
            team_label,
            requests: Family::new(
                "llm_requests_total",
                "Requests answered, by HTTP status and client-facing model.",
                "counter",
                &["status", "model"],
                Counter::default,
            ),
            request_duration: Family::new(
                "llm_request_duration_seconds",
                "Time from request arrival to the last byte of the answer.",
                "histogram",
                &["model"],
                || Histogram::new(LATENCY_BUCKETS),
            ),
            time_to_first_token: Family::new(
                "llm_gateway_time_to_first_token_seconds",
                "Time from request arrival to the first streamed chunk sent to the client.",
                "histogram",
                &["model"],
                || Histogram::new(LATENCY_BUCKETS),
            ),
            tokens: Family::new(
                "llm_gateway_tokens_total",
                "Tokens reported by upstreams, by type (input, output, cached_input, reasoning).",
                "counter",
                &["type", "model", "team"],
                Counter::default,
            ),
            token_usage: Family::new(
                "gen_ai_client_token_usage",
                "Tokens per request (GenAI gen_ai.client.token.usage), by token type.",
                "histogram",
                &["gen_ai_token_type", "gen_ai_request_model"],
                || Histogram::new(TOKEN_BUCKETS),
            ),
            in_flight: Gauge::default(),
            upstream_attempts: Family::new(
                "llm_gateway_upstream_attempts_total",
                "Attempts sent to each deployment, by outcome.",
                "counter",
                &["deployment", "outcome"],
                Counter::default,
            ),
            upstream_latency: Family::new(
                "llm_gateway_upstream_first_byte_seconds",
                "Time from sending to a deployment to its first byte.",
                "histogram",
                &["deployment"],
                || Histogram::new(LATENCY_BUCKETS),
            ),
            breaker_state: Family::new(
                "llm_gateway_breaker_state",
                "Circuit breaker state per deployment: 0 closed, 1 open, 2 half-open.",
                "gauge",
                &["deployment"],
                Gauge::default,
            ),
            inter_chunk_gap: Family::new(
                "llm_gateway_inter_chunk_gap_seconds",
                "Time between consecutive chunks of a stream sent to the client.",
                "histogram",
                &["model"],
                || Histogram::new(&GAP_BOUNDS),
            ),
            sessions: Family::new(
                "llm_sessions_total",
                "CLI backend session events by provider and status (started, warm, failed, crashed, killed, recycled, cold_start).",
                "counter",
                &["provider", "status"],
                Counter::default,
            ),
            stream_outcomes: Family::new(
                "llm_gateway_stream_outcomes_total",
                "How streams ended: completed, upstream_error, client_gone.",
                "counter",
                &["outcome"],
                Counter::default,
            ),
            metering: None,
            rate_limited: Family::new(
                "llm_gateway_rate_limited_total",
                "Requests refused by the gateway's own limits, by the limit that refused them.",
                "counter",
                &["reason"],
                Counter::default,
            ),
            limits_fallback: Family::new(
                "llm_gateway_limits_fallback_total",
                "Limit checks decided by the Valkey-down policy (fail-open: per-replica limits; fail-closed: 503).",
                "counter",
                &["policy"],
                Counter::default,
            ),
            limits_admissions: Family::new(
                "llm_gateway_limit_decisions_total",
                "Shared-limit decisions (admitted or refused) by where they were made: `allowance` (capacity this replica took ahead, no round trip) or `valkey`.",
                "counter",
                &["decided_by"],
                Counter::default,
            ),
            limits_degraded: Gauge::default(),
            limits_settle_failures: Counter::default(),
            limit_check: Family::new(
                "llm_gateway_limit_check_seconds",
                "Time to admit or refuse a request against its limits (a Valkey round trip when shared).",
                "histogram",
                &[],
                || Histogram::new(CHECK_BUCKETS),
            ),
            valkey_errors: Counter::default(),
        }
    }

    pub fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if self.known_models.contains(model) { model } else { "other" }
    }

    /// The deployments labelled by their id; see `deployment_label`.
    pub fn with_deployments(mut self, ids: BTreeSet<String>) -> Self {
        self.known_deployments = ids;
        self
    }

    /// A deployment's label: its id when configured, else its provider's name and `other`.
    pub fn deployment_label<'a>(&self, deployment: &'a str) -> std::borrow::Cow<'a, str> {
        if self.known_deployments.contains(deployment) {
            return deployment.into();
        }
        let provider = deployment.split_once('/').map_or(deployment, |(p, _)| p);
        format!("{provider}/other").into()
    }

    fn team_label<'a>(&self, team: &'a str) -> &'a str {
        if self.team_label { team } else { "" }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.requests.render(&mut out);
        self.request_duration.render(&mut out);
        self.time_to_first_token.render(&mut out);
        self.tokens.render(&mut out);
        self.token_usage.render(&mut out);
        let _ = writeln!(out, "# HELP llm_gateway_in_flight_requests Requests being answered right now.");
        let _ = writeln!(out, "# TYPE llm_gateway_in_flight_requests gauge");
        let _ = writeln!(out, "llm_gateway_in_flight_requests {}", self.in_flight.get());
        self.upstream_attempts.render(&mut out);
        self.upstream_latency.render(&mut out);
        self.breaker_state.render(&mut out);
        self.stream_outcomes.render(&mut out);
        self.inter_chunk_gap.render(&mut out);
        self.sessions.render(&mut out);
        if let Some(metering) = &self.metering {
            metering.render(&mut out);
        }
        self.rate_limited.render(&mut out);
        self.limits_fallback.render(&mut out);
        self.limits_admissions.render(&mut out);
        let single = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        single(
            &mut out,
            "llm_gateway_limits_degraded",
            "gauge",
            "1 while Valkey is unreachable and limits follow the configured fail-open or fail-closed policy.",
            self.limits_degraded.get().to_string(),
        );
        single(
            &mut out,
            "llm_gateway_limits_settle_failures_total",
            "counter",
            "End-of-request settlements (refunds, lease releases) that did not reach Valkey.",
            self.limits_settle_failures.get().to_string(),
        );
        single(
            &mut out,
            "llm_gateway_valkey_errors_total",
            "counter",
            "Valkey commands that failed or timed out.",
            self.valkey_errors.get().to_string(),
        );
        self.limit_check.render(&mut out);
        let (exported, queue_full, export_failed) = crate::telemetry::trace::export::counts();
        single(
            &mut out,
            "llm_gateway_trace_spans_exported_total",
            "counter",
            "Spans the OTLP collector accepted.",
            exported.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP llm_gateway_trace_spans_dropped_total Spans not exported: too many batches were waiting to be sent (or the trace ended after shutdown), or the collector refused or did not answer.\n# TYPE llm_gateway_trace_spans_dropped_total counter\nllm_gateway_trace_spans_dropped_total{{reason=\"queue_full\"}} {queue_full}\nllm_gateway_trace_spans_dropped_total{{reason=\"export_failed\"}} {export_failed}"
        );
        out
    }
}

/// Feeds the request metrics from each request's outcome.
pub struct RequestMetrics(pub Arc<Metrics>);

impl Observer for RequestMetrics {
    fn started(&self, _ctx: &RequestCtx) {
        self.0.in_flight.add(1);
    }

    fn attempted(&self, _ctx: &RequestCtx, deployment: &str, outcome: &str, first_byte: Option<Duration>) {
        let deployment = self.0.deployment_label(deployment);
        let deployment = deployment.as_ref();
        self.0.upstream_attempts.with(&[deployment, outcome]).inc();
        if let Some(d) = first_byte {
            self.0.upstream_latency.with(&[deployment]).observe_duration(d);
        }
    }

    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let m = &self.0;
        m.in_flight.add(-1);
        let model = m.model_label(&ctx.client_model);
        let status = http::StatusCode::from_u16(outcome.status).ok();
        m.requests.with(&[status.as_ref().map_or("0", http::StatusCode::as_str), model]).inc();
        m.request_duration.with(&[model]).observe_duration(ctx.started.elapsed());
        if let Some(ttft) = outcome.time_to_first_chunk {
            m.time_to_first_token.with(&[model]).observe_duration(ttft);
        }
        if let Some(gaps) = &outcome.gaps {
            m.inter_chunk_gap.with(&[model]).merge(gaps);
        }
        if ctx.stream && outcome.status == 200 {
            let how = if outcome.client_gone {
                "client_gone"
            } else if outcome.error.is_some() {
                "upstream_error"
            } else {
                "completed"
            };
            m.stream_outcomes.with(&[how]).inc();
        }
        // A cache hit cost no upstream tokens: its usage is the stored answer's, for metering.
        if let Some(usage) = outcome.usage.filter(|_| !ctx.cache.is_hit()) {
            let team = m.team_label(ctx.principal.as_ref().map(|p| &*p.team).unwrap_or(""));
            let cached = usage.prompt_tokens_details.map(|d| d.cached_tokens).unwrap_or(0);
            let reasoning = usage.completion_tokens_details.map(|d| d.reasoning_tokens).unwrap_or(0);
            for (kind, n) in [
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
                ("cached_input", cached),
                ("reasoning", reasoning),
            ] {
                if n > 0 {
                    m.tokens.with(&[kind, model, team]).add(n);
                }
            }
            m.token_usage.with(&["input", model]).observe(usage.prompt_tokens as f64);
            m.token_usage.with(&["output", model]).observe(usage.completion_tokens as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::new(["gpt-4o".to_owned()].into(), false);
        m.requests.with(&["200", "gpt-4o"]).inc();
        m.requests.with(&["200", "gpt-4o"]).inc();
        let h = m.request_duration.with(&["gpt-4o"]);
        h.observe(0.003);
        h.observe(0.2);
        h.observe(1000.0);
        let text = m.render();
        assert!(text.contains("llm_requests_total{status=\"200\",model=\"gpt-4o\"} 2\n"), "{text}");
        assert!(text.contains("llm_request_duration_seconds_bucket{model=\"gpt-4o\",le=\"0.005\"} 1\n"));
        assert!(text.contains("llm_request_duration_seconds_bucket{model=\"gpt-4o\",le=\"0.25\"} 2\n"));
        assert!(text.contains("llm_request_duration_seconds_bucket{model=\"gpt-4o\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("llm_request_duration_seconds_count{model=\"gpt-4o\"} 3\n"));
        assert_eq!(m.model_label("made-up-by-a-client"), "other");
        let m = Metrics::new(BTreeSet::new(), false).with_deployments(["p/known".to_owned()].into());
        assert_eq!(m.deployment_label("p/known"), "p/known");
        assert_eq!(m.deployment_label("p/made-up-by-a-client"), "p/other");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new(BTreeSet::new(), true);
        m.breaker_state.with(&["p/a\"b\\c"]).set(1);
        assert!(m.render().contains("llm_gateway_breaker_state{deployment=\"p/a\\\"b\\\\c\"} 1\n"));
    }
}
