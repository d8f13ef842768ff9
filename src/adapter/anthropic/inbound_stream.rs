//! OpenAI chat chunks → Anthropic Messages events, for an Anthropic client on an
//! OpenAI-compatible upstream. `message_start` on the first chunk; blocks open lazily (no block
//! for a blank delta) and close before the next one opens: reasoning → `thinking`, content →
//! `text`, each new tool call (a new id, or a new index with a name) → `tool_use` with
//! `input_json_delta`s. The stop reason is held until the usage arrives (a separate usage chunk
//! follows the finish chunk), then `message_delta` carries both and `message_stop` ends it.

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;

use super::inbound::message_id;
use super::{event_frame, sanitize_tool_id, stop_reason};
use crate::adapter::{ChunkRewriter, Step};
use crate::api::anthropic::UsageReport;
use crate::api::chat::ChatChunk;
use crate::api::sse::SseEvent;
use crate::api::{ErrorBody, Usage};
use crate::ctx::{Capture, Generated, utf8_text};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool { openai_index: u32, id: String },
}

#[derive(Deserialize)]
struct ErrorProbe {
    #[serde(default)]
    error: Option<IgnoredAny>,
}

pub struct MessagesFromChunks {
    client_model: String,
    started: bool,
    open: Option<Open>,
    /// Index of the open (or next) Anthropic content block.
    block: u64,
    tool_calls: u32,
    stop: Option<&'static str>,
    usage: Option<Usage>,
    finished: bool,
    /// The text, thinking, tool names and arguments sent to the client (bounded), to count
    /// locally when the upstream reports no usage.
    generated: Capture,
}

impl MessagesFromChunks {
    pub fn new(client_model: &str) -> Self {
        Self {
            client_model: client_model.to_owned(),
            started: false,
            open: None,
            block: 0,
            tool_calls: 0,
            stop: None,
            usage: None,
            finished: false,
            generated: Capture::default(),
        }
    }

    fn emit(out: &mut Vec<Bytes>, name: &str, body: &serde_json::Value) {
        out.push(event_frame(name, &serde_json::to_vec(body).unwrap_or_default()));
    }

    fn start(&mut self, upstream_id: &str, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        // The real counts are known only at the end; they go into message_delta.
        Self::emit(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(upstream_id), "type": "message", "role": "assistant", "content": [],
                "model": self.client_model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        );
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open.take().is_some() {
            Self::emit(out, "content_block_stop", &json!({"type": "content_block_stop", "index": self.block}));
            self.block += 1;
        }
    }

    fn open(&mut self, block: Open, content_block: serde_json::Value, out: &mut Vec<Bytes>) {
        self.close(out);
        Self::emit(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.block, "content_block": content_block}),
        );
        self.open = Some(block);
    }

    fn delta(&self, delta: serde_json::Value, out: &mut Vec<Bytes>) {
        Self::emit(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.block, "delta": delta}),
        );
    }

    /// `message_delta` with the stop reason and every usage count, then `message_stop`.
    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start("", out);
        self.close(out);
        let usage = self.usage.map(|u| UsageReport::from_openai(&u)).unwrap_or_default().complete();
        Self::emit(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null}, "usage": usage}),
        );
        Self::emit(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn translate(&mut self, chunk: ChatChunk, out: &mut Vec<Bytes>) -> Step {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if chunk.choices.is_empty() && chunk.usage.is_none() {
            // Azure's prompt-filter chunks and the like: nothing to say.
            return Step::Continue;
        }
        self.start(&chunk.id, out);
        if self.finished {
            return Step::Continue;
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta;
            if let Some(reasoning) = delta.reasoning_content.or(delta.reasoning).filter(|r| !r.is_empty()) {
                if self.open != Some(Open::Thinking) {
                    self.open(Open::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}), out);
                }
                self.generated.push(reasoning.as_bytes());
                self.delta(json!({"type": "thinking_delta", "thinking": reasoning}), out);
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                if self.open != Some(Open::Text) {
                    self.open(Open::Text, json!({"type": "text", "text": ""}), out);
                }
                self.generated.push(text.as_bytes());
                self.delta(json!({"type": "text_delta", "text": text}), out);
            }
            for call in delta.tool_calls.into_iter().flatten() {
                let function = call.function.unwrap_or_default();
                let id = call.id.filter(|id| !id.is_empty());
                let is_new = match &self.open {
                    Some(Open::Tool { openai_index, id: open_id }) => match &id {
                        // A new id starts a new call, even at the same index (some servers
                        // send every parallel call with index 0).
                        Some(id) => sanitize_tool_id(id) != *open_id,
                        None => call.index != *openai_index && function.name.is_some(),
                    },
                    _ => id.is_some() || function.name.is_some(),
                };
                if is_new {
                    let id = match id {
                        Some(id) => sanitize_tool_id(&id),
                        None => format!("toolu_gw_{}", self.tool_calls),
                    };
                    self.tool_calls += 1;
                    let name = function.name.clone().unwrap_or_default();
                    self.generated.push(name.as_bytes());
                    self.open(
                        Open::Tool { openai_index: call.index, id: id.clone() },
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        out,
                    );
                }
                if let Some(arguments) = function.arguments.filter(|a| !a.is_empty())
                    && matches!(self.open, Some(Open::Tool { .. }))
                {
                    self.generated.push(arguments.as_bytes());
                    self.delta(json!({"type": "input_json_delta", "partial_json": arguments}), out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.close(out);
                self.stop = Some(stop_reason(&reason));
            }
        }
        // The stop reason waits for the usage, which usually comes in a chunk of its own.
        if self.stop.is_some() && self.usage.is_some() {
            self.finish(out);
            return Step::Done;
        }
        Step::Continue
    }
}

impl ChunkRewriter for MessagesFromChunks {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        if event.data.trim_ascii() == b"[DONE]" {
            return Step::Done;
        }
        if let Ok(ErrorProbe { error: Some(_) }) = serde_json::from_slice(&event.data) {
            return Step::Failed(ErrorBody::from_upstream(500, &event.data));
        }
        match serde_json::from_slice::<ChatChunk>(&event.data) {
            Ok(chunk) => self.translate(chunk, out),
            Err(e) => Step::Failed(ErrorBody::new(
                format!("The upstream sent an invalid chunk: {e}"),
                "api_error",
                None,
                Some("upstream_protocol"),
            )),
        }
    }

    /// `[DONE]` or the end of the body: whatever was held goes out now (zero usage when the
    /// upstream never reported any).
    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        self.finish(out);
    }

    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        out.push(super::error_event(error));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn take_generated(&mut self) -> Option<Generated> {
        Some(self.generated.take(utf8_text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::anthropic::fixtures::{cut_before, read, run};

    #[test]
    fn a_stream_cut_before_its_usage_keeps_the_text_sent_for_a_local_count() {
        let whole = read("anthropic/inbound/chat_stream_reasoning_oneshot.sse");
        let sent = r#"User wants Paris.Sure.get_weather{"city":"Paris"}get_time{}"#;
        let mut cut = MessagesFromChunks::new("claude");
        run(cut_before(&whole, r#""name":"get_time""#), &[], &mut cut);
        assert!(cut.usage().is_none());
        let generated = cut.take_generated().unwrap();
        assert_eq!((generated.text)(&generated.fragments), r#"User wants Paris.Sure.get_weather{"city":"Paris"}"#);

        let mut complete = MessagesFromChunks::new("claude");
        run(&whole, &[], &mut complete);
        assert!(complete.usage().is_some() && complete.usage_final(), "OpenAI usage comes whole");
        let generated = complete.take_generated().unwrap();
        assert_eq!((generated.text)(&generated.fragments), sent);
    }
}
