//! The CLI's answer written as an OpenAI server would write it: chat or text completions, as
//! SSE chunks or one JSON body. Pure translation, kept beside the transport that reads the
//! session (which may not call up into `adapter`); it knows nothing of sessions.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;

use crate::api::sse::{DONE_FRAME, data_frame};
use crate::api::{RawObject, Usage};
use crate::ctx::Endpoint;

/// How the answer is shaped for the client.
pub(super) struct Shape {
    chat: bool,
    pub(super) stream: bool,
    id: String,
    created: u64,
    model: String,
    role_sent: bool,
}

impl Shape {
    /// The answer to `request` (its model name) on `endpoint`.
    pub(super) fn new(endpoint: Endpoint, request: &RawObject, stream: bool) -> Self {
        let model: String = request.parse("model").ok().flatten().unwrap_or_default();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let id = match endpoint {
            Endpoint::Completions => format!("cmpl-cli{:016x}", fastrand::u64(..)),
            _ => format!("chatcmpl-cli{:016x}", fastrand::u64(..)),
        };
        Self { chat: endpoint == Endpoint::ChatCompletions, stream, id, created, model, role_sent: false }
    }

    fn chunk(&self, choice: serde_json::Value) -> serde_json::Value {
        let object = if self.chat { "chat.completion.chunk" } else { "text_completion" };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
               "choices": [choice]})
    }

    /// One piece of streamed text (the first chat delta carries the role).
    pub(super) fn delta_frame(&mut self, text: &str) -> Bytes {
        let choice = if self.chat {
            let delta = if std::mem::replace(&mut self.role_sent, true) {
                json!({"content": text})
            } else {
                json!({"role": "assistant", "content": text})
            };
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null})
        };
        frame(&self.chunk(choice))
    }

    /// The whole (non-stream) answer: `text`, and its usage.
    pub(super) fn whole(&self, text: &str, usage: Usage) -> Bytes {
        let (object, choice) = if self.chat {
            let message = json!({"role": "assistant", "content": text, "refusal": null});
            ("chat.completion", json!({"index": 0, "message": message, "logprobs": null, "finish_reason": "stop"}))
        } else {
            ("text_completion", json!({"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}))
        };
        let body = json!({"id": self.id, "object": object, "created": self.created,
                          "model": self.model, "choices": [choice], "usage": usage});
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The end of a stream: the last text (if any), the finish chunk, the usage chunk and
    /// `[DONE]`.
    pub(super) fn stream_end(&mut self, last_text: &str, usage: Usage) -> Bytes {
        let mut out = BytesMut::new();
        if !last_text.is_empty() {
            out.put(self.delta_frame(last_text));
        }
        let finish = if self.chat {
            let delta = if self.role_sent { json!({}) } else { json!({"role": "assistant", "content": ""}) };
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": "stop"})
        } else {
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"})
        };
        out.put(frame(&self.chunk(finish)));
        let object = if self.chat { "chat.completion.chunk" } else { "text_completion" };
        out.put(frame(&json!({"id": self.id, "object": object, "created": self.created,
                              "model": self.model, "choices": [], "usage": usage})));
        out.put_slice(DONE_FRAME);
        out.freeze()
    }
}

fn frame(value: &serde_json::Value) -> Bytes {
    data_frame(&serde_json::to_vec(value).unwrap_or_default())
}
