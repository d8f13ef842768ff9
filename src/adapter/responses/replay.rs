//! A finished response object played back as the stream of events a client streaming it would
//! have received: `response.created`, `response.in_progress`, each output item opened, its
//! parts' deltas (one per part: the whole text at once) and done events, closed, then the
//! terminal event (`response.completed`, `.incomplete` or `.failed`), numbered from 0. For
//! `GET /v1/responses/{id}?stream=true` (with `starting_after`) and a cache hit streamed. Works
//! on any object, bridged or native: an item type it does not know is added and done whole.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::stream::frame;

/// The events replaying `response`, as SSE frames, those numbered after `starting_after` only.
pub fn frames(response: &Value, starting_after: Option<u64>) -> Vec<Bytes> {
    let mut replay = Replay { sequence: 0, starting_after, out: Vec::new() };
    let started = started(response);
    replay.emit("response.created", json!({"response": started}));
    replay.emit("response.in_progress", json!({"response": started}));
    for (index, item) in response.get("output").and_then(Value::as_array).into_iter().flatten().enumerate() {
        replay.item(index, item);
    }
    let terminal = match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    replay.emit(terminal, json!({"response": response}));
    replay.out
}

/// The object as it was when the stream started: in progress, nothing out yet.
fn started(response: &Value) -> Value {
    let mut started = response.clone();
    if let Some(map) = started.as_object_mut() {
        map.insert("status".into(), "in_progress".into());
        map.insert("output".into(), json!([]));
        map.remove("usage");
        for field in ["error", "incomplete_details", "completed_at"] {
            if map.contains_key(field) {
                map.insert(field.into(), Value::Null);
            }
        }
    }
    started
}

struct Replay {
    sequence: u64,
    starting_after: Option<u64>,
    out: Vec<Bytes>,
}

impl Replay {
    fn emit(&mut self, kind: &str, fields: Value) {
        let sequence = self.sequence;
        self.sequence += 1;
        if self.starting_after.is_some_and(|after| sequence <= after) {
            return;
        }
        let mut event = Map::new();
        event.insert("type".into(), kind.into());
        if let Value::Object(fields) = fields {
            event.extend(fields);
        }
        event.insert("sequence_number".into(), sequence.into());
        self.out.push(frame(kind, &serde_json::to_vec(&event).unwrap_or_default()));
    }

    /// One output item: added (empty, in progress), its parts, done (whole).
    fn item(&mut self, index: usize, item: &Value) {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
        let id = item.get("id").cloned().unwrap_or(Value::Null);
        let at = json!({"item_id": id, "output_index": index});
        self.emit("response.output_item.added", json!({"output_index": index, "item": added(kind, item)}));
        let text = |field: &str| item.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        match kind {
            "message" => self.message_parts(&at, item),
            "reasoning" => self.summary_parts(&at, item),
            "function_call" => {
                let arguments = text("arguments");
                self.emit("response.function_call_arguments.delta", with(&at, json!({"delta": arguments})));
                let done = json!({"name": text("name"), "arguments": arguments});
                self.emit("response.function_call_arguments.done", with(&at, done));
            }
            "custom_tool_call" => {
                let input = text("input");
                self.emit("response.custom_tool_call_input.delta", with(&at, json!({"delta": input})));
                self.emit("response.custom_tool_call_input.done", with(&at, json!({"input": input})));
            }
            _ => {}
        }
        self.emit("response.output_item.done", json!({"output_index": index, "item": item}));
    }

    fn message_parts(&mut self, at: &Value, item: &Value) {
        let parts = item.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (content_index, part) in parts.iter().enumerate() {
            let at = with(at, json!({"content_index": content_index}));
            let get = |field: &str| part.get(field).and_then(Value::as_str).unwrap_or_default();
            match part.get("type").and_then(Value::as_str) {
                Some("output_text") => {
                    let empty = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
                    self.emit("response.content_part.added", with(&at, json!({"part": empty})));
                    let text = get("text");
                    self.emit("response.output_text.delta", with(&at, json!({"delta": text, "logprobs": []})));
                    self.emit("response.output_text.done", with(&at, json!({"text": text, "logprobs": []})));
                }
                Some("refusal") => {
                    let empty = json!({"type": "refusal", "refusal": ""});
                    self.emit("response.content_part.added", with(&at, json!({"part": empty})));
                    let refusal = get("refusal");
                    self.emit("response.refusal.delta", with(&at, json!({"delta": refusal})));
                    self.emit("response.refusal.done", with(&at, json!({"refusal": refusal})));
                }
                _ => self.emit("response.content_part.added", with(&at, json!({"part": part}))),
            }
            self.emit("response.content_part.done", with(&at, json!({"part": part})));
        }
    }

    fn summary_parts(&mut self, at: &Value, item: &Value) {
        let parts = item.get("summary").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (summary_index, part) in parts.iter().enumerate() {
            let at = with(at, json!({"summary_index": summary_index}));
            let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
            let empty = json!({"type": "summary_text", "text": ""});
            self.emit("response.reasoning_summary_part.added", with(&at, json!({"part": empty})));
            self.emit("response.reasoning_summary_text.delta", with(&at, json!({"delta": text})));
            self.emit("response.reasoning_summary_text.done", with(&at, json!({"text": text})));
            self.emit("response.reasoning_summary_part.done", with(&at, json!({"part": part})));
        }
    }
}

/// An item as `response.output_item.added` shows it: in progress, its content still empty.
fn added(kind: &str, item: &Value) -> Value {
    let mut added = item.clone();
    let Some(map) = added.as_object_mut() else { return added };
    if map.contains_key("status") {
        map.insert("status".into(), "in_progress".into());
    }
    match kind {
        "message" => drop(map.insert("content".into(), json!([]))),
        "reasoning" => drop(map.insert("summary".into(), json!([]))),
        "function_call" => drop(map.insert("arguments".into(), "".into())),
        "custom_tool_call" => drop(map.insert("input".into(), "".into())),
        _ => {}
    }
    added
}

/// `base`'s members, then `more`'s.
fn with(base: &Value, more: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Value::Object(more)) = (out.as_object_mut(), more) {
        out.extend(more);
    }
    out
}
