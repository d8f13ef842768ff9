//! Anthropic `Message` → OpenAI chat completion: text blocks concatenated into `content`,
//! `tool_use` blocks into `tool_calls` (ids kept), thinking into `reasoning_content` plus the
//! signed `thinking_blocks` a client must send back, `stop_reason` into `finish_reason`, and
//! usage counted once (see `UsageReport::to_openai`).

use serde_json::value::RawValue;

use super::finish_reason;
use crate::api::Usage;
use crate::api::anthropic::{Block, MessageResponse};
use crate::api::chat::{ChatCompletion, ChatContent, Choice, FunctionCall, ResponseMessage, ToolCall};

/// Translates a whole Messages response for an OpenAI client.
pub fn to_chat(body: &[u8], client_model: &str, created: u64) -> serde_json::Result<(Vec<u8>, Usage)> {
    let message: MessageResponse = serde_json::from_slice(body)?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks: Vec<Box<RawValue>> = Vec::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            Block::Text { text: t, .. } => text.push_str(&t),
            Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name, arguments: input.to_string() },
            }),
            block @ Block::Thinking { .. } => {
                if let Block::Thinking { thinking, .. } = &block {
                    reasoning.push_str(thinking);
                }
                thinking_blocks.push(serde_json::value::to_raw_value(&block)?);
            }
            block @ Block::RedactedThinking { .. } => thinking_blocks.push(serde_json::value::to_raw_value(&block)?),
            _ => {}
        }
    }
    let usage = message.usage.to_openai();
    let completion = ChatCompletion {
        id: message.id,
        object: "chat.completion".into(),
        created,
        model: client_model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(ChatContent::Text(text)),
                refusal: None,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                reasoning: None,
                thinking_blocks: (!thinking_blocks.is_empty()).then_some(thinking_blocks),
            },
            finish_reason: Some(finish_reason(message.stop_reason.as_deref().unwrap_or("end_turn")).to_owned()),
            logprobs: None,
        }],
        usage: Some(usage),
    };
    Ok((serde_json::to_vec(&completion)?, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_tools_thinking_and_usage() {
        let body = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x","content":[
            {"type":"thinking","thinking":"Let me see.","signature":"sig1"},
            {"type":"text","text":"Checking "},{"type":"text","text":"both."},
            {"type":"tool_use","id":"toolu_1","name":"w","input":{"city":"Paris"}},
            {"type":"tool_use","id":"toolu_2","name":"t","input":{}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":40}}"#;
        let (out, usage) = to_chat(body, "claude", 7).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["id"], "msg_01");
        assert_eq!(out["model"], "claude");
        assert_eq!(out["created"], 7);
        let message = &out["choices"][0]["message"];
        assert_eq!(message["content"], "Checking both.");
        assert_eq!(message["refusal"], serde_json::Value::Null);
        assert_eq!(message["reasoning_content"], "Let me see.");
        assert_eq!(message["thinking_blocks"][0]["signature"], "sig1");
        assert_eq!(message["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(message["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(message["tool_calls"][1]["function"]["arguments"], "{}");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["logprobs"], serde_json::Value::Null);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (60, 40, 100));
        assert_eq!(
            out["usage"]["prompt_tokens_details"],
            serde_json::json!({"cached_tokens":30,"cache_write_tokens":20})
        );
    }

    #[test]
    fn tool_only_answer_has_null_content_and_max_tokens_is_length() {
        let body = br#"{"id":"msg_2","content":[{"type":"tool_use","id":"toolu_1","name":"w","input":{}}],"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let (out, _) = to_chat(body, "c", 0).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], serde_json::Value::Null);
        assert_eq!(out["choices"][0]["finish_reason"], "length");
    }
}
