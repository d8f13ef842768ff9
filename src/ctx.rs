//! Per-request state, filled in stage by stage and read by the end-of-request observers.

pub mod principal;

pub use principal::{Grant, Principal};

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::Usage;
use crate::error::GatewayError;

/// The header a request's id travels in, to the client and to the upstream.
pub const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// `req_` and 32 random hex digits.
pub fn new_request_id() -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_00000000000000000000000000000000";
    let mut bits = fastrand::u128(..);
    for digit in id[4..].iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    Arc::from(std::str::from_utf8(&id).unwrap_or_default())
}

/// Which operation a request is: OpenAI's three, or Anthropic's Messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's `POST /v1/messages`: Anthropic's request, response and error shapes.
    Messages,
    /// OpenAI's `POST /v1/responses`: bridged through chat, or passed through to an upstream
    /// that serves it.
    Responses,
}

impl Endpoint {
    /// The path below an OpenAI-compatible provider's base URL (`Messages`: below Anthropic's).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Messages => "/v1/messages",
            Self::Responses => "/responses",
        }
    }

    /// Whether the client speaks Anthropic (errors and streams in Anthropic's shapes).
    pub fn is_anthropic(self) -> bool {
        self == Self::Messages
    }

    /// The GenAI operation name (`gen_ai.operation.name`), also used as a log field.
    pub fn operation(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages | Self::Responses => "chat",
            Self::Completions => "text_completion",
            Self::Embeddings => "embeddings",
        }
    }
}

#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: Arc<str>,
    pub started: Instant,
    pub endpoint: Endpoint,
    pub principal: Option<Principal>,
    /// The model name the client sent (and sees in every response).
    pub client_model: String,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// The deployment that served (or last failed) the request, `provider/model`.
    pub deployment: Option<String>,
    /// That deployment's price (resolved when the config was built).
    pub priced: Option<crate::config::price::Priced>,
    pub attempts: u32,
    /// The request's spans (nothing when it is not traced); the trace ends, and is queued for
    /// export, when the ctx drops.
    pub trace: crate::telemetry::trace::Trace,
    /// The request body as received (shared, not copied), for counting the prompt locally when
    /// the upstream reports no usage.
    pub body: Bytes,
    /// What the cache did (a hit is metered as cached, with the stored usage).
    pub cache: CacheStatus,
    /// What the limits stage reserved for this request (settled when it ends).
    pub reservation: Option<crate::limits::Reservation>,
    /// The client's query string (Claude Code's `?beta=true`), passed on verbatim to an upstream
    /// of the client's own dialect.
    pub query: Option<Box<str>>,
    /// Who sent the request, for the request log.
    pub client: Client,
}

/// The sender of a request as the request log records it: the connection's peer address and
/// the `User-Agent` header (shared with the request's headers, not copied).
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub addr: Option<std::net::IpAddr>,
    pub user_agent: Option<http::HeaderValue>,
}

impl Client {
    pub fn of(addr: Option<std::net::IpAddr>, headers: &http::HeaderMap) -> Self {
        Client { addr, user_agent: headers.get(http::header::USER_AGENT).cloned() }
    }
}

/// The cache's part in a request, as the client sees it in `x-llm-gateway-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CacheStatus {
    /// No cache configured (no header).
    #[default]
    Off,
    /// Not looked up: opted out, refreshed, or not cacheable.
    Bypass,
    Miss,
    Hit,
    SemanticHit {
        similarity: f32,
    },
}

impl CacheStatus {
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Self::Off => None,
            Self::Bypass => Some("bypass"),
            Self::Miss => Some("miss"),
            Self::Hit => Some("hit"),
            Self::SemanticHit { .. } => Some("semantic-hit"),
        }
    }

    /// Answered from the cache: no upstream was called.
    pub fn is_hit(self) -> bool {
        matches!(self, Self::Hit | Self::SemanticHit { .. })
    }
}

/// Upper bounds (seconds) of the inter-chunk gap buckets.
pub const GAP_BOUNDS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The gaps between consecutive chunks of one stream, bucketed as they happen (bounded memory
/// however long the stream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkGaps {
    /// Counts per `GAP_BOUNDS` bucket (not cumulative); gaps above the last bound only count.
    pub buckets: [u64; GAP_BOUNDS.len()],
    pub count: u64,
    pub sum: Duration,
}

impl ChunkGaps {
    pub fn record(&mut self, gap: Duration) {
        let secs = gap.as_secs_f64();
        if let Some(i) = GAP_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += gap;
    }
}

/// How a request ended, as reported once to the observers.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    /// `None` for success, else a short error label.
    pub error: Option<&'static str>,
    pub usage: Option<Usage>,
    /// `usage` is what the upstream reported before the stream ended, not its final count (an
    /// Anthropic stream cut between `message_start` and `message_delta`): its input counts are
    /// exact, its output is counted locally from `generated`.
    pub usage_partial: bool,
    pub time_to_first_chunk: Option<Duration>,
    /// Gaps between streamed chunks (streams only).
    pub gaps: Option<ChunkGaps>,
    /// The upstream's finish reason of the (first) choice, when it gave one.
    pub finish_reason: Option<String>,
    /// The client went away before the end of a stream.
    pub client_gone: bool,
    pub chunks: u32,
    /// What the upstream generated, kept raw for local counting when `usage` is `None` or partial.
    pub generated: Option<Generated>,
    /// The answer was replayed from the gateway's cache (`usage` is the stored answer's).
    pub cached: bool,
}

/// Upper bound of the raw generated fragments kept per request; beyond it only the byte count
/// grows and a local count extrapolates.
pub const MAX_GENERATED_BYTES: usize = 1 << 20;

/// What an upstream generated, captured cheaply (raw dialect fragments, bounded) as it passed
/// through, and turned into text only when it must be counted locally. The dialect that captured
/// the fragments supplies `text`, so nothing downstream needs to know the dialect.
#[derive(Debug, Clone)]
pub struct Generated {
    pub fragments: Bytes,
    /// Fragment bytes seen past `MAX_GENERATED_BYTES` (not kept).
    pub overflow_bytes: u64,
    /// Extracts the generated text from `fragments`.
    pub text: fn(&[u8]) -> String,
}

/// The text of fragments captured as plain UTF-8, back to back (a rewriter that already holds
/// the decoded strings captures those).
pub fn utf8_text(fragments: &[u8]) -> String {
    String::from_utf8_lossy(fragments).into_owned()
}

/// Where a stream rewriter keeps what the upstream generated: whole fragments appended while
/// under `MAX_GENERATED_BYTES` (no allocation beyond the buffer's growth), then only their size.
#[derive(Debug, Default)]
pub struct Capture {
    kept: BytesMut,
    overflow_bytes: u64,
}

impl Capture {
    /// Keeps `fragment` as is (fragments of plain text, read back by `utf8_text`).
    pub fn push(&mut self, fragment: &[u8]) {
        self.keep(fragment, b"");
    }

    /// Keeps `fragment` and a newline (one JSON value per line).
    pub fn push_line(&mut self, fragment: &[u8]) {
        self.keep(fragment, b"\n");
    }

    fn keep(&mut self, fragment: &[u8], separator: &[u8]) {
        if fragment.is_empty() {
            return;
        }
        if self.kept.len() + fragment.len() < MAX_GENERATED_BYTES {
            self.kept.put_slice(fragment);
            self.kept.put_slice(separator);
        } else {
            self.overflow_bytes += fragment.len() as u64;
        }
    }

    /// Hands what was kept over for counting, with the extractor that reads it back.
    pub fn take(&mut self, text: fn(&[u8]) -> String) -> Generated {
        Generated { fragments: std::mem::take(&mut self.kept).freeze(), overflow_bytes: self.overflow_bytes, text }
    }
}

impl Outcome {
    pub fn failed(status: u16, label: &'static str) -> Self {
        Self {
            status,
            error: Some(label),
            usage: None,
            usage_partial: false,
            time_to_first_chunk: None,
            gaps: None,
            finish_reason: None,
            client_gone: false,
            chunks: 0,
            generated: None,
            cached: false,
        }
    }
}

impl Outcome {
    /// Whether what the request used must be counted by the gateway: it reached an upstream,
    /// which reported no usage (a stream cut short, a client gone before the answer, an upstream
    /// that never reports it) or only part of it. The limits' settlement and metering then both
    /// charge the same local count (`LocalCount`).
    pub fn counted_locally(&self, ctx: &RequestCtx) -> bool {
        if self.cached || ctx.deployment.is_none() {
            return false;
        }
        self.usage_partial || (self.usage.is_none() && (self.status == 200 || self.client_gone))
    }
}

/// Counts what a request used when its upstream did not say: the prompt from the request body,
/// the output from what was relayed — never below what the upstream did report (`reported`, a
/// partial usage). One implementation serves the limits and metering, so both charge a request
/// the same tokens.
pub trait LocalCount: Send + Sync {
    fn usage(
        &self,
        deployment: &str,
        endpoint: Endpoint,
        body: &Bytes,
        generated: Option<&Generated>,
        reported: Option<&Usage>,
    ) -> Usage;
}

/// Something that wants to know how each request ended (logs, metrics, limits settlement; cache
/// and metering later). Wired in `app`; the stages that produce outcomes do not know who listens.
pub trait Observer: Send + Sync {
    /// The request arrived (called once, before any stage ran).
    fn started(&self, _ctx: &RequestCtx) {}
    /// Whether the request may go upstream (called once, after authentication): an observer
    /// that could not record its outcome (metering with a full outbox) refuses it.
    fn admit(&self, _ctx: &RequestCtx) -> Result<(), GatewayError> {
        Ok(())
    }
    /// One upstream attempt ended: `outcome` is `ok`, or a short error label; `first_byte` is
    /// how long the deployment took to answer, when it did.
    fn attempted(&self, _ctx: &RequestCtx, _deployment: &str, _outcome: &'static str, _first_byte: Option<Duration>) {}
    /// The request ended (called exactly once, after the last byte or on error).
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome);
}
