//! Gemini answer → OpenAI chat completion: one choice per candidate (text parts joined,
//! thought parts into `reasoning_content`, `functionCall` parts into `tool_calls` with
//! generated ids), finish reasons per `adapter::gemini::finish_reason`, usage per the module
//! doc. A prompt blocked before any candidate is one empty choice ending in `content_filter`.

use super::{call_id, finish_reason, usage};
use crate::api::Usage;
use crate::api::chat::{ChatCompletion, ChatContent, Choice, FunctionCall, ResponseMessage, ToolCall};
use crate::api::gemini::{GenerateContentResponse, Part};

/// Translates a whole `generateContent` answer for an OpenAI client.
pub fn to_chat(body: &[u8], client_model: &str, created: u64) -> serde_json::Result<(Vec<u8>, Usage)> {
    let answer: GenerateContentResponse = serde_json::from_slice(body)?;
    let response_id = answer.response_id.unwrap_or_default();
    let mut choices = Vec::with_capacity(answer.candidates.len().max(1));
    for candidate in answer.candidates {
        let parts = candidate.content.map(|c| c.parts).unwrap_or_default();
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for part in parts {
            let mut position = tool_calls.len() as u32;
            match Piece::of(part, &response_id, candidate.index, &mut position) {
                Piece::Text(t) => text.push_str(&t),
                Piece::Thought(t) => reasoning.push_str(&t),
                Piece::Call(call) => tool_calls.push(call),
                Piece::Nothing => {}
            }
        }
        let saw_calls = !tool_calls.is_empty();
        let finish = finish_reason(candidate.finish_reason.as_deref().unwrap_or("STOP"), saw_calls);
        choices.push(Choice {
            index: candidate.index,
            message: ResponseMessage {
                content: (!text.is_empty() || !saw_calls).then_some(ChatContent::Text(text)),
                tool_calls: saw_calls.then_some(tool_calls),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                ..ResponseMessage::default()
            },
            finish_reason: Some(finish.to_owned()),
            logprobs: None,
        });
    }
    if choices.is_empty() {
        // Blocked prompt (`promptFeedback.blockReason`), or nothing at all: never index blindly.
        choices.push(Choice {
            index: 0,
            message: ResponseMessage::default(),
            finish_reason: Some("content_filter".into()),
            logprobs: None,
        });
    }
    let usage = answer.usage_metadata.as_ref().map(usage).unwrap_or_default();
    let completion = ChatCompletion {
        id: if response_id.is_empty() { "chatcmpl-gemini".into() } else { format!("chatcmpl-{response_id}") },
        object: "chat.completion".into(),
        created,
        model: client_model.to_owned(),
        choices,
        usage: Some(usage),
    };
    Ok((serde_json::to_vec(&completion)?, usage))
}

/// What one part adds to a choice.
pub(super) enum Piece {
    Text(String),
    Thought(String),
    Call(ToolCall),
    Nothing,
}

impl Piece {
    /// Reads one part; a call takes the id of its `position` among the candidate's calls and
    /// advances it.
    pub(super) fn of(part: Part, response_id: &str, candidate: u32, position: &mut u32) -> Self {
        if let Some(call) = part.function_call {
            let arguments = call.args.map_or_else(|| "{}".to_owned(), |a| a.get().to_owned());
            let id =
                call_id(response_id, candidate, *position, &call.name, &arguments, part.thought_signature.as_deref());
            *position += 1;
            return Self::Call(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name: call.name, arguments },
            });
        }
        match part.text {
            Some(t) if t.is_empty() => Self::Nothing,
            Some(t) if part.thought == Some(true) => Self::Thought(t),
            Some(t) => Self::Text(t),
            None => Self::Nothing,
        }
    }
}
