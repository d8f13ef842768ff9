//! Bedrock Converse dialect tests: golden fixtures under `tests/fixtures/bedrock/`, tool names
//! sanitised and mapped back, the rules of `adapter::bedrock`, error classification, and the
//! event stream built frame by frame here (CRC-32 by hand), split at every byte, and corrupted.

use serde_json::json;

use super::error::classify;
use super::eventstream::{EventStreamDecoder, FrameError};
use super::request::from_chat;
use super::response::to_chat;
use super::stream::ConverseChunks;
use super::*;
use crate::adapter::gemini::golden::{CREATED, golden_bytes, golden_json, read, read_json, run};
use crate::api::RawObject;
use crate::stream::ChunkRewriter;

fn translate(body: &serde_json::Value, model: &str) -> (serde_json::Value, ToolNames) {
    let request = RawObject::from_slice(body.to_string().as_bytes()).unwrap();
    let (out, names) = from_chat(&request, model).unwrap();
    (serde_json::from_slice(&out).unwrap(), names)
}

fn claude() -> &'static str {
    "us.anthropic.claude-sonnet-4-20250514-v1:0"
}

fn fixture_names() -> ToolNames {
    translate(&read_json("bedrock/request_tools.chat.json"), claude()).1
}

#[test]
fn request_alternates_turns_groups_tool_results_and_sanitises_names() {
    let request = RawObject::from_slice(&read("bedrock/request_tools.chat.json")).unwrap();
    let (body, names) = from_chat(&request, claude()).unwrap();
    let out = golden_json("bedrock/request_tools.converse.json", &body);
    assert_eq!(out["system"], json!([{"text":"Be brief."},{"text":"Use metric units."}]));
    let messages = out["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(messages[0]["content"][1], json!({"image":{"format":"jpeg","source":{"bytes":"/9j/4AAQ"}}}));
    assert_eq!(messages[0]["content"][2], json!({"text":"And Oslo."}));
    // Thinking replayed first, no blank text block, names and ids Bedrock accepts.
    assert_eq!(
        messages[1]["content"],
        json!([{"reasoningContent":{"reasoningText":{"text":"Two lookups.","signature":"sig-1"}}},
               {"toolUse":{"toolUseId":"tooluse_a1","name":"weather_get_now","input":{"city":"Paris"}}},
               {"toolUse":{"toolUseId":"call_2","name":"weather_get_now","input":{}}}])
    );
    assert_eq!(
        messages[2]["content"],
        json!([{"toolResult":{"toolUseId":"tooluse_a1","content":[{"text":"18C"}]}},
               {"toolResult":{"toolUseId":"call_2","content":[{"text":"9C"}]}},
               {"text":"Which is warmer?"}])
    );
    assert_eq!(out["toolConfig"]["tools"][0]["toolSpec"]["name"], "weather_get_now");
    assert_eq!(out["toolConfig"]["toolChoice"], json!({"auto":{}}));
    // Temperature clamped to Bedrock's 0–1.
    assert_eq!(out["inferenceConfig"], json!({"maxTokens":512,"temperature":1.0,"topP":0.9,"stopSequences":["END"]}));
    assert_eq!(names.original("weather_get_now"), "weather.get:now");
}

fn with(extra: serde_json::Value, model: &str) -> serde_json::Value {
    let mut body = json!({"model":"m","messages":[{"role":"user","content":"x"}],
        "tools":[{"type":"function","function":{"name":"f"}}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    translate(&body, model).0
}

#[test]
fn tool_choice_and_the_tool_config_history_needs() {
    assert_eq!(with(json!({"tool_choice":"required"}), claude())["toolConfig"]["toolChoice"], json!({"any":{}}));
    assert_eq!(
        with(json!({"tool_choice":{"type":"function","function":{"name":"f"}}}), claude())["toolConfig"]["toolChoice"],
        json!({"tool":{"name":"f"}})
    );
    // "none" without tool history: no toolConfig at all.
    assert!(with(json!({"tool_choice":"none"}), claude()).get("toolConfig").is_none());
    // "none", or no tools, with tool history: a stub the model must not call, no toolChoice.
    let history = json!([{"role":"user","content":"x"},
        {"role":"assistant","tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"t1","content":"1"}]);
    for extra in [json!({"messages":history,"tool_choice":"none"}), json!({"messages":history,"tools":[]})] {
        let config = &with(extra, claude())["toolConfig"];
        assert_eq!(config["tools"][0]["toolSpec"]["name"], "gateway_no_tool");
        assert!(config.get("toolChoice").is_none());
    }
}

#[test]
fn reasoning_effort_is_claude_thinking_with_the_stated_budgets() {
    for (effort, budget) in [("minimal", 1024), ("low", 1024), ("medium", 2048), ("high", 4096)] {
        let out = with(json!({"reasoning_effort":effort,"temperature":0.5}), claude());
        assert_eq!(
            out["additionalModelRequestFields"],
            json!({"thinking":{"type":"enabled","budget_tokens":budget}}),
            "{effort}"
        );
        assert_eq!(out["inferenceConfig"], json!({"maxTokens": budget + 4096}), "{effort}: no temperature");
    }
    // Not Claude, a forced tool, or no room under max_tokens: no thinking.
    assert!(
        with(json!({"reasoning_effort":"high"}), "amazon.nova-pro-v1:0").get("additionalModelRequestFields").is_none()
    );
    let forced = with(json!({"reasoning_effort":"high","tool_choice":"required"}), claude());
    assert!(forced.get("additionalModelRequestFields").is_none());
    assert!(
        with(json!({"reasoning_effort":"high","max_tokens":900}), claude())
            .get("additionalModelRequestFields")
            .is_none()
    );
}

#[test]
fn json_schema_becomes_output_config_with_the_schema_as_a_string() {
    let out = with(
        json!({"response_format":{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object","properties":{"city":{"type":"string"}}}}}}),
        claude(),
    );
    assert_eq!(
        out["outputConfig"],
        json!({"textFormat":{"type":"json_schema","structure":{"jsonSchema":{
            "schema":"{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}","name":"answer"}}}})
    );
    let out = with(json!({"response_format":{"type":"json_object"}}), claude());
    assert_eq!(out["system"][0]["text"], "Respond only with a single valid JSON object.");
}

#[test]
fn what_converse_cannot_take_is_a_400_naming_the_field() {
    let param_of = |body: serde_json::Value| {
        let request = RawObject::from_slice(body.to_string().as_bytes()).unwrap();
        from_chat(&request, claude()).unwrap_err().param.unwrap_or_default()
    };
    let user = json!([{"role":"user","content":"x"}]);
    assert_eq!(param_of(json!({"messages":user,"n":2})), "n");
    assert_eq!(
        param_of(
            json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]})
        ),
        "messages[0].content[0]"
    );
    assert_eq!(
        param_of(
            json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AA"}}]}]})
        ),
        "messages[0].content[0]"
    );
}

#[test]
fn answers_translate_with_names_mapped_back_and_cache_tokens_counted() {
    let (out, usage) =
        to_chat(&read("bedrock/response_tools.json"), "claude", "chatcmpl-req-1", CREATED, &fixture_names()).unwrap();
    let out = golden_json("bedrock/response_tools.chat.json", &out);
    let message = &out["choices"][0]["message"];
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], "Checking.");
    assert_eq!(message["reasoning_content"], "Need both.");
    assert_eq!(message["thinking_blocks"], json!([{"type":"thinking","thinking":"Need both.","signature":"sig-9"}]));
    assert_eq!(
        message["tool_calls"],
        json!([{"id":"tooluse_X1","type":"function","function":{"name":"weather.get:now","arguments":"{\"city\":\"Paris\"}"}}])
    );
    // inputTokens excludes cache reads and writes: the prompt count adds them.
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (1512, 30, 1542));
    assert_eq!(out["usage"]["prompt_tokens_details"], json!({"cached_tokens":1000,"cache_write_tokens":500}));

    let (out, usage) =
        to_chat(&read("bedrock/response_text.json"), "claude", "chatcmpl-req-1", CREATED, &ToolNames::default())
            .unwrap();
    let out = golden_json("bedrock/response_text.chat.json", &out);
    assert_eq!(
        (out["choices"][0]["message"]["content"].as_str(), out["choices"][0]["finish_reason"].as_str()),
        (Some("Paris is warmer."), Some("stop"))
    );
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (40, 5));
}

#[test]
fn every_stop_reason_maps() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("malformed_model_output", "stop"),
        ("malformed_tool_use", "stop"),
    ] {
        assert_eq!(finish_reason(stop), finish, "{stop}");
    }
}

#[test]
fn model_ids_are_percent_encoded_in_the_path() {
    assert_eq!(path(claude(), false, false), "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse");
    assert_eq!(
        path(claude(), true, true),
        "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke-with-response-stream"
    );
    assert_eq!(path("amazon.titan-embed-text-v2:0", false, true), "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(
        path("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3", true, false),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3/converse-stream"
    );
}

#[test]
fn errors_are_classified_with_status_retry_and_a_clear_message() {
    let body = br#"{"message":"Too many tokens"}"#;
    for (kind, status, retryable) in [
        ("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", 429, true),
        ("ModelNotReadyException", 429, true),
        ("ServiceUnavailableException", 503, true),
        ("InternalServerException", 500, true),
        ("ValidationException", 400, false),
        ("AccessDeniedException", 502, false),
        ("UnrecognizedClientException", 502, false),
        ("InvalidSignatureException", 502, false),
        ("ExpiredTokenException", 502, false),
        ("throttlingException", 429, true),
    ] {
        let c = classify(400, Some(kind), body);
        assert_eq!((c.status, c.retryable), (status, retryable), "{kind}");
    }
    let denied = classify(403, Some("AccessDeniedException"), br#"{"Message":"not authorized"}"#);
    assert!(
        denied.body.error.message.contains("gateway's AWS credentials")
            && denied.body.error.message.contains("not authorized")
    );
    assert_eq!(classify(400, Some("ValidationException"), body).body.error.kind, "invalid_request_error");
    assert_eq!(classify(503, None, b"").status, 503);
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One eventstream message with string headers.
fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for (name, value) in headers {
        encoded.push(name.len() as u8);
        encoded.extend_from_slice(name.as_bytes());
        encoded.push(7);
        encoded.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded.extend_from_slice(value.as_bytes());
    }
    let total = 12 + encoded.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out.extend_from_slice(&encoded);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

/// A fixture's events (`[name, payload]`) as Bedrock frames them, with its `"p"` padding.
pub(crate) fn encode(fixture: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for event in read_json(fixture).as_array().unwrap() {
        let (name, mut payload) = (event[0].as_str().unwrap(), event[1].clone());
        payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEF");
        let payload = payload.to_string();
        out.extend(match name.strip_prefix("exception:") {
            Some(kind) => frame(
                &[(":message-type", "exception"), (":exception-type", kind), (":content-type", "application/json")],
                payload.as_bytes(),
            ),
            None => frame(
                &[(":event-type", name), (":content-type", "application/json"), (":message-type", "event")],
                payload.as_bytes(),
            ),
        });
    }
    out
}

fn relay(bytes: &[u8], splits: &[usize]) -> (String, ConverseChunks) {
    let mut rewriter = ConverseChunks::new("claude", "chatcmpl-req-1", CREATED, true, fixture_names());
    let out = run(bytes, splits, &mut EventStreamDecoder::new(1 << 20), &mut rewriter);
    (String::from_utf8(out).unwrap(), rewriter)
}

#[test]
fn the_event_stream_split_at_every_byte_gives_the_same_chunks() {
    for (fixture, golden) in [
        ("bedrock/stream_tools.events.json", "bedrock/stream_tools.chat.sse"),
        ("bedrock/stream_throttled.events.json", "bedrock/stream_throttled.chat.sse"),
    ] {
        let bytes = encode(fixture);
        let (whole, _) = relay(&bytes, &[]);
        golden_bytes(golden, whole.as_bytes());
        for at in 1..bytes.len() {
            assert_eq!(relay(&bytes, &[at]).0, whole, "{fixture} split at {at}");
        }
        let every: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(relay(&bytes, &every).0, whole, "{fixture} one byte at a time");
    }
}

#[test]
fn the_event_stream_gives_text_reasoning_tool_calls_finish_and_usage() {
    let (out, rewriter) = relay(&encode("bedrock/stream_tools.events.json"), &[]);
    assert!(out.contains(r#""reasoning_content":"Need both.""#));
    assert!(out.contains(r#""content":"Checking""#) && out.contains(r#""content":" now.""#));
    assert!(
        out.contains(r#""id":"tooluse_X1","type":"function","function":{"name":"weather.get:now","arguments":""}"#)
    );
    assert!(out.contains(r#""arguments":"{\"city\":""#) && out.contains(r#""arguments":"\"Paris\"}""#));
    // The second call had no input: its arguments are an empty object.
    assert!(out.contains(r#"{"index":1,"function":{"arguments":"{}"}}"#), "{out}");
    assert!(out.contains(r#""finish_reason":"tool_calls""#));
    assert!(out.contains(r#""usage":{"prompt_tokens":1512,"completion_tokens":30,"total_tokens":1542"#));
    assert!(out.ends_with("data: [DONE]\n\n") && !out.contains(r#""p""#));
    assert_eq!(rewriter.usage().unwrap().prompt_tokens_details.unwrap().cached_tokens, 1000);
}

#[test]
fn an_exception_after_the_200_is_an_in_stream_error_with_its_label() {
    let (out, rewriter) = relay(&encode("bedrock/stream_throttled.events.json"), &[]);
    assert!(out.contains(r#""content":"Hel""#));
    assert!(out.contains(r#""type":"rate_limit_error""#) && out.contains(r#""code":"throttlingException""#), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert!(rewriter.usage().is_none());
}

#[test]
fn a_corrupted_frame_is_a_stream_error_never_text() {
    let bytes = encode("bedrock/stream_tools.events.json");
    let first = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let second = u32::from_be_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
    // A flipped payload byte in the second message (the reasoning text), then its prelude CRC.
    for at in [first + second - 20, first + 9] {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x20;
        let (out, _) = relay(&corrupt, &[]);
        assert!(out.contains("!decode error: an invalid event stream message"), "byte {at}: {out}");
        assert!(!out.contains("Need both") && !out.contains("Checking"), "byte {at}: {out}");
    }
    // A length past the bound is refused before anything is buffered.
    let mut decoder = EventStreamDecoder::new(1024);
    decoder.push(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    assert_eq!(decoder.next_event(), Err(FrameError::BadLength(0x7fff_ffff)));
    // A body that ends inside a message is cut, not complete.
    let (out, _) = relay(&bytes[..bytes.len() - 3], &[]);
    assert!(out.ends_with("!decode error: the event stream ended inside a message"), "{out}");
}
