//! Folds a streamed answer, frame by frame as the client receives it, into the final
//! `chat.completion` object — content, reasoning, refusal, tool calls, finish reason. Bounded:
//! past the cache's entry limit it stops collecting and the answer is simply not stored.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::Usage;
use crate::stream::sse::SseDecoder;

#[derive(Debug, Default)]
pub struct Assembler {
    max_bytes: usize,
    collected: usize,
    overflow: bool,
    /// Something unexpected (a second choice, an error event): never store.
    spoiled: bool,
    decoder: SseDecoder,
    id: Option<String>,
    created: u64,
    model: Option<String>,
    system_fingerprint: Option<String>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<ToolCallParts>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

#[derive(Debug, Default)]
struct ToolCallParts {
    index: u64,
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system_fingerprint: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl Assembler {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, ..Self::default() }
    }

    /// One client frame (one or more whole SSE events).
    pub fn frame(&mut self, frame: &[u8]) {
        if self.overflow || self.spoiled {
            return;
        }
        self.collected += frame.len();
        if self.collected > self.max_bytes.saturating_mul(4).max(64 * 1024) {
            // Framing overhead is a few times the text at most; beyond this the answer is too
            // big to store anyway.
            self.overflow = true;
            return;
        }
        self.decoder.push(frame);
        loop {
            let event = match self.decoder.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                // An event past the decoder's bound is skipped: the answer would lack it.
                Err(_) => {
                    self.spoiled = true;
                    break;
                }
            };
            if event.data.trim_ascii() == b"[DONE]" {
                continue;
            }
            match serde_json::from_slice::<Chunk>(&event.data) {
                Ok(chunk) => self.chunk(chunk),
                Err(_) => self.spoiled = true,
            }
        }
    }

    fn chunk(&mut self, chunk: Chunk) {
        if chunk.error.is_some() {
            self.spoiled = true;
            return;
        }
        if self.id.is_none() {
            self.id = chunk.id;
            self.created = chunk.created.unwrap_or(0);
            self.model = chunk.model;
        }
        if chunk.system_fingerprint.is_some() {
            self.system_fingerprint = chunk.system_fingerprint;
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        for choice in chunk.choices {
            if choice.index != 0 {
                self.spoiled = true;
                return;
            }
            if let Some(delta) = choice.delta {
                append(&mut self.content, delta.content);
                append(&mut self.reasoning, delta.reasoning_content);
                append(&mut self.refusal, delta.refusal);
                for call in delta.tool_calls.unwrap_or_default() {
                    let at = match self.tool_calls.iter().position(|c| c.index == call.index) {
                        Some(at) => at,
                        None => {
                            self.tool_calls.push(ToolCallParts { index: call.index, ..Default::default() });
                            self.tool_calls.len() - 1
                        }
                    };
                    let parts = &mut self.tool_calls[at];
                    if let Some(id) = call.id {
                        parts.id = id;
                    }
                    if let Some(kind) = call.kind {
                        parts.kind = kind;
                    }
                    if let Some(f) = call.function {
                        parts.name.push_str(&f.name.unwrap_or_default());
                        parts.arguments.push_str(&f.arguments.unwrap_or_default());
                    }
                }
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
    }

    /// The final `chat.completion` JSON, or `None` when the stream is not one to store (too
    /// large, unexpected events, no finish reason). `usage` is what the relay saw, including a
    /// usage chunk hidden from the client.
    pub fn finish(self, usage: Option<Usage>) -> Option<Vec<u8>> {
        if self.overflow || self.spoiled {
            return None;
        }
        let finish_reason = self.finish_reason?;
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(self.content));
        message.insert("refusal".into(), json!(self.refusal));
        if let Some(reasoning) = self.reasoning {
            message.insert("reasoning_content".into(), json!(reasoning));
        }
        if !self.tool_calls.is_empty() {
            let mut calls = self.tool_calls;
            calls.sort_by_key(|c| c.index);
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|c| {
                    let kind = if c.kind.is_empty() { "function".to_owned() } else { c.kind };
                    json!({"id": c.id, "type": kind, "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        let mut completion = Map::new();
        completion.insert("id".into(), json!(self.id.unwrap_or_default()));
        completion.insert("object".into(), json!("chat.completion"));
        completion.insert("created".into(), json!(self.created));
        completion.insert("model".into(), json!(self.model.unwrap_or_default()));
        completion.insert(
            "choices".into(),
            json!([{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}]),
        );
        if let Some(usage) = usage.or(self.usage) {
            completion.insert("usage".into(), json!(usage));
        }
        if let Some(fp) = self.system_fingerprint {
            completion.insert("system_fingerprint".into(), json!(fp));
        }
        let bytes = serde_json::to_vec(&Value::Object(completion)).ok()?;
        (bytes.len() <= self.max_bytes).then_some(bytes)
    }
}

fn append(into: &mut Option<String>, piece: Option<String>) {
    if let Some(piece) = piece {
        into.get_or_insert_with(String::new).push_str(&piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_the_recorded_tool_call_stream() {
        let mut a = Assembler::new(1 << 20);
        let fixture = include_bytes!("../../tests/fixtures/openai/chat_stream_tools.sse");
        for piece in fixture.chunks(7) {
            a.frame(piece);
        }
        let body: Value = serde_json::from_slice(&a.finish(None).unwrap()).unwrap();
        let message = &body["choices"][0]["message"];
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        let calls = message["tool_calls"].as_array().unwrap();
        assert!(!calls.is_empty());
        for call in calls {
            assert!(call["function"]["name"].as_str().is_some_and(|n| !n.is_empty()));
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).expect("whole arguments");
        }
    }

    /// A frame holding an event larger than the decoder reads whole (a provider may allow
    /// more than its default) spoils the answer rather than leaving a hole in it.
    #[test]
    fn an_event_too_large_to_read_is_not_left_out_of_a_stored_answer() {
        let chunk = |content: &str, finish: &str| {
            format!(
                "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":{finish}}}]}}\n\n"
            )
        };
        let mut a = Assembler::new(64 << 20);
        a.frame(chunk("a", "null").as_bytes());
        a.frame(chunk(&"x".repeat(crate::stream::sse::DEFAULT_MAX_EVENT_BYTES), "null").as_bytes());
        a.frame(chunk("b", "\"stop\"").as_bytes());
        assert!(a.finish(None).is_none());
    }

    #[test]
    fn content_usage_and_refusals_to_store() {
        let mut a = Assembler::new(1 << 20);
        a.frame(b"data: {\"id\":\"c1\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        a.frame(b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n");
        a.frame(b"data: [DONE]\n\n");
        let usage = Usage { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5, ..Default::default() };
        let body: Value = serde_json::from_slice(&a.finish(Some(usage)).unwrap()).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Hello");
        assert_eq!(body["id"], "c1");
        assert_eq!(body["usage"]["total_tokens"], 5);

        let mut unfinished = Assembler::new(1 << 20);
        unfinished.frame(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n");
        assert!(unfinished.finish(None).is_none(), "no finish reason: a partial answer");

        let mut errored = Assembler::new(1 << 20);
        errored.frame(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\n");
        errored.frame(b"data: {\"error\":{\"message\":\"boom\"}}\n\n");
        assert!(errored.finish(None).is_none());

        let mut big = Assembler::new(64);
        for _ in 0..10_000 {
            big.frame(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"xxxxxxxxxxxxxxxxxxxx\"}}]}\n\n");
        }
        assert!(big.finish(None).is_none());
    }
}
