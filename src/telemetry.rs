//! Telemetry: JSON logs (one line per request, no secrets, no prompt text), Prometheus
//! metrics, and OTLP traces (`trace`).

pub mod metrics;
pub mod trace;

use std::time::Duration;

use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetrySettings;

use crate::ctx::{Observer, Outcome, RequestCtx};

/// How long a graceful shutdown waits for the last trace export.
const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// Keeps the trace exporter running; `shutdown` exports what is still batched.
pub struct TelemetryGuard {
    traces: Option<trace::export::Running>,
}

impl TelemetryGuard {
    /// Stops tracing new requests and exports every serving thread's batch.
    pub async fn shutdown(&mut self) {
        if let Some(traces) = self.traces.take() {
            trace::stop_sampling();
            traces.shutdown(TRACE_FLUSH_TIMEOUT).await;
        }
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
    let _ = tracing_subscriber::registry().with(logs).try_init();
    let traces = settings.otlp.as_ref().map(trace::install).transpose()?;
    Ok(TelemetryGuard { traces })
}

/// Writes the one log line each request gets.
pub struct RequestLog;

impl Observer for RequestLog {
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let (team, key_id) = ctx.principal.as_ref().map(|p| (&*p.team, &*p.key_id)).unwrap_or(("", ""));
        let usage = outcome.usage.unwrap_or_default();
        // (The trace id's hex only when the line is written: at `warn`, it is not.)
        let logged = tracing::enabled!(target: "llm_gateway::request", tracing::Level::INFO);
        let trace_id = record_span(ctx, outcome, logged);
        tracing::info!(
            target: "llm_gateway::request",
            request_id = %ctx.request_id,
            trace_id = trace_id.as_ref().map_or("", trace::TraceIdHex::as_str),
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

/// Names the server span and records its attributes (GenAI conventions) once the request has
/// ended, all from the request's context and outcome: one run of attributes, written in one
/// place. Returns the trace id of a traced request when `want_id`.
fn record_span(ctx: &RequestCtx, outcome: &Outcome, want_id: bool) -> Option<trace::TraceIdHex> {
    use trace::{SpanRef, genai, keys};
    let mut r = ctx.trace.lock()?;
    let server = SpanRef::SERVER;
    let operation = ctx.endpoint.operation();
    // The model is known once the request's body was read (an empty name is refused then).
    let parsed = !ctx.client_model.is_empty();
    if parsed {
        r.rename(server, &[operation, " ", &ctx.client_model]);
    }
    let mut a = r.attributes(server);
    a.str(&genai::OPERATION_NAME, operation).str(&keys::REQUEST_ID, &ctx.request_id);
    if parsed {
        a.str(&genai::REQUEST_MODEL, &ctx.client_model).bool(&genai::REQUEST_STREAM, ctx.stream);
    }
    if let Some(principal) = &ctx.principal {
        a.str(&keys::TEAM, &principal.team);
    }
    a.int(&keys::HTTP_STATUS, i64::from(outcome.status)).int(&keys::ATTEMPTS, i64::from(ctx.attempts));
    if let Some(d) = &ctx.deployment {
        a.str(&keys::DEPLOYMENT, d);
    }
    if outcome.status < 400 && parsed {
        a.str(&genai::RESPONSE_MODEL, &ctx.client_model);
    }
    if let Some(usage) = outcome.usage {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        a.int(&genai::USAGE_INPUT_TOKENS, int(usage.prompt_tokens))
            .int(&genai::USAGE_OUTPUT_TOKENS, int(usage.completion_tokens));
    }
    if let Some(reason) = &outcome.finish_reason {
        a.strs(&genai::RESPONSE_FINISH_REASONS, &[reason]);
    }
    if let Some(label) = outcome.error {
        a.str(&keys::ERROR_TYPE, label);
    }
    drop(a);
    if outcome.error.is_some() {
        r.set_error(server);
    }
    want_id.then(|| r.trace_id_hex())
}
