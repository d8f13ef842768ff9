//! Anthropic Messages wire types the gateway reads or writes: requests, content blocks, the
//! response message, stream events, usage and error bodies. Unknown block and event types are
//! tolerated on input (`Unknown`) so a new Anthropic feature never breaks a translation.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::openai::{self, Usage};

/// `MessageCreateParams`, the fields the gateway translates.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `system`: a string or text blocks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    /// A system turn in the middle of the conversation (Claude Code sends them beside the
    /// top-level `system`).
    System,
    /// A role this gateway does not know yet: passed through to Claude, named in a 400 when
    /// it has to be translated.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

/// A content block, input or output. (Values inside tagged enums are `Value`s: serde buffers
/// them, which `RawValue` cannot survive.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<serde_json::Value>,
    },
    Image {
        source: Source,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<serde_json::Value>,
    },
    Document {
        source: Source,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<serde_json::Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<serde_json::Value>,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    /// Server tools, their results, and whatever Anthropic adds next.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    Text {
        media_type: String,
        data: String,
    },
    /// File ids, content sources, and whatever comes next: not translatable, kept out.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Tool {
    /// Absent (or `custom`) for client tools; server tools name their version here.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Box<RawValue>>,
    /// Loaded into the model's context only when a tool search finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer_loading: Option<bool>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

/// The non-stream answer, `Message`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageResponse {
    pub id: String,
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant")]
    pub role: Role,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: UsageReport,
}

fn message_type() -> String {
    "message".into()
}

fn assistant() -> Role {
    Role::Assistant
}

/// Usage as Anthropic reports it. Fields are optional because `message_delta` may carry only
/// some of them (and `null` for the cache counts): later reports override earlier ones field by
/// field. `input_tokens` excludes the cache counts; `output_tokens` includes thinking.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// `cache_creation_input_tokens` split by the cache's lifetime (5 minutes, 1 hour), which
    /// bill at different prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation: Option<CacheCreation>,
    /// Uses of the tools Anthropic runs itself (web search, web fetch), billed per use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tool_use: Option<ServerToolUse>,
}

/// `usage.cache_creation`: the cache writes by lifetime (cumulative, like the token counts).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCreation {
    #[serde(default, deserialize_with = "super::openai::zero_if_null")]
    pub ephemeral_5m_input_tokens: u64,
    #[serde(default, deserialize_with = "super::openai::zero_if_null")]
    pub ephemeral_1h_input_tokens: u64,
}

/// `usage.server_tool_use`: how many times each tool Anthropic runs on its side was used, which
/// it bills per use on top of the tokens. Cumulative, like the token counts. (Code execution is
/// billed by container time and reported nowhere in the usage.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerToolUse {
    #[serde(default, deserialize_with = "super::openai::zero_if_null")]
    pub web_search_requests: u64,
    #[serde(default, deserialize_with = "super::openai::zero_if_null")]
    pub web_fetch_requests: u64,
}

impl UsageReport {
    /// Takes every field `later` reports (Anthropic's counts are cumulative).
    pub fn merge(&mut self, later: &UsageReport) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
        self.server_tool_use = later.server_tool_use.or(self.server_tool_use);
    }

    /// The OpenAI view, counting every token once: `prompt_tokens` = input + cache read + cache
    /// write (OpenAI's prompt count includes cached tokens), `cached_tokens` = cache read,
    /// `cache_write_tokens` = cache write, `completion_tokens` = output; the tool uses and the
    /// 1-hour cache writes carried along for metering and spend.
    pub fn to_openai(&self) -> Usage {
        Usage {
            server_tools: self.server_tool_use.unwrap_or_default(),
            cache_write_long_tokens: self.cache_creation.map(|c| c.ephemeral_1h_input_tokens).unwrap_or(0),
            ..Usage::from_anthropic(
                self.input_tokens.unwrap_or(0),
                self.output_tokens.unwrap_or(0),
                self.cache_read_input_tokens.unwrap_or(0),
                self.cache_creation_input_tokens.unwrap_or(0),
            )
        }
    }

    /// The Anthropic view of OpenAI usage (the inverse of `to_openai`), every field present.
    pub fn from_openai(usage: &Usage) -> Self {
        let details = usage.prompt_tokens_details.unwrap_or_default();
        let input =
            usage.prompt_tokens.saturating_sub(details.cached_tokens).saturating_sub(details.cache_write_tokens);
        Self {
            input_tokens: Some(input),
            output_tokens: Some(usage.completion_tokens),
            cache_creation_input_tokens: Some(details.cache_write_tokens),
            cache_read_input_tokens: Some(details.cached_tokens),
            cache_creation: (usage.cache_write_long_tokens > 0).then(|| CacheCreation {
                ephemeral_5m_input_tokens: details.cache_write_tokens.saturating_sub(usage.cache_write_long_tokens),
                ephemeral_1h_input_tokens: usage.cache_write_long_tokens,
            }),
            server_tool_use: (usage.server_tools != ServerToolUse::default()).then_some(usage.server_tools),
        }
    }

    /// All four counts, zero where unknown (what Anthropic clients expect to find).
    pub fn complete(self) -> Self {
        Self {
            input_tokens: Some(self.input_tokens.unwrap_or(0)),
            output_tokens: Some(self.output_tokens.unwrap_or(0)),
            cache_creation_input_tokens: Some(self.cache_creation_input_tokens.unwrap_or(0)),
            cache_read_input_tokens: Some(self.cache_read_input_tokens.unwrap_or(0)),
            cache_creation: self.cache_creation,
            server_tool_use: self.server_tool_use,
        }
    }
}

/// One streamed event, by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        index: u64,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u64,
        delta: Delta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<UsageReport>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
pub struct MessageStart {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub usage: UsageReport,
}

#[derive(Debug, Default, Deserialize)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    #[serde(other)]
    Unknown,
}

/// `{"type":"error","error":{"type","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// The error types Anthropic documents; anything else is mapped from the HTTP status.
const ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
];

impl ErrorBody {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self { kind: "error".into(), error: ErrorDetail { kind: kind.to_owned(), message: message.into() } }
    }

    /// The Anthropic rendering of an OpenAI-shaped error: its own type when Anthropic knows it
    /// (an Anthropic upstream's error comes back unchanged), else the type for the status.
    /// `invalid_request_error` is OpenAI's catch-all (even for a bad key), so the status decides.
    pub fn from_openai(status: u16, body: &openai::ErrorBody) -> Self {
        let kind = body.error.kind.as_str();
        let kind =
            if ERROR_TYPES.contains(&kind) && kind != "invalid_request_error" { kind } else { error_type_for(status) };
        Self::new(kind, body.error.message.clone())
    }
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type_for(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        405..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_round_trips_without_double_counting() {
        let report = UsageReport {
            input_tokens: Some(10),
            output_tokens: Some(7),
            cache_creation_input_tokens: Some(100),
            cache_read_input_tokens: Some(1000),
            cache_creation: None,
            server_tool_use: Some(ServerToolUse { web_search_requests: 2, web_fetch_requests: 0 }),
        };
        let openai = report.to_openai();
        assert_eq!((openai.prompt_tokens, openai.completion_tokens, openai.total_tokens), (1110, 7, 1117));
        let details = openai.prompt_tokens_details.unwrap();
        assert_eq!((details.cached_tokens, details.cache_write_tokens), (1000, 100));
        assert_eq!(UsageReport::from_openai(&openai), report);
        // The tool uses ride along for metering, but are not OpenAI's to show a client.
        assert_eq!(openai.server_tools.web_search_requests, 2);
        assert!(!serde_json::to_string(&openai).unwrap().contains("server_tool"));
    }

    #[test]
    fn later_reports_override_field_by_field_and_null_is_absent() {
        let mut usage: UsageReport = serde_json::from_str(
            r#"{"input_tokens":25,"output_tokens":1,"cache_creation_input_tokens":null,"cache_read_input_tokens":3}"#,
        )
        .unwrap();
        usage.merge(&serde_json::from_str(r#"{"output_tokens":15}"#).unwrap());
        assert_eq!(usage.to_openai().prompt_tokens, 28);
        assert_eq!(usage.to_openai().completion_tokens, 15);
        let later = r#"{"output_tokens":20,"server_tool_use":{"web_search_requests":3,"web_fetch_requests":null}}"#;
        usage.merge(&serde_json::from_str(later).unwrap());
        assert_eq!(usage.to_openai().server_tools, ServerToolUse { web_search_requests: 3, web_fetch_requests: 0 });
    }

    #[test]
    fn error_types_keep_anthropic_names_and_map_statuses() {
        let overloaded = openai::ErrorBody::new("Overloaded", "overloaded_error", None, None);
        assert_eq!(ErrorBody::from_openai(529, &overloaded).error.kind, "overloaded_error");
        let server = openai::ErrorBody::new("boom", "server_error", None, None);
        assert_eq!(ErrorBody::from_openai(500, &server).error.kind, "api_error");
        assert_eq!(ErrorBody::from_openai(401, &server).error.kind, "authentication_error");
        assert_eq!(
            serde_json::to_string(&ErrorBody::new("not_found_error", "x")).unwrap(),
            r#"{"type":"error","error":{"type":"not_found_error","message":"x"}}"#
        );
    }

    #[test]
    fn unknown_blocks_and_events_are_tolerated() {
        let m: MessageResponse = serde_json::from_str(
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}},{"type":"text","text":"hi","citations":null}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":2}}"#,
        )
        .unwrap();
        assert!(matches!(m.content[0], Block::Unknown));
        assert!(matches!(&m.content[1], Block::Text { text, .. } if text == "hi"));
        let e: StreamEvent = serde_json::from_str(r#"{"type":"something_new","x":1}"#).unwrap();
        assert!(matches!(e, StreamEvent::Unknown));
    }
}
