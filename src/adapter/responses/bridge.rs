//! One Responses exchange on a chat upstream: the request translated (with a fresh response
//! id), and what turning its answer back needs — the envelope, the tools' names, and what keeps
//! the finished response object (the gateway's store).

use serde_json::Value;

use super::stream::{Keep, ResponsesFromChunks};
use super::{Envelope, ToolNames, to_chat, to_response};
use crate::adapter::Untranslatable;
use crate::adapter::anthropic;
use crate::adapter::openai::WholeResponse;
use crate::api::RawObject;

pub struct Bridge {
    envelope: Envelope,
    tools: ToolNames,
    /// Given the finished response object, once.
    pub keep: Option<Keep>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("envelope", &self.envelope).field("tools", &self.tools).finish()
    }
}

/// A new response id: `resp_` and 32 hex digits.
pub fn new_id() -> String {
    format!("resp_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl Bridge {
    /// The chat request for `upstream_model` and the bridge for its answer. A
    /// `previous_response_id` has been resolved into `input` by the gateway already (it is
    /// only echoed).
    pub fn prepare(
        request: &RawObject,
        upstream_model: &str,
        ask_usage: bool,
        created: u64,
    ) -> Result<(Vec<u8>, Self), Untranslatable> {
        let client_model: String = request.parse("model").ok().flatten().unwrap_or_default();
        let envelope = Envelope::new(request, new_id(), created, &client_model);
        let chat = if request.contains("previous_response_id") {
            let mut resolved = request.clone();
            resolved.remove("previous_response_id");
            to_chat(&resolved, upstream_model, ask_usage)?
        } else {
            to_chat(request, upstream_model, ask_usage)?
        };
        Ok((chat.body, Self { envelope, tools: chat.tools, keep: None }))
    }

    /// A whole answer: a chat completion, or Claude's message (`claude`: the client's model
    /// name and the creation time for its translation to chat first).
    pub fn response(&mut self, body: &[u8], claude: Option<(&str, u64)>) -> serde_json::Result<WholeResponse> {
        let chat;
        let body = match claude {
            Some((client_model, created)) => {
                chat = anthropic::response::to_chat(body, client_model, created)?.0;
                &chat[..]
            }
            None => body,
        };
        let (json, usage) = to_response(body, &self.envelope, &self.tools)?;
        let object: Value = serde_json::from_slice(&json)?;
        let finish_reason = match object.get("status").and_then(Value::as_str) {
            Some("incomplete") => Some("length".to_owned()),
            _ => Some("stop".to_owned()),
        };
        if let Some(keep) = self.keep.take() {
            keep(&object);
        }
        Ok(WholeResponse { body: json, usage, generated: None, finish_reason })
    }

    /// The stream translator, keeping the finished response.
    pub fn rewriter(&mut self) -> ResponsesFromChunks {
        ResponsesFromChunks::new(self.envelope.clone(), self.tools.clone()).keeping(self.keep.take())
    }
}
