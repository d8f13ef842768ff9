//! Anthropic client, OpenAI-compatible upstream: Messages request → chat request, and the whole
//! chat completion → `Message`. `system` becomes a system message; `tool_result` blocks become
//! tool messages ahead of the rest of their user turn; `tool_use` becomes `tool_calls` with the
//! same ids; images become `image_url` parts; tool choice and parallelism are mapped.

use serde::Serialize;

use super::{sanitize_tool_id, stop_reason};
use crate::adapter::Untranslatable;
use crate::api::anthropic::{
    Block, Content, Message, MessageResponse, MessagesRequest, Role, Source, System, ToolChoice, ToolResultContent,
    UsageReport,
};
use crate::api::chat::{
    self, ChatCompletion, ChatContent, ChatMessage, ContentPart, FilePart, FunctionCall, FunctionDef, ImageUrl,
    NamedFunction, ToolCall,
};
use crate::api::{RawObject, Usage};

#[derive(Serialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<chat::Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<chat::ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Translates a Messages request for an OpenAI-compatible deployment. `ask_usage` adds
/// `stream_options.include_usage` to streams (the provider needs to be asked); `max_output` is
/// the model's known output limit, which `max_tokens` is capped at (Claude Code asks for 128k,
/// which most OpenAI models refuse).
pub fn to_chat_request(
    request: &RawObject,
    upstream_model: &str,
    stream: bool,
    ask_usage: bool,
    max_output: Option<u64>,
) -> Result<Vec<u8>, Untranslatable> {
    let parsed: MessagesRequest = serde_json::from_slice(&request.to_vec())
        .map_err(|e| Untranslatable::new(format!("The request does not match the Messages API: {e}"), "messages"))?;
    let mut messages = Vec::with_capacity(parsed.messages.len() + 1);
    if let Some(system) = parsed.system {
        let text = match system {
            System::Text(t) => t,
            System::Blocks(blocks) => join_text(&blocks, "\n\n"),
        };
        if !text.is_empty() {
            messages.push(ChatMessage {
                role: "system".into(),
                content: Some(ChatContent::Text(text)),
                ..Default::default()
            });
        }
    }
    for (i, message) in parsed.messages.into_iter().enumerate() {
        match message.role {
            Role::User => user_messages(message, i, &mut messages)?,
            Role::Assistant => messages.push(assistant_message(message)),
            Role::System => system_message(message, &mut messages),
            Role::Unknown => {
                return Err(Untranslatable::new(
                    "This role cannot be sent to an OpenAI-compatible model (expected user, assistant or system).",
                    format!("messages[{i}].role"),
                ));
            }
        }
    }

    let tools = chat_tools(parsed.tools.unwrap_or_default())?;
    let has_tools = !tools.is_empty();
    let (tool_choice, disable_parallel) = tool_choice(parsed.tool_choice.filter(|_| has_tools));

    let body = ChatRequest {
        model: upstream_model.to_owned(),
        messages,
        max_tokens: max_output.map_or(parsed.max_tokens, |limit| parsed.max_tokens.min(limit)),
        stop: parsed.stop_sequences.filter(|s| !s.is_empty()),
        temperature: parsed.temperature,
        top_p: parsed.top_p,
        stream: stream.then_some(true),
        stream_options: (stream && ask_usage).then_some(StreamOptions { include_usage: true }),
        tools: has_tools.then_some(tools),
        tool_choice,
        parallel_tool_calls: disable_parallel.filter(|d| *d).map(|_| false),
        // OpenAI takes an end-user id of at most 64 characters; longer ones (Claude Code sends a
        // JSON document) identify a device rather than a user and are not sent.
        user: parsed.metadata.and_then(|m| m.user_id).filter(|u| !u.is_empty() && u.chars().count() <= MAX_USER_CHARS),
    };
    serde_json::to_vec(&body).map_err(|e| Untranslatable::new(format!("Could not build the request: {e}"), "messages"))
}

/// Client tools as functions; deferred tools stay out, server tools are refused.
fn chat_tools(given: Vec<crate::api::anthropic::Tool>) -> Result<Vec<chat::Tool>, Untranslatable> {
    let mut tools = Vec::new();
    for (i, tool) in given.into_iter().enumerate() {
        // A deferred tool is not in Claude's context either until a tool search loads it.
        if tool.defer_loading == Some(true) {
            continue;
        }
        if let Some(kind) = tool.kind.as_deref()
            && kind != "custom"
        {
            return Err(Untranslatable::new(
                format!("The server tool {kind:?} is only available on Anthropic models."),
                format!("tools[{i}]"),
            ));
        }
        tools.push(chat::Tool {
            kind: "function".into(),
            function: Some(FunctionDef {
                name: tool.name,
                description: tool.description,
                parameters: tool.input_schema,
            }),
        });
    }
    Ok(tools)
}

/// The tool choice in OpenAI's terms, and whether parallel tool calls were turned off.
fn tool_choice(choice: Option<ToolChoice>) -> (Option<chat::ToolChoice>, Option<bool>) {
    match choice {
        None => (None, None),
        Some(ToolChoice::Auto { disable_parallel_tool_use }) => (Some(mode("auto")), disable_parallel_tool_use),
        Some(ToolChoice::Any { disable_parallel_tool_use }) => (Some(mode("required")), disable_parallel_tool_use),
        Some(ToolChoice::None) => (Some(mode("none")), None),
        Some(ToolChoice::Tool { name, disable_parallel_tool_use }) => (
            Some(chat::ToolChoice::Named { kind: "function".into(), function: Some(NamedFunction { name }) }),
            disable_parallel_tool_use,
        ),
    }
}

/// The longest `user` an OpenAI-compatible API accepts.
const MAX_USER_CHARS: usize = 64;

/// A system turn in the middle of the conversation: a system message at the same position.
fn system_message(message: Message, out: &mut Vec<ChatMessage>) {
    let text = match message.content {
        Content::Text(text) => text,
        Content::Blocks(blocks) => join_text(&blocks, "\n\n"),
    };
    if !text.is_empty() {
        out.push(ChatMessage { role: "system".into(), content: Some(ChatContent::Text(text)), ..Default::default() });
    }
}

fn mode(name: &str) -> chat::ToolChoice {
    chat::ToolChoice::Mode(name.to_owned())
}

fn join_text(blocks: &[Block], separator: &str) -> String {
    let texts: Vec<&str> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    texts.join(separator)
}

/// An image part; sources an OpenAI model cannot fetch (file ids, ...) are left out.
fn image_part(source: Source) -> Option<ContentPart> {
    let url = match source {
        Source::Base64 { media_type, data } | Source::Text { media_type, data } => {
            format!("data:{media_type};base64,{data}")
        }
        Source::Url { url } => url,
        Source::Unknown => return None,
    };
    Some(ContentPart::ImageUrl { image_url: ImageUrl { url, detail: None } })
}

fn document_part(source: Source) -> Option<ContentPart> {
    Some(match source {
        Source::Base64 { media_type, data } => ContentPart::File {
            file: FilePart { file_data: Some(format!("data:{media_type};base64,{data}")), ..Default::default() },
        },
        Source::Text { data, .. } => ContentPart::Text { text: data, cache_control: None },
        Source::Url { url } => ContentPart::Text { text: url, cache_control: None },
        Source::Unknown => return None,
    })
}

/// A user turn: its tool results first (one tool message each, in order), then the rest as one
/// user message; images returned by tools follow as a user message of their own.
fn user_messages(message: Message, i: usize, out: &mut Vec<ChatMessage>) -> Result<(), Untranslatable> {
    let blocks = match message.content {
        Content::Text(text) => {
            out.push(ChatMessage { role: "user".into(), content: Some(ChatContent::Text(text)), ..Default::default() });
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    let mut tool_images = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        match block {
            Block::ToolResult { tool_use_id, content, is_error, .. } => {
                let text = match content {
                    None => String::new(),
                    Some(ToolResultContent::Text(t)) => t,
                    Some(ToolResultContent::Blocks(blocks)) => {
                        let text = join_text(&blocks, "\n");
                        for block in blocks {
                            if let Block::Image { source, .. } = block {
                                tool_images.extend(image_part(source));
                            }
                        }
                        text
                    }
                };
                // OpenAI has no error flag on tool results: say so in the content.
                let text =
                    if is_error == Some(true) && !text.starts_with("Error") { format!("Error: {text}") } else { text };
                out.push(ChatMessage {
                    role: "tool".into(),
                    tool_call_id: Some(tool_use_id),
                    content: Some(ChatContent::Text(text)),
                    ..Default::default()
                });
            }
            Block::Text { text, .. } => parts.push(ContentPart::Text { text, cache_control: None }),
            Block::Image { source, .. } => parts.extend(image_part(source)),
            Block::Document { source, .. } => parts.extend(document_part(source)),
            Block::ToolUse { .. } => {
                return Err(Untranslatable::new(
                    "tool_use blocks belong in assistant messages.",
                    format!("messages[{i}].content[{j}]"),
                ));
            }
            Block::Thinking { .. } | Block::RedactedThinking { .. } | Block::Unknown => {}
        }
    }
    if !tool_images.is_empty() {
        out.push(ChatMessage {
            role: "user".into(),
            content: Some(ChatContent::Parts(tool_images)),
            ..Default::default()
        });
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [ContentPart::Text { .. }] => match parts.pop() {
                Some(ContentPart::Text { text, .. }) => ChatContent::Text(text),
                _ => ChatContent::Parts(parts),
            },
            _ => ChatContent::Parts(parts),
        };
        out.push(ChatMessage { role: "user".into(), content: Some(content), ..Default::default() });
    }
    Ok(())
}

fn assistant_message(message: Message) -> ChatMessage {
    let (text, calls) = match message.content {
        Content::Text(t) => (t, Vec::new()),
        Content::Blocks(blocks) => {
            let text = join_text(&blocks, "");
            let calls = blocks
                .into_iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, name, input } => Some(ToolCall {
                        id,
                        kind: "function".into(),
                        function: FunctionCall { name, arguments: input.to_string() },
                    }),
                    _ => None,
                })
                .collect::<Vec<_>>();
            (text, calls)
        }
    };
    ChatMessage {
        role: "assistant".into(),
        content: (!text.is_empty() || calls.is_empty()).then_some(ChatContent::Text(text)),
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..Default::default()
    }
}

/// A `msg_…` id for an answer: the upstream's own when it has the prefix, else derived from it.
pub fn message_id(upstream_id: &str) -> String {
    if upstream_id.starts_with("msg_") {
        return sanitize_tool_id(upstream_id);
    }
    let id = sanitize_tool_id(upstream_id.strip_prefix("chatcmpl-").unwrap_or(upstream_id));
    if id.is_empty() { format!("msg_gw{:024x}", fastrand::u128(..)) } else { format!("msg_{id}") }
}

/// Tool arguments as a JSON object: what the model wrote when it is one, else `{}`.
pub fn tool_input(arguments: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v) if v.is_object() => v,
        _ => serde_json::Value::Object(serde_json::Map::new()),
    }
}

/// Translates a whole chat completion for an Anthropic client; the usage for the observers too.
pub fn to_message(body: &[u8], client_model: &str) -> serde_json::Result<(Vec<u8>, Option<Usage>)> {
    let completion: ChatCompletion = serde_json::from_slice(body)?;
    let choice = completion.choices.into_iter().next().unwrap_or_default();
    let message = choice.message;
    let mut content = Vec::new();
    if let Some(reasoning) = message.reasoning_content.or(message.reasoning).filter(|r| !r.is_empty()) {
        content.push(Block::Thinking { thinking: reasoning, signature: String::new() });
    }
    let text = message.content.map(|c| c.text()).unwrap_or_default();
    if !text.is_empty() {
        content.push(Block::Text { text, cache_control: None });
    }
    for (i, call) in message.tool_calls.into_iter().flatten().enumerate() {
        let id = if call.id.is_empty() { format!("toolu_gw_{i}") } else { sanitize_tool_id(&call.id) };
        content.push(Block::ToolUse { id, name: call.function.name, input: tool_input(&call.function.arguments) });
    }
    let stop = choice.finish_reason.as_deref().map(stop_reason).unwrap_or("end_turn");
    let usage = completion.usage;
    let out = MessageResponse {
        id: message_id(&completion.id),
        kind: "message".into(),
        role: Role::Assistant,
        model: client_model.to_owned(),
        content,
        stop_reason: Some(stop.to_owned()),
        stop_sequence: None,
        usage: usage.map(|u| UsageReport::from_openai(&u)).unwrap_or_default().complete(),
    };
    Ok((serde_json::to_vec(&out)?, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: &str) -> serde_json::Value {
        let request = RawObject::from_slice(body.as_bytes()).unwrap();
        serde_json::from_slice(&to_chat_request(&request, "gpt-x", true, true, None).unwrap()).unwrap()
    }

    #[test]
    fn messages_request_becomes_a_chat_request() {
        let out = translate(
            r#"{"model":"claude","max_tokens":100,"stream":true,
                "system":[{"type":"text","text":"Be terse."},{"type":"text","text":"Use metric.","cache_control":{"type":"ephemeral"}}],
                "messages":[
                  {"role":"user","content":[{"type":"text","text":"weather?"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAA"}}]},
                  {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"w","input":{"city":"Paris"}}]},
                  {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"18C"}]},{"type":"text","text":"and?"}]}],
                "tools":[{"name":"w","description":"weather","input_schema":{"type":"object"}}],
                "tool_choice":{"type":"any","disable_parallel_tool_use":true},
                "stop_sequences":["END"],"temperature":0.5,"top_k":5,"metadata":{"user_id":"u1"},"thinking":{"type":"enabled","budget_tokens":2000}}"#,
        );
        assert_eq!(
            out,
            serde_json::json!({
                "model":"gpt-x",
                "messages":[
                    {"role":"system","content":"Be terse.\n\nUse metric."},
                    {"role":"user","content":[{"type":"text","text":"weather?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}}]},
                    {"role":"assistant","content":"Checking.","tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}}]},
                    {"role":"tool","content":"18C","tool_call_id":"toolu_1"},
                    {"role":"user","content":"and?"}
                ],
                "max_tokens":100,"stop":["END"],"temperature":0.5,"stream":true,"stream_options":{"include_usage":true},
                "tools":[{"type":"function","function":{"name":"w","description":"weather","parameters":{"type":"object"}}}],
                "tool_choice":"required","parallel_tool_calls":false,"user":"u1"
            })
        );
    }

    #[test]
    fn system_turns_stay_in_place_and_claude_only_settings_are_dropped() {
        let out = translate(
            r#"{"model":"c","max_tokens":128000,"system":"top",
                "messages":[{"role":"user","content":"a"},{"role":"system","content":[{"type":"text","text":"env"}]},
                            {"role":"assistant","content":"b"},{"role":"system","content":"late"}],
                "tools":[{"name":"t","input_schema":{"type":"object"}},{"name":"d","input_schema":{"type":"object"},"defer_loading":true}],
                "context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},
                "output_config":{"effort":"medium"},"thinking":{"type":"adaptive"},
                "metadata":{"user_id":"{\"device_id\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}"}}"#,
        );
        let roles: Vec<(&str, &str)> = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(
            roles,
            [("system", "top"), ("user", "a"), ("system", "env"), ("assistant", "b"), ("system", "late")]
        );
        assert_eq!(out["tools"].as_array().unwrap().len(), 1, "the deferred tool is not loaded");
        for field in ["context_management", "output_config", "thinking", "metadata", "user"] {
            assert!(out.get(field).is_none(), "{field}");
        }
        let capped = to_chat_request(
            &RawObject::from_slice(br#"{"model":"c","max_tokens":128000,"messages":[{"role":"user","content":"a"}]}"#)
                .unwrap(),
            "g",
            false,
            false,
            Some(16_384),
        )
        .unwrap();
        assert!(String::from_utf8(capped).unwrap().contains(r#""max_tokens":16384"#));
    }

    #[test]
    fn a_role_no_translation_knows_is_named() {
        let request = RawObject::from_slice(
            br#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"narrator","content":"y"}]}"#,
        )
        .unwrap();
        assert_eq!(
            to_chat_request(&request, "g", false, false, None).unwrap_err().param.as_deref(),
            Some("messages[1].role")
        );
    }

    #[test]
    fn server_tools_cannot_go_to_an_openai_model() {
        let request = RawObject::from_slice(
            br#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        )
        .unwrap();
        assert_eq!(to_chat_request(&request, "g", false, false, None).unwrap_err().param.as_deref(), Some("tools[0]"));
    }

    #[test]
    fn chat_completion_becomes_a_message() {
        let body = br#"{"id":"chatcmpl-abc","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,
            "message":{"role":"assistant","content":"Let me check.","reasoning_content":"think","tool_calls":[
              {"id":"call_1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}},
              {"id":"call_2","type":"function","function":{"name":"t","arguments":"not json"}}]},
            "finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":50,"completion_tokens":9,"total_tokens":59,"prompt_tokens_details":{"cached_tokens":20}}}"#;
        let (out, usage) = to_message(body, "claude").unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            serde_json::json!({
                "id":"msg_abc","type":"message","role":"assistant","model":"claude",
                "content":[
                    {"type":"thinking","thinking":"think","signature":""},
                    {"type":"text","text":"Let me check."},
                    {"type":"tool_use","id":"call_1","name":"w","input":{"city":"Paris"}},
                    {"type":"tool_use","id":"call_2","name":"t","input":{}}
                ],
                "stop_reason":"tool_use","stop_sequence":null,
                "usage":{"input_tokens":30,"output_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":20}
            })
        );
        assert_eq!(usage.unwrap().total_tokens, 59);
    }
}
