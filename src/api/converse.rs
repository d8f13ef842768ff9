//! Bedrock Converse wire types (`/model/{modelId}/converse` and `/converse-stream`): what the
//! gateway writes, and the parts of answers and stream events it reads. `ContentBlock` is a
//! union on the wire (exactly one key per block): a struct of options here, built with one set,
//! read leniently (unknown members are skipped; the stream's `"p"` padding is ignored).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseRequest {
    pub messages: Vec<Message>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<SystemBlock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_config: Option<InferenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    /// Model-native keys (Claude: `thinking`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_model_request_fields: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
}

#[derive(Debug, Serialize)]
pub struct SystemBlock {
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: &'static str,
    pub content: Vec<ContentBlock>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use: Option<ToolUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result: Option<ToolResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<ReasoningContent>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    /// `png`, `jpeg`, `gif` or `webp`.
    pub format: String,
    pub source: ImageSource,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ImageSource {
    /// Base64.
    pub bytes: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    pub tool_use_id: String,
    pub name: String,
    /// A JSON object.
    pub input: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub tool_use_id: String,
    pub content: Vec<ToolResultContent>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ToolResultContent {
    pub text: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_text: Option<ReasoningText>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_content: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReasoningText {
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    pub tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub tool_spec: ToolSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: InputSchema,
}

#[derive(Debug, Serialize)]
pub struct InputSchema {
    pub json: Box<RawValue>,
}

/// `{"auto":{}}`, `{"any":{}}` or `{"tool":{"name"}}`; Converse has no "none".
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolChoice {
    Auto {},
    Any {},
    Tool { name: String },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputConfig {
    pub text_format: TextFormat,
}

#[derive(Debug, Serialize)]
pub struct TextFormat {
    /// `json_schema`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub structure: Structure,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Structure {
    pub json_schema: JsonSchemaSpec,
}

#[derive(Debug, Serialize)]
pub struct JsonSchemaSpec {
    /// The JSON Schema as a string.
    pub schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `ConverseResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseResponse {
    #[serde(default)]
    pub output: Option<Output>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<TokenUsage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Output {
    #[serde(default)]
    pub message: Option<OutputMessage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutputMessage {
    #[serde(default)]
    pub content: Vec<ContentBlock>,
}

/// `TokenUsage`: `inputTokens` excludes cache reads and writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_write_input_tokens: u64,
}

/// `contentBlockStart`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStart {
    #[serde(default)]
    pub content_block_index: u32,
    #[serde(default)]
    pub start: Option<StartOf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartOf {
    #[serde(default)]
    pub tool_use: Option<ToolUseStart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseStart {
    #[serde(default)]
    pub tool_use_id: String,
    #[serde(default)]
    pub name: String,
}

/// `contentBlockDelta`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDelta {
    #[serde(default)]
    pub content_block_index: u32,
    #[serde(default)]
    pub delta: Option<DeltaOf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaOf {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub tool_use: Option<ToolUseDelta>,
    #[serde(default)]
    pub reasoning_content: Option<ReasoningDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolUseDelta {
    /// A piece of the input's JSON text.
    #[serde(default)]
    pub input: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReasoningDelta {
    #[serde(default)]
    pub text: Option<String>,
}

/// `contentBlockStop`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStop {
    #[serde(default)]
    pub content_block_index: u32,
}

/// `messageStop`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStop {
    #[serde(default)]
    pub stop_reason: String,
}

/// `metadata` (after `messageStop`).
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub usage: Option<TokenUsage>,
}

/// An error body, or an exception event's payload: `{"message": …}` (some use `Message`).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorMessage {
    #[serde(default, alias = "Message")]
    pub message: String,
}
