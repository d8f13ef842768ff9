//! One request as a row: what the observer copies off the request (cheap clones), and the JSON
//! line the writer thread makes of it, whose keys are the table's column names (the sender
//! turns lines into rows with `jsonb_populate_record`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use crate::api::Usage;
use crate::config::request_log::Capture;
use crate::ctx::{CacheStatus, Endpoint, Generated, Outcome, RequestCtx};

/// What the writer thread needs of a finished request.
#[derive(Debug)]
pub struct Finished {
    pub unix_ms: u64,
    pub request_id: Arc<str>,
    pub trace_id: Option<String>,
    pub team: Option<Arc<str>>,
    pub key_id: Option<Arc<str>>,
    pub subject: Option<Arc<str>>,
    pub endpoint: Endpoint,
    pub model: String,
    pub deployment: Option<String>,
    pub attempts: u32,
    pub status: u16,
    pub error: Option<&'static str>,
    pub stream: bool,
    pub client_gone: bool,
    pub cache: CacheStatus,
    pub usage: Option<Usage>,
    /// In nano-units of `spend.currency` (0 for a cache hit); `None` without usage.
    pub cost_nanos: Option<u64>,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub client: crate::ctx::Client,
    /// `capture: full` only.
    pub bodies: Option<(Bytes, Option<Generated>)>,
    /// A request the upstream gave no (complete) usage for — a stream cut before it: what the
    /// writer thread counts its tokens from, as limits and metering do, and its price.
    pub count_locally: Option<LocalCount>,
}

/// The prompt and what was relayed, for a count of a request's tokens off the serving threads.
#[derive(Debug)]
pub struct LocalCount {
    pub body: Bytes,
    pub generated: Option<Generated>,
    pub priced: Option<crate::config::price::Priced>,
}

impl Finished {
    pub fn new(ctx: &RequestCtx, outcome: &Outcome, bodies: bool) -> Self {
        let latency = ctx.started.elapsed();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let trace_id = ctx.trace.lock().map(|r| r.trace_id_hex().as_str().to_owned());
        Finished {
            // The row's time is when the request arrived.
            unix_ms: now.saturating_sub(latency).as_millis() as u64,
            request_id: ctx.request_id.clone(),
            trace_id,
            team: ctx.principal.as_ref().map(|p| p.team.clone()),
            key_id: ctx.principal.as_ref().map(|p| p.key_id.clone()),
            // A token's subject (`u:` + a hash of the identity provider's user id).
            subject: ctx.principal.as_ref().map(|p| p.grant.subject.clone()).filter(|s| s.starts_with("u:")),
            endpoint: ctx.endpoint,
            model: ctx.client_model.clone(),
            deployment: ctx.deployment.clone(),
            attempts: ctx.attempts,
            status: outcome.status,
            error: outcome.error,
            stream: ctx.stream,
            client_gone: outcome.client_gone,
            cache: ctx.cache,
            usage: outcome.usage,
            cost_nanos: None,
            latency,
            ttft: outcome.time_to_first_chunk,
            client: ctx.client.clone(),
            bodies: bodies.then(|| (ctx.body.clone(), outcome.generated.clone())),
            count_locally: outcome.counted_locally(ctx).then(|| LocalCount {
                body: ctx.body.clone(),
                generated: outcome.generated.clone(),
                priced: ctx.priced,
            }),
        }
    }
}

/// The line: every key a column of `requests`.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    trace_id: Option<&'a str>,
    team: Option<&'a str>,
    key_id: Option<&'a str>,
    subject: Option<&'a str>,
    endpoint: &'static str,
    model: &'a str,
    deployment: Option<&'a str>,
    attempts: u32,
    status: u16,
    error: Option<&'a str>,
    stream: bool,
    cache: Option<&'static str>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    cost_nanodollars: Option<u64>,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    client_addr: Option<std::net::IpAddr>,
    user_agent: Option<String>,
    request_body: Option<String>,
    response_body: Option<String>,
}

pub fn endpoint_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "/v1/chat/completions",
        Endpoint::Completions => "/v1/completions",
        Endpoint::Embeddings => "/v1/embeddings",
        Endpoint::Messages => "/v1/messages",
        Endpoint::Responses => "/v1/responses",
    }
}

/// Appends `finished` as one JSON line (bodies redacted and cut under `capture: full`).
pub fn write_line(finished: &Finished, capture: &Capture, out: &mut Vec<u8>) {
    let (request_body, response_body) = match (&finished.bodies, capture) {
        (Some((body, generated)), Capture::Full { redact, max_body_bytes }) => {
            let request = redacted(&String::from_utf8_lossy(body), redact, *max_body_bytes);
            let response = generated.as_ref().map(|g| redacted(&(g.text)(&g.fragments), redact, *max_body_bytes));
            (Some(request), response)
        }
        _ => (None, None),
    };
    let usage = finished.usage.as_ref();
    let ms = |d: Duration| (d.as_micros() as f64) / 1000.0;
    let error = match (finished.error, finished.client_gone) {
        (None, true) => Some("client_gone"),
        (error, _) => error,
    };
    let model = finished.model.replace('\0', "");
    let line = Line {
        time: crate::metering::event::rfc3339_millis(finished.unix_ms),
        request_id: &finished.request_id,
        trace_id: finished.trace_id.as_deref(),
        team: finished.team.as_deref(),
        key_id: finished.key_id.as_deref(),
        subject: finished.subject.as_deref(),
        endpoint: endpoint_name(finished.endpoint),
        model: &model,
        deployment: finished.deployment.as_deref(),
        attempts: finished.attempts,
        status: finished.status,
        error,
        stream: finished.stream,
        cache: finished.cache.header_value(),
        input_tokens: usage.map(|u| u.prompt_tokens),
        output_tokens: usage.map(|u| u.completion_tokens),
        cached_tokens: usage.map(|u| u.prompt_tokens_details.map(|d| d.cached_tokens).unwrap_or(0)),
        cache_write_tokens: usage.map(|u| u.prompt_tokens_details.map(|d| d.cache_write_tokens).unwrap_or(0)),
        reasoning_tokens: usage.map(|u| u.completion_tokens_details.map(|d| d.reasoning_tokens).unwrap_or(0)),
        cost_nanodollars: finished.cost_nanos,
        latency_ms: ms(finished.latency),
        ttft_ms: finished.ttft.map(ms),
        client_addr: finished.client.addr,
        // PostgreSQL's text takes no NUL (a header value has none, but a lossy decode is cheap).
        user_agent: finished
            .client
            .user_agent
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).replace('\0', "")),
        request_body,
        response_body,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// `text` cut to `max` bytes, every match of `patterns` replaced by `[REDACTED]`, cut again (a
/// replacement may lengthen it). Cutting first bounds the work; a secret cut in two by it leaves
/// a prefix that no longer matches, and is not kept whole.
pub fn redacted(text: &str, patterns: &[regex::Regex], max: usize) -> String {
    // PostgreSQL's text and jsonb take no NUL character.
    let mut text = cut(text, max).replace('\0', "");
    for pattern in patterns {
        if pattern.is_match(&text) {
            text = pattern.replace_all(&text, "[REDACTED]").into_owned();
        }
    }
    cut(&text, max).to_owned()
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Appends JSON `lines` (each without its `\n`) as the data of `COPY … FROM STDIN` in text
/// format: one column per line, a backslash doubled (JSON escapes every other character text
/// format treats specially: tabs, newlines, carriage returns).
pub fn copy_text<'a>(lines: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for line in lines {
        for &b in line {
            if b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'\n');
    }
}

/// The UTC day (`YYYY-MM-DD`) of a line's `time`, which the line begins with.
pub fn day_of(line: &[u8]) -> Option<&str> {
    const PREFIX: &[u8] = b"{\"time\":\"";
    let day = line.strip_prefix(PREFIX)?.get(..10)?;
    std::str::from_utf8(day).ok()
}
