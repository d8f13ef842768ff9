//! OpenTelemetry traces over OTLP (HTTP/protobuf or gRPC), W3C trace context in and out, and
//! the GenAI semantic-convention attribute names (our own constants: the semconv crate marks
//! every `gen_ai.*` name deprecated since they moved to their own repository).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{OtlpProtocol, OtlpSettings};

/// GenAI semantic-convention attribute names.
pub mod genai {
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const REQUEST_STREAM: &str = "gen_ai.request.stream";
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
}

/// Whether traces are exported, and the share of requests traced (`f64` bits).
static EXPORTING: AtomicBool = AtomicBool::new(false);
static SAMPLE_RATIO: AtomicU64 = AtomicU64::new(0);

/// Called once the exporter is installed: from now on requests are sampled.
pub fn start_sampling(ratio: f64) {
    SAMPLE_RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether a request gets spans. Head sampling, parent first: a client's valid `traceparent`
/// decides by its sampled flag; otherwise the configured ratio does. An unsampled request
/// creates no span at all (that is what makes sampling cheap); nor does any request when no
/// exporter is installed (logs do not carry span context).
pub fn sampled(headers: &http::HeaderMap) -> bool {
    if !EXPORTING.load(Ordering::Relaxed) {
        return false;
    }
    if let Some(flags) = headers.get("traceparent").and_then(|v| parent_flags(v.as_bytes())) {
        return flags & 1 == 1;
    }
    let ratio = f64::from_bits(SAMPLE_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
}

/// The trace flags of a well-formed version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`,
/// ids not all zero).
fn parent_flags(value: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then(|| u8::from_str_radix(flags, 16).ok()).flatten()
}

/// Builds the tracer provider exporting to the configured collector (call inside the runtime).
pub fn provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, String> {
    let exporter = match settings.protocol {
        OtlpProtocol::Http => {
            let endpoint = if settings.endpoint.ends_with("/v1/traces") {
                settings.endpoint.clone()
            } else {
                format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(10))
                .with_headers(settings.headers.iter().cloned().collect::<HashMap<_, _>>())
                .build()
        }
        OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &settings.headers {
                if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                    headers.insert(k, v);
                }
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(Duration::from_secs(10))
                .with_metadata(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers))
                .build()
        }
    }
    .map_err(|e| format!("OTLP exporter: {e}"))?;
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .with_batch_config(
        opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_scheduled_delay(settings.batch_delay)
            .with_max_queue_size(8192)
            .build(),
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(settings.service_name.clone()).build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

/// The tracing layer that turns our spans into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("llm-gateway"))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// Continues the client's trace (W3C `traceparent`) when it sent one.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(cx);
}

/// Puts `span`'s trace context on an upstream request as `traceparent`.
pub fn propagate(span: &tracing::Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// The span's trace id as 32 hex digits, when tracing is on.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Renames a span whose OpenTelemetry span already started (`otel.name` only works before).
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    if !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

#[cfg(test)]
mod tests {
    use super::parent_flags;

    #[test]
    fn reads_the_sampled_flag_of_valid_traceparents_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(parent_flags(format!("00-{id}-00f067aa0ba902b7-01").as_bytes()), Some(1));
        assert_eq!(parent_flags(format!("00-{id}-00f067aa0ba902b7-00").as_bytes()), Some(0));
        for bad in [
            format!("01-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{id}-00F067AA0BA902B7-01"),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            "garbage".to_owned(),
        ] {
            assert_eq!(parent_flags(bad.as_bytes()), None, "{bad}");
        }
    }
}
