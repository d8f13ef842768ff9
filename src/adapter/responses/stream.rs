//! Chat chunks → Responses events, for a Responses client on a chat-completions upstream.
//! `response.created` and `response.in_progress` on the first chunk; then one output item at a
//! time — reasoning (as a summary), the message, each tool call — opened by
//! `response.output_item.added` with its part and delta events, and closed by
//! `response.output_item.done` before the next opens. The terminal event
//! (`response.completed`, or `response.incomplete` after a length or content-filter cut) waits
//! for the usage, which chat sends in a chunk of its own after the finish reason. A failure
//! after the first event is an `error` event and then `response.failed`. Every event carries
//! `sequence_number`, from 0. `response.completed` repeats every item whole, so the items are
//! kept until then.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::response::{Envelope, Outcome, call_item, incomplete};
use super::tools::ToolNames;
use crate::adapter::{ChunkRewriter, Step};
use crate::api::chat::{ChatChunk, FunctionCall, ToolCall};
use crate::api::responses::{OutputContent, OutputItem, ResponseError, ResponseUsage, SummaryText};
use crate::api::sse::SseEvent;
use crate::api::{ErrorBody, Usage};
use crate::ctx::{Capture, Generated, utf8_text};

/// The output item being streamed.
#[derive(Debug)]
enum Open {
    Reasoning(String),
    Message(String),
    Call { openai_index: u32, call_id: String, name: String, arguments: String, custom: bool },
}

#[derive(Deserialize)]
struct ErrorProbe {
    #[serde(default)]
    error: Option<IgnoredAny>,
}

pub struct ResponsesFromChunks {
    envelope: Envelope,
    tools: ToolNames,
    sequence: u64,
    started: bool,
    /// The items closed so far; the open one's `output_index` is their count.
    output: Vec<OutputItem>,
    open: Option<Open>,
    /// The open item's id.
    open_id: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    finished: bool,
    /// The text, reasoning, tool names and arguments sent (bounded), for a local count when the
    /// upstream reports no usage.
    generated: Capture,
    /// Given the finished response object (completed or incomplete), to store it.
    keep: Option<Keep>,
}

/// What is done with a finished response object (the gateway stores it).
pub type Keep = Box<dyn FnOnce(&Value) + Send>;

/// `event: <type>\ndata: <json>\n\n`.
pub(super) fn frame(kind: &str, json: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(kind.len() + json.len() + 16);
    frame.put_slice(b"event: ");
    frame.put_slice(kind.as_bytes());
    frame.put_slice(b"\ndata: ");
    frame.put_slice(json);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

impl ResponsesFromChunks {
    pub fn new(envelope: Envelope, tools: ToolNames) -> Self {
        Self {
            envelope,
            tools,
            sequence: 0,
            started: false,
            output: Vec::new(),
            open: None,
            open_id: String::new(),
            finish_reason: None,
            usage: None,
            finished: false,
            generated: Capture::default(),
            keep: None,
        }
    }

    /// `keep` gets the response object once it has finished (not when it failed).
    pub fn keeping(mut self, keep: Option<Keep>) -> Self {
        self.keep = keep;
        self
    }

    /// One event: `fields` after `type`, then `sequence_number`.
    fn emit(&mut self, kind: &str, fields: Value, out: &mut Vec<Bytes>) {
        let mut event = serde_json::Map::new();
        event.insert("type".into(), kind.into());
        if let Value::Object(fields) = fields {
            event.extend(fields);
        }
        event.insert("sequence_number".into(), self.sequence.into());
        self.sequence += 1;
        out.push(frame(kind, &serde_json::to_vec(&event).unwrap_or_default()));
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.envelope.object("in_progress", &[], &Outcome::default());
        self.emit("response.created", json!({"response": response}), out);
        self.emit("response.in_progress", json!({"response": response}), out);
    }

    fn item_id(&self, prefix: &str) -> String {
        self.envelope.item_id(prefix, self.output.len())
    }

    /// Opens an item: closes the one before, announces this one (and its first part).
    fn open(&mut self, item: Open, out: &mut Vec<Bytes>) {
        self.close(out);
        let index = self.output.len();
        let added = match &item {
            Open::Reasoning(_) => {
                OutputItem::Reasoning { id: self.item_id("rs"), summary: vec![], status: "in_progress" }
            }
            Open::Message(_) => OutputItem::message(self.item_id("msg"), "in_progress", vec![]),
            Open::Call { call_id, name, .. } => {
                let function = FunctionCall { name: name.clone(), arguments: String::new() };
                let call = ToolCall { id: call_id.clone(), kind: "function".into(), function };
                call_item(call, |p| self.envelope.item_id(p, index), &self.tools, "in_progress")
            }
        };
        self.open_id = item_identity(&added);
        let at = json!({"item_id": self.open_id, "output_index": index});
        self.emit("response.output_item.added", json!({"output_index": index, "item": added}), out);
        match &item {
            Open::Reasoning(_) => {
                let part = json!({"summary_index": 0, "part": SummaryText::new(String::new())});
                self.emit("response.reasoning_summary_part.added", with(&at, part), out);
            }
            Open::Message(_) => {
                let part = json!({"content_index": 0, "part": OutputContent::text(String::new())});
                self.emit("response.content_part.added", with(&at, part), out);
            }
            Open::Call { .. } => {}
        }
        self.open = Some(item);
    }

    /// Closes the open item: its done events, whole, then `response.output_item.done`.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(open) = self.open.take() else { return };
        let index = self.output.len();
        let status = if incomplete(self.finish_reason.as_deref()).is_some() { "incomplete" } else { "completed" };
        let item = match open {
            Open::Reasoning(text) => {
                let id = std::mem::take(&mut self.open_id);
                let part = SummaryText::new(text.clone());
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                self.emit("response.reasoning_summary_text.done", with(&at, json!({"text": text})), out);
                self.emit("response.reasoning_summary_part.done", with(&at, json!({"part": part})), out);
                OutputItem::Reasoning { id, summary: vec![part], status: "completed" }
            }
            Open::Message(text) => {
                let id = std::mem::take(&mut self.open_id);
                let part = OutputContent::text(text.clone());
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                self.emit("response.output_text.done", with(&at, json!({"text": text, "logprobs": []})), out);
                self.emit("response.content_part.done", with(&at, json!({"part": part})), out);
                OutputItem::message(id, status, vec![part])
            }
            Open::Call { call_id, name, arguments, .. } => {
                let call =
                    ToolCall { id: call_id, kind: "function".into(), function: FunctionCall { name, arguments } };
                let item = call_item(call, |p| self.envelope.item_id(p, index), &self.tools, "completed");
                let at = json!({"item_id": item_identity(&item), "output_index": index});
                match &item {
                    OutputItem::CustomToolCall { input, .. } => {
                        // The input is known only once the wrapping JSON is complete.
                        self.emit("response.custom_tool_call_input.delta", with(&at, json!({"delta": input})), out);
                        self.emit("response.custom_tool_call_input.done", with(&at, json!({"input": input})), out);
                    }
                    OutputItem::FunctionCall { name, arguments, .. } => {
                        let done = json!({"name": name, "arguments": arguments});
                        self.emit("response.function_call_arguments.done", with(&at, done), out);
                    }
                    _ => {}
                }
                item
            }
        };
        self.emit("response.output_item.done", json!({"output_index": index, "item": item}), out);
        self.output.push(item);
    }

    /// A delta event for the open item.
    fn delta(&mut self, kind: &str, index_field: Option<&str>, delta: &str, out: &mut Vec<Bytes>) {
        let index = self.output.len();
        let mut fields = json!({"item_id": self.open_id, "output_index": index});
        if let Some(field) = index_field {
            fields[field] = 0.into();
        }
        fields["delta"] = delta.into();
        if kind == "response.output_text.delta" {
            fields["logprobs"] = json!([]);
        }
        self.emit(kind, fields, out);
    }

    /// Closes the open item and sends the terminal event.
    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(out);
        self.close(out);
        let outcome = Outcome {
            incomplete: incomplete(self.finish_reason.as_deref()),
            error: None,
            usage: self.usage.as_ref().map(ResponseUsage::from),
        };
        let kind = if outcome.incomplete.is_some() { "response.incomplete" } else { "response.completed" };
        let response = self.envelope.object(outcome.status(), &self.output, &outcome);
        if let Some(keep) = self.keep.take() {
            keep(&response);
        }
        self.emit(kind, json!({"response": response}), out);
    }

    fn translate(&mut self, chunk: ChatChunk, out: &mut Vec<Bytes>) -> Step {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if chunk.choices.is_empty() && chunk.usage.is_none() {
            return Step::Continue;
        }
        self.start(out);
        if self.finished {
            return Step::Continue;
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta;
            if let Some(reasoning) = delta.reasoning_content.or(delta.reasoning).filter(|r| !r.is_empty()) {
                if !matches!(self.open, Some(Open::Reasoning(_))) {
                    self.open(Open::Reasoning(String::new()), out);
                }
                self.push_text(&reasoning);
                self.delta("response.reasoning_summary_text.delta", Some("summary_index"), &reasoning, out);
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some(Open::Message(_))) {
                    self.open(Open::Message(String::new()), out);
                }
                self.push_text(&text);
                self.delta("response.output_text.delta", Some("content_index"), &text, out);
            }
            for call in delta.tool_calls.into_iter().flatten() {
                self.tool_call_delta(call, out);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
                self.close(out);
            }
        }
        if self.finish_reason.is_some() && self.usage.is_some() {
            self.finish(out);
            return Step::Done;
        }
        Step::Continue
    }

    fn tool_call_delta(&mut self, call: crate::api::chat::ToolCallDelta, out: &mut Vec<Bytes>) {
        let function = call.function.unwrap_or_default();
        let id = call.id.filter(|id| !id.is_empty());
        let is_new = match &self.open {
            Some(Open::Call { openai_index, call_id, .. }) => match &id {
                // A new id starts a new call, even at the same index.
                Some(id) => id != call_id,
                None => call.index != *openai_index && function.name.is_some(),
            },
            _ => id.is_some() || function.name.is_some(),
        };
        if is_new {
            let name = function.name.clone().unwrap_or_default();
            let call_id = id.unwrap_or_else(|| format!("call_{}", self.item_id("gw")));
            let custom = self.tools.is_custom(&name);
            self.generated.push(name.as_bytes());
            self.open(Open::Call { openai_index: call.index, call_id, name, arguments: String::new(), custom }, out);
        }
        let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) else { return };
        let Some(Open::Call { arguments: so_far, custom, .. }) = &mut self.open else { return };
        so_far.push_str(&arguments);
        let custom = *custom;
        self.generated.push(arguments.as_bytes());
        if !custom {
            self.delta("response.function_call_arguments.delta", None, &arguments, out);
        }
    }

    /// Keeps streamed text in the open item (for its done events) and for a local count.
    fn push_text(&mut self, text: &str) {
        if let Some(Open::Reasoning(so_far) | Open::Message(so_far)) = &mut self.open {
            so_far.push_str(text);
        }
        self.generated.push(text.as_bytes());
    }
}

/// `base`'s members, then `more`'s.
fn with(base: &Value, more: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Value::Object(more)) = (out.as_object_mut(), more) {
        out.extend(more);
    }
    out
}

fn item_identity(item: &OutputItem) -> String {
    match item {
        OutputItem::Reasoning { id, .. }
        | OutputItem::Message { id, .. }
        | OutputItem::FunctionCall { id, .. }
        | OutputItem::CustomToolCall { id, .. } => id.clone(),
    }
}

impl ChunkRewriter for ResponsesFromChunks {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        if event.data.trim_ascii() == b"[DONE]" {
            return Step::Done;
        }
        if let Ok(ErrorProbe { error: Some(_) }) = serde_json::from_slice(&event.data) {
            return Step::Failed(ErrorBody::from_upstream(500, &event.data));
        }
        match serde_json::from_slice::<ChatChunk>(&event.data) {
            Ok(chunk) => self.translate(chunk, out),
            Err(e) => Step::Failed(ErrorBody::new(
                format!("The upstream sent an invalid chunk: {e}"),
                "api_error",
                None,
                Some("upstream_protocol"),
            )),
        }
    }

    /// `[DONE]` or the end of the body: the terminal event goes out now (no usage when the
    /// upstream never reported any).
    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        self.finish(out);
    }

    /// An `error` event, then `response.failed` with what was streamed so far.
    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(out);
        let detail = &error.error;
        let fields = json!({"code": detail.code, "message": detail.message, "param": detail.param});
        self.emit("error", fields, out);
        // The open item stays out of `output`: it never finished.
        self.open = None;
        let outcome = Outcome {
            incomplete: None,
            error: Some(ResponseError { code: error_code(detail.code.as_deref()), message: detail.message.clone() }),
            usage: self.usage.as_ref().map(ResponseUsage::from),
        };
        let response = self.envelope.object("failed", &self.output, &outcome);
        self.emit("response.failed", json!({"response": response}), out);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn finish_reason(&self) -> Option<String> {
        self.finish_reason.clone()
    }

    fn take_generated(&mut self) -> Option<Generated> {
        Some(self.generated.take(utf8_text))
    }
}

/// A `ResponseErrorCode` for a failed response: the gateway's codes have no equivalent but a
/// rate limit.
fn error_code(code: Option<&str>) -> &'static str {
    match code {
        Some("rate_limit_exceeded") => "rate_limit_exceeded",
        _ => "server_error",
    }
}
