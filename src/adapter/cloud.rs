//! The cloud platforms' exchanges: OpenAI chat and Anthropic Messages clients on the Gemini
//! dialect (the Gemini API and Vertex AI) and on Bedrock Converse. Chat is translated directly
//! (`gemini`, `bedrock`); Messages goes through chat on the way there and back, the stream by
//! `Chained`, one rewriter feeding the next. The transport (`upstream::cloud`) builds the path
//! from the model, so none is chosen here. Claude on Vertex (`rawPredict`) and on Bedrock's
//! InvokeModel take Claude's own Messages body (`*_claude_body`): Anthropic's translations serve
//! them. `/v1/embeddings` is `embed`'s.

pub mod embed;

use bytes::Bytes;

use super::{Untranslatable, anthropic, bedrock, gemini, openai};
use crate::api::sse::{SseDecoder, SseEvent};
use crate::api::{ErrorBody, RawObject, Usage};
use crate::config::{DeploymentSpec, Dialect};
use crate::ctx::{Endpoint, Generated};
use crate::stream::{ChunkRewriter, Step};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Platform {
    Gemini,
    /// Bedrock Converse, with the tool names its answer is translated back with.
    Converse(bedrock::ToolNames),
}

/// How one attempt's answer from a cloud platform becomes the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudExchange {
    platform: Platform,
    /// The client speaks Anthropic Messages (translated through chat).
    messages: bool,
    include_usage: bool,
    /// The answer's id (Converse has none of its own).
    id: String,
    created: u64,
}

/// The upstream body for a `/v1/chat/completions` or `/v1/messages` request on a cloud dialect.
pub fn prepare(
    endpoint: Endpoint,
    request: &RawObject,
    deployment: &DeploymentSpec,
    stream: bool,
    client_wants_usage: bool,
    created: u64,
) -> Result<(Vec<u8>, CloudExchange), Untranslatable> {
    let model = deployment.model.as_str();
    let chat_owned;
    let chat = match endpoint {
        Endpoint::ChatCompletions => request,
        Endpoint::Messages => {
            let max_output = deployment.provider.known_models.get(model).and_then(|m| m.max_output_tokens);
            let body = anthropic::inbound::to_chat_request(request, model, stream, true, max_output)?;
            chat_owned = RawObject::from_slice(&body)
                .map_err(|e| Untranslatable::new(format!("Invalid request body: {e}"), "messages"))?;
            &chat_owned
        }
        // A Responses request comes here as chat (`Exchange::prepare` bridges it).
        Endpoint::Completions | Endpoint::Embeddings | Endpoint::Responses => {
            return Err(Untranslatable::new(
                format!(
                    "The model `{model}` is served by a cloud platform's generation API, which has no {} endpoint here; use /v1/chat/completions or /v1/messages.",
                    endpoint.upstream_path()
                ),
                "model",
            ));
        }
    };
    let (body, platform) = match deployment.provider.dialect {
        Dialect::Bedrock => {
            let (body, names) = bedrock::request::from_chat(chat, model)?;
            (body, Platform::Converse(names))
        }
        _ => (gemini::request::from_chat(chat)?, Platform::Gemini),
    };
    let messages = endpoint == Endpoint::Messages;
    let id = format!("chatcmpl-gw{:024x}", fastrand::u128(..));
    let include_usage = client_wants_usage || messages;
    Ok((body, CloudExchange { platform, messages, include_usage, id, created }))
}

impl CloudExchange {
    /// A whole answer in the client's dialect.
    pub fn response(&self, body: &[u8], client_model: &str) -> serde_json::Result<openai::WholeResponse> {
        let (chat, usage) = match &self.platform {
            Platform::Gemini => gemini::response::to_chat(body, client_model, self.created)?,
            Platform::Converse(names) => bedrock::response::to_chat(body, client_model, &self.id, self.created, names)?,
        };
        let finish = |json: &[u8], key: &str| {
            RawObject::from_slice(json).ok().and_then(|o| match key {
                "choices" => o.get("choices").and_then(openai::finish_reason_in),
                _ => o.parse::<String>(key).ok().flatten(),
            })
        };
        if self.messages {
            let (message, _) = anthropic::inbound::to_message(&chat, client_model)?;
            let finish_reason = finish(&message, "stop_reason");
            return Ok(openai::WholeResponse { body: message, usage: Some(usage), generated: None, finish_reason });
        }
        let finish_reason = finish(&chat, "choices");
        Ok(openai::WholeResponse { body: chat, usage: Some(usage), generated: None, finish_reason })
    }

    /// The stream translator: the platform's events to chat chunks, and on to Messages events.
    pub fn rewriter(&self, client_model: &str) -> Box<dyn ChunkRewriter> {
        let chat: Box<dyn ChunkRewriter> = match &self.platform {
            Platform::Gemini => {
                Box::new(gemini::stream::GeminiChunks::new(client_model, self.created, self.include_usage))
            }
            Platform::Converse(names) => Box::new(bedrock::stream::ConverseChunks::new(
                client_model,
                &self.id,
                self.created,
                self.include_usage,
                names.clone(),
            )),
        };
        if self.messages {
            let messages = anthropic::inbound_stream::MessagesFromChunks::new(client_model);
            Box::new(Chained { first: chat, then: Box::new(messages), decoder: SseDecoder::new(), first_ended: false })
        } else {
            chat
        }
    }
}

/// A Claude model on Vertex AI (`claude-sonnet-4-5@20250929`): served by `rawPredict`.
pub fn is_vertex_claude(dialect: Dialect, model: &str) -> bool {
    dialect == Dialect::Vertex && model.starts_with("claude")
}

/// A Claude model on Bedrock served by InvokeModel (the provider's `api`, `config::cloud`).
pub fn is_bedrock_invoke(deployment: &DeploymentSpec) -> bool {
    deployment.provider.dialect == Dialect::Bedrock && deployment.provider.cloud.bedrock_api.invokes(&deployment.model)
}

/// A Messages body as Vertex AI takes it for Claude: no `model` (it is in the path), and
/// `anthropic_version: vertex-2023-10-16`.
pub fn vertex_claude_body(body: &[u8]) -> serde_json::Result<Vec<u8>> {
    claude_platform_body(body, "vertex-2023-10-16", false)
}

/// A Messages body as Bedrock's InvokeModel takes it: no `model` and no `stream` (the path
/// says both), and `anthropic_version: bedrock-2023-05-31`. The rest (cache_control, thinking,
/// tools) goes through untouched.
pub fn bedrock_claude_body(body: &[u8]) -> serde_json::Result<Vec<u8>> {
    claude_platform_body(body, "bedrock-2023-05-31", true)
}

/// The client's `anthropic-beta` header values (comma-separated) as InvokeModel takes them:
/// the body's `anthropic_beta` array (Bedrock reads no such header), after any already there.
pub fn with_anthropic_beta<'a>(body: &[u8], headers: impl Iterator<Item = &'a str>) -> serde_json::Result<Vec<u8>> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
    let mut betas: Vec<serde_json::Value> = match object.remove("anthropic_beta") {
        Some(serde_json::Value::Array(betas)) => betas,
        _ => Vec::new(),
    };
    for beta in headers.flat_map(|v| v.split(',')).map(str::trim).filter(|b| !b.is_empty()) {
        if !betas.iter().any(|b| b == beta) {
            betas.push(beta.into());
        }
    }
    if !betas.is_empty() {
        object.insert("anthropic_beta".into(), betas.into());
    }
    serde_json::to_vec(&object)
}

fn claude_platform_body(body: &[u8], version: &str, drop_stream: bool) -> serde_json::Result<Vec<u8>> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
    object.remove("model");
    if drop_stream {
        object.remove("stream");
    }
    object.insert("anthropic_version".into(), version.into());
    serde_json::to_vec(&object)
}

/// One rewriter's frames decoded and fed to the next.
pub struct Chained {
    first: Box<dyn ChunkRewriter>,
    then: Box<dyn ChunkRewriter>,
    decoder: SseDecoder,
    first_ended: bool,
}

impl Chained {
    /// Feeds `frames` (the first rewriter's) to the second; its first non-`Continue` step.
    fn feed(&mut self, frames: Vec<Bytes>, out: &mut Vec<Bytes>) -> Step {
        for frame in frames {
            self.decoder.push(&frame);
        }
        let mut step = Step::Continue;
        loop {
            let event: SseEvent = match self.decoder.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return step,
                Err(e) => {
                    return Step::Failed(ErrorBody::new(e.to_string(), "api_error", None, Some("upstream_protocol")));
                }
            };
            match self.then.on_event(&event, out) {
                Step::Continue => {}
                Step::Done => step = Step::Done,
                failed @ Step::Failed(_) => return failed,
            }
        }
    }
}

impl ChunkRewriter for Chained {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        let mut frames = Vec::new();
        let first = self.first.on_event(event, &mut frames);
        let fed = self.feed(frames, out);
        match first {
            Step::Continue => fed,
            Step::Done => {
                self.first_ended = true;
                let mut frames = Vec::new();
                self.first.on_end(&mut frames);
                match self.feed(frames, out) {
                    Step::Failed(body) => Step::Failed(body),
                    _ => Step::Done,
                }
            }
            failed @ Step::Failed(_) => failed,
        }
    }

    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        if !std::mem::replace(&mut self.first_ended, true) {
            let mut frames = Vec::new();
            self.first.on_end(&mut frames);
            // The chat side's `[DONE]` is the end the second side is told of below.
            let _ = self.feed(frames, out);
        }
        self.then.on_end(out);
    }

    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        self.then.on_error(error, out);
    }

    fn usage(&self) -> Option<Usage> {
        self.first.usage()
    }

    fn usage_final(&self) -> bool {
        self.first.usage_final()
    }

    fn finish_reason(&self) -> Option<String> {
        self.then.finish_reason().or_else(|| self.first.finish_reason())
    }

    fn take_generated(&mut self) -> Option<Generated> {
        self.then.take_generated()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_messages_body_for_claude_on_vertex_names_its_version_not_its_model() {
        let body = br#"{"model":"claude-x","max_tokens":5,"messages":[]}"#;
        let out: serde_json::Value = serde_json::from_slice(&vertex_claude_body(body).unwrap()).unwrap();
        assert_eq!(out, serde_json::json!({"max_tokens": 5, "messages": [], "anthropic_version": "vertex-2023-10-16"}));
        assert!(is_vertex_claude(Dialect::Vertex, "claude-sonnet-4-5@20250929"));
        assert!(!is_vertex_claude(Dialect::Vertex, "gemini-2.5-pro") && !is_vertex_claude(Dialect::Bedrock, "claude"));
        let body = br#"{"model":"c","stream":true,"max_tokens":5,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}]}"#;
        let out: serde_json::Value = serde_json::from_slice(&bedrock_claude_body(body).unwrap()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"max_tokens": 5, "anthropic_version": "bedrock-2023-05-31",
                "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]})
        );
    }

    #[test]
    fn anthropic_beta_headers_join_the_body_s_betas_once() {
        let body = br#"{"max_tokens":5,"anthropic_beta":["a"]}"#;
        let out = with_anthropic_beta(body, ["a, b", "c"].into_iter()).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out, serde_json::json!({"max_tokens": 5, "anthropic_beta": ["a", "b", "c"]}));
        let none = with_anthropic_beta(br#"{"max_tokens":5}"#, std::iter::empty()).unwrap();
        assert_eq!(none, br#"{"max_tokens":5}"#);
    }

    #[test]
    fn a_gemini_stream_reaches_a_messages_client_as_messages_events_with_gemini_usage() {
        let chat = gemini::stream::GeminiChunks::new("m", 1, true);
        let messages = anthropic::inbound_stream::MessagesFromChunks::new("m");
        let mut chained =
            Chained { first: Box::new(chat), then: Box::new(messages), decoder: SseDecoder::new(), first_ended: false };
        let events = [
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"responseId":"r1"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"thoughtsTokenCount":1}}"#,
        ];
        let mut out: Vec<Bytes> = Vec::new();
        for data in events {
            let event = SseEvent { event: None, data: Bytes::from(data) };
            assert_eq!(chained.on_event(&event, &mut out), Step::Continue);
        }
        chained.on_end(&mut out);
        let text: String = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert!(text.contains(r#""text":"Hel""#) && text.contains(r#""text":"lo""#), "{text}");
        assert!(text.contains(r#""stop_reason":"end_turn""#), "{text}");
        let usage = chained.usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 3));
        // (The Messages side reports none of its own: the chat side's is the one observed.)
        assert_eq!(chained.finish_reason().as_deref(), Some("stop"));
    }
}
