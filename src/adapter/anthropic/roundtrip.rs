//! Round-trip property: OpenAI → Anthropic → OpenAI preserves content, tool calls (ids, names,
//! arguments), finish reasons and usage — for requests, whole responses and streams (chunked
//! at random, the Anthropic bytes split at random). Cases come from seeded generators, so a
//! failure names a seed that reproduces it.

use serde_json::{Value, json};

use super::inbound::{to_chat_request, to_message};
use super::inbound_stream::MessagesFromChunks;
use super::request::from_chat;
use super::response::to_chat;
use super::stream::ClaudeChunks;
use crate::adapter::ChunkRewriter;
use crate::api::RawObject;
use crate::api::sse::SseDecoder;

const CASES: u64 = 300;

fn text(rng: &mut fastrand::Rng) -> String {
    const WORDS: &[&str] =
        &["hello", "Grüße", "🌍", "tool", "x", "\"quoted\"", "new\nline", "a\\b", "日本語", "{json}"];
    let n = rng.usize(1..6);
    (0..n).map(|_| WORDS[rng.usize(..WORDS.len())]).collect::<Vec<_>>().join(" ")
}

fn ident(rng: &mut fastrand::Rng, prefix: &str) -> String {
    format!("{prefix}{}", rng.alphanumeric().to_string() + &rng.u32(..100_000).to_string())
}

fn arguments(rng: &mut fastrand::Rng) -> Value {
    let mut object = serde_json::Map::new();
    for _ in 0..rng.usize(0..3) {
        object.insert(ident(rng, "k"), json!(text(rng)));
    }
    if rng.bool() {
        object.insert("n".into(), json!(rng.u32(..1000)));
    }
    Value::Object(object)
}

fn tool_calls(rng: &mut fastrand::Rng) -> Vec<Value> {
    (0..rng.usize(1..4))
        .map(|_| {
            json!({"id": ident(rng, "call_"), "type": "function",
                   "function": {"name": ident(rng, "fn_"), "arguments": arguments(rng).to_string()}})
        })
        .collect()
}

/// A conversation OpenAI clients send: alternating turns, tool results right after the calls.
fn conversation(rng: &mut fastrand::Rng) -> Vec<Value> {
    let mut messages = vec![json!({"role": "system", "content": text(rng)})];
    for _ in 0..rng.usize(1..4) {
        messages.push(json!({"role": "user", "content": text(rng)}));
        let calls = rng.bool().then(|| tool_calls(rng));
        let content = if calls.is_none() || rng.bool() { json!(text(rng)) } else { Value::Null };
        let mut assistant = json!({"role": "assistant", "content": content});
        if let Some(calls) = &calls {
            assistant["tool_calls"] = json!(calls);
        }
        messages.push(assistant);
        for call in calls.iter().flatten() {
            messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": text(rng)}));
        }
    }
    messages.push(json!({"role": "user", "content": text(rng)}));
    messages
}

/// What must survive, per message: role, text, tool calls (arguments as JSON), tool call id.
fn essence(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let calls: Vec<Value> = m["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                    json!([c["id"], c["function"]["name"], args])
                })
                .collect();
            let content = match &m["content"] {
                Value::Null => json!(""),
                other => other.clone(),
            };
            json!({"role": m["role"], "content": content, "calls": calls, "tool_call_id": m["tool_call_id"]})
        })
        .collect()
}

#[test]
fn requests_survive_the_round_trip() {
    for seed in 0..CASES {
        let mut rng = fastrand::Rng::with_seed(seed);
        let messages = conversation(&mut rng);
        let request = json!({"model": "m", "messages": messages, "max_tokens": 100});
        let request = RawObject::from_slice(request.to_string().as_bytes()).unwrap();
        let claude = from_chat(&request, "claude", false, None).unwrap();
        let back = to_chat_request(&RawObject::from_slice(&claude).unwrap(), "gpt", false, false, None).unwrap();
        let back: Value = serde_json::from_slice(&back).unwrap();
        assert_eq!(essence(back["messages"].as_array().unwrap()), essence(&messages), "seed {seed}");
        assert_eq!(back["max_tokens"], 100, "seed {seed}");
    }
}

/// A random completion: (content, tool calls, finish_reason, usage).
fn completion(rng: &mut fastrand::Rng) -> (String, Vec<Value>, &'static str, Value) {
    let calls = if rng.bool() { tool_calls(rng) } else { Vec::new() };
    let content = if calls.is_empty() || rng.bool() { text(rng) } else { String::new() };
    let finish = if !calls.is_empty() {
        "tool_calls"
    } else if rng.bool() {
        "stop"
    } else {
        "length"
    };
    let (cached, prompt, completion) = (rng.u64(..50), rng.u64(50..500), rng.u64(1..300));
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                       "prompt_tokens_details": {"cached_tokens": cached}});
    (content, calls, finish, usage)
}

fn call_essence(calls: &[Value]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
            json!([c["id"], c["function"]["name"], args])
        })
        .collect()
}

#[test]
fn whole_responses_survive_the_round_trip() {
    for seed in 0..CASES {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (content, calls, finish, usage) = completion(&mut rng);
        let mut message = json!({"role": "assistant", "content": content});
        if !calls.is_empty() {
            message["tool_calls"] = json!(calls);
        }
        let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt",
                          "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage});
        let (anthropic, _) = to_message(body.to_string().as_bytes(), "c").unwrap();
        let (back, counted) = to_chat(&anthropic, "c", 1).unwrap();
        let back: Value = serde_json::from_slice(&back).unwrap();
        let choice = &back["choices"][0];
        assert_eq!(choice["message"]["content"].as_str().unwrap_or(""), content, "seed {seed}");
        let back_calls = choice["message"]["tool_calls"].as_array().cloned().unwrap_or_default();
        assert_eq!(call_essence(&back_calls), call_essence(&calls), "seed {seed}");
        assert_eq!(choice["finish_reason"], finish, "seed {seed}");
        assert_eq!(back["usage"]["prompt_tokens"], usage["prompt_tokens"], "seed {seed}");
        assert_eq!(back["usage"]["completion_tokens"], usage["completion_tokens"], "seed {seed}");
        assert_eq!(
            back["usage"]["prompt_tokens_details"]["cached_tokens"],
            usage["prompt_tokens_details"]["cached_tokens"]
        );
        assert_eq!(counted.total_tokens, usage["total_tokens"].as_u64().unwrap(), "seed {seed}");
    }
}

/// `s` cut into 1..=4 pieces at random char boundaries.
fn pieces(rng: &mut fastrand::Rng, s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut cuts: Vec<usize> = (0..rng.usize(0..4)).map(|_| rng.usize(0..=chars.len())).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(chars.len())) {
        if cut > start {
            out.push(chars[start..cut].iter().collect());
            start = cut;
        }
    }
    out
}

/// Feeds SSE bytes in two random pieces through a rewriter; returns the client bytes.
fn relay(rng: &mut fastrand::Rng, input: &[u8], rewriter: &mut dyn ChunkRewriter) -> Vec<u8> {
    let cut = rng.usize(0..=input.len());
    let mut decoder = SseDecoder::new();
    let mut frames = Vec::new();
    let mut done = false;
    for piece in [&input[..cut], &input[cut..]] {
        decoder.push(piece);
        while !done && let Some(event) = decoder.next_event().unwrap() {
            done = rewriter.on_event(&event, &mut frames) != crate::adapter::Step::Continue;
        }
    }
    rewriter.on_end(&mut frames);
    frames.concat()
}

#[test]
fn streams_survive_the_round_trip() {
    for seed in 0..CASES {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (content, calls, finish, usage) = completion(&mut rng);
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut upstream = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
        for piece in pieces(&mut rng, &content) {
            upstream.push_str(&chunk(json!({"content": piece}), Value::Null));
        }
        for (i, call) in calls.iter().enumerate() {
            let args = call["function"]["arguments"].as_str().unwrap();
            let first = json!({"index": i, "id": call["id"], "type": "function",
                               "function": {"name": call["function"]["name"], "arguments": ""}});
            upstream.push_str(&chunk(json!({"tool_calls": [first]}), Value::Null));
            for piece in pieces(&mut rng, args) {
                let next = json!({"index": i, "function": {"arguments": piece}});
                upstream.push_str(&chunk(json!({"tool_calls": [next]}), Value::Null));
            }
        }
        upstream.push_str(&chunk(json!({}), json!(finish)));
        upstream.push_str(&format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "choices": [], "usage": usage})
        ));

        let anthropic = relay(&mut rng, upstream.as_bytes(), &mut MessagesFromChunks::new("c"));
        let mut back = ClaudeChunks::new("c", 1, true);
        let openai = relay(&mut rng, &anthropic, &mut back);
        let text = String::from_utf8(openai).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "seed {seed}");

        let mut got_content = String::new();
        let mut got_calls: Vec<Value> = Vec::new();
        let mut got_finish = Vec::new();
        let mut got_usage = Value::Null;
        for data in text.split("\n\n").filter_map(|f| f.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
            let c: Value = serde_json::from_str(data).unwrap();
            if let Some(u) = c.get("usage") {
                got_usage = u.clone();
            }
            let Some(choice) = c["choices"].get(0) else { continue };
            got_content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap() as usize;
                if index == got_calls.len() {
                    got_calls.push(json!({"id": call["id"], "type": "function",
                                          "function": {"name": call["function"]["name"], "arguments": ""}}));
                }
                let args = got_calls[index]["function"]["arguments"].as_str().unwrap().to_owned()
                    + call["function"]["arguments"].as_str().unwrap();
                got_calls[index]["function"]["arguments"] = json!(args);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                got_finish.push(f.to_owned());
            }
        }
        assert_eq!(got_content, content, "seed {seed}");
        assert_eq!(call_essence(&got_calls), call_essence(&calls), "seed {seed}");
        assert_eq!(got_finish, [finish], "seed {seed}");
        for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(got_usage[field], usage[field], "seed {seed}: {field}");
        }
        assert_eq!(
            got_usage["prompt_tokens_details"]["cached_tokens"],
            usage["prompt_tokens_details"]["cached_tokens"]
        );
        assert_eq!(back.usage().unwrap().total_tokens, usage["total_tokens"].as_u64().unwrap(), "seed {seed}");
    }
}
