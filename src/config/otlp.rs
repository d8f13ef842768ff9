//! `telemetry`: the metrics' team label and OpenTelemetry trace export (OTLP), from the config
//! or from the standard `OTEL_*` environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::{ConfigError, Env, raw};

#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    /// Label token metrics with the team.
    pub team_label: bool,
    pub otlp: Option<OtlpSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Http,
    Grpc,
}

#[derive(Clone)]
pub struct OtlpSettings {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// The resource's other attributes (never `service.name`), by key.
    pub resource_attributes: Vec<(String, String)>,
    pub batch_delay: Duration,
    /// Spans per export request.
    pub max_batch_spans: usize,
    /// Spans at most in complete batches waiting for the exporter.
    pub max_queue_spans: usize,
    /// One export, from connecting to the collector's answer.
    pub export_timeout: Duration,
    /// The share of requests without a client trace decision that are traced.
    pub sample_ratio: f64,
}

impl fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // Header values are usually credentials.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field("batch_delay", &self.batch_delay)
            .field("max_batch_spans", &self.max_batch_spans)
            .field("max_queue_spans", &self.max_queue_spans)
            .field("export_timeout", &self.export_timeout)
            .field("sample_ratio", &self.sample_ratio)
            .finish()
    }
}

/// Spans per export request unless configured: four times the OpenTelemetry SDK's 512. An
/// export costs the gateway and the collector a request each (a system call, an HTTP exchange, a
/// wake-up) whatever its size; 2,048 spans (~600 KB) is still far below a collector's limits.
pub const DEFAULT_MAX_BATCH_SPANS: usize = 2048;
/// Spans waiting in complete batches unless configured: this many, or 16 batches when more.
pub const DEFAULT_MAX_QUEUE_SPANS: usize = 32_768;
/// The largest batch accepted (a few MB of protobuf: collectors refuse larger requests).
const MAX_BATCH_SPANS_LIMIT: usize = 16_384;

/// OTLP from the config, else from the standard `OTEL_EXPORTER_OTLP_*` variables;
/// `OTEL_SDK_DISABLED=true` turns it off either way.
pub(super) fn otlp_settings(raw: Option<&raw::RawOtlp>, env: &dyn Env) -> Result<Option<OtlpSettings>, ConfigError> {
    if env.var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let endpoint = match raw {
        Some(r) => r.endpoint.clone(),
        None => {
            match env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env.var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                Some(e) => e,
                None => return Ok(None),
            }
        }
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(ConfigError(format!("telemetry.otlp.endpoint: {endpoint:?} must start with http:// or https://")));
    }
    let protocol = otlp_protocol(raw, env)?;
    let headers = otlp_headers(raw, env)?;
    let (service_name, resource_attributes) = resource(raw, env)?;
    let batch = batch_settings(raw, env)?;
    let sample_ratio = sample_ratio(raw, env)?;
    Ok(Some(OtlpSettings {
        endpoint,
        protocol,
        headers,
        service_name,
        resource_attributes,
        batch_delay: batch.delay,
        max_batch_spans: batch.max_batch_spans,
        max_queue_spans: batch.max_queue_spans,
        export_timeout: batch.export_timeout,
        sample_ratio,
    }))
}

/// The export protocol: the config's, else `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, else http.
fn otlp_protocol(raw: Option<&raw::RawOtlp>, env: &dyn Env) -> Result<OtlpProtocol, ConfigError> {
    let protocol_name = raw
        .and_then(|r| r.protocol.clone())
        .or_else(|| env.var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| env.var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http".into());
    let protocol = match protocol_name.as_str() {
        "http" | "http/protobuf" => OtlpProtocol::Http,
        "grpc" => OtlpProtocol::Grpc,
        other => {
            return Err(ConfigError(format!(
                "telemetry.otlp.protocol: unknown protocol {other:?} (expected http or grpc)"
            )));
        }
    };
    Ok(protocol)
}

/// Export headers: `OTEL_EXPORTER_OTLP_HEADERS`, then the config's (`${VAR}` read from the
/// environment).
fn otlp_headers(raw: Option<&raw::RawOtlp>, env: &dyn Env) -> Result<Vec<(String, String)>, ConfigError> {
    let mut headers = match env.var("OTEL_EXPORTER_OTLP_HEADERS") {
        Some(list) => otel_pairs("OTEL_EXPORTER_OTLP_HEADERS", &list)?,
        None => Vec::new(),
    };
    if let Some(r) = raw {
        for (k, v) in &r.headers {
            let value = match v.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(var) => env.var(var).ok_or_else(|| {
                    ConfigError(format!("telemetry.otlp.headers.{k}: environment variable {var} is not set"))
                })?,
                None => v.clone(),
            };
            headers.push((k.clone(), value));
        }
    }
    Ok(headers)
}

/// `service.name` and the other resource attributes.
fn resource(raw: Option<&raw::RawOtlp>, env: &dyn Env) -> Result<(String, Vec<(String, String)>), ConfigError> {
    // The resource: `OTEL_RESOURCE_ATTRIBUTES`, then the config's (the same key: the config's wins).
    let mut resource: BTreeMap<String, String> = match env.var("OTEL_RESOURCE_ATTRIBUTES") {
        Some(list) => otel_pairs("OTEL_RESOURCE_ATTRIBUTES", &list)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    if let Some(r) = raw {
        resource.extend(r.resource_attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    // `service.name`: the config's key, `OTEL_SERVICE_NAME`, or one of the resource attributes.
    let named = resource.remove("service.name");
    let service_name = raw
        .and_then(|r| r.service_name.clone())
        .or_else(|| env.var("OTEL_SERVICE_NAME"))
        .or(named)
        .unwrap_or_else(|| "llm-gateway".into());
    Ok((service_name, resource.into_iter().collect()))
}

/// The batch processor's settings.
struct BatchSettings {
    delay: Duration,
    export_timeout: Duration,
    max_batch_spans: usize,
    max_queue_spans: usize,
}

fn batch_settings(raw: Option<&raw::RawOtlp>, env: &dyn Env) -> Result<BatchSettings, ConfigError> {
    // The batch processor's settings: the config's, else the standard `OTEL_BSP_*` variables
    // (milliseconds and span counts), else our defaults.
    let env_number = |name: &str| -> Result<Option<u64>, ConfigError> {
        env.var(name)
            .map(|v| v.trim().parse().map_err(|_| ConfigError(format!("{name}: {v:?} is not a whole number"))))
            .transpose()
    };
    let env_millis = |name: &str| env_number(name).map(|ms| ms.map(Duration::from_millis));
    let env_count = |name: &str| env_number(name).map(|n| n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)));
    let batch_delay = match raw.and_then(|r| r.batch_delay) {
        Some(delay) => delay,
        None => env_millis("OTEL_BSP_SCHEDULE_DELAY")?.unwrap_or(Duration::from_secs(5)),
    };
    let export_timeout = match raw.and_then(|r| r.export_timeout) {
        Some(timeout) => timeout,
        None => env_millis("OTEL_BSP_EXPORT_TIMEOUT")?.unwrap_or(Duration::from_secs(10)),
    };
    if export_timeout.is_zero() {
        return Err(ConfigError("telemetry.otlp.export_timeout: must be more than 0".into()));
    }
    let max_batch_spans = match raw.and_then(|r| r.max_export_batch_size) {
        Some(n) => n,
        None => env_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?.unwrap_or(DEFAULT_MAX_BATCH_SPANS),
    };
    if !(1..=MAX_BATCH_SPANS_LIMIT).contains(&max_batch_spans) {
        return Err(ConfigError(format!(
            "telemetry.otlp.max_export_batch_size: {max_batch_spans} is not between 1 and {MAX_BATCH_SPANS_LIMIT}"
        )));
    }
    let max_queue_spans = match raw.and_then(|r| r.max_queue_size) {
        Some(n) => n,
        None => env_count("OTEL_BSP_MAX_QUEUE_SIZE")?.unwrap_or(DEFAULT_MAX_QUEUE_SPANS.max(16 * max_batch_spans)),
    };
    if max_queue_spans < max_batch_spans {
        return Err(ConfigError(format!(
            "telemetry.otlp.max_queue_size: {max_queue_spans} spans cannot hold one batch of max_export_batch_size \
             {max_batch_spans}"
        )));
    }
    Ok(BatchSettings { delay: batch_delay, export_timeout, max_batch_spans, max_queue_spans })
}

/// The share of traces sampled: the config's, else the standard `OTEL_TRACES_SAMPLER[_ARG]`.
fn sample_ratio(raw: Option<&raw::RawOtlp>, env: &dyn Env) -> Result<f64, ConfigError> {
    let sample_ratio = match raw.and_then(|r| r.sample_ratio) {
        Some(ratio) => ratio,
        // The standard sampler variables, for the ratio samplers and the two constant ones.
        None => match env.var("OTEL_TRACES_SAMPLER").as_deref() {
            Some("always_off" | "parentbased_always_off") => 0.0,
            Some("traceidratio" | "parentbased_traceidratio") => {
                let arg = env.var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|| "1".into());
                arg.trim().parse().map_err(|_| {
                    ConfigError(format!("OTEL_TRACES_SAMPLER_ARG: {arg:?} is not a number between 0 and 1"))
                })?
            }
            _ => 1.0,
        },
    };
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(ConfigError(format!("telemetry.otlp.sample_ratio: {sample_ratio} is not between 0 and 1")));
    }
    Ok(sample_ratio)
}

/// The list format of `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES` (variable
/// `name`): `key=value` pairs separated by commas, values percent-encoded (the W3C Baggage octet
/// format the specification names: `Authorization=Basic%20...`). Spaces around keys and values
/// are ignored; an empty list is no pairs. In order (a key given twice: the last one counts).
fn otel_pairs(name: &str, list: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let invalid = |why: String| ConfigError(format!("{name}: {why}"));
    let mut out = Vec::new();
    for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| invalid(format!("{:?} is not key=value", pair.trim())))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(format!("{:?} has no key", pair.trim())));
        }
        let value = percent_decoded(value.trim())
            .ok_or_else(|| invalid(format!("the value of {key:?} is not valid percent-encoded UTF-8")))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// `%XX` escapes decoded (the rest as is); `None` for a broken escape or bytes that are not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}
