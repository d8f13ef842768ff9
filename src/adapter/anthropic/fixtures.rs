//! Golden transcripts for every direction, from `tests/fixtures/`: recorded upstream bytes go
//! through the SSE decoder and a rewriter split at every offset (and one byte at a time), and
//! must give exactly the golden client bytes; whole requests and responses must translate to
//! their golden JSON. `UPDATE_GOLDEN=1 cargo test` rewrites the golden files (review the diff).

use std::path::{Path, PathBuf};

use super::inbound::{self, to_chat_request};
use super::inbound_stream::MessagesFromChunks;
use super::passthrough::MessagesRelay;
use super::request::from_chat;
use super::response::to_chat;
use super::stream::ClaudeChunks;
use crate::adapter::{ChunkRewriter, Step};
use crate::api::sse::SseDecoder;
use crate::api::{ErrorBody, RawObject};
use crate::error::GatewayError;

const CREATED: u64 = 1_764_140_000;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

pub(super) fn read(path: &str) -> Vec<u8> {
    std::fs::read(fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Compares bytes with a golden file (or writes it when updating).
fn golden_bytes(path: &str, actual: &[u8]) {
    if updating() {
        std::fs::write(fixture(path), actual).unwrap();
        return;
    }
    let expected = read(path);
    assert!(
        expected == actual,
        "{path} differs:\n--- expected\n{}\n--- actual\n{}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual)
    );
}

/// Compares JSON with a golden file, as values (the file is pretty-printed for review).
fn golden_json(path: &str, actual: &[u8]) {
    let actual: serde_json::Value = serde_json::from_slice(actual).unwrap();
    if updating() {
        let mut text = serde_json::to_vec_pretty(&actual).unwrap();
        text.push(b'\n');
        std::fs::write(fixture(path), text).unwrap();
        return;
    }
    let expected: serde_json::Value = serde_json::from_slice(&read(path)).unwrap();
    assert_eq!(expected, actual, "{path} differs");
}

/// `input` up to (not including) the event whose data holds `marker`: a stream cut there.
pub(super) fn cut_before<'a>(input: &'a [u8], marker: &str) -> &'a [u8] {
    let text = std::str::from_utf8(input).unwrap();
    let at = text.find(marker).unwrap_or_else(|| panic!("{marker} not in the stream"));
    let start = text[..at].rfind("\n\n").map_or(0, |i| i + 2);
    &input[..start]
}

/// What the relay would send the client for `input` arriving in pieces cut at `cuts`.
pub(super) fn run(input: &[u8], cuts: &[usize], rewriter: &mut dyn ChunkRewriter) -> Vec<u8> {
    let mut decoder = SseDecoder::new();
    let mut frames = Vec::new();
    let mut start = 0;
    let mut step = Step::Continue;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        decoder.push(&input[start..cut]);
        start = cut;
        while step == Step::Continue
            && let Some(event) = decoder.next_event().unwrap()
        {
            step = rewriter.on_event(&event, &mut frames);
        }
    }
    if step == Step::Continue
        && let Some(event) = decoder.finish().unwrap()
    {
        step = rewriter.on_event(&event, &mut frames);
    }
    match step {
        Step::Continue | Step::Done => rewriter.on_end(&mut frames),
        Step::Failed(mut body) => {
            // As the relay does for an in-band upstream error.
            body.error.code.get_or_insert_with(|| "upstream_stream_error".into());
            rewriter.on_error(&body, &mut frames);
        }
    }
    frames.concat()
}

/// Runs `input` split at every offset and one byte at a time; every run must agree.
fn every_split(input: &[u8], make: &dyn Fn() -> Box<dyn ChunkRewriter>) -> Vec<u8> {
    let whole = run(input, &[], make().as_mut());
    for cut in 0..=input.len() {
        assert_eq!(run(input, &[cut], make().as_mut()), whole, "split at {cut}");
    }
    let step = (input.len() / 41).max(1);
    for a in (0..=input.len()).step_by(step) {
        for b in (a..=input.len()).step_by(7) {
            assert_eq!(run(input, &[a, b], make().as_mut()), whole, "split at {a} and {b}");
        }
    }
    let bytewise: Vec<usize> = (1..input.len()).collect();
    assert_eq!(run(input, &bytewise, make().as_mut()), whole, "one byte at a time");
    whole
}

#[test]
fn claude_streams_become_openai_chunks() {
    for name in ["stream_text", "stream_tools", "stream_thinking", "stream_max_tokens", "stream_overloaded"] {
        let input = read(&format!("anthropic/{name}.sse"));
        let out = every_split(&input, &|| Box::new(ClaudeChunks::new("claude-sonnet", CREATED, true)));
        golden_bytes(&format!("anthropic/{name}.openai.sse"), &out);
    }
}

#[test]
fn claude_stream_details_an_openai_client_relies_on() {
    let input = read("anthropic/stream_tools.sse");
    let mut rewriter = ClaudeChunks::new("claude-sonnet", CREATED, false);
    let out = String::from_utf8(run(&input, &[], &mut rewriter)).unwrap();
    let chunks: Vec<serde_json::Value> = out
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert!(chunks.iter().all(|c| c["id"] == "msg_01ToolsPar" && c["model"] == "claude-sonnet"));
    assert!(chunks.iter().all(|c| c["choices"].as_array().is_some_and(|a| a.len() == 1)), "no usage chunk unasked");
    // Per call: the first fragment has id, type and name; arguments concatenate to JSON.
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                assert_eq!(call["type"], "function");
                assert_eq!(call["function"]["arguments"], "");
                calls.push((
                    call["id"].as_str().unwrap().into(),
                    call["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            } else {
                assert!(call.get("id").is_none());
                calls[index].2.push_str(call["function"]["arguments"].as_str().unwrap());
            }
        }
    }
    assert_eq!(
        calls,
        [
            ("toolu_01A".into(), "get_weather".into(), r#"{"city": "Paris"}"#.into()),
            ("toolu_01B".into(), "get_time".into(), "{}".into())
        ]
    );
    let usage = rewriter.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (2212, 61, 2273));
    assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, 1800);
}

#[test]
fn claude_streams_pass_through_to_anthropic_clients() {
    for name in ["stream_text", "stream_tools", "stream_overloaded"] {
        let input = read(&format!("anthropic/{name}.sse"));
        let out = every_split(&input, &|| Box::new(MessagesRelay::new("claude-sonnet")));
        golden_bytes(&format!("anthropic/{name}.passthrough.sse"), &out);
    }
    let mut relay = MessagesRelay::new("claude");
    run(&read("anthropic/stream_max_tokens.sse"), &[], &mut relay);
    let usage = relay.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 3));
}

#[test]
fn openai_streams_become_anthropic_events() {
    for (input, name) in [
        ("openai/chat_stream_usage.sse", "chat_stream_usage"),
        ("openai/chat_stream_tools.sse", "chat_stream_tools"),
        ("anthropic/inbound/chat_stream_reasoning_oneshot.sse", "chat_stream_reasoning_oneshot"),
        ("anthropic/inbound/chat_stream_error.sse", "chat_stream_error"),
    ] {
        let input = read(input);
        let out = every_split(&input, &|| Box::new(MessagesFromChunks::new("claude-sonnet")));
        golden_bytes(&format!("anthropic/inbound/{name}.anthropic.sse"), &out);
    }
}

#[test]
fn whole_responses_both_ways() {
    for name in ["message_tools", "message_thinking", "message_max_tokens"] {
        let (out, _) = to_chat(&read(&format!("anthropic/{name}.json")), "claude-sonnet", CREATED).unwrap();
        golden_json(&format!("anthropic/{name}.openai.json"), &out);
    }
    for name in ["completion_tools", "completion_length"] {
        let (out, _) = inbound::to_message(&read(&format!("anthropic/inbound/{name}.json")), "claude-sonnet").unwrap();
        golden_json(&format!("anthropic/inbound/{name}.anthropic.json"), &out);
    }
}

#[test]
fn requests_both_ways() {
    for name in ["chat_text", "chat_multi_turn", "chat_tools", "chat_image", "chat_thinking"] {
        let request = RawObject::from_slice(&read(&format!("anthropic/requests/{name}.json"))).unwrap();
        let stream = request.parse::<bool>("stream").unwrap().unwrap_or(false);
        let out = from_chat(&request, "claude-sonnet-4-5", stream, Some(64000)).unwrap();
        golden_json(&format!("anthropic/requests/{name}.anthropic.json"), &out);
    }
    for name in ["messages_text", "messages_multi_turn", "messages_tools", "messages_image"] {
        let request = RawObject::from_slice(&read(&format!("anthropic/requests/{name}.json"))).unwrap();
        let stream = request.parse::<bool>("stream").unwrap().unwrap_or(false);
        let out = to_chat_request(&request, "gpt-4o", stream, true, None).unwrap();
        golden_json(&format!("anthropic/requests/{name}.openai.json"), &out);
    }
}

#[test]
fn overloaded_is_retryable_503_for_openai_clients_and_529_for_anthropic_ones() {
    let body = ErrorBody::from_upstream(529, &read("anthropic/error_overloaded.json"));
    assert_eq!((body.error.message.as_str(), body.error.kind.as_str()), ("Overloaded", "overloaded_error"));
    let error =
        GatewayError::UpstreamStatus { status: http::StatusCode::from_u16(529).unwrap(), body, retry_after: None };
    assert!(error.retryable());
    assert_eq!(error.status().as_u16(), 503);
    assert_eq!(error.anthropic_status().as_u16(), 529);
    assert_eq!(error.anthropic_body().error.kind, "overloaded_error");
    assert_eq!(error.body().error.kind, "overloaded_error");

    let rate = ErrorBody::from_upstream(
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
    );
    assert_eq!(rate.error.kind, "rate_limit_error");
    let invalid = ErrorBody::from_upstream(
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}"#,
    );
    assert!(invalid.error.message.starts_with("prompt is too long"));
}

/// Claude Code's own requests, as the real CLI sent them (captured by
/// `tests/e2e/test_claude_code.py`): each passes to Claude untouched but for `model`, and
/// translates for an OpenAI-compatible model with its system turns in place, the server-side
/// settings dropped, and the tool call answered by a tool message.
#[test]
fn claude_code_requests_pass_to_claude_and_translate_for_openai_models() {
    for name in ["messages_request", "tool_turn_1", "tool_turn_2"] {
        let capture: serde_json::Value = serde_json::from_slice(&read(&format!("claude_code/{name}.json"))).unwrap();
        let body = serde_json::to_vec(&capture["body"]).unwrap();
        let request = RawObject::from_slice(&body).unwrap();
        crate::ingress::request::parse(crate::ctx::Endpoint::Messages, &body).unwrap();

        let passed: serde_json::Value =
            serde_json::from_slice(&super::passthrough::request(&request, "claude-upstream").unwrap()).unwrap();
        let mut expected = capture["body"].clone();
        expected["model"] = "claude-upstream".into();
        assert_eq!(passed, expected, "{name}: passed through verbatim but for the model");

        let out = to_chat_request(&request, "gpt-4o", true, true, Some(16_384)).unwrap();
        golden_json(&format!("claude_code/{name}.openai.json"), &out);
        let chat: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let roles: Vec<&str> =
            chat["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        let sent_roles: Vec<&str> =
            capture["body"]["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        // The top-level system prompt first, then each system turn where Claude Code put it.
        assert_eq!(roles[0], "system", "{name}");
        let system_turns = sent_roles.iter().filter(|r| **r == "system").count();
        assert_eq!(roles.iter().filter(|r| **r == "system").count(), 1 + system_turns, "{name}");
        for field in ["context_management", "output_config", "thinking", "metadata"] {
            assert!(chat.get(field).is_none(), "{name}: {field} is Claude's own");
        }
        let tools = chat["tools"].as_array().unwrap();
        let deferred =
            capture["body"]["tools"].as_array().unwrap().iter().filter(|t| t["defer_loading"] == true).count();
        assert_eq!(tools.len() + deferred, capture["body"]["tools"].as_array().unwrap().len(), "{name}");
        assert_eq!(chat["max_tokens"], 16_384, "{name}: capped at the model's output limit");
        if name == "tool_turn_2" {
            let tool = chat["messages"].as_array().unwrap().iter().position(|m| m["role"] == "tool").unwrap();
            let call = &chat["messages"][tool - 1]["tool_calls"][0];
            assert_eq!(call["function"]["name"], "Bash");
            assert_eq!(chat["messages"][tool]["tool_call_id"], call["id"]);
        }
    }
}
