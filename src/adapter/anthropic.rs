//! The Anthropic Messages dialect, both ways. OpenAI chat clients on Claude: `request`
//! (chat request → Messages request), `response` (Message → chat completion) and `stream`
//! (Messages events → chat chunks). Anthropic clients on `/v1/messages`: `passthrough` to
//! Claude (model name and usage only), or `inbound` + `inbound_stream` to translate for an
//! OpenAI-compatible upstream and back. All pure; the HTTP and SSE plumbing is elsewhere.

pub mod inbound;
pub mod inbound_stream;
pub mod passthrough;
pub mod request;
pub mod response;
pub mod stream;

use bytes::{BufMut, Bytes, BytesMut};

/// The Messages endpoint below an Anthropic base URL (`https://api.anthropic.com`).
pub const MESSAGES_PATH: &str = "/v1/messages";

/// `max_tokens` when an OpenAI client sends none (Anthropic requires one), capped by the
/// model's known output limit.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A tool-use id Anthropic accepts (`^[a-zA-Z0-9_-]+$`): other characters become `_`.
pub fn sanitize_tool_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// `event: <name>\ndata: <json>\n\n`.
pub fn event_frame(name: &str, json: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(name.len() + json.len() + 16);
    frame.put_slice(b"event: ");
    frame.put_slice(name.as_bytes());
    frame.put_slice(b"\ndata: ");
    frame.put_slice(json);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// The generated text in `content_block_start` / `content_block_delta` event payloads captured
/// one per line: text and thinking, tool names and their input JSON fragments. Reading stops at
/// a payload that is not JSON; the fields are read without the event's tag (unknown kinds add
/// nothing).
pub fn events_text(fragments: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(default)]
        content_block: Option<Piece>,
        #[serde(default)]
        delta: Option<Piece>,
    }
    #[derive(serde::Deserialize)]
    struct Piece {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        thinking: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        partial_json: Option<String>,
    }
    let mut text = String::new();
    for event in serde_json::Deserializer::from_slice(fragments).into_iter::<Event>() {
        let Ok(event) = event else { break };
        for piece in [event.content_block, event.delta].into_iter().flatten() {
            for s in [piece.text, piece.thinking, piece.name, piece.partial_json].into_iter().flatten() {
                text.push_str(&s);
            }
        }
    }
    text
}

/// The Anthropic in-band error event for a failure after the stream started.
pub fn error_event(error: &crate::api::ErrorBody) -> Bytes {
    let body = crate::api::anthropic::ErrorBody::from_openai(500, error);
    event_frame("error", &serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod roundtrip;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_and_finish_reasons_map_both_ways() {
        for (stop, finish) in
            [("end_turn", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter")]
        {
            assert_eq!(finish_reason(stop), finish);
            assert_eq!(stop_reason(finish), stop);
        }
        assert_eq!(finish_reason("stop_sequence"), "stop");
        assert_eq!(finish_reason("pause_turn"), "stop");
        assert_eq!(finish_reason("model_context_window_exceeded"), "length");
    }

    #[test]
    fn tool_ids_are_made_acceptable() {
        assert_eq!(sanitize_tool_id("call_abc-1"), "call_abc-1");
        assert_eq!(sanitize_tool_id("fc:1.2/x"), "fc_1_2_x");
    }
}
