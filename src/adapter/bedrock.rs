//! The Bedrock Converse dialect, for OpenAI chat clients: `request` (chat request → Converse
//! body), `response` (Converse answer → chat completion), `eventstream` (the binary
//! `application/vnd.amazon.eventstream` framing, CRC-checked) and `stream` (ConverseStream
//! events → chat chunks), `invoke` (Claude's Messages events inside InvokeModel's stream), `tools` (tools and tool choice → `toolConfig`), `error` (Bedrock's
//! error answers and exceptions). All pure.
//!
//! Rules this dialect fixes, stated once:
//! - **Usage**: `prompt_tokens` = `inputTokens` + `cacheReadInputTokens` +
//!   `cacheWriteInputTokens` (Bedrock's `inputTokens` excludes both, OpenAI's prompt count
//!   includes them); `cached_tokens` = `cacheReadInputTokens`; cache writes are reported as
//!   `prompt_tokens_details.cache_write_tokens`; `completion_tokens` = `outputTokens` (which
//!   includes reasoning, not broken out).
//! - **Tool names** Bedrock accepts are `[A-Za-z0-9_-]{1,64}`: other characters become `_` and
//!   the name is cut at 64; `request::from_chat` returns the `ToolNames` map that turns the
//!   names in the answer back into the client's.
//! - **Temperature** is clamped to Bedrock's 0–1 (OpenAI allows up to 2).
//! - **Reasoning effort** → `additionalModelRequestFields.thinking` for Claude models only:
//!   minimal and low 1024, medium 2048, high 4096 budget tokens (temperature and top_p are then
//!   not sent: Claude refuses them with thinking).
//! - **`tool_choice: "none"`**: Converse has no such choice, so no `toolChoice` is sent and the
//!   tools are replaced by one stub tool the model is told never to call — kept only when the
//!   history holds tool calls or results, for which Converse requires a `toolConfig`.
//! - **Finish**: `malformed_model_output` and `malformed_tool_use` end as `stop`.

pub mod error;
pub mod eventstream;
pub mod invoke;
pub mod request;
pub mod response;
pub mod stream;
pub mod tools;

use crate::api::Usage;
use crate::api::converse::TokenUsage;

/// `/model/{modelId}/converse` or `/converse-stream` (InvokeModel: `/invoke` or
/// `/invoke-with-response-stream`), the model id percent-encoded as a URI label (`:` → `%3A`,
/// `/` in an ARN → `%2F`).
pub fn path(model_id: &str, stream: bool, invoke: bool) -> String {
    let mut encoded = String::with_capacity(model_id.len() + 8);
    for byte in model_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let operation = match (invoke, stream) {
        (false, false) => "converse",
        (false, true) => "converse-stream",
        (true, false) => "invoke",
        (true, true) => "invoke-with-response-stream",
    };
    format!("/model/{encoded}/{operation}")
}

/// Bedrock `stopReason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence, malformed_model_output, malformed_tool_use, new ones.
        _ => "stop",
    }
}

/// Bedrock's counts in OpenAI's terms (module doc).
pub fn usage(usage: &TokenUsage) -> Usage {
    Usage::from_anthropic(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_input_tokens,
        usage.cache_write_input_tokens,
    )
}

/// The client's tool names whose Bedrock spelling differs: (sent, original).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNames(Vec<(String, String)>);

impl ToolNames {
    /// The Bedrock spelling of `name`, remembered when it differs.
    pub fn sanitise(&mut self, name: &str) -> String {
        let sent: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
            .take(64)
            .collect();
        if sent != name && !self.0.iter().any(|(s, _)| *s == sent) {
            self.0.push((sent.clone(), name.to_owned()));
        }
        sent
    }

    /// The client's name for a name in Bedrock's answer.
    pub fn original<'a>(&'a self, sent: &'a str) -> &'a str {
        self.0.iter().find(|(s, _)| s == sent).map_or(sent, |(_, original)| original)
    }
}

/// A `toolUseId` Bedrock accepts (`[a-zA-Z0-9_.:-]{1,64}`): other characters become `_`.
pub fn tool_use_id(id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') { c } else { '_' })
        .take(64)
        .collect();
    if id.is_empty() { "call".into() } else { id }
}

#[cfg(test)]
pub(crate) mod tests;
