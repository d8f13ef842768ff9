//! Golden fixtures from `tests/fixtures/responses/`: requests (real SDK captures among them)
//! translate to their golden chat requests; chat answers to their golden `response` objects;
//! chat streams, split at every byte offset, to their golden event streams, whose final
//! response must equal the whole answer's. `UPDATE_GOLDEN=1` rewrites the golden files.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;
use crate::adapter::{ChunkRewriter, Step};
use crate::api::RawObject;
use crate::api::sse::SseDecoder;

const CREATED: u64 = 1_764_140_000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/responses").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

fn golden_json(name: &str, actual: &[u8]) {
    let actual: Value = serde_json::from_slice(actual).unwrap();
    if updating() {
        let mut text = serde_json::to_vec_pretty(&actual).unwrap();
        text.push(b'\n');
        std::fs::write(fixture(name), text).unwrap();
        return;
    }
    let expected: Value = serde_json::from_slice(&read(name)).unwrap();
    assert_eq!(expected, actual, "{name} differs");
}

fn golden_bytes(name: &str, actual: &[u8]) {
    if updating() {
        std::fs::write(fixture(name), actual).unwrap();
        return;
    }
    assert!(read(name) == actual, "{name} differs:\n{}", String::from_utf8_lossy(actual));
}

fn request(name: &str) -> RawObject {
    RawObject::from_slice(&read(name)).unwrap()
}

fn translate(name: &str) -> (Value, ToolNames) {
    let out = to_chat(&request(name), "upstream-model", true).unwrap();
    (serde_json::from_slice(&out.body).unwrap(), out.tools)
}

fn envelope(request_name: &str) -> Envelope {
    Envelope::new(&request(request_name), "resp_gw0123".into(), CREATED, "gpt-4o-mini")
}

/// What the relay sends for `input` arriving in pieces cut at `cuts`.
fn run(input: &[u8], cuts: &[usize], rewriter: &mut dyn ChunkRewriter) -> Vec<u8> {
    let mut decoder = SseDecoder::new();
    let (mut frames, mut start, mut step) = (Vec::new(), 0, Step::Continue);
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
        Step::Failed(body) => rewriter.on_error(&body, &mut frames),
    }
    frames.concat()
}

/// `input` split at every offset, and one byte at a time: every run gives the same bytes.
fn every_split<R: ChunkRewriter>(input: &[u8], make: &dyn Fn() -> R) -> Vec<u8> {
    let whole = run(input, &[], &mut make());
    for cut in 0..=input.len() {
        assert_eq!(run(input, &[cut], &mut make()), whole, "split at {cut}");
    }
    let bytewise: Vec<usize> = (1..input.len()).collect();
    assert_eq!(run(input, &bytewise, &mut make()), whole, "one byte at a time");
    whole
}

/// The events of a stream: (event name, data).
fn events(stream: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(stream).unwrap();
    text.split_terminator("\n\n")
        .map(|frame| {
            let (name, data) = frame.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            (name, serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap())
        })
        .collect()
}

#[test]
fn requests_become_their_golden_chat_requests() {
    for name in ["openai_python_create", "openai_python_stream", "tool_round_trip", "custom_tool", "codex_exec_turn2"] {
        let out = to_chat(&request(&format!("{name}.json")), "upstream-model", true).unwrap();
        golden_json(&format!("{name}.chat.json"), &out.body);
    }
}

#[test]
fn the_sdk_request_keeps_its_instructions_tool_and_schema() {
    let (chat, _) = translate("openai_python_create.json");
    assert_eq!(chat["messages"][0], json!({"role": "system", "content": "Answer with the city only."}));
    assert_eq!(chat["messages"][1], json!({"role": "user", "content": "Where is the Eiffel Tower?"}));
    assert_eq!(chat["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(chat["tools"][0]["function"]["strict"], true);
    assert_eq!(chat["response_format"]["type"], "json_schema");
    assert_eq!(chat["response_format"]["json_schema"]["name"], "city_answer");
    assert_eq!(chat["response_format"]["json_schema"]["schema"]["required"], json!(["city"]));
    assert_eq!(chat["max_completion_tokens"], 200);
    assert!(chat.get("stream_options").is_none(), "not a stream");
}

#[test]
fn a_tool_round_trip_keeps_calls_and_outputs_paired_in_chat_order() {
    let (chat, _) = translate("tool_round_trip.json");
    let roles: Vec<&str> = chat["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "system", "user", "assistant", "tool", "tool", "user", "assistant", "user"]);
    let turn = &chat["messages"][3];
    assert_eq!(turn["content"], "Checking both.");
    let ids: Vec<&str> = turn["tool_calls"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["call_w", "call_t"], "both calls in the assistant turn that made them");
    assert_eq!(chat["messages"][4], json!({"role": "tool", "content": "18C, sunny", "tool_call_id": "call_w"}));
    assert_eq!(chat["messages"][5]["content"], "14:05");
    assert_eq!(chat["messages"][6]["content"][0]["image_url"]["url"], "https://example.com/clock.png");
    assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
    assert_eq!((chat["parallel_tool_calls"].clone(), chat["reasoning_effort"].clone()), (json!(false), json!("high")));
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    assert!(chat.get("metadata").is_none(), "chat takes metadata only with store");
}

#[test]
fn custom_tools_become_functions_taking_their_input_as_a_string() {
    let (chat, custom) = translate("custom_tool.json");
    assert!(custom.is_custom("apply_patch") && !custom.is_custom("exec_command"));
    let patch = &chat["tools"][1]["function"];
    assert_eq!(patch["name"], "apply_patch");
    assert_eq!(patch["parameters"]["required"], json!(["input"]));
    assert!(patch["parameters"]["properties"]["input"]["description"].as_str().unwrap().contains("begin_patch hunk+"));
    let call = &chat["messages"][2]["tool_calls"][0];
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments["input"], "*** Begin Patch\n*** Add File: hello.txt\n+Hi\n*** End Patch");
    assert_eq!(chat["messages"][3]["tool_call_id"], "call_p1");
    assert!(chat.get("reasoning_effort").is_none(), "effort none is the chat default");
}

#[test]
fn codex_turns_go_to_chat_with_their_history_and_namespaced_tools() {
    let (chat, tools) = translate("codex_exec_turn2.json");
    let messages = chat["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "system", "user", "user", "assistant", "tool"]);
    assert_eq!(
        messages[4]["tool_calls"][0]["function"],
        json!({"name": "exec_command", "arguments": "{\"cmd\": \"echo Hello\"}"})
    );
    assert_eq!(messages[5]["tool_call_id"], "call_1");
    assert!(messages[5]["content"].as_str().unwrap().ends_with("Hello\n"));
    let names: Vec<&str> =
        chat["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"exec_command") && names.contains(&"multi_agent_v1__spawn_agent"), "{names:?}");
    assert_eq!(tools.origin("multi_agent_v1__spawn_agent").namespace, Some("multi_agent_v1"));
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));

    // Codex's default tools include a hosted web search, which a chat model cannot run.
    let error = to_chat(&request("codex_default_turn1.json"), "m", true).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("tools[8].type"));
    assert!(error.message.contains("web_search"), "{error}");
}

#[test]
fn a_call_to_a_namespaced_tool_answers_with_its_namespace() {
    let request = RawObject::from_slice(
        br#"{"input":[{"role":"user","content":"go"},
              {"type":"function_call","call_id":"c0","namespace":"agents","name":"spawn","arguments":"{}"},
              {"type":"function_call_output","call_id":"c0","output":"ok"}],
            "tools":[{"type":"namespace","name":"agents","description":"Sub-agents.","tools":[
              {"type":"function","name":"spawn","parameters":{"type":"object"}},
              {"type":"custom","name":"script"}]}]}"#,
    )
    .unwrap();
    let out = to_chat(&request, "m", false).unwrap();
    let chat: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(chat["messages"][1]["tool_calls"][0]["function"]["name"], "agents__spawn");
    assert_eq!(chat["tools"][1]["function"]["name"], "agents__script");
    let answer = br#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[
        {"id":"c1","type":"function","function":{"name":"agents__spawn","arguments":"{\"task\":\"x\"}"}},
        {"id":"c2","type":"function","function":{"name":"agents__script","arguments":"{\"input\":\"print(1)\"}"}}]},
        "finish_reason":"tool_calls"}]}"#;
    let envelope = Envelope::new(&request, "resp_1".into(), CREATED, "m");
    let (body, _) = to_response(answer, &envelope, &out.tools).unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        response["output"],
        json!([
            {"type": "function_call", "id": "fc_1_0", "call_id": "c1", "namespace": "agents", "name": "spawn", "arguments": "{\"task\":\"x\"}", "status": "completed"},
            {"type": "custom_tool_call", "id": "ctc_1_1", "call_id": "c2", "namespace": "agents", "name": "script", "input": "print(1)", "status": "completed"}
        ])
    );
    assert!(response.get("usage").is_none(), "the upstream reported none");
}

#[test]
fn what_chat_cannot_express_is_named() {
    let cases = [
        (r#"{"input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}"#, "tools[1].type"),
        (r#"{"input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]}"#, "tools[0].type"),
        (r#"{"input":"x","background":true}"#, "background"),
        (
            r#"{"input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","file_id":"file-1"}]}]}"#,
            "input[0].content[1].file_id",
        ),
        (r#"{"input":[{"role":"user","content":"a"},{"type":"computer_call_output","call_id":"c"}]}"#, "input[1].type"),
        (r#"{"input":"x","tool_choice":{"type":"web_search_preview"}}"#, "tool_choice.type"),
        (r#"{"input":[{"role":"narrator","content":"a"}]}"#, "input[0].role"),
        (r#"{"input":"x","previous_response_id":"resp_1"}"#, "previous_response_id"),
        (r#"{"input":"x","conversation":{"id":"conv_1"}}"#, "conversation"),
        (r#"{"input":[{"type":"item_reference","id":"msg_1"}]}"#, "input[0].type"),
    ];
    for (body, param) in cases {
        let error = to_chat(&RawObject::from_slice(body.as_bytes()).unwrap(), "m", false).unwrap_err();
        assert_eq!(error.param.as_deref(), Some(param), "{body}: {error}");
    }
}

#[test]
fn chat_answers_become_their_golden_responses() {
    for (answer, request) in [
        ("completion_text", "openai_python_create.json"),
        ("completion_tools", "custom_tool.json"),
        ("completion_length", "openai_python_create.json"),
    ] {
        let custom = translate(request).1;
        let (body, usage) = to_response(&read(&format!("{answer}.json")), &envelope(request), &custom).unwrap();
        assert!(usage.is_some());
        golden_json(&format!("{answer}.response.json"), &body);
    }
}

#[test]
fn answers_carry_what_the_client_reads() {
    let envelope = envelope("custom_tool.json");
    let custom = translate("custom_tool.json").1;
    let (body, _) = to_response(&read("completion_tools.json"), &envelope, &custom).unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    let kinds: Vec<&str> = response["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message", "function_call", "custom_tool_call"]);
    assert_eq!(response["output"][1]["call_id"], "call_aaa111");
    assert_eq!(response["output"][2]["input"], "*** Begin Patch\n*** Add File: hello.txt\n+Hello\n*** End Patch");
    assert_eq!(response["instructions"], "You are a coding agent.");
    assert_eq!(response["store"], false);

    let text_envelope = self::envelope("openai_python_create.json");
    let (body, _) = to_response(&read("completion_length.json"), &text_envelope, &ToolNames::default()).unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (response["status"].as_str(), response["incomplete_details"]["reason"].as_str()),
        (Some("incomplete"), Some("max_output_tokens"))
    );
    let (body, _) = to_response(&read("completion_text.json"), &text_envelope, &ToolNames::default()).unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["output"][0]["summary"][0]["text"], "The user asks about the tower.");
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 120, "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
               "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 9}, "total_tokens": 150})
    );
    assert_eq!(response["text"]["format"]["name"], "city_answer");
    assert_eq!(response["max_output_tokens"], 200);
}

#[test]
fn chat_streams_become_their_golden_events_at_every_split() {
    for (name, request) in [
        ("chat_stream_text", "openai_python_create.json"),
        ("chat_stream_tools", "custom_tool.json"),
        ("chat_stream_length", "openai_python_create.json"),
        ("chat_stream_error", "openai_python_create.json"),
    ] {
        let custom = translate(request).1;
        let make = || ResponsesFromChunks::new(envelope(request), custom.clone());
        let out = every_split(&read(&format!("{name}.sse")), &make);
        golden_bytes(&format!("{name}.responses.sse"), &out);
    }
}

#[test]
fn a_stream_ends_with_the_same_response_as_the_whole_answer() {
    for (stream, whole, request) in [
        ("chat_stream_text", "completion_text", "openai_python_create.json"),
        ("chat_stream_tools", "completion_tools", "custom_tool.json"),
        ("chat_stream_length", "completion_length", "openai_python_create.json"),
    ] {
        let custom = translate(request).1;
        let mut rewriter = ResponsesFromChunks::new(envelope(request), custom.clone());
        let events = events(&run(&read(&format!("{stream}.sse")), &[], &mut rewriter));
        let sequence: Vec<u64> = events.iter().map(|(_, e)| e["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(sequence, (0..events.len() as u64).collect::<Vec<_>>(), "{stream}");
        assert!(events.iter().all(|(name, e)| e["type"] == name.as_str()));
        assert_eq!(events[0].0, "response.created");
        let (last, last_event) = events.last().unwrap();
        let done: Vec<&Value> =
            events.iter().filter(|(n, _)| n == "response.output_item.done").map(|(_, e)| &e["item"]).collect();
        assert_eq!(last_event["response"]["output"].as_array().unwrap().iter().collect::<Vec<_>>(), done);
        let (body, _) = to_response(&read(&format!("{whole}.json")), &envelope(request), &custom).unwrap();
        let whole: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(last_event["response"], whole, "{stream}");
        let terminal = if whole["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
        assert_eq!(last, terminal);
    }
}

#[test]
fn a_failure_mid_stream_is_an_error_event_then_response_failed() {
    let mut rewriter = ResponsesFromChunks::new(envelope("openai_python_create.json"), ToolNames::default());
    let events = events(&run(&read("chat_stream_error.sse"), &[], &mut rewriter));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(events[names.len() - 2].1["message"], "The server had an error while processing your request.");
    let failed = &events[names.len() - 1].1["response"];
    assert_eq!((failed["status"].as_str(), failed["error"]["code"].as_str()), (Some("failed"), Some("server_error")));
    let generated = rewriter.take_generated().unwrap();
    assert_eq!((generated.text)(&generated.fragments), "Hel", "what was sent is counted");
}

#[test]
fn claude_answers_reach_a_responses_client_through_the_chat_translation() {
    let tools = ToolNames::default();
    let make = || {
        let claude = crate::adapter::anthropic::stream::ClaudeChunks::new("gpt-4o-mini", CREATED, true);
        ThroughChat::new(
            Box::new(claude),
            ResponsesFromChunks::new(envelope("openai_python_stream.json"), tools.clone()),
        )
    };
    for name in ["stream_tools", "stream_thinking", "stream_max_tokens", "stream_overloaded"] {
        let out = every_split(&read(&format!("../anthropic/{name}.sse")), &make);
        golden_bytes(&format!("claude_{name}.responses.sse"), &out);
    }
    let mut rewriter = make();
    let events = events(&run(&read("../anthropic/stream_tools.sse"), &[], &mut rewriter));
    let completed = &events.last().unwrap().1["response"];
    let calls: Vec<(&str, &str)> = completed["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .map(|i| (i["call_id"].as_str().unwrap(), i["arguments"].as_str().unwrap()))
        .collect();
    assert_eq!(calls, [("toolu_01A", "{\"city\": \"Paris\"}"), ("toolu_01B", "{}")]);
    assert_eq!(completed["usage"]["input_tokens_details"]["cached_tokens"], 1800, "Claude's cache reads");
    assert!(rewriter.usage_final());

    // A whole Claude message: Claude → chat → response.
    let (chat, _) =
        crate::adapter::anthropic::response::to_chat(&read("../anthropic/message_tools.json"), "m", CREATED).unwrap();
    let (body, _) = to_response(&chat, &envelope("openai_python_stream.json"), &tools).unwrap();
    golden_json("claude_message_tools.response.json", &body);
}

#[test]
fn codex_sends_back_what_the_bridge_streamed_and_it_goes_to_chat_paired() {
    // Codex (model gpt-5.5) was served chat_stream_tools.responses.sse: it ran exec_command,
    // had apply_patch refused by its sandbox, and sent this turn.
    let recorded = request("codex_replay_turn2.json");
    let error = to_chat(&recorded, "m", true).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("tools[8].type"), "tool_search is not bridged: {error}");

    let mut body: Value = serde_json::from_slice(&read("codex_replay_turn2.json")).unwrap();
    body["tools"].as_array_mut().unwrap().retain(|t| t["type"] != "tool_search");
    let out = to_chat(&RawObject::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap(), "m", true).unwrap();
    let chat: Value = serde_json::from_slice(&out.body).unwrap();
    let messages = chat["messages"].as_array().unwrap();
    let turn = &messages[messages.len() - 3];
    assert_eq!(turn["content"], "Let me look.");
    let calls: Vec<(&str, &str)> = turn["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["function"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(calls, [("call_aaa111", "exec_command"), ("call_bbb222", "apply_patch")]);
    let patch: Value = serde_json::from_str(turn["tool_calls"][1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(patch["input"], "*** Begin Patch\n*** Add File: hello.txt\n+Hello\n*** End Patch");
    let outputs: Vec<&str> =
        messages[messages.len() - 2..].iter().map(|m| m["tool_call_id"].as_str().unwrap()).collect();
    assert_eq!(outputs, ["call_aaa111", "call_bbb222"]);
    assert!(out.tools.is_custom("apply_patch"));
}

#[test]
fn every_request_fixture_also_reaches_claude_through_the_chat_translation() {
    for name in ["openai_python_create", "openai_python_stream", "tool_round_trip", "custom_tool", "codex_exec_turn2"] {
        let chat = to_chat(&request(&format!("{name}.json")), "claude-sonnet", true).unwrap();
        let chat = RawObject::from_slice(&chat.body).unwrap();
        let claude = crate::adapter::anthropic::request::from_chat(&chat, "claude-sonnet", true, Some(8192))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let claude: Value = serde_json::from_slice(&claude).unwrap();
        assert!(claude["system"].to_string().len() > 2, "{name}: the instructions reach Claude as its system prompt");
        assert!(claude["tools"].as_array().is_some_and(|t| !t.is_empty()), "{name}: the tools reach Claude");
    }
}

#[test]
fn a_native_stream_is_relayed_with_the_clients_model_and_its_usage_read() {
    use std::sync::{Arc, Mutex};
    let input = read("chat_stream_text.responses.sse");
    let kept: Arc<Mutex<Vec<Value>>> = Arc::default();
    let make = || {
        let kept = kept.clone();
        native::NativeEvents::new(
            "client-m",
            native::Kept { keep: Some(Box::new(move |r: &Value| kept.lock().unwrap().push(r.clone()))), echo: None },
        )
    };
    let out = every_split(&input, &make);
    let (sent, relayed) = (events(&input), events(&out));
    assert_eq!(sent.len(), relayed.len());
    for ((name, mut data), (relayed_name, relayed_data)) in sent.into_iter().zip(relayed) {
        assert_eq!(name, relayed_name);
        if let Some(response) = data.get_mut("response") {
            response["model"] = "client-m".into();
        }
        assert_eq!(data, relayed_data, "only the model differs");
    }
    let completed = kept.lock().unwrap().last().cloned().unwrap();
    assert_eq!((completed["status"].as_str(), completed["model"].as_str()), (Some("completed"), Some("client-m")));
    let mut rewriter = make();
    run(&input, &[], &mut rewriter);
    let usage = rewriter.usage().unwrap();
    assert_eq!(usage.prompt_tokens, completed["usage"]["input_tokens"].as_u64().unwrap());
    assert_eq!(usage.completion_tokens, completed["usage"]["output_tokens"].as_u64().unwrap());

    let whole = native::response(&read("completion_text.response.json"), "client-m", native::Kept::default()).unwrap();
    let body: Value = serde_json::from_slice(&whole.body).unwrap();
    assert_eq!(body["model"], "client-m");
    let echo = native::Kept { keep: None, echo: Some("resp_prev".into()) };
    let replayed = native::response(&read("completion_text.response.json"), "client-m", echo).unwrap();
    let replayed: Value = serde_json::from_slice(&replayed.body).unwrap();
    assert_eq!(replayed["previous_response_id"], "resp_prev", "a chain sent as history echoes its id");
    assert_eq!(whole.usage.unwrap().total_tokens, body["usage"]["total_tokens"].as_u64().unwrap());
}

/// A stream's events without their numbers, its deltas per (type, item) joined into one.
fn comparable(events: Vec<(String, Value)>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for (_, mut event) in events {
        event.as_object_mut().unwrap().remove("sequence_number");
        if let Some(last) = out.last_mut()
            && event["type"].as_str().unwrap().ends_with(".delta")
            && (last["type"].clone(), last["item_id"].clone()) == (event["type"].clone(), event["item_id"].clone())
        {
            let joined = format!("{}{}", last["delta"].as_str().unwrap(), event["delta"].as_str().unwrap());
            last["delta"] = joined.into();
            continue;
        }
        out.push(event);
    }
    out
}

#[test]
fn a_stored_response_replays_as_the_events_that_streamed_it() {
    for name in ["chat_stream_text", "chat_stream_tools", "chat_stream_length", "claude_stream_thinking"] {
        let streamed = events(&read(&format!("{name}.responses.sse")));
        let response = streamed.last().unwrap().1["response"].clone();
        let replayed = events(&replay::frames(&response, None).concat());
        let numbers: Vec<u64> = replayed.iter().map(|(_, e)| e["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (0..replayed.len() as u64).collect::<Vec<_>>(), "{name}");
        assert!(replayed.iter().all(|(kind, e)| e["type"] == kind.as_str()), "{name}");
        assert_eq!(comparable(replayed.clone()), comparable(streamed), "{name}");
        // `starting_after`: the events numbered after it only.
        let rest = events(&replay::frames(&response, Some(3)).concat());
        assert_eq!(rest, replayed[4..], "{name}");
    }
}
