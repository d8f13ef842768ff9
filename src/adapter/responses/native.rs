//! A Responses client on an upstream that serves `/responses` itself (OpenAI, Azure OpenAI, a
//! recent vLLM — `responses_api` in the provider's descriptor or config): the body goes as the
//! client wrote it but for `model`; the answer and each stream event come back with the
//! client's model name, the usage read from the response object (`response.completed` in a
//! stream), and the finished response kept like a bridged one.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use super::stream::Keep;
use crate::adapter::openai::WholeResponse;
use crate::adapter::{ChunkRewriter, Step};
use crate::api::openai::{CompletionTokensDetails, PromptTokensDetails};
use crate::api::sse::SseEvent;
use crate::api::{ErrorBody, RawObject, Usage};

/// What keeps a natively served response, once (a `Keep` that can be debug-printed), and the
/// `previous_response_id` its object echoes when the chain went to the upstream replayed as
/// history (the upstream never saw the id).
#[derive(Default)]
pub struct Kept {
    pub keep: Option<Keep>,
    pub echo: Option<String>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").field("keep", &self.keep.is_some()).field("echo", &self.echo).finish()
    }
}

/// The response object as the client sees it: its model name, and the id it continues.
fn rewrite(object: &mut serde_json::Map<String, Value>, client_model: &str, echo: Option<&str>) {
    object.insert("model".into(), client_model.into());
    if let Some(previous) = echo {
        object.insert("previous_response_id".into(), previous.into());
    }
}

/// The upstream's request: the client's, for `upstream_model`.
pub fn request(request: &RawObject, upstream_model: &str) -> serde_json::Result<Vec<u8>> {
    let mut body = request.clone();
    body.set("model", upstream_model)?;
    Ok(body.to_vec())
}

#[derive(Deserialize, Default)]
struct NativeUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    output_tokens_details: Option<CompletionTokensDetails>,
}

/// A response object's usage in the gateway's terms.
pub fn usage_of(response: &Value) -> Option<Usage> {
    let usage: NativeUsage = serde_json::from_value(response.get("usage")?.clone()).ok()?;
    Some(Usage {
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
        total_tokens: usage.total_tokens.max(usage.input_tokens + usage.output_tokens),
        prompt_tokens_details: usage.input_tokens_details,
        completion_tokens_details: usage.output_tokens_details,
        ..Default::default()
    })
}

fn finish_reason_of(response: &Value) -> Option<String> {
    match response.get("status")?.as_str()? {
        "incomplete" => Some("length".into()),
        "completed" => Some("stop".into()),
        other => Some(other.to_owned()),
    }
}

/// A whole answer: the client's model name, the usage, and `keep` given the object.
pub fn response(body: &[u8], client_model: &str, kept: Kept) -> serde_json::Result<WholeResponse> {
    let mut object: Value = serde_json::from_slice(body)?;
    if let Some(map) = object.as_object_mut() {
        rewrite(map, client_model, kept.echo.as_deref());
    }
    if let Some(keep) = kept.keep.filter(|_| object.get("status").and_then(Value::as_str) != Some("failed")) {
        keep(&object);
    }
    let usage = usage_of(&object);
    let finish_reason = finish_reason_of(&object);
    Ok(WholeResponse { body: serde_json::to_vec(&object)?, usage, generated: None, finish_reason })
}

/// The upstream's events relayed, each with the client's model name in its response object.
pub struct NativeEvents {
    client_model: String,
    echo: Option<String>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    keep: Option<Keep>,
}

impl NativeEvents {
    pub fn new(client_model: &str, kept: Kept) -> Self {
        let Kept { keep, echo } = kept;
        Self { client_model: client_model.to_owned(), echo, usage: None, finish_reason: None, keep }
    }
}

impl ChunkRewriter for NativeEvents {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        let mut data: Value = match serde_json::from_slice(&event.data) {
            Ok(data) => data,
            Err(e) => {
                let message = format!("The upstream sent an invalid event: {e}");
                return Step::Failed(ErrorBody::new(message, "api_error", None, Some("upstream_protocol")));
            }
        };
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        let terminal = matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed");
        if let Some(response) = data.get_mut("response").and_then(Value::as_object_mut) {
            rewrite(response, &self.client_model, self.echo.as_deref());
        }
        if terminal && let Some(response) = data.get("response") {
            self.usage = usage_of(response);
            self.finish_reason = finish_reason_of(response);
            if let Some(keep) = self.keep.take().filter(|_| kind != "response.failed") {
                keep(response);
            }
        }
        let json = serde_json::to_vec(&data).unwrap_or_default();
        let mut frame = BytesMut::with_capacity(kind.len() + json.len() + 16);
        frame.put_slice(b"event: ");
        frame.put_slice(kind.as_bytes());
        frame.put_slice(b"\ndata: ");
        frame.put_slice(&json);
        frame.put_slice(b"\n\n");
        out.push(frame.freeze());
        if terminal { Step::Done } else { Step::Continue }
    }

    fn on_end(&mut self, _out: &mut Vec<Bytes>) {}

    /// A failure after the first event: an `error` event, as OpenAI sends.
    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        let detail = &error.error;
        let event =
            serde_json::json!({"type": "error", "code": detail.code, "message": detail.message, "param": detail.param});
        out.push(Bytes::from(format!("event: error\ndata: {event}\n\n")));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn finish_reason(&self) -> Option<String> {
        self.finish_reason.clone()
    }
}
