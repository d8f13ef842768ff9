//! Adapters: one pure translator per wire dialect. Each turns the client's request into the
//! upstream's, and the upstream's answer — whole, or event by event through a `ChunkRewriter`
//! — back into the client's dialect. `Exchange` picks the translation for one (client endpoint,
//! upstream dialect) pair.

pub mod anthropic;
pub mod bedrock;
mod capture;
pub mod cloud;
pub mod gemini;
pub mod openai;
pub mod responses;

use crate::api::RawObject;
use crate::config::{DeploymentSpec, Dialect, StreamUsage};
use crate::ctx::Endpoint;

/// The stream translation every dialect implements, event by event. The relay (`stream`) that
/// drives it declares it, since it may not know the dialects; it is named here, beside them.
pub use crate::stream::{ChunkRewriter, Step};

/// A request the chosen upstream dialect cannot express: the client's to fix (a 400 naming
/// the field).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Untranslatable {
    pub message: String,
    pub param: Option<String>,
}

impl Untranslatable {
    pub fn new(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self { message: message.into(), param: Some(param.into()) }
    }
}

/// How one attempt's answer is turned back into the client's dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Translation {
    /// OpenAI client, OpenAI-compatible upstream (or the mock, or a CLI): model name and usage only.
    OpenAi { hide_usage: bool },
    /// OpenAI chat client, Claude upstream.
    ChatOnClaude { include_usage: bool },
    /// Anthropic client, Claude upstream: passed through.
    MessagesOnClaude,
    /// Anthropic client, OpenAI-compatible upstream (or the mock, or a CLI).
    MessagesOnOpenAi,
    /// OpenAI chat, Anthropic or Responses client, a cloud platform (Gemini, Vertex, Bedrock).
    Cloud(Box<cloud::CloudExchange>),
    /// Responses client, chat-completions upstream (OpenAI-compatible, the mock, a CLI).
    ResponsesOnChat,
    /// Responses client, Claude upstream: through the chat translation both ways.
    ResponsesOnClaude,
    /// Responses client, an upstream serving `/responses` itself: passed through.
    ResponsesNative,
}

/// One attempt's upstream request and the translation of its answer.
#[derive(Debug)]
pub struct Exchange {
    /// The operation the upstream performs (what the mock answers, and its path).
    pub upstream_endpoint: Endpoint,
    /// The path below the provider's base URL.
    pub path: &'static str,
    pub body: Vec<u8>,
    translation: Translation,
    created: u64,
    /// A Responses client's bridge: the response's envelope, the tools' names, what keeps it.
    bridge: Option<responses::Bridge>,
    /// What keeps a natively served response.
    keep: responses::native::Kept,
}

impl Exchange {
    /// Builds the upstream request for `deployment` from the client's parsed body. (Long: one
    /// arm per client endpoint and upstream dialect, the table of translations, read best whole.)
    pub fn prepare(
        endpoint: Endpoint,
        request: &RawObject,
        deployment: &DeploymentSpec,
        stream: bool,
        client_wants_usage: bool,
        created: u64,
    ) -> Result<Self, Untranslatable> {
        let provider = &deployment.provider;
        let model = deployment.model.as_str();
        let json_error = |e: serde_json::Error| Untranslatable::new(format!("Invalid request body: {e}"), "model");
        // Claude on Vertex AI (`rawPredict`) and on Bedrock's InvokeModel speaks the Messages
        // API: Anthropic's translations.
        let vertex_claude = cloud::is_vertex_claude(provider.dialect, model);
        let bedrock_claude = cloud::is_bedrock_invoke(deployment) && endpoint != Endpoint::Embeddings;
        let dialect = if vertex_claude || bedrock_claude { Dialect::Anthropic } else { provider.dialect };
        let mut bridge = None;
        let (upstream_endpoint, path, body, translation) = match (endpoint, dialect) {
            (Endpoint::Responses, dialect) if dialect.is_cloud() => {
                // Through chat: Responses → chat → the platform, and back the same way.
                let (chat, b) = responses::Bridge::prepare(request, model, true, created)?;
                let chat = RawObject::from_slice(&chat).map_err(json_error)?;
                let (body, cloud) =
                    cloud::prepare(Endpoint::ChatCompletions, &chat, deployment, stream, true, created)?;
                bridge = Some(b);
                (Endpoint::ChatCompletions, "", body, Translation::Cloud(Box::new(cloud)))
            }
            (Endpoint::Embeddings, dialect) if dialect.is_cloud() => {
                // The transport makes the platform's calls and answers in OpenAI's shape.
                let body = cloud::embed::prepare(request, provider, model)?;
                (endpoint, "", body, Translation::OpenAi { hide_usage: false })
            }
            (_, dialect) if dialect.is_cloud() => {
                let (body, cloud) = cloud::prepare(endpoint, request, deployment, stream, client_wants_usage, created)?;
                // The transport builds the path from the model (`upstream::cloud`).
                (endpoint, "", body, Translation::Cloud(Box::new(cloud)))
            }
            (Endpoint::Messages, Dialect::Anthropic) => (
                Endpoint::Messages,
                anthropic::MESSAGES_PATH,
                anthropic::passthrough::request(request, model).map_err(json_error)?,
                Translation::MessagesOnClaude,
            ),
            (Endpoint::Messages, Dialect::OpenAi | Dialect::Mock | Dialect::Cli) => {
                let ask_usage = matches!(provider.dialect, Dialect::Mock | Dialect::Cli)
                    || provider.stream_usage == StreamUsage::StreamOptions;
                let max_output = provider.known_models.get(model).and_then(|m| m.max_output_tokens);
                let body = anthropic::inbound::to_chat_request(request, model, stream, ask_usage, max_output)?;
                let path = Endpoint::ChatCompletions.upstream_path();
                (Endpoint::ChatCompletions, path, body, Translation::MessagesOnOpenAi)
            }
            (Endpoint::ChatCompletions, Dialect::Anthropic) => {
                let max_output = provider.known_models.get(model).and_then(|m| m.max_output_tokens);
                let body = anthropic::request::from_chat(request, model, stream, max_output)?;
                let translation = Translation::ChatOnClaude { include_usage: client_wants_usage };
                (Endpoint::ChatCompletions, anthropic::MESSAGES_PATH, body, translation)
            }
            (Endpoint::Responses, Dialect::Anthropic) => {
                let (chat, b) = responses::Bridge::prepare(request, model, true, created)?;
                let max_output = provider.known_models.get(model).and_then(|m| m.max_output_tokens);
                let chat = RawObject::from_slice(&chat).map_err(json_error)?;
                let body = anthropic::request::from_chat(&chat, model, stream, max_output)?;
                bridge = Some(b);
                (Endpoint::ChatCompletions, anthropic::MESSAGES_PATH, body, Translation::ResponsesOnClaude)
            }
            (Endpoint::Responses, Dialect::OpenAi) if provider.responses_api => {
                let body = responses::native::request(request, model).map_err(json_error)?;
                (Endpoint::Responses, Endpoint::Responses.upstream_path(), body, Translation::ResponsesNative)
            }
            (Endpoint::Responses, Dialect::OpenAi | Dialect::Mock | Dialect::Cli) => {
                let ask_usage = matches!(provider.dialect, Dialect::Mock | Dialect::Cli)
                    || provider.stream_usage == StreamUsage::StreamOptions;
                let (body, b) = responses::Bridge::prepare(request, model, ask_usage, created)?;
                bridge = Some(b);
                let path = Endpoint::ChatCompletions.upstream_path();
                (Endpoint::ChatCompletions, path, body, Translation::ResponsesOnChat)
            }
            (Endpoint::Completions | Endpoint::Embeddings, Dialect::Anthropic) => {
                return Err(Untranslatable::new(
                    format!(
                        "The model `{model}` is served by the Anthropic Messages API, which has no {} endpoint; use /v1/chat/completions or /v1/messages.",
                        endpoint.upstream_path()
                    ),
                    "model",
                ));
            }
            (_, _) => {
                let (body, hide_usage) =
                    openai::upstream_body(request, model, stream, client_wants_usage, provider.stream_usage)
                        .map_err(json_error)?;
                (endpoint, endpoint.upstream_path(), body, Translation::OpenAi { hide_usage })
            }
        };
        let body = match (vertex_claude, bedrock_claude) {
            (true, _) => cloud::vertex_claude_body(&body).map_err(json_error)?,
            (_, true) => cloud::bedrock_claude_body(&body).map_err(json_error)?,
            _ => body,
        };
        Ok(Self { upstream_endpoint, path, body, translation, created, bridge, keep: Default::default() })
    }

    /// Has `keep` given each response object this exchange finishes (a Responses client's).
    pub fn keep_responses(&mut self, keep: impl FnOnce() -> Option<responses::Keep>) {
        match &mut self.bridge {
            Some(bridge) => bridge.keep = keep(),
            None if matches!(self.translation, Translation::ResponsesNative) => self.keep.keep = keep(),
            None => {}
        }
    }

    /// Has a natively served answer echo `previous_response_id` (its chain went as history).
    pub fn echo_previous(&mut self, previous: Option<String>) {
        self.keep.echo = previous;
    }

    /// Translates a whole (non-stream) answer; returns the client body and the usage.
    /// The client's answer, its usage and its finish reason.
    pub fn response(&mut self, body: &[u8], client_model: &str) -> serde_json::Result<openai::WholeResponse> {
        if let Some(bridge) = &mut self.bridge {
            return match &self.translation {
                Translation::Cloud(cloud) => bridge.response(&cloud.response(body, client_model)?.body, None),
                Translation::ResponsesOnClaude => bridge.response(body, Some((client_model, self.created))),
                _ => bridge.response(body, None),
            };
        }
        if matches!(self.translation, Translation::ResponsesNative) {
            return responses::native::response(body, client_model, std::mem::take(&mut self.keep));
        }
        let (json, usage) = match &self.translation {
            // The hot path reads the finish reason while it rewrites.
            Translation::OpenAi { .. } => return openai::rewrite_response(body, client_model),
            Translation::ChatOnClaude { .. } => {
                anthropic::response::to_chat(body, client_model, self.created).map(|(b, u)| (b, Some(u)))?
            }
            Translation::MessagesOnClaude => anthropic::passthrough::response(body, client_model)?,
            Translation::MessagesOnOpenAi => anthropic::inbound::to_message(body, client_model)?,
            Translation::Cloud(cloud) => return cloud.response(body, client_model),
            Translation::ResponsesOnChat | Translation::ResponsesOnClaude | Translation::ResponsesNative => {
                return Err(serde::de::Error::custom("a Responses exchange without its bridge"));
            }
        };
        let finish_reason = RawObject::from_slice(&json).ok().and_then(|o| match o.get("choices") {
            Some(choices) => openai::finish_reason_in(choices),
            None => o.parse::<String>("stop_reason").ok().flatten(),
        });
        Ok(openai::WholeResponse { body: json, usage, generated: None, finish_reason })
    }

    /// The stream translator for this attempt.
    pub fn rewriter(&mut self, client_model: &str) -> Box<dyn ChunkRewriter> {
        if let Some(bridge) = &mut self.bridge {
            let responses = bridge.rewriter();
            return match &self.translation {
                Translation::ResponsesOnClaude => {
                    let claude = anthropic::stream::ClaudeChunks::new(client_model, self.created, true);
                    Box::new(responses::ThroughChat::new(Box::new(claude), responses))
                }
                Translation::Cloud(cloud) => {
                    Box::new(responses::ThroughChat::new(cloud.rewriter(client_model), responses))
                }
                _ => Box::new(responses),
            };
        }
        match &self.translation {
            Translation::OpenAi { hide_usage } => Box::new(openai::OpenAiChunks::new(client_model, *hide_usage)),
            Translation::ChatOnClaude { include_usage } => {
                Box::new(anthropic::stream::ClaudeChunks::new(client_model, self.created, *include_usage))
            }
            Translation::MessagesOnClaude => Box::new(anthropic::passthrough::MessagesRelay::new(client_model)),
            Translation::MessagesOnOpenAi => Box::new(anthropic::inbound_stream::MessagesFromChunks::new(client_model)),
            Translation::Cloud(cloud) => cloud.rewriter(client_model),
            Translation::ResponsesNative => {
                Box::new(responses::native::NativeEvents::new(client_model, std::mem::take(&mut self.keep)))
            }
            Translation::ResponsesOnChat | Translation::ResponsesOnClaude => {
                Box::new(anthropic::inbound_stream::MessagesFromChunks::new(client_model))
            }
        }
    }

    /// Whether the upstream speaks the client's own dialect, so that what the gateway does not
    /// translate (the query string, version headers) goes along unchanged.
    pub fn passes_through(&self) -> bool {
        matches!(
            self.translation,
            Translation::OpenAi { .. } | Translation::MessagesOnClaude | Translation::ResponsesNative
        )
    }

    /// Whether the upstream speaks Anthropic's Messages API (its errors, its 529).
    pub fn upstream_is_anthropic(&self) -> bool {
        matches!(
            self.translation,
            Translation::ChatOnClaude { .. } | Translation::MessagesOnClaude | Translation::ResponsesOnClaude
        )
    }
}
