//! Converse answer → OpenAI chat completion: text blocks joined into `content`, `toolUse`
//! blocks into `tool_calls` (arguments as a JSON string, names back in the client's spelling),
//! `reasoningContent` into `reasoning_content` plus the signed `thinking_blocks` a client sends
//! back, `stopReason` into `finish_reason`, usage per `adapter::bedrock`.

use serde_json::value::RawValue;

use super::{ToolNames, finish_reason, usage};
use crate::api::Usage;
use crate::api::chat::{ChatCompletion, ChatContent, Choice, FunctionCall, ResponseMessage, ToolCall};
use crate::api::converse::ConverseResponse;

/// Translates a whole Converse answer for an OpenAI client; `id` names it (Converse has no id
/// of its own: the request id serves).
pub fn to_chat(
    body: &[u8],
    client_model: &str,
    id: &str,
    created: u64,
    names: &ToolNames,
) -> serde_json::Result<(Vec<u8>, Usage)> {
    let answer: ConverseResponse = serde_json::from_slice(body)?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks: Vec<Box<RawValue>> = Vec::new();
    let mut tool_calls = Vec::new();
    for block in answer.output.and_then(|o| o.message).map(|m| m.content).unwrap_or_default() {
        if let Some(t) = block.text {
            text.push_str(&t);
        }
        if let Some(call) = block.tool_use {
            tool_calls.push(ToolCall {
                id: call.tool_use_id,
                kind: "function".into(),
                function: FunctionCall {
                    name: names.original(&call.name).to_owned(),
                    arguments: call.input.get().to_owned(),
                },
            });
        }
        if let Some(r) = block.reasoning_content {
            // Anthropic's block shapes: what a client keeps and sends back for Claude.
            let kept = match (r.reasoning_text, r.redacted_content) {
                (Some(t), _) => {
                    reasoning.push_str(&t.text);
                    serde_json::json!({"type": "thinking", "thinking": t.text, "signature": t.signature.unwrap_or_default()})
                }
                (None, Some(data)) => serde_json::json!({"type": "redacted_thinking", "data": data}),
                (None, None) => continue,
            };
            thinking_blocks.push(serde_json::value::to_raw_value(&kept)?);
        }
    }
    let usage = answer.usage.as_ref().map(usage).unwrap_or_default();
    let completion = ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".into(),
        created,
        model: client_model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(ChatContent::Text(text)),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                thinking_blocks: (!thinking_blocks.is_empty()).then_some(thinking_blocks),
                ..ResponseMessage::default()
            },
            finish_reason: Some(finish_reason(answer.stop_reason.as_deref().unwrap_or("end_turn")).to_owned()),
            logprobs: None,
        }],
        usage: Some(usage),
    };
    Ok((serde_json::to_vec(&completion)?, usage))
}
