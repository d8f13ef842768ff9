//! The OpenAI-compatible dialect (OpenAI, Azure v1, vLLM, Ollama, TGI, llama.cpp, Gemini's
//! OpenAI endpoint, ...): the body passes through verbatim except `model` and, for streams,
//! the request for usage; responses get the client's model name back.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::capture::{OPENAI_CHOICES, TextCapture};
use crate::adapter::{ChunkRewriter, Step};
use crate::api::sse::SseEvent;
use crate::api::sse::{data_frame, data_frame_with};
use crate::api::{ErrorBody, RawMembers, RawObject, Usage};
use crate::config::StreamUsage;
use crate::ctx::{Generated, MAX_GENERATED_BYTES};

pub use crate::api::sse::DONE_FRAME;

/// How an OpenAI-shaped stream ends: `data: [DONE]`.
pub fn end_frames(out: &mut Vec<Bytes>) {
    out.push(Bytes::from_static(DONE_FRAME));
}

/// A failure after an OpenAI-shaped stream started: the error as a data event, then the end.
pub fn error_frames(error: &ErrorBody, out: &mut Vec<Bytes>) {
    out.push(data_frame(&serde_json::to_vec(error).unwrap_or_default()));
    end_frames(out);
}

/// Prepares the upstream body: the deployment's model name, and for streams an explicit request
/// for the usage chunk when the provider needs to be asked. Also returns whether usage-only
/// chunks must be kept from the client.
pub fn upstream_body(
    request: &RawObject,
    upstream_model: &str,
    stream: bool,
    client_wants_usage: bool,
    stream_usage: StreamUsage,
) -> serde_json::Result<(Vec<u8>, bool)> {
    let mut body = request.clone();
    body.set("model", upstream_model)?;
    if stream && stream_usage == StreamUsage::StreamOptions && !client_wants_usage {
        let mut options = match body.get("stream_options") {
            Some(raw) if raw != "null" => RawObject::from_slice(raw.as_bytes())?,
            _ => RawObject::default(),
        };
        options.set("include_usage", &true)?;
        body.set_object("stream_options", &options);
    }
    // Whether asked by us or sent unasked (llama.cpp, Gemini), the client did not want it.
    Ok((body.to_vec(), stream && !client_wants_usage))
}

/// A rewritten whole (non-stream) response and what metering needs from it.
pub struct WholeResponse {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
    /// The answer's `choices`, kept only when there is no usage (to count locally).
    pub generated: Option<Generated>,
    pub finish_reason: Option<String>,
}

/// Rewrites a whole (non-stream) response: the client's model name; returns the usage too.
pub fn rewrite_response(body: &[u8], client_model: &str) -> serde_json::Result<WholeResponse> {
    let object = RawMembers::from_slice(body)?;
    let usage = object.parse::<Usage>("usage").ok().flatten();
    let finish_reason = object.get("choices").and_then(finish_reason_in);
    let generated = match (&usage, object.get("choices")) {
        (None, Some(choices)) => {
            let raw = choices.as_bytes();
            let kept = &raw[..raw.len().min(MAX_GENERATED_BYTES)];
            Some(Generated {
                fragments: Bytes::copy_from_slice(kept),
                overflow_bytes: (raw.len() - kept.len()) as u64,
                text: choices_text,
            })
        }
        _ => None,
    };
    let client_model = serde_json::value::to_raw_value(client_model)?;
    Ok(WholeResponse { body: object.to_vec_with("model", client_model.get()), usage, generated, finish_reason })
}

/// The text in a sequence of `choices` arrays (stream deltas or whole messages): content,
/// reasoning, refusals, tool call names and arguments, legacy completion text. A cut-off
/// trailing fragment is ignored.
pub fn choices_text(fragments: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Choice {
        delta: Option<Message>,
        message: Option<Message>,
        text: Option<String>,
    }
    #[derive(Deserialize)]
    struct Message {
        content: Option<serde_json::Value>,
        reasoning_content: Option<String>,
        reasoning: Option<String>,
        refusal: Option<String>,
        tool_calls: Option<Vec<ToolCall>>,
    }
    #[derive(Deserialize)]
    struct ToolCall {
        function: Option<Function>,
    }
    #[derive(Deserialize)]
    struct Function {
        name: Option<String>,
        arguments: Option<String>,
    }
    let mut text = String::new();
    for choices in serde_json::Deserializer::from_slice(fragments).into_iter::<Vec<Choice>>() {
        let Ok(choices) = choices else { break };
        for choice in choices {
            text.push_str(choice.text.as_deref().unwrap_or(""));
            for message in [choice.delta, choice.message].into_iter().flatten() {
                match message.content {
                    Some(serde_json::Value::String(s)) => text.push_str(&s),
                    Some(serde_json::Value::Array(parts)) => {
                        for part in parts {
                            text.push_str(part.get("text").and_then(|t| t.as_str()).unwrap_or(""));
                        }
                    }
                    _ => {}
                }
                for s in [message.reasoning_content, message.reasoning, message.refusal].into_iter().flatten() {
                    text.push_str(&s);
                }
                for call in message.tool_calls.into_iter().flatten() {
                    if let Some(f) = call.function {
                        text.push_str(f.name.as_deref().unwrap_or(""));
                        text.push_str(f.arguments.as_deref().unwrap_or(""));
                    }
                }
            }
        }
    }
    text
}

/// Stream rewriting for chat and legacy completions.
pub struct OpenAiChunks {
    client_model: Box<RawValue>,
    /// Drop usage-only chunks (`choices: []` with `usage`): the client did not ask for them.
    hide_usage_chunks: bool,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    /// The text of each chunk's `choices` (bounded), for a local count if no usage comes.
    generated: TextCapture,
}

impl OpenAiChunks {
    pub fn new(client_model: &str, hide_usage_chunks: bool) -> Self {
        let client_model = serde_json::value::to_raw_value(client_model)
            .unwrap_or_else(|_| RawValue::from_string("\"\"".into()).unwrap_or_default());
        Self {
            client_model,
            hide_usage_chunks,
            usage: None,
            finish_reason: None,
            generated: TextCapture::new(&OPENAI_CHOICES),
        }
    }

    fn capture(&mut self, choices: &str) {
        let raw = choices.as_bytes();
        if raw == b"[]" || raw == b"null" {
            return;
        }
        self.generated.push(raw);
    }
}

impl OpenAiChunks {
    /// The rewritten chunk to forward, if any, as a whole SSE frame, for one `data:` payload.
    fn rewrite(&mut self, data: &[u8]) -> Result<Option<Bytes>, Step> {
        if data.trim_ascii() == b"[DONE]" {
            return Err(Step::Done);
        }
        let Ok(chunk) = RawMembers::from_slice(data) else {
            // Not an object: pass it on untouched rather than guess.
            return Ok(Some(data_frame(data)));
        };
        if chunk.contains("error") {
            return Err(Step::Failed(ErrorBody::from_upstream(500, data)));
        }
        if let Some(choices) = chunk.get("choices") {
            self.capture(choices);
        }
        // Some backends put usage on the finish chunk, some on a chunk of its own: keep the last.
        if let Ok(Some(usage)) = chunk.parse::<Usage>("usage") {
            self.usage = Some(usage);
            if self.hide_usage_chunks && is_empty_choices(&chunk) {
                return Ok(None);
            }
        }
        if let Some(reason) = chunk.get("choices").and_then(finish_reason_in) {
            self.finish_reason = Some(reason);
        }
        let capacity = chunk.encoded_len() + self.client_model.get().len();
        Ok(Some(data_frame_with(capacity, |out| chunk.write_with(out, "model", self.client_model.get()))))
    }
}

impl ChunkRewriter for OpenAiChunks {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        match self.rewrite(&event.data) {
            Ok(Some(frame)) => {
                out.push(frame);
                Step::Continue
            }
            Ok(None) => Step::Continue,
            Err(step) => step,
        }
    }

    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        end_frames(out);
    }

    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        error_frames(error, out);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn finish_reason(&self) -> Option<String> {
        self.finish_reason.clone()
    }

    fn take_generated(&mut self) -> Option<Generated> {
        Some(self.generated.take(choices_text))
    }
}

/// The first non-null `finish_reason` in a `choices` array, found without parsing the array
/// (it is on the hot path of every chunk).
pub fn finish_reason_in(choices: &str) -> Option<String> {
    const KEY: &str = "\"finish_reason\":";
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let at = FINDER.find(choices.as_bytes())? + KEY.len();
    let rest = choices[at..].trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

fn is_empty_choices(chunk: &RawMembers) -> bool {
    match chunk.get("choices") {
        Some(raw) => {
            matches!(serde_json::from_str::<Vec<serde::de::IgnoredAny>>(raw), Ok(v) if v.is_empty())
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injects_usage_request_only_for_streams_and_keeps_other_options() {
        let req = RawObject::from_slice(
            br#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false},"top_k":5}"#,
        )
        .unwrap();
        let (body, hide) = upstream_body(&req, "up", true, false, StreamUsage::StreamOptions).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"model":"up","stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true},"top_k":5}"#
        );
        assert!(hide);

        let req = RawObject::from_slice(br#"{"model":"m"}"#).unwrap();
        let (body, hide) = upstream_body(&req, "up", false, false, StreamUsage::StreamOptions).unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), r#"{"model":"up"}"#);
        assert!(!hide);
    }

    #[test]
    fn finish_reason_is_found_without_parsing() {
        assert_eq!(
            finish_reason_in(r#"[{"index":0,"delta":{},"finish_reason": "tool_calls"}]"#).as_deref(),
            Some("tool_calls")
        );
        assert_eq!(finish_reason_in(r#"[{"index":0,"delta":{"content":"x"},"finish_reason":null}]"#), None);
        assert_eq!(finish_reason_in("[]"), None);
    }

    #[test]
    fn usage_chunk_is_hidden_unless_asked_but_always_counted() {
        let usage_chunk = br#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"up","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        let mut hidden = OpenAiChunks::new("client", true);
        assert_eq!(hidden.rewrite(usage_chunk), Ok(None));
        assert_eq!(hidden.usage().unwrap().total_tokens, 7);

        let mut shown = OpenAiChunks::new("client", false);
        let Ok(Some(out)) = shown.rewrite(usage_chunk) else { panic!() };
        assert!(std::str::from_utf8(&out).unwrap().contains(r#""model":"client""#));
        assert_eq!(shown.usage().unwrap().prompt_tokens, 3);
    }

    #[test]
    fn generated_text_is_captured_from_every_choice_shape() {
        let mut r = OpenAiChunks::new("m", true);
        for chunk in [
            &br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#[..],
            br#"{"choices":[{"index":0,"delta":{"content":"lo","reasoning_content":" think"}}]}"#,
            br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            br#"{"choices":[{"index":0,"text":" legacy"}]}"#,
            br#"{"choices":[],"usage":null}"#,
        ] {
            assert!(r.rewrite(chunk).is_ok());
        }
        let generated = r.take_generated().unwrap();
        assert_eq!((generated.text)(&generated.fragments), "Hello thinkf{\"a\" legacy");

        let whole = rewrite_response(
            br#"{"id":"x","model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"}}]}"#,
            "client",
        )
        .unwrap();
        assert!(whole.usage.is_none());
        let generated = whole.generated.unwrap();
        assert_eq!((generated.text)(&generated.fragments), "Hi there");
        assert_eq!(choices_text(b"[{\"delta\":{\"content\":\"ok\"}}]\n[{\"delta\":{\"cont"), "ok");
    }

    #[test]
    fn content_chunks_get_the_client_model_and_done_and_errors_are_recognised() {
        let mut r = OpenAiChunks::new("gpt-4o-mini", true);
        let Ok(Some(out)) =
            r.rewrite(br#"{"id":"a","model":"qwen3","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#)
        else {
            panic!()
        };
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"id\":\"a\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"
        );
        // Only the model's value changes: keys with escapes and line breaks stay as they came,
        // and a payload with line breaks is framed as one `data:` line per line.
        let Ok(Some(out)) = r.rewrite(b"{\"a\\\"b\":1,\n\"model\":\"x\"}") else { panic!() };
        assert_eq!(std::str::from_utf8(&out).unwrap(), "data: {\"a\\\"b\":1,\ndata: \"model\":\"gpt-4o-mini\"}\n\n");
        // With the model twice, the object is written member by member: the first one kept.
        let Ok(Some(out)) = r.rewrite(b"{\"a\\\"b\":1,\n\"model\":\"x\",\"model\":\"y\"}") else { panic!() };
        assert_eq!(std::str::from_utf8(&out).unwrap(), "data: {\"a\\\"b\":1,\"model\":\"gpt-4o-mini\"}\n\n");
        assert_eq!(r.rewrite(b"[DONE]"), Err(Step::Done));
        assert!(
            matches!(r.rewrite(br#"{"error":{"message":"boom","type":"server_error"}}"#), Err(Step::Failed(e)) if e.error.message == "boom")
        );
    }
}
