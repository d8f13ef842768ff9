//! The built-in mock transport (the `mock` dialect, the original service's `LLM_BACKEND=mock`):
//! an in-process upstream that answers like OpenAI — deterministic content, realistic usage, real SSE — so the
//! gateway runs and is testable with no external service. Its bytes go through exactly the same
//! stream and response path as a remote upstream's.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::api::{RawObject, Usage, tokens};
use crate::ctx::Endpoint;
use crate::upstream::UpstreamResponse;

const PREFIX: &str = "Mock response to: ";
const DEFAULT_DIMENSIONS: usize = 16;

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<Content>,
    role: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join(" "),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TextInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u64>),
    TokenLists(Vec<Vec<u64>>),
}

impl TextInput {
    fn items(&self) -> Vec<String> {
        match self {
            TextInput::One(s) => vec![s.clone()],
            TextInput::Many(v) => v.clone(),
            TextInput::Tokens(t) => vec![format!("{t:?}")],
            TextInput::TokenLists(v) => v.iter().map(|t| format!("{t:?}")).collect(),
        }
    }
}

/// Roughly four characters a token; at least one.
fn estimate_tokens(text: &str) -> u64 {
    tokens::estimate(text).max(1)
}

/// Answers `request` (already carrying the upstream model name) as an OpenAI server would.
pub fn respond(endpoint: Endpoint, request: &RawObject) -> UpstreamResponse {
    match answer(endpoint, request) {
        Ok(response) => response,
        Err(message) => error_response(StatusCode::BAD_REQUEST, &message),
    }
}

fn answer(endpoint: Endpoint, request: &RawObject) -> Result<UpstreamResponse, String> {
    let model: String = request.parse("model").ok().flatten().unwrap_or_default();
    let stream: bool = request.parse("stream").ok().flatten().unwrap_or(false);
    let include_usage = request
        .get("stream_options")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .and_then(|v| v.get("include_usage").and_then(|u| u.as_bool()))
        .unwrap_or(false);
    let seed = fnv1a(&request.to_vec());
    let answer = Answer {
        model,
        stream,
        include_usage,
        id_suffix: format!("{seed:016x}"),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
    };
    match endpoint {
        Endpoint::ChatCompletions => chat_answer(request, answer),
        Endpoint::Completions => completion_answer(request, answer),
        Endpoint::Embeddings => embeddings_answer(request, &answer.model),
        // Anthropic clients reach the mock translated to a chat completion.
        Endpoint::Messages | Endpoint::Responses => {
            Err("the mock speaks chat completions: Messages and Responses reach it through the adapter".into())
        }
    }
}

/// What every answer shares: the model echoed back, whether and how it streams, its id and time.
struct Answer {
    model: String,
    stream: bool,
    include_usage: bool,
    id_suffix: String,
    created: u64,
}

/// A chat completion echoing the last user message, whole or as chunks.
fn chat_answer(request: &RawObject, answer: Answer) -> Result<UpstreamResponse, String> {
    let Answer { model, stream, include_usage, id_suffix, created } = answer;
    let messages: Vec<Message> = request.parse("messages").map_err(|e| format!("messages: {e}"))?.unwrap_or_default();
    let prompt_tokens: u64 =
        messages.iter().map(|m| 3 + m.content.as_ref().map(|c| estimate_tokens(&c.text())).unwrap_or(0)).sum();
    let last_user =
        messages.iter().rev().find(|m| m.role == "user").and_then(|m| m.content.as_ref()).map(Content::text);
    let content = match last_user {
        Some(text) => format!("{PREFIX}{text}"),
        None => "Mock response.".to_owned(),
    };
    let usage = usage(prompt_tokens, estimate_tokens(&content));
    let id = format!("chatcmpl-mock{id_suffix}");
    if !stream {
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        });
        return Ok(json_response(&body));
    }
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(words(&content).map(|w| chunk(json!({"content": w}), None)));
    events.push(chunk(json!({}), Some("stop")));
    if include_usage {
        events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage}));
    }
    Ok(sse_response(events))
}

/// A text completion echoing the prompt, whole or as chunks.
fn completion_answer(request: &RawObject, answer: Answer) -> Result<UpstreamResponse, String> {
    let Answer { model, stream, include_usage, id_suffix, created } = answer;
    let prompt: TextInput =
        request.parse("prompt").map_err(|e| format!("prompt: {e}"))?.unwrap_or(TextInput::One(String::new()));
    let prompt = prompt.items().join("\n");
    let text = format!("{PREFIX}{prompt}");
    let usage = usage(estimate_tokens(&prompt), estimate_tokens(&text));
    let id = format!("cmpl-mock{id_suffix}");
    if !stream {
        let body = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        });
        return Ok(json_response(&body));
    }
    let chunk = |text: &str, finish: Option<&str>| {
        json!({"id": id, "object": "text_completion", "created": created, "model": model,
               "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events: Vec<_> = words(&text).map(|w| chunk(w, None)).collect();
    events.push(chunk("", Some("stop")));
    if include_usage {
        events.push(json!({"id": id, "object": "text_completion", "created": created,
                           "model": model, "choices": [], "usage": usage}));
    }
    Ok(sse_response(events))
}

/// One deterministic vector per input text.
fn embeddings_answer(request: &RawObject, model: &str) -> Result<UpstreamResponse, String> {
    let input: TextInput = request.parse("input").map_err(|e| format!("input: {e}"))?.ok_or("input: required")?;
    let dimensions: usize = request
        .parse::<usize>("dimensions")
        .map_err(|e| format!("dimensions: {e}"))?
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, 4096);
    let items = input.items();
    let prompt_tokens: u64 = items.iter().map(|t| estimate_tokens(t)).sum();
    let data: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": embed(text, dimensions)}))
        .collect();
    let body = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    Ok(json_response(&body))
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens, ..Default::default() }
}

/// Splits text into word-sized deltas that concatenate back to it exactly.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let skip = rest.len() - rest.trim_start().len();
        let end = rest[skip..].find(char::is_whitespace).map(|i| i + skip).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        rest = tail;
        Some(word)
    })
}

/// A deterministic unit vector derived from the text.
fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes()) | 1;
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn json_response(body: &serde_json::Value) -> UpstreamResponse {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    UpstreamResponse {
        status: StatusCode::OK,
        headers,
        body: futures_util::stream::once(async move { Ok(bytes) }).boxed(),
    }
}

fn sse_response(events: Vec<serde_json::Value>) -> UpstreamResponse {
    let frames: Vec<_> = events
        .iter()
        .map(|e| {
            let mut frame = b"data: ".to_vec();
            frame.extend(serde_json::to_vec(e).unwrap_or_default());
            frame.extend_from_slice(b"\n\n");
            Ok(Bytes::from(frame))
        })
        .chain(std::iter::once(Ok(Bytes::from_static(crate::api::sse::DONE_FRAME))))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    UpstreamResponse { status: StatusCode::OK, headers, body: futures_util::stream::iter(frames).boxed() }
}

fn error_response(status: StatusCode, message: &str) -> UpstreamResponse {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    let mut response = json_response(&body);
    response.status = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_concatenate_back_to_the_text() {
        let text = "Mock response to:  hello\tworld ";
        assert_eq!(words(text).collect::<String>(), text);
        assert!(words(text).count() > 3);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed("hello", 16);
        assert_eq!(a, embed("hello", 16));
        assert_ne!(a, embed("hello!", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
