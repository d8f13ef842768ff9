//! Per-request state, filled in stage by stage and read by the end-of-request observers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Usage;
use crate::auth::Principal;

/// Which OpenAI operation a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The path below the provider's base URL.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    /// The GenAI operation name (`gen_ai.operation.name`), also used as a log field.
    pub fn operation(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
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
    pub attempts: u32,
    /// What the limits stage reserved for this request (settled when it ends).
    pub reservation: Option<crate::limits::Reservation>,
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
    pub time_to_first_chunk: Option<Duration>,
    /// Gaps between streamed chunks (streams only).
    pub gaps: Option<ChunkGaps>,
    /// The client went away before the end of a stream.
    pub client_gone: bool,
    pub chunks: u32,
}

impl Outcome {
    pub fn failed(status: u16, label: &'static str) -> Self {
        Self {
            status,
            error: Some(label),
            usage: None,
            time_to_first_chunk: None,
            gaps: None,
            client_gone: false,
            chunks: 0,
        }
    }
}

/// Something that wants to know how each request ended (logs, metrics, limits settlement; cache
/// and metering later). Wired in `app`; the stages that produce outcomes do not know who listens.
pub trait Observer: Send + Sync {
    /// The request arrived (called once, before any stage ran).
    fn started(&self, _ctx: &RequestCtx) {}
    /// One upstream attempt ended: `outcome` is `ok`, or a short error label; `first_byte` is
    /// how long the deployment took to answer, when it did.
    fn attempted(&self, _ctx: &RequestCtx, _deployment: &str, _outcome: &str, _first_byte: Option<Duration>) {}
    /// The request ended (called exactly once, after the last byte or on error).
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome);
}
