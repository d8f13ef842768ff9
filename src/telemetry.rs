//! Telemetry: JSON logs (one line per request, no secrets, no prompt text) and Prometheus
//! metrics.

pub mod metrics;
pub mod tracing_otlp;

use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetrySettings;

use crate::ctx::{Observer, Outcome, RequestCtx};

/// Keeps the trace exporter alive; `shutdown` flushes what is still batched.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs JSON logs (`RUST_LOG` wins over the configured level) and, when configured, the
/// OTLP trace exporter. Call inside the runtime.
pub fn init(level: &str, settings: &TelemetrySettings) -> Result<TelemetryGuard, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stdout)
        .with_filter(filter);
    let provider = match &settings.otlp {
        Some(otlp) => {
            let provider = tracing_otlp::provider(otlp)?;
            tracing_otlp::start_sampling(otlp.sample_ratio);
            Some(provider)
        }
        None => None,
    };
    let spans = provider.as_ref().map(|p| {
        // Spans are exported whatever the log level.
        tracing_otlp::layer(p)
            // Our trace spans, and warnings and errors (span events) — not the per-request info
            // events, which would cost every request (traced or not) a trip through the layer.
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("llm_gateway::trace", tracing::Level::INFO)
                    .with_target("llm_gateway", tracing::Level::WARN),
            )
    });
    let _ = tracing_subscriber::registry().with(logs).with(spans).try_init();
    Ok(TelemetryGuard { provider })
}

/// Writes the one log line each request gets.
pub struct RequestLog;

impl Observer for RequestLog {
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let (team, key_id) = ctx.principal.as_ref().map(|p| (&*p.team, &*p.key_id)).unwrap_or(("", ""));
        let usage = outcome.usage.unwrap_or_default();
        record_span(ctx, outcome);
        tracing::info!(
            target: "llm_gateway::request",
            request_id = %ctx.request_id,
            trace_id = ctx.trace_id.as_deref().unwrap_or(""),
            operation = ctx.endpoint.operation(),
            team,
            key_id,
            model = %ctx.client_model,
            deployment = ctx.deployment.as_deref().unwrap_or(""),
            attempts = ctx.attempts,
            stream = ctx.stream,
            status = outcome.status,
            error = outcome.error.unwrap_or(""),
            latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            ttft_ms = outcome.time_to_first_chunk.map(|d| d.as_secs_f64() * 1000.0),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            usage_reported = outcome.usage.is_some(),
            client_gone = outcome.client_gone,
            cache = ctx.cache.header_value().unwrap_or(""),
            chunks = outcome.chunks,
            "request"
        );
    }
}

/// The server span's closing attributes (GenAI conventions), recorded once the request ended.
fn record_span(ctx: &RequestCtx, outcome: &Outcome) {
    use tracing_otlp::genai;
    let span = &ctx.span;
    if span.is_disabled() {
        return;
    }
    // Integers as i64: the OpenTelemetry layer exports u64 values as strings.
    span.record("http.response.status_code", i64::from(outcome.status));
    span.record("llm_gateway.attempts", i64::from(ctx.attempts));
    if let Some(d) = &ctx.deployment {
        span.record("llm_gateway.deployment", d.as_str());
    }
    if outcome.status < 400 && !ctx.client_model.is_empty() {
        span.record(genai::RESPONSE_MODEL, ctx.client_model.as_str());
    }
    if let Some(usage) = outcome.usage {
        span.record(genai::USAGE_INPUT_TOKENS, i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX));
        span.record(genai::USAGE_OUTPUT_TOKENS, i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX));
    }
    if let Some(reason) = &outcome.finish_reason {
        span.record(genai::RESPONSE_FINISH_REASONS, format!("[\"{reason}\"]").as_str());
    }
    if let Some(label) = outcome.error {
        span.record("error.type", label);
        span.record("otel.status_code", "ERROR");
    }
}
