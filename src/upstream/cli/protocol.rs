//! The CLI's I/O protocols, as pure functions: an OpenAI request rendered to one prompt, the
//! prompt encoded for the CLI's stdin, and each line the CLI prints decoded into an event; an
//! `Answer` turns the events into the text to stream and the end of the answer.

use serde::Deserialize;
use serde_json::Value;

use crate::api::anthropic::UsageReport;
use crate::api::{RawObject, Usage};
use crate::ctx::Endpoint;

/// Renders the request as the one prompt a CLI takes. A chat with a single user message is sent
/// as that message's text, verbatim; a longer conversation becomes a transcript with role labels.
pub fn render_prompt(endpoint: Endpoint, request: &RawObject) -> Result<String, String> {
    match endpoint {
        // (Anthropic clients arrive translated to chat; their shape would render the same.)
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => {
            let messages: Vec<Value> =
                request.parse("messages").map_err(|e| format!("messages: {e}"))?.unwrap_or_default();
            let texts: Vec<(&str, String)> = messages
                .iter()
                .map(|m| (m.get("role").and_then(Value::as_str).unwrap_or("user"), content_text(m.get("content"))))
                .collect();
            match texts.as_slice() {
                [("user", text)] => Ok(text.clone()),
                _ => Ok(texts
                    .iter()
                    .filter(|(_, text)| !text.is_empty())
                    .map(|(role, text)| format!("{}: {text}", role_label(role)))
                    .collect::<Vec<_>>()
                    .join("\n\n")),
            }
        }
        Endpoint::Completions => match request.parse::<Value>("prompt").map_err(|e| format!("prompt: {e}"))? {
            Some(Value::String(s)) => Ok(s),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")),
            _ => Ok(String::new()),
        },
        Endpoint::Embeddings => Err("the cli backend does not serve embeddings".into()),
    }
}

fn role_label(role: &str) -> &str {
    match role {
        "system" | "developer" => "System",
        "assistant" => "Assistant",
        "tool" | "function" => "Tool result",
        _ => "User",
    }
}

/// The text of an OpenAI `content`: a string, or the text parts of an array (others are marked).
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(text) => text.to_owned(),
                None => format!("[{} omitted]", p.get("type").and_then(Value::as_str).unwrap_or("part")),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// One stream-json `user` line (with its newline) carrying `prompt` as a text block.
pub fn user_line(prompt: &str) -> Vec<u8> {
    let line = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": prompt}]},
    });
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// What one stream-json output line means to the gateway.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A token-level text delta (`stream_event` / `content_block_delta` / `text_delta`).
    Delta(String),
    /// A new assistant message starts (`stream_event` / `message_start`).
    MessageStart,
    /// A complete assistant message's text.
    Assistant(String),
    /// The end of the answer.
    Result(Completion),
    /// Anything else (`system`, `user` echoes, tool use, unknown types): ignored.
    Other,
}

#[derive(Debug, PartialEq)]
pub struct Completion {
    pub text: Option<String>,
    pub usage: Option<Usage>,
    /// The CLI's own error, when it reports one.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    event: Option<StreamEvent>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    usage: Option<UsageReport>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// Decodes one stream-json output line. Blank lines are `Other`; a line that is not a JSON
/// object with a `type` is a protocol error (the session cannot be trusted any more).
pub fn parse_line(line: &[u8]) -> Result<Event, String> {
    if line.trim_ascii().is_empty() {
        return Ok(Event::Other);
    }
    let line: Line = serde_json::from_slice(line).map_err(|e| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        format!("not a stream-json line ({e}): {shown:?}")
    })?;
    Ok(match line.kind.as_str() {
        "stream_event" => match line.event {
            Some(StreamEvent { kind, delta: Some(Delta { kind: Some(dk), text: Some(text) }) })
                if kind == "content_block_delta" && dk == "text_delta" =>
            {
                Event::Delta(text)
            }
            Some(StreamEvent { kind, .. }) if kind == "message_start" => Event::MessageStart,
            _ => Event::Other,
        },
        "assistant" => {
            let text = match line.message.and_then(|m| m.content) {
                Some(Value::Array(blocks)) => blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<String>(),
                Some(Value::String(s)) => s,
                _ => String::new(),
            };
            Event::Assistant(text)
        }
        "result" => {
            let text = match line.result {
                Some(Value::String(s)) => Some(s),
                _ => None,
            };
            let subtype = line.subtype.unwrap_or_else(|| "success".into());
            let failed = line.is_error.unwrap_or(false) || subtype != "success";
            let error = failed.then(|| {
                let detail = match &line.errors {
                    Some(Value::Array(e)) if !e.is_empty() => e
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join("; "),
                    _ => text.clone().filter(|t| !t.is_empty()).unwrap_or_default(),
                };
                if detail.is_empty() { subtype.clone() } else { format!("{subtype}: {detail}") }
            });
            // Anthropic's usage: the cache counts become part of the prompt tokens, once each.
            Event::Result(Completion { text, usage: line.usage.as_ref().map(UsageReport::to_openai), error })
        }
        _ => Event::Other,
    })
}

/// Follows one answer's events: which text to pass on, and when it is complete. Text arrives as
/// deltas (with `--include-partial-messages`) or as whole assistant messages, never both for
/// the same message; the final `result` repeats the last message and is used only if nothing
/// else carried text. Consecutive assistant messages are separated by a blank line.
#[derive(Debug, Default)]
pub struct Answer {
    saw_deltas: bool,
    emitted_any: bool,
    break_pending: bool,
}

/// What an event means for the client.
#[derive(Debug, PartialEq)]
pub enum Step {
    Text(String),
    Nothing,
    Done(Completion),
}

impl Answer {
    pub fn on_event(&mut self, event: Event) -> Step {
        match event {
            Event::Delta(text) => {
                self.saw_deltas = true;
                self.text(text)
            }
            Event::MessageStart => {
                self.break_pending = self.emitted_any;
                Step::Nothing
            }
            Event::Assistant(text) if !self.saw_deltas => {
                self.break_pending = self.emitted_any;
                self.text(text)
            }
            Event::Assistant(_) | Event::Other => Step::Nothing,
            Event::Result(completion) => Step::Done(completion),
        }
    }

    /// Whether any text went out; if not, the result's text is the answer.
    pub fn emitted_any(&self) -> bool {
        self.emitted_any
    }

    fn text(&mut self, text: String) -> Step {
        if text.is_empty() {
            return Step::Nothing;
        }
        let text = if std::mem::take(&mut self.break_pending) { format!("\n\n{text}") } else { text };
        self.emitted_any = true;
        Step::Text(text)
    }
}

/// Splits a byte stream into UTF-8 text without breaking a character across chunks.
#[derive(Debug, Default)]
pub struct Utf8Chunks {
    pending: Vec<u8>,
}

impl Utf8Chunks {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes (not just a cut character): replace them rather than stall.
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(valid);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests;
