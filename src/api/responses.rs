//! OpenAI Responses API types for what the gateway translates: the request members a bridge to
//! chat completions acts on (read leniently, flat, so that an unknown item or part type can be
//! named in a 400 rather than fail to parse), and the response objects it writes (exactly the
//! published shape). Every other request member stays in the request's `RawObject`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::openai::Usage;

/// `input`: one user message as a string, or a list of items.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

/// One input item, any type: a message (`type` may be omitted), a tool call or its output,
/// a reasoning item. Only the fields the translation reads are kept.
#[derive(Debug, Default, Deserialize)]
pub struct InputItem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// A call to a tool of a `namespace` tool.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `function_call`: the arguments, a JSON document as a string.
    #[serde(default)]
    pub arguments: Option<String>,
    /// `custom_tool_call`: the free-form input.
    #[serde(default)]
    pub input: Option<String>,
    /// `function_call_output` / `custom_tool_call_output`.
    #[serde(default)]
    pub output: Option<MessageContent>,
}

/// Message content, or a tool output: a string or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<Part>),
}

/// One content part (`input_text`, `input_image`, `input_file`, `output_text`, `refusal`, …).
#[derive(Debug, Default, Deserialize)]
pub struct Part {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub file_data: Option<String>,
    #[serde(default)]
    pub file_url: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
}

/// One entry of `tools`, any type (flat: `name` and `parameters` sit beside `type`).
#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Box<RawValue>>,
    #[serde(default)]
    pub strict: Option<bool>,
    /// `custom` tools: `{"type":"text"}` or `{"type":"grammar","syntax","definition"}`.
    #[serde(default)]
    pub format: Option<CustomFormat>,
    /// `namespace` tools: the function and custom tools it groups.
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
}

#[derive(Debug, Deserialize)]
pub struct CustomFormat {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub syntax: Option<String>,
    #[serde(default)]
    pub definition: Option<String>,
}

/// `tool_choice`: `"none" | "auto" | "required"` or `{"type": …, "name"?}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        name: Option<String>,
    },
}

/// `text`: the output format (`verbosity` is not read).
#[derive(Debug, Deserialize)]
pub struct TextConfig {
    #[serde(default)]
    pub format: Option<TextFormat>,
}

/// `text.format`, flat: `{"type":"json_schema","name","schema","strict"?,"description"?}`.
#[derive(Debug, Deserialize)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Box<RawValue>>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ReasoningConfig {
    #[serde(default)]
    pub effort: Option<String>,
}

/// An output item, as the `output` array, `output_item.*` events and `response.completed`
/// carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Reasoning {
        id: String,
        summary: Vec<SummaryText>,
        status: &'static str,
    },
    Message {
        id: String,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputContent>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        /// The namespace tool it belongs to, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        name: String,
        arguments: String,
        status: &'static str,
    },
    CustomToolCall {
        id: String,
        call_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        name: String,
        input: String,
        status: &'static str,
    },
}

impl OutputItem {
    pub fn message(id: String, status: &'static str, content: Vec<OutputContent>) -> Self {
        Self::Message { id, status, role: "assistant", content }
    }
}

/// A message's content part: text, or the model's refusal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText { text: String, annotations: [(); 0], logprobs: [(); 0] },
    Refusal { refusal: String },
}

impl OutputContent {
    pub fn text(text: String) -> Self {
        Self::OutputText { text, annotations: [], logprobs: [] }
    }
}

/// `{"type":"summary_text","text"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

impl SummaryText {
    pub fn new(text: String) -> Self {
        Self { kind: "summary_text", text }
    }
}

/// `ResponseUsage`: the chat usage under the Responses names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

impl From<&Usage> for ResponseUsage {
    fn from(usage: &Usage) -> Self {
        let prompt = usage.prompt_tokens_details.unwrap_or_default();
        Self {
            input_tokens: usage.prompt_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: prompt.cached_tokens,
                cache_write_tokens: prompt.cache_write_tokens,
            },
            output_tokens: usage.completion_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: usage.completion_tokens_details.map_or(0, |d| d.reasoning_tokens),
            },
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
        }
    }
}

/// `incomplete_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IncompleteDetails {
    pub reason: &'static str,
}

/// `error` on a failed response: `{code, message}`, `code` one of `ResponseErrorCode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseError {
    pub code: &'static str,
    pub message: String,
}
