//! OpenAI chat request → Anthropic Messages request. System and developer messages become
//! `system`; tool messages become `tool_result` blocks in a user turn; consecutive turns of one
//! role are merged (Anthropic wants them alternating); images, tools, tool choice, stop
//! sequences, sampling, reasoning effort and JSON output are mapped; what Claude cannot do is a
//! 400 naming the field rather than a silent change of meaning.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{DEFAULT_MAX_TOKENS, sanitize_tool_id};
use crate::adapter::Untranslatable;
use crate::api::RawObject;
use crate::api::anthropic::{
    Block, Content, Message, MessagesRequest, Metadata, Role, Source, System, Tool, ToolChoice, ToolResultContent,
};
use crate::api::chat::{self, ChatContent, ChatMessage, ContentPart};

/// Thinking budgets for OpenAI's `reasoning_effort`.
const EFFORT_BUDGETS: &[(&str, u64)] = &[("low", 1024), ("medium", 2048), ("high", 4096)];
/// Anthropic's smallest thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;
const JSON_OBJECT_INSTRUCTION: &str = "Respond only with a single valid JSON object.";

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<JsonSchema>,
}

#[derive(Deserialize)]
struct JsonSchema {
    #[serde(default)]
    schema: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: String,
}

/// Translates an OpenAI chat request for a Claude deployment. `max_output_tokens` is the
/// model's output limit when the catalogue knows it.
pub fn from_chat(
    request: &RawObject,
    upstream_model: &str,
    stream: bool,
    max_output_tokens: Option<u64>,
) -> Result<Vec<u8>, Untranslatable> {
    if let Some(n) = field::<u64>(request, "n")?
        && n > 1
    {
        return Err(Untranslatable::new("Anthropic models return one choice: 'n' must be 1.", "n"));
    }
    let (mut system, turns) = system_and_turns(request)?;

    let explicit_max = field::<u64>(request, "max_completion_tokens")?.or(field::<u64>(request, "max_tokens")?);
    let mut max_tokens =
        explicit_max.unwrap_or_else(|| max_output_tokens.map_or(DEFAULT_MAX_TOKENS, |m| m.min(DEFAULT_MAX_TOKENS)));

    let (tools, tool_choice) = tools(request)?;
    // Claude cannot think while forced to use a tool: reasoning_effort then asks for nothing.
    let forced = matches!(tool_choice, Some(ToolChoice::Any { .. } | ToolChoice::Tool { .. }));
    let thinking = thinking(request, forced, explicit_max.is_none(), &mut max_tokens)?;
    let thinking_on = thinking
        .as_deref()
        .and_then(|raw| serde_json::from_str::<Thinking>(raw.get()).ok())
        .is_some_and(|t| t.kind != "disabled");
    let output_config = output_config(request, &mut system)?;
    let stop_sequences = stop_sequences(request)?;

    // Anthropic's range is 0..=1 (OpenAI's 0..=2); thinking forbids changing it at all.
    let temperature = field::<f64>(request, "temperature")?.map(|t| t.clamp(0.0, 1.0)).filter(|_| !thinking_on);
    let top_k = field::<u64>(request, "top_k")?.filter(|_| !thinking_on);
    let user = field::<String>(request, "user")?.or(field::<String>(request, "safety_identifier")?);
    // Anthropic refuses user ids that look like personal data; those are simply not sent.
    let metadata = user.filter(|u| !u.contains('@') && !u.is_empty()).map(|u| Metadata { user_id: Some(u) });

    let body = MessagesRequest {
        model: upstream_model.to_owned(),
        system: collapse_system(system),
        messages: turns.into_iter().map(|(role, blocks)| Message { role, content: collapse(blocks) }).collect(),
        max_tokens,
        stop_sequences,
        temperature,
        top_p: field::<f64>(request, "top_p")?,
        top_k,
        stream: stream.then_some(true),
        tools,
        tool_choice,
        thinking,
        metadata,
        output_config,
    };
    serde_json::to_vec(&body).map_err(|e| Untranslatable::new(format!("Could not build the request: {e}"), "messages"))
}

/// One turn of the conversation: a role and its blocks.
type Turn = (Role, Vec<Block>);

/// The system prompt (system and developer messages) and the turns, consecutive turns of one
/// role merged.
fn system_and_turns(request: &RawObject) -> Result<(Vec<Block>, Vec<Turn>), Untranslatable> {
    let messages: Vec<ChatMessage> = field(request, "messages")?.unwrap_or_default();
    let mut system: Vec<Block> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        match message.role.as_str() {
            "system" | "developer" => system.extend(system_blocks(message.content, i)?),
            "user" => push_turn(&mut turns, Role::User, user_blocks(message.content, i)?),
            "assistant" => push_turn(&mut turns, Role::Assistant, assistant_blocks(message, i)?),
            "tool" => push_turn(&mut turns, Role::User, vec![tool_result(message, i)?]),
            other => {
                return Err(Untranslatable::new(
                    format!("Messages with role '{other}' cannot be sent to an Anthropic model; use tools."),
                    format!("messages[{i}].role"),
                ));
            }
        }
    }
    Ok((system, turns))
}

/// `thinking` as given, else a budget from `reasoning_effort` (not while a tool is forced), which
/// raises `max_tokens` to fit when the client did not set it.
fn thinking(
    request: &RawObject,
    forced: bool,
    max_unset: bool,
    max_tokens: &mut u64,
) -> Result<Option<Box<RawValue>>, Untranslatable> {
    let mut thinking =
        request.get("thinking").filter(|raw| *raw != "null").and_then(|raw| RawValue::from_string(raw.to_owned()).ok());
    if thinking.is_none()
        && !forced
        && let Some(effort) = field::<String>(request, "reasoning_effort")?
        && let Some(&(_, budget)) = EFFORT_BUDGETS.iter().find(|(name, _)| *name == effort)
    {
        if max_unset {
            *max_tokens = (*max_tokens).max(budget + DEFAULT_MAX_TOKENS);
        }
        // Anthropic wants the budget below max_tokens; a small max_tokens means no thinking.
        let budget = budget.min(max_tokens.saturating_sub(1));
        if budget >= MIN_THINKING_BUDGET {
            thinking = raw(&serde_json::json!({"type": "enabled", "budget_tokens": budget}));
        }
    }
    Ok(thinking)
}

/// `response_format`: a JSON schema becomes `output_config`; JSON mode becomes an instruction in
/// the system prompt.
fn output_config(request: &RawObject, system: &mut Vec<Block>) -> Result<Option<Box<RawValue>>, Untranslatable> {
    if let Some(format) = field::<ResponseFormat>(request, "response_format")? {
        match format.kind.as_str() {
            "json_schema" => {
                let schema = format.json_schema.and_then(|s| s.schema).ok_or_else(|| {
                    Untranslatable::new("'response_format.json_schema.schema' is required.", "response_format")
                })?;
                return Ok(raw(&serde_json::json!({"format": {"type": "json_schema", "schema": schema}})));
            }
            // Claude has no schema-less JSON mode: ask for it in the system prompt.
            "json_object" => system.push(text_block(JSON_OBJECT_INSTRUCTION.to_owned())),
            _ => {}
        }
    }
    Ok(None)
}

/// `stop`, without the whitespace-only sequences Anthropic rejects.
fn stop_sequences(request: &RawObject) -> Result<Option<Vec<String>>, Untranslatable> {
    Ok(match field::<Stop>(request, "stop")? {
        None => None,
        Some(Stop::One(s)) => Some(vec![s]),
        Some(Stop::Many(v)) => Some(v),
    }
    // Anthropic rejects whitespace-only stop sequences; they could never match a token anyway.
    .map(|v| v.into_iter().filter(|s| !s.trim().is_empty()).collect::<Vec<_>>())
    .filter(|v| !v.is_empty()))
}

fn field<T: serde::de::DeserializeOwned>(request: &RawObject, name: &str) -> Result<Option<T>, Untranslatable> {
    match request.get(name) {
        None => Ok(None),
        Some("null") => Ok(None),
        Some(raw) => serde_json::from_str(raw)
            .map(Some)
            .map_err(|e| Untranslatable::new(format!("Invalid '{name}' for an Anthropic model: {e}"), name)),
    }
}

fn raw(value: &serde_json::Value) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(value).ok()
}

fn text_block(text: String) -> Block {
    Block::Text { text, cache_control: None }
}

/// Appends a turn, merging it into the previous one of the same role.
fn push_turn(turns: &mut Vec<(Role, Vec<Block>)>, role: Role, blocks: Vec<Block>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// One plain text block is sent as a string, as a client would write it.
fn collapse(mut blocks: Vec<Block>) -> Content {
    if let [Block::Text { cache_control: None, .. }] = blocks.as_slice()
        && let Some(Block::Text { text, .. }) = blocks.pop()
    {
        return Content::Text(text);
    }
    Content::Blocks(blocks)
}

fn collapse_system(blocks: Vec<Block>) -> Option<System> {
    if blocks.is_empty() {
        return None;
    }
    Some(match collapse(blocks) {
        Content::Text(t) => System::Text(t),
        Content::Blocks(b) => System::Blocks(b),
    })
}

fn system_blocks(content: Option<ChatContent>, i: usize) -> Result<Vec<Block>, Untranslatable> {
    let mut out = Vec::new();
    match content {
        Some(ChatContent::Text(text)) if !text.is_empty() => out.push(text_block(text)),
        None | Some(ChatContent::Text(_)) => {}
        Some(ChatContent::Parts(parts)) => {
            for (j, part) in parts.into_iter().enumerate() {
                match part {
                    ContentPart::Text { text, cache_control } => {
                        if !text.is_empty() {
                            out.push(Block::Text { text, cache_control });
                        }
                    }
                    _ => {
                        return Err(Untranslatable::new(
                            "System messages can only contain text for an Anthropic model.",
                            format!("messages[{i}].content[{j}]"),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn user_blocks(content: Option<ChatContent>, i: usize) -> Result<Vec<Block>, Untranslatable> {
    let mut out = Vec::new();
    match content {
        Some(ChatContent::Text(text)) if !text.is_empty() => out.push(text_block(text)),
        None | Some(ChatContent::Text(_)) => {}
        Some(ChatContent::Parts(parts)) => {
            for (j, part) in parts.into_iter().enumerate() {
                if let Some(block) = part_block(part, &format!("messages[{i}].content[{j}]"))? {
                    out.push(block);
                }
            }
        }
    }
    Ok(out)
}

fn part_block(part: ContentPart, param: &str) -> Result<Option<Block>, Untranslatable> {
    Ok(match part {
        // Anthropic rejects empty text blocks.
        ContentPart::Text { text, .. } if text.is_empty() => None,
        ContentPart::Text { text, cache_control } => Some(Block::Text { text, cache_control }),
        ContentPart::Refusal { refusal } => Some(text_block(refusal)),
        ContentPart::ImageUrl { image_url } => {
            Some(Block::Image { source: source(&image_url.url, param)?, cache_control: None })
        }
        ContentPart::File { file } => match file.file_data {
            Some(data) if data.starts_with("data:") => {
                Some(Block::Document { source: source(&data, param)?, cache_control: None })
            }
            _ => {
                return Err(Untranslatable::new(
                    "Files must be sent inline as 'file_data' (a base64 data URL) for an Anthropic model.",
                    param,
                ));
            }
        },
        ContentPart::InputAudio { .. } => {
            return Err(Untranslatable::new("Anthropic models do not accept audio input.", param));
        }
    })
}

/// An image or document source from a `data:<mime>;base64,<data>` URL or an http(s) URL.
fn source(url: &str, param: &str) -> Result<Source, Untranslatable> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(Untranslatable::new("Data URLs must be base64-encoded for an Anthropic model.", param));
        };
        return Ok(Source::Base64 { media_type: media_type.to_owned(), data: data.to_owned() });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Source::Url { url: url.to_owned() });
    }
    Err(Untranslatable::new("Image URLs must be http(s) URLs or base64 data URLs.", param))
}

fn assistant_blocks(message: ChatMessage, i: usize) -> Result<Vec<Block>, Untranslatable> {
    let mut out = Vec::new();
    // Thinking goes first, exactly as Claude produced it (signatures included).
    for raw in message.thinking_blocks.into_iter().flatten() {
        match serde_json::from_str::<Block>(raw.get()) {
            Ok(block @ (Block::Thinking { .. } | Block::RedactedThinking { .. })) => out.push(block),
            _ => {
                return Err(Untranslatable::new(
                    "'thinking_blocks' must hold Anthropic thinking or redacted_thinking blocks.",
                    format!("messages[{i}].thinking_blocks"),
                ));
            }
        }
    }
    if let Some(content) = message.content {
        let text = match content {
            ChatContent::Text(t) => t,
            ChatContent::Parts(parts) => parts
                .into_iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text),
                    ContentPart::Refusal { refusal } => Some(refusal),
                    _ => None,
                })
                .collect(),
        };
        if !text.is_empty() {
            out.push(text_block(text));
        }
    }
    for (j, call) in message.tool_calls.into_iter().flatten().enumerate() {
        out.push(tool_use(call, &format!("messages[{i}].tool_calls[{j}]"))?);
    }
    Ok(out)
}

fn tool_use(call: chat::ToolCall, param: &str) -> Result<Block, Untranslatable> {
    let arguments = call.function.arguments.trim();
    let input = if arguments.is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        match serde_json::from_str::<serde_json::Value>(arguments) {
            Ok(v) if v.is_object() => v,
            _ => {
                return Err(Untranslatable::new(
                    "Tool call arguments must be a JSON object for an Anthropic model.",
                    format!("{param}.function.arguments"),
                ));
            }
        }
    };
    Ok(Block::ToolUse { id: sanitize_tool_id(&call.id), name: call.function.name, input })
}

fn tool_result(message: ChatMessage, i: usize) -> Result<Block, Untranslatable> {
    let id = message.tool_call_id.ok_or_else(|| {
        Untranslatable::new("Tool messages need a 'tool_call_id'.", format!("messages[{i}].tool_call_id"))
    })?;
    let content = match message.content {
        None => None,
        Some(ChatContent::Text(t)) if t.is_empty() => None,
        Some(ChatContent::Text(t)) => Some(ToolResultContent::Text(t)),
        Some(ChatContent::Parts(parts)) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.into_iter().enumerate() {
                if let Some(block) = part_block(part, &format!("messages[{i}].content[{j}]"))? {
                    blocks.push(block);
                }
            }
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    Ok(Block::ToolResult { tool_use_id: sanitize_tool_id(&id), content, is_error: None, cache_control: None })
}

type Tools = (Option<Vec<Tool>>, Option<ToolChoice>);

fn tools(request: &RawObject) -> Result<Tools, Untranslatable> {
    let declared: Vec<chat::Tool> = field(request, "tools")?.unwrap_or_default();
    let mut tools = Vec::with_capacity(declared.len());
    for (i, tool) in declared.into_iter().enumerate() {
        let function = match (tool.kind.as_str(), tool.function) {
            ("function", Some(f)) => f,
            _ => {
                return Err(Untranslatable::new(
                    "Only function tools can be used with an Anthropic model.",
                    format!("tools[{i}]"),
                ));
            }
        };
        let input_schema = match function.parameters {
            Some(p) => p,
            None => RawValue::from_string(r#"{"type":"object","properties":{}}"#.into())
                .map_err(|_| Untranslatable::new("internal", "tools"))?,
        };
        tools.push(Tool {
            kind: None,
            name: function.name,
            description: function.description,
            input_schema: Some(input_schema),
            cache_control: None,
            defer_loading: None,
        });
    }
    if tools.is_empty() {
        // A tool choice without tools means nothing to Claude (and it rejects one).
        return Ok((None, None));
    }
    let disable_parallel = match field::<bool>(request, "parallel_tool_calls")? {
        Some(false) => Some(true),
        _ => None,
    };
    let choice = match field::<chat::ToolChoice>(request, "tool_choice")? {
        None => disable_parallel.map(|d| ToolChoice::Auto { disable_parallel_tool_use: Some(d) }),
        Some(chat::ToolChoice::Mode(mode)) => Some(match mode.as_str() {
            "auto" => ToolChoice::Auto { disable_parallel_tool_use: disable_parallel },
            "required" => ToolChoice::Any { disable_parallel_tool_use: disable_parallel },
            "none" => ToolChoice::None,
            other => {
                return Err(Untranslatable::new(
                    format!("Unsupported 'tool_choice' {other:?} (expected auto, none, required or a function)."),
                    "tool_choice",
                ));
            }
        }),
        Some(chat::ToolChoice::Named { kind, function: Some(f) }) if kind == "function" => {
            Some(ToolChoice::Tool { name: f.name, disable_parallel_tool_use: disable_parallel })
        }
        Some(chat::ToolChoice::Named { .. }) => {
            return Err(Untranslatable::new(
                "Only a named function can be forced as 'tool_choice' for an Anthropic model.",
                "tool_choice",
            ));
        }
    };
    Ok((Some(tools), choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: &str) -> serde_json::Value {
        let request = RawObject::from_slice(body.as_bytes()).unwrap();
        serde_json::from_slice(&from_chat(&request, "claude-x", false, Some(64000)).unwrap()).unwrap()
    }

    fn param_of(body: &str) -> String {
        let request = RawObject::from_slice(body.as_bytes()).unwrap();
        from_chat(&request, "claude-x", false, None).unwrap_err().param.unwrap_or_default()
    }

    #[test]
    fn system_and_developer_become_system_and_turns_alternate() {
        let out = translate(
            r#"{"model":"m","messages":[
                {"role":"system","content":"Be terse."},
                {"role":"developer","content":[{"type":"text","text":"Use metric."}]},
                {"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"b"},{"type":"text","text":""}]},
                {"role":"assistant","content":"c"}]}"#,
        );
        assert_eq!(
            out["system"],
            serde_json::json!([{"type":"text","text":"Be terse."},{"type":"text","text":"Use metric."}])
        );
        assert_eq!(
            out["messages"],
            serde_json::json!([
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":"c"}
            ])
        );
        assert_eq!(out["max_tokens"], 4096);
        assert_eq!(out["model"], "claude-x");
    }

    #[test]
    fn tool_calls_and_results_keep_their_ids_and_parallel_results_merge() {
        let out = translate(
            r#"{"model":"m","messages":[
                {"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}},
                    {"id":"call_2","type":"function","function":{"name":"t","arguments":""}}]},
                {"role":"tool","tool_call_id":"call_1","content":"18C"},
                {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"noon"}]},
                {"role":"user","content":"thanks"}],
              "tools":[{"type":"function","function":{"name":"w","description":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
                       {"type":"function","function":{"name":"t"}}],
              "tool_choice":"required","parallel_tool_calls":false}"#,
        );
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[1]["content"],
            serde_json::json!([
                {"type":"tool_use","id":"call_1","name":"w","input":{"city":"Paris"}},
                {"type":"tool_use","id":"call_2","name":"t","input":{}}
            ])
        );
        assert_eq!(
            messages[2]["content"],
            serde_json::json!([
                {"type":"tool_result","tool_use_id":"call_1","content":"18C"},
                {"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"noon"}]},
                {"type":"text","text":"thanks"}
            ])
        );
        assert_eq!(out["tools"][1]["input_schema"], serde_json::json!({"type":"object","properties":{}}));
        assert_eq!(out["tools"][0]["description"], "weather");
        assert_eq!(out["tool_choice"], serde_json::json!({"type":"any","disable_parallel_tool_use":true}));
    }

    #[test]
    fn tool_choice_variants() {
        let with = |choice: &str| {
            translate(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":{choice}}}"#
            ))["tool_choice"]
                .clone()
        };
        assert_eq!(with(r#""auto""#), serde_json::json!({"type":"auto"}));
        assert_eq!(with(r#""none""#), serde_json::json!({"type":"none"}));
        assert_eq!(
            with(r#"{"type":"function","function":{"name":"f"}}"#),
            serde_json::json!({"type":"tool","name":"f"})
        );
        // No tools: no tool choice.
        let out = translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"none"}"#);
        assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
    }

    #[test]
    fn images_from_data_urls_and_urls() {
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":[
                {"type":"text","text":"what is this?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg","detail":"high"}}]}]}"#,
        );
        assert_eq!(
            out["messages"][0]["content"],
            serde_json::json!([
                {"type":"text","text":"what is this?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
                {"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}}
            ])
        );
    }

    #[test]
    fn sampling_stop_and_limits() {
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1.7,"top_p":0.9,
                "stop":["END"," ","\n"],"max_tokens":100,"max_completion_tokens":50,"user":"u-1","seed":3,"presence_penalty":1}"#,
        );
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["top_p"], 0.9);
        assert_eq!(out["stop_sequences"], serde_json::json!(["END"]));
        assert_eq!(out["max_tokens"], 50);
        assert_eq!(out["metadata"], serde_json::json!({"user_id":"u-1"}));
        assert!(out.get("seed").is_none() && out.get("presence_penalty").is_none());
        let out = translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"\n\n","user":"a@b.c"}"#);
        assert!(out.get("stop_sequences").is_none() && out.get("metadata").is_none());
    }

    #[test]
    fn reasoning_effort_enables_thinking_and_drops_temperature() {
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"medium","temperature":0.2}"#,
        );
        assert_eq!(out["thinking"], serde_json::json!({"type":"enabled","budget_tokens":2048}));
        assert_eq!(out["max_tokens"], 2048 + 4096);
        assert!(out.get("temperature").is_none());
        // A forced tool: no thinking.
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"low","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}"#,
        );
        assert!(out.get("thinking").is_none());
        // A max_tokens too small for the minimum budget: no thinking.
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"high","max_tokens":1000}"#,
        );
        assert!(out.get("thinking").is_none());
        // Anthropic's own parameter passes through.
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":5000},"max_tokens":9000}"#,
        );
        assert_eq!(out["thinking"]["budget_tokens"], 5000);
    }

    #[test]
    fn assistant_thinking_blocks_go_back_first() {
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"},
                {"role":"assistant","content":"y","reasoning_content":"hmm","thinking_blocks":[{"type":"thinking","thinking":"hmm","signature":"sig"}]},
                {"role":"user","content":"z"}]}"#,
        );
        assert_eq!(
            out["messages"][1]["content"],
            serde_json::json!([{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"text","text":"y"}])
        );
    }

    #[test]
    fn json_output() {
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object"}}}}"#,
        );
        assert_eq!(
            out["output_config"],
            serde_json::json!({"format":{"type":"json_schema","schema":{"type":"object"}}})
        );
        let out = translate(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        );
        assert_eq!(out["system"], JSON_OBJECT_INSTRUCTION);
    }

    #[test]
    fn what_claude_cannot_do_is_a_400_naming_the_field() {
        assert_eq!(param_of(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#), "n");
        assert_eq!(
            param_of(
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}"#
            ),
            "messages[0].content[0]"
        );
        assert_eq!(
            param_of(
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}"#
            ),
            "messages[0].tool_calls[0].function.arguments"
        );
        assert_eq!(
            param_of(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","custom":{"name":"g"}}]}"#
            ),
            "tools[0]"
        );
        assert_eq!(param_of(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#), "messages[0].tool_call_id");
    }
}
