//! Gemini dialect tests: golden fixtures under `tests/fixtures/gemini/`, the two-turn tool
//! round trip (generated ids and thought signatures back to Gemini), finish reasons, usage,
//! and the SSE stream split at every byte.

use serde_json::json;

use super::golden::{CREATED, golden_bytes, golden_json, read, run};
use super::request::from_chat;
use super::response::to_chat;
use super::stream::GeminiChunks;
use super::*;
use crate::api::RawObject;
use crate::stream::ChunkRewriter;
use crate::stream::sse::SseDecoder;

fn translate(body: &[u8]) -> serde_json::Value {
    let request = RawObject::from_slice(body).unwrap();
    serde_json::from_slice(&from_chat(&request).unwrap()).unwrap()
}

fn param_of(body: serde_json::Value) -> String {
    let request = RawObject::from_slice(body.to_string().as_bytes()).unwrap();
    from_chat(&request).unwrap_err().param.unwrap_or_default()
}

fn answer(fixture: &str) -> serde_json::Value {
    let (out, _) = to_chat(&read(fixture), "gemini", CREATED).unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn request_maps_system_turns_media_tools_and_generation_config() {
    let request = RawObject::from_slice(&read("gemini/request_tools.chat.json")).unwrap();
    let out = golden_json("gemini/request_tools.gemini.json", &from_chat(&request).unwrap());
    assert_eq!(out["systemInstruction"], json!({"parts":[{"text":"Be brief."},{"text":"Use metric units."}]}));
    let contents = out["contents"].as_array().unwrap();
    assert_eq!(contents.iter().map(|c| c["role"].as_str().unwrap()).collect::<Vec<_>>(), ["user", "model", "user"]);
    assert_eq!(contents[0]["parts"][1], json!({"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}));
    assert_eq!(
        contents[0]["parts"][2],
        json!({"fileData":{"mimeType":"image/webp","fileUri":"https://example.com/map.webp?size=large"}})
    );
    // The signature rides back on its call; a call without arguments sends an empty object.
    assert_eq!(
        contents[1]["parts"],
        json!([{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnLTE="},
               {"functionCall":{"name":"get_time","args":{}}}])
    );
    // Both results in one user turn, named from the calls, then the user's text.
    assert_eq!(
        contents[2]["parts"],
        json!([{"functionResponse":{"name":"get_weather","response":{"temp_c":18}}},
               {"functionResponse":{"name":"get_time","response":{"result":"noon"}}},
               {"text":"Thanks. Which is warmer?"}])
    );
    assert_eq!(out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["additionalProperties"], false);
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}})
    );
    let config = &out["generationConfig"];
    assert_eq!(config["thinkingConfig"], json!({"thinkingBudget":2048,"includeThoughts":true}));
    assert_eq!((config["maxOutputTokens"].as_u64(), config["seed"].as_i64()), (Some(800), Some(7)));
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(config["responseJsonSchema"], json!({"type":"object","properties":{"city":{"type":"string"}}}));
    assert_eq!(config["stopSequences"], json!(["END"]));
}

#[test]
fn tool_choice_modes_effort_budgets_and_json_object() {
    let with = |extra: serde_json::Value| {
        let mut body = json!({"model":"m","messages":[{"role":"user","content":"x"}],
            "tools":[{"type":"function","function":{"name":"f"}}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        translate(body.to_string().as_bytes())
    };
    for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
        assert_eq!(with(json!({"tool_choice": choice}))["toolConfig"]["functionCallingConfig"]["mode"], mode);
    }
    for (effort, budget) in [("minimal", 1024), ("low", 1024), ("medium", 2048), ("high", 4096)] {
        let config = &with(json!({"reasoning_effort": effort}))["generationConfig"];
        assert_eq!(config["thinkingConfig"]["thinkingBudget"], budget, "{effort}");
    }
    let out = with(json!({"response_format":{"type":"json_object"},"n":2,"max_tokens":64,"stop":"\n"}));
    assert_eq!(out["generationConfig"]["responseMimeType"], "application/json");
    assert!(out["generationConfig"].get("responseJsonSchema").is_none());
    assert_eq!(out["generationConfig"]["candidateCount"], 2);
    assert_eq!(out["generationConfig"]["maxOutputTokens"], 64);
    assert_eq!(out["generationConfig"]["stopSequences"], json!(["\n"]));
}

#[test]
fn what_gemini_cannot_take_is_a_400_naming_the_field() {
    let user = json!([{"role":"user","content":"x"}]);
    assert_eq!(param_of(json!({"messages":user,"stop":["a","b","c","d","e","f"]})), "stop");
    assert_eq!(param_of(json!({"messages":user,"reasoning_effort":"extreme"})), "reasoning_effort");
    assert_eq!(
        param_of(json!({"messages":[{"role":"tool","tool_call_id":"call_unknown","content":"1"}]})),
        "messages[0].tool_call_id"
    );
    assert_eq!(
        param_of(
            json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]})
        ),
        "messages[0].content[0]"
    );
}

#[test]
fn a_text_answer_with_cached_and_thinking_tokens() {
    let out = answer("gemini/response_text.json");
    golden_json("gemini/response_text.chat.json", out.to_string().as_bytes());
    assert_eq!(out["choices"][0]["message"]["content"], "Paris is 18 °C and sunny.");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["model"], "gemini");
    // Thinking is outside candidatesTokenCount: it is added to the completion.
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens":120,"completion_tokens":48,"total_tokens":168,
               "prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":40}})
    );
}

#[test]
fn two_turn_tool_round_trip_keeps_ids_names_and_signatures() {
    let out = answer("gemini/response_tools.json");
    golden_json("gemini/response_tools.chat.json", out.to_string().as_bytes());
    let message = &out["choices"][0]["message"];
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], serde_json::Value::Null);
    assert_eq!(message["reasoning_content"], "The user wants two cities.");
    let calls = message["tool_calls"].as_array().unwrap();
    let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(ids[0].starts_with("call_") && ids[0].ends_with("_0__thought__c2lnLTE="), "{}", ids[0]);
    assert!(ids[1].ends_with("_1") && !ids[1].contains(SIGNATURE_SEPARATOR), "{}", ids[1]);
    assert_eq!(calls[1]["function"]["arguments"], r#"{"city":"Oslo"}"#);
    // The same answer always gets the same ids; another answer other ids.
    assert_eq!(answer("gemini/response_tools.json")["choices"][0]["message"]["tool_calls"][0]["id"], ids[0]);
    assert_ne!(call_id("resp-other", 0, 0, "get_weather", r#"{"city":"Paris"}"#, None), split_call_id(ids[0]).0);
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens":210,"completion_tokens":80,"total_tokens":290,
               "prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":50}})
    );

    // Turn two: the client sends the calls and their results back.
    let next = json!({"model":"m","messages":[
        {"role":"user","content":"Paris and Oslo?"},
        {"role":"assistant","content":null,"tool_calls":calls},
        {"role":"tool","tool_call_id":ids[1],"content":"{\"temp_c\":9}"},
        {"role":"tool","tool_call_id":ids[0],"content":"{\"temp_c\":18}"}]});
    let request = translate(next.to_string().as_bytes());
    assert_eq!(
        request["contents"][1]["parts"],
        json!([{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnLTE="},
               {"functionCall":{"name":"get_weather","args":{"city":"Oslo"}}}])
    );
    assert_eq!(
        request["contents"][2],
        json!({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"temp_c":9}}},
                                      {"functionResponse":{"name":"get_weather","response":{"temp_c":18}}}]})
    );
}

#[test]
fn a_blocked_prompt_is_content_filter_not_a_crash() {
    let out = answer("gemini/response_blocked.json");
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["choices"][0]["message"]["content"], serde_json::Value::Null);
    assert_eq!(out["usage"]["prompt_tokens"], 9);
}

#[test]
fn every_finish_reason_maps() {
    for (reason, calls, expected) in [
        ("STOP", false, "stop"),
        ("STOP", true, "tool_calls"),
        ("MAX_TOKENS", false, "length"),
        ("MAX_TOKENS", true, "length"),
        ("SAFETY", false, "content_filter"),
        ("RECITATION", false, "content_filter"),
        ("BLOCKLIST", false, "content_filter"),
        ("PROHIBITED_CONTENT", false, "content_filter"),
        ("SPII", false, "content_filter"),
        ("IMAGE_SAFETY", false, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", false, "stop"),
        ("OTHER", false, "stop"),
        ("FINISH_REASON_UNSPECIFIED", false, "stop"),
    ] {
        assert_eq!(finish_reason(reason, calls), expected, "{reason} calls={calls}");
    }
}

fn stream(fixture: &str, include_usage: bool, splits: &[usize]) -> (Vec<u8>, GeminiChunks) {
    let mut rewriter = GeminiChunks::new("gemini", CREATED, include_usage);
    let out = run(&read(fixture), splits, &mut SseDecoder::new(), &mut rewriter);
    (out, rewriter)
}

#[test]
fn a_stream_split_at_every_byte_gives_the_same_chunks() {
    for (fixture, golden) in [
        ("gemini/stream_tools.sse", "gemini/stream_tools.chat.sse"),
        ("gemini/stream_error.sse", "gemini/stream_error.chat.sse"),
    ] {
        let (whole, _) = stream(fixture, true, &[]);
        golden_bytes(golden, &whole);
        let len = read(fixture).len();
        for at in 1..len {
            assert_eq!(stream(fixture, true, &[at]).0, whole, "{fixture} split at {at}");
        }
        let every: Vec<usize> = (1..len).collect();
        assert_eq!(stream(fixture, true, &every).0, whole, "{fixture} one byte at a time");
    }
}

#[test]
fn a_stream_reports_calls_finish_and_the_last_usage() {
    let (out, rewriter) = stream("gemini/stream_tools.sse", true, &[]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""reasoning_content":"The user wants two cities.""#));
    assert!(text.contains(r#""name":"get_weather","arguments":"{\"city\":\"Paris\"}""#));
    assert!(text.contains("__thought__c2lnLTE="));
    assert!(text.contains(r#""finish_reason":"tool_calls""#));
    assert!(text.ends_with("data: [DONE]\n\n"));
    let usage = rewriter.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (50, 42));
    assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, 20);
    assert!(rewriter.usage_final());
    assert_eq!(rewriter.finish_reason().as_deref(), Some("tool_calls"));
    // The stream's ids are the whole answer's ids for the same response.
    let (without_usage, _) = stream("gemini/stream_tools.sse", false, &[]);
    assert!(!String::from_utf8(without_usage).unwrap().contains(r#""usage""#));
}

#[test]
fn an_error_event_mid_stream_is_an_in_stream_error() {
    let (out, rewriter) = stream("gemini/stream_error.sse", true, &[]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""content":"Once upon""#));
    assert!(text.contains(r#""type":"rate_limit_error""#) && text.contains("RESOURCE_EXHAUSTED"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(rewriter.finish_reason().is_none());
}

#[test]
fn paths_for_both_platforms() {
    assert_eq!(
        gemini_api_path("gemini-2.5-flash", true),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(gemini_api_path("tunedModels/t1", false), "/v1beta/tunedModels/t1:generateContent");
    assert_eq!(
        vertex_path("p1", "us-central1", "gemini-2.5-pro", false),
        "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"
    );
}

#[test]
fn google_error_answers_read_in_both_envelopes() {
    let bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#;
    assert_eq!(upstream_error(400, bad_key).error.kind, "authentication_error");
    let quota = br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#;
    let quota = upstream_error(429, quota);
    assert_eq!((quota.error.kind.as_str(), quota.error.message.as_str()), ("rate_limit_error", "Quota exceeded"));
    assert_eq!(upstream_error(502, b"Bad Gateway").error.message, "Bad Gateway");
}
