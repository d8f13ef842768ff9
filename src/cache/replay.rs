//! A cached answer, delivered as the client asked: the stored `chat.completion` with the client's
//! model name, or — for a streaming client — a synthesised OpenAI stream: a role chunk, the
//! reasoning and content in small deltas, the tool calls, the finish chunk, the usage chunk when
//! asked for, and `[DONE]`.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use serde_json::{Value, json};

use super::entry::Completion;
use crate::api::RawObject;
use crate::stream::data_frame;

/// Characters per content delta: small enough to look like a stream, large enough to be cheap.
const DELTA_CHARS: usize = 32;

/// A replayed stream's response (`text/event-stream`).
pub fn sse_response(frames: Vec<Bytes>) -> Response {
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<Bytes, Infallible>));
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A replayed whole answer's response (`application/json`).
pub fn json_response(body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The stored body with `model` set to what the client asked for.
pub fn whole(body: &[u8], client_model: &str) -> serde_json::Result<Vec<u8>> {
    let mut object = RawObject::from_slice(body)?;
    object.set("model", client_model)?;
    Ok(object.to_vec())
}

/// Every SSE frame of the replayed stream, `[DONE]` included.
pub fn stream_frames(body: &[u8], client_model: &str, include_usage: bool) -> serde_json::Result<Vec<Bytes>> {
    let completion: Completion = serde_json::from_slice(body)?;
    let choice = completion.choices.first();
    let message = choice.map(|c| &c.message);
    let mut frames = Vec::new();
    let chunk = |delta: Value, finish: Option<&str>| -> Value {
        let mut chunk = json!({
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": client_model,
            "choices": [{"index": choice.map_or(0, |c| c.index), "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if let Some(fp) = &completion.system_fingerprint {
            chunk["system_fingerprint"] = json!(fp);
        }
        if let Some(tier) = &completion.service_tier {
            chunk["service_tier"] = json!(tier);
        }
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut push = |value: Value| -> serde_json::Result<()> {
        frames.push(data_frame(&serde_json::to_vec(&value)?));
        Ok(())
    };
    push(chunk(json!({"role": "assistant", "content": "", "refusal": null}), None))?;
    if let Some(message) = message {
        for piece in pieces(message.reasoning_content.as_deref()) {
            push(chunk(json!({"reasoning_content": piece}), None))?;
        }
        for piece in pieces(message.content.as_deref()) {
            push(chunk(json!({"content": piece}), None))?;
        }
        for piece in pieces(message.refusal.as_deref()) {
            push(chunk(json!({"refusal": piece}), None))?;
        }
        for (i, call) in message.tool_calls.iter().flatten().enumerate() {
            push(chunk(
                json!({"tool_calls": [{"index": i, "id": call.id, "type": call.kind,
                                       "function": {"name": call.function.name, "arguments": call.function.arguments}}]}),
                None,
            ))?;
        }
    }
    let finish = choice.and_then(|c| c.finish_reason.as_deref()).unwrap_or("stop");
    push(chunk(json!({}), Some(finish)))?;
    if include_usage {
        let mut usage_chunk = json!({
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": client_model,
            "choices": [],
            "usage": completion.usage.unwrap_or_default(),
        });
        if let Some(fp) = &completion.system_fingerprint {
            usage_chunk["system_fingerprint"] = json!(fp);
        }
        push(usage_chunk)?;
    }
    frames.push(Bytes::from_static(crate::adapter::openai::DONE_FRAME));
    Ok(frames)
}

/// `text` cut into deltas on character boundaries.
fn pieces(text: Option<&str>) -> Vec<&str> {
    let Some(text) = text else { return Vec::new() };
    let mut out = Vec::with_capacity(text.len() / DELTA_CHARS + 1);
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest.char_indices().nth(DELTA_CHARS).map_or(rest.len(), |(i, _)| i);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::assemble::Assembler;

    const BODY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":9,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Grüße 🌍 — a long enough answer to need several deltas, surely.","refusal":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":4,"completion_tokens":9,"total_tokens":13}}"#;

    #[test]
    fn replay_folds_back_into_the_same_answer() {
        let frames = stream_frames(BODY.as_bytes(), "client-name", true).unwrap();
        assert!(frames.len() > 5);
        assert_eq!(&frames.last().unwrap()[..], crate::adapter::openai::DONE_FRAME);
        let mut assembler = Assembler::new(1 << 20);
        for f in &frames {
            assembler.frame(f);
        }
        let back: Value = serde_json::from_slice(&assembler.finish(None).unwrap()).unwrap();
        let original: Value = serde_json::from_str(BODY).unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], original["choices"][0]["message"]["content"]);
        assert_eq!(back["choices"][0]["message"]["tool_calls"], original["choices"][0]["message"]["tool_calls"]);
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(back["usage"], original["usage"]);
        assert_eq!(back["model"], "client-name");
    }

    #[test]
    fn no_usage_chunk_unless_asked_and_model_rewritten() {
        let frames = stream_frames(BODY.as_bytes(), "c", false).unwrap();
        assert!(frames.iter().all(|f| !String::from_utf8_lossy(f).contains("\"usage\"")));
        let whole: Value = serde_json::from_slice(&whole(BODY.as_bytes(), "c").unwrap()).unwrap();
        assert_eq!(whole["model"], "c");
        assert_eq!(pieces(Some("ab")), ["ab"]);
    }
}
