//! Telemetry: JSON logs (one line per request, no secrets, no prompt text) and Prometheus
//! metrics.

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::ctx::{Observer, Outcome, RequestCtx};

/// Installs the JSON log subscriber. `RUST_LOG` wins over the configured level.
pub fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Writes the one log line each request gets.
pub struct RequestLog;

impl Observer for RequestLog {
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let (team, key_id) = ctx.principal.as_ref().map(|p| (&*p.team, &*p.key_id)).unwrap_or(("", ""));
        let usage = outcome.usage.unwrap_or_default();
        tracing::info!(
            target: "llm_gateway::request",
            request_id = %ctx.request_id,
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
