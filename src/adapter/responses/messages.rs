//! Responses input items → chat messages, in order. A tool call joins the assistant message
//! just before it (a turn's text and calls are one chat message); tool outputs become tool
//! messages, and images a tool returned follow them in a user message of their own, once the
//! run of tool messages is over (chat wants every tool message right after its call).

use super::tools::chat_name;
use crate::adapter::Untranslatable;
use crate::api::chat::{ChatContent, ChatMessage, ContentPart, FilePart, FunctionCall, ImageUrl, ToolCall};
use crate::api::responses::{InputItem, MessageContent, Part};

#[derive(Default)]
pub(super) struct Messages {
    out: Vec<ChatMessage>,
    /// Images from tool outputs, waiting for the end of the run of tool messages.
    tool_images: Vec<ContentPart>,
}

impl Messages {
    pub fn system(&mut self, text: String) {
        self.push(ChatMessage { role: "system".into(), content: Some(ChatContent::Text(text)), ..Default::default() });
    }

    pub fn user_text(&mut self, text: String) {
        self.push(ChatMessage { role: "user".into(), content: Some(ChatContent::Text(text)), ..Default::default() });
    }

    pub fn finish(mut self) -> Vec<ChatMessage> {
        self.flush_tool_images();
        self.out
    }

    fn push(&mut self, message: ChatMessage) {
        if message.role != "tool" {
            self.flush_tool_images();
        }
        self.out.push(message);
    }

    fn flush_tool_images(&mut self) {
        if !self.tool_images.is_empty() {
            let parts = std::mem::take(&mut self.tool_images);
            self.out.push(ChatMessage {
                role: "user".into(),
                content: Some(ChatContent::Parts(parts)),
                ..Default::default()
            });
        }
    }

    /// Adds input item `i`.
    pub fn item(&mut self, item: InputItem, i: usize) -> Result<(), Untranslatable> {
        let kind = item.kind.as_deref().unwrap_or("message");
        match kind {
            "message" => self.message(item, i),
            "function_call" => {
                let arguments = item.arguments.unwrap_or_default();
                let name = item.name.map(|name| chat_name(item.namespace.as_deref(), &name));
                self.tool_call(item.call_id, name, arguments, i)
            }
            "custom_tool_call" => {
                // The model saw custom tools as functions taking `input`: it reads its call so.
                let arguments = serde_json::json!({"input": item.input.unwrap_or_default()}).to_string();
                let name = item.name.map(|name| chat_name(item.namespace.as_deref(), &name));
                self.tool_call(item.call_id, name, arguments, i)
            }
            "function_call_output" | "custom_tool_call_output" => self.tool_output(item, i),
            // Reasoning from an earlier turn: encrypted or summarised, nothing a chat model reads.
            "reasoning" => Ok(()),
            other => Err(Untranslatable::new(
                format!(
                    "Input items of type '{other}' are not available for this model (its upstream has no Responses API)."
                ),
                format!("input[{i}].type"),
            )),
        }
    }

    fn message(&mut self, item: InputItem, i: usize) -> Result<(), Untranslatable> {
        let role = match item.role.as_deref() {
            Some("user") => "user",
            Some("assistant") => "assistant",
            Some("system" | "developer") => "system",
            Some(other) => {
                return Err(Untranslatable::new(
                    format!("Unknown message role '{other}'."),
                    format!("input[{i}].role"),
                ));
            }
            None => return Err(Untranslatable::new("A message needs a role.", format!("input[{i}].role"))),
        };
        let content = match item.content {
            None => ChatContent::Text(String::new()),
            Some(MessageContent::Text(text)) => ChatContent::Text(text),
            Some(MessageContent::Parts(parts)) if role == "user" => user_content(parts, i)?,
            // System and assistant turns as plain text: every chat server takes a string there.
            Some(MessageContent::Parts(parts)) => ChatContent::Text(joined_text(&parts, i)?),
        };
        self.push(ChatMessage { role: role.into(), content: Some(content), ..Default::default() });
        Ok(())
    }

    fn tool_call(
        &mut self,
        call_id: Option<String>,
        name: Option<String>,
        arguments: String,
        i: usize,
    ) -> Result<(), Untranslatable> {
        let Some(call_id) = call_id else {
            return Err(Untranslatable::new("A tool call needs a call_id.", format!("input[{i}].call_id")));
        };
        let Some(name) = name else {
            return Err(Untranslatable::new("A tool call needs a name.", format!("input[{i}].name")));
        };
        let call = ToolCall { id: call_id, kind: "function".into(), function: FunctionCall { name, arguments } };
        if self.tool_images.is_empty()
            && let Some(last) = self.out.last_mut()
            && last.role == "assistant"
        {
            last.tool_calls.get_or_insert_with(Vec::new).push(call);
            return Ok(());
        }
        self.push(ChatMessage { role: "assistant".into(), tool_calls: Some(vec![call]), ..Default::default() });
        Ok(())
    }

    fn tool_output(&mut self, item: InputItem, i: usize) -> Result<(), Untranslatable> {
        let Some(call_id) = item.call_id else {
            return Err(Untranslatable::new("A tool output needs a call_id.", format!("input[{i}].call_id")));
        };
        let text = match item.output {
            None => String::new(),
            Some(MessageContent::Text(text)) => text,
            Some(MessageContent::Parts(parts)) => {
                let mut texts = Vec::new();
                for (j, part) in parts.into_iter().enumerate() {
                    match part.kind.as_str() {
                        "input_text" | "output_text" => texts.push(part.text.unwrap_or_default()),
                        _ => self.tool_images.push(content_part(part, i, j, "output")?),
                    }
                }
                texts.join("\n")
            }
        };
        self.out.push(ChatMessage {
            role: "tool".into(),
            tool_call_id: Some(call_id),
            content: Some(ChatContent::Text(text)),
            ..Default::default()
        });
        Ok(())
    }
}

/// A user turn's parts: a lone text part is sent as a string.
fn user_content(parts: Vec<Part>, i: usize) -> Result<ChatContent, Untranslatable> {
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        out.push(content_part(part, i, j, "content")?);
    }
    Ok(match out.as_slice() {
        [ContentPart::Text { .. }] => match out.pop() {
            Some(ContentPart::Text { text, .. }) => ChatContent::Text(text),
            _ => ChatContent::Parts(out),
        },
        _ => ChatContent::Parts(out),
    })
}

/// One part of user content (or of a tool's output) as a chat content part.
fn content_part(part: Part, i: usize, j: usize, field: &str) -> Result<ContentPart, Untranslatable> {
    let at = |name: &str| format!("input[{i}].{field}[{j}].{name}");
    let unavailable = |what: &str, name: &str| {
        Err(Untranslatable::new(
            format!("{what} cannot be passed to this model (its upstream has no Responses API); send the data inline."),
            at(name),
        ))
    };
    Ok(match part.kind.as_str() {
        "input_text" | "output_text" => ContentPart::Text { text: part.text.unwrap_or_default(), cache_control: None },
        "input_image" => match part.image_url {
            Some(url) => ContentPart::ImageUrl { image_url: ImageUrl { url, detail: part.detail } },
            None if part.file_id.is_some() => return unavailable("An image given by file_id", "file_id"),
            None => return Err(Untranslatable::new("An input_image needs an image_url.", at("image_url"))),
        },
        "input_file" => match (part.file_data, part.file_id) {
            (Some(data), _) => {
                ContentPart::File { file: FilePart { file_data: Some(data), file_id: None, filename: part.filename } }
            }
            (None, Some(id)) => {
                ContentPart::File { file: FilePart { file_data: None, file_id: Some(id), filename: part.filename } }
            }
            (None, None) if part.file_url.is_some() => return unavailable("A file given by file_url", "file_url"),
            (None, None) => return Err(Untranslatable::new("An input_file needs file_data.", at("file_data"))),
        },
        other => {
            return Err(Untranslatable::new(
                format!(
                    "Content of type '{other}' is not available for this model (its upstream has no Responses API)."
                ),
                at("type"),
            ));
        }
    })
}

/// The text of a system or assistant turn's parts (refusals included: what the model said).
fn joined_text(parts: &[Part], i: usize) -> Result<String, Untranslatable> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match part.kind.as_str() {
            "input_text" | "output_text" | "text" => text.push_str(part.text.as_deref().unwrap_or_default()),
            "refusal" => text.push_str(part.refusal.as_deref().unwrap_or_default()),
            other => {
                return Err(Untranslatable::new(
                    format!("Content of type '{other}' can only be sent in a user message to this model."),
                    format!("input[{i}].content[{j}].type"),
                ));
            }
        }
    }
    Ok(text)
}
