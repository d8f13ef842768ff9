//! Per-request state, filled in stage by stage and read by the end-of-request observers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Usage;
use crate::auth::Principal;

/// Which operation a request is: OpenAI's three, or Anthropic's Messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's `POST /v1/messages`: Anthropic's request, response and error shapes.
    Messages,
}

impl Endpoint {
    /// The path below an OpenAI-compatible provider's base URL (`Messages`: below Anthropic's).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Messages => "/v1/messages",
        }
    }

    /// Whether the client speaks Anthropic (errors and streams in Anthropic's shapes).
    pub fn is_anthropic(self) -> bool {
        self == Self::Messages
    }

    /// The GenAI operation name (`gen_ai.operation.name`), also used as a log field.
    pub fn operation(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages => "chat",
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
}

/// How a request ended, as reported once to the observers.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    /// `None` for success, else a short error label.
    pub error: Option<&'static str>,
    pub usage: Option<Usage>,
    pub time_to_first_chunk: Option<Duration>,
    /// The client went away before the end of a stream.
    pub client_gone: bool,
    pub chunks: u32,
}

impl Outcome {
    pub fn failed(status: u16, label: &'static str) -> Self {
        Self { status, error: Some(label), usage: None, time_to_first_chunk: None, client_gone: false, chunks: 0 }
    }
}

/// Something that wants to know how each request ended (logs now; limits, cache and metering
/// later). Wired in `app`; the stages that produce outcomes do not know who listens.
pub trait Observer: Send + Sync {
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome);
}
