//! OpenAI chat request → Bedrock Converse body. System and developer messages become
//! `system`; turns alternate user/assistant (neighbours merged, all tool results of a turn in
//! one user turn); empty text never goes out (Converse refuses blank blocks); tools, tool
//! choice, sampling, stop sequences, reasoning effort (Claude) and JSON output are mapped per
//! the rules in `adapter::bedrock`. What Converse cannot express is a 400 naming the field.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::tools::tool_config;
use super::{ToolNames, tool_use_id};
use crate::adapter::Untranslatable;
use crate::adapter::gemini::request::field;
use crate::api::RawObject;
use crate::api::chat::{ChatContent, ChatMessage, ContentPart};
use crate::api::converse::{
    ContentBlock, ConverseRequest, Image, ImageSource, InferenceConfig, JsonSchemaSpec, Message, OutputConfig,
    ReasoningContent, ReasoningText, Structure, SystemBlock, TextFormat, ToolChoice, ToolResult, ToolResultContent,
    ToolUse,
};

/// `reasoning_effort` → Claude thinking budget.
const EFFORT_BUDGETS: &[(&str, u64)] = &[("minimal", 1024), ("low", 1024), ("medium", 2048), ("high", 4096)];
/// Claude's smallest thinking budget, and the room left for the answer when none is given.
const MIN_THINKING_BUDGET: u64 = 1024;
const ANSWER_ROOM: u64 = 4096;
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
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    schema: Option<Box<RawValue>>,
}

/// Translates an OpenAI chat request for the Bedrock model `model_id`; also returns the tool
/// names the answer must be translated back with.
pub fn from_chat(request: &RawObject, model_id: &str) -> Result<(Vec<u8>, ToolNames), Untranslatable> {
    if field::<u64>(request, "n")?.is_some_and(|n| n > 1) {
        return Err(Untranslatable::new("Bedrock models return one choice: 'n' must be 1.", "n"));
    }
    let mut names = ToolNames::default();
    let messages: Vec<ChatMessage> = field(request, "messages")?.unwrap_or_default();
    let mut system = Vec::new();
    let mut turns: Vec<Message> = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        match message.role.as_str() {
            "system" | "developer" => {
                let text = text_only(message.content, i)?;
                if !text.is_empty() {
                    system.push(SystemBlock { text });
                }
            }
            "user" => push_turn(&mut turns, "user", user_blocks(message.content, i)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(message, i, &mut names)?),
            "tool" => push_turn(&mut turns, "user", vec![tool_result(message, i)?]),
            other => {
                return Err(Untranslatable::new(
                    format!("Messages with role '{other}' cannot be sent to a Bedrock model."),
                    format!("messages[{i}].role"),
                ));
            }
        }
    }
    let history_has_tools =
        turns.iter().flat_map(|t| &t.content).any(|b| b.tool_use.is_some() || b.tool_result.is_some());
    let tool_config = tool_config(request, history_has_tools, &mut names)?;
    let forced = matches!(
        tool_config.as_ref().and_then(|c| c.tool_choice.as_ref()),
        Some(ToolChoice::Any {} | ToolChoice::Tool { .. })
    );

    let explicit_max = field::<u64>(request, "max_completion_tokens")?.or(field(request, "max_tokens")?);
    let mut inference = InferenceConfig {
        max_tokens: explicit_max,
        temperature: field::<f64>(request, "temperature")?.map(|t| t.clamp(0.0, 1.0)),
        top_p: field(request, "top_p")?,
        stop_sequences: match field::<Stop>(request, "stop")? {
            None => None,
            Some(Stop::One(s)) => Some(vec![s]),
            Some(Stop::Many(v)) => Some(v),
        }
        .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>())
        .filter(|v| !v.is_empty()),
    };
    let additional = thinking(request, model_id, forced, &mut inference)?;
    let output_config = output_config(request, &mut system)?;
    let has_inference = inference.max_tokens.is_some()
        || inference.temperature.is_some()
        || inference.top_p.is_some()
        || inference.stop_sequences.is_some();
    let body = ConverseRequest {
        messages: turns,
        system,
        inference_config: has_inference.then_some(inference),
        tool_config,
        additional_model_request_fields: additional,
        output_config,
    };
    let body = serde_json::to_vec(&body)
        .map_err(|e| Untranslatable::new(format!("Could not build the request: {e}"), "messages"))?;
    Ok((body, names))
}

/// Claude thinking for `reasoning_effort` (module doc of `adapter::bedrock`); makes room in
/// `maxTokens` and drops the sampling settings Claude refuses while thinking.
fn thinking(
    request: &RawObject,
    model_id: &str,
    forced: bool,
    inference: &mut InferenceConfig,
) -> Result<Option<serde_json::Value>, Untranslatable> {
    let is_claude = model_id.contains("anthropic.") || model_id.contains("claude");
    let Some(effort) = field::<String>(request, "reasoning_effort")? else { return Ok(None) };
    let Some(&(_, budget)) = EFFORT_BUDGETS.iter().find(|(name, _)| *name == effort) else { return Ok(None) };
    // Claude cannot think while forced to use a tool.
    if !is_claude || forced {
        return Ok(None);
    }
    let max = *inference.max_tokens.get_or_insert(budget + ANSWER_ROOM);
    // Claude wants the budget below max_tokens; a small max_tokens means no thinking.
    let budget = budget.min(max.saturating_sub(1));
    if budget < MIN_THINKING_BUDGET {
        return Ok(None);
    }
    inference.temperature = None;
    inference.top_p = None;
    Ok(Some(serde_json::json!({"thinking": {"type": "enabled", "budget_tokens": budget}})))
}

/// `response_format`: a JSON schema as `outputConfig` (the schema as a string); JSON without
/// a schema has no Converse setting and is asked for in the system prompt.
fn output_config(request: &RawObject, system: &mut Vec<SystemBlock>) -> Result<Option<OutputConfig>, Untranslatable> {
    let Some(format) = field::<ResponseFormat>(request, "response_format")? else { return Ok(None) };
    match format.kind.as_str() {
        "json_schema" => {
            let spec = format.json_schema.unwrap_or(JsonSchema { name: None, description: None, schema: None });
            let schema = spec.schema.ok_or_else(|| {
                Untranslatable::new("'response_format.json_schema.schema' is required.", "response_format")
            })?;
            let json_schema =
                JsonSchemaSpec { schema: schema.get().to_owned(), name: spec.name, description: spec.description };
            Ok(Some(OutputConfig {
                text_format: TextFormat { kind: "json_schema", structure: Structure { json_schema } },
            }))
        }
        "json_object" => {
            system.push(SystemBlock { text: JSON_OBJECT_INSTRUCTION.into() });
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Appends a turn, merging it into the previous one of the same role.
fn push_turn(turns: &mut Vec<Message>, role: &'static str, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Message { role, content: blocks }),
    }
}

fn text_block(text: String) -> ContentBlock {
    ContentBlock { text: Some(text), ..ContentBlock::default() }
}

fn text_only(content: Option<ChatContent>, i: usize) -> Result<String, Untranslatable> {
    if let Some(ChatContent::Parts(parts)) = &content
        && let Some(j) = parts.iter().position(|p| !matches!(p, ContentPart::Text { .. }))
    {
        return Err(Untranslatable::new(
            "System messages can only contain text for a Bedrock model.",
            format!("messages[{i}].content[{j}]"),
        ));
    }
    Ok(content.map(|c| c.text()).unwrap_or_default())
}

fn user_blocks(content: Option<ChatContent>, i: usize) -> Result<Vec<ContentBlock>, Untranslatable> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(ChatContent::Text(text)) => return Ok((!text.is_empty()).then(|| text_block(text)).into_iter().collect()),
        Some(ChatContent::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match part {
            ContentPart::Text { text, .. } | ContentPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    out.push(text_block(text));
                }
            }
            ContentPart::ImageUrl { image_url } => {
                out.push(ContentBlock { image: Some(image(&image_url.url, &param)?), ..ContentBlock::default() });
            }
            ContentPart::File { .. } | ContentPart::InputAudio { .. } => {
                return Err(Untranslatable::new("Only text and images can be sent to a Bedrock model.", param));
            }
        }
    }
    Ok(out)
}

/// A base64 `data:` URL as an image block; Bedrock takes no links (and the gateway does not
/// fetch them).
fn image(url: &str, param: &str) -> Result<Image, Untranslatable> {
    let parsed = url.strip_prefix("data:").and_then(|rest| rest.split_once(','));
    let Some((meta, data)) = parsed else {
        return Err(Untranslatable::new("Images must be base64 data URLs for a Bedrock model.", param));
    };
    let format = match meta.strip_suffix(";base64") {
        Some("image/png") => "png",
        Some("image/jpeg" | "image/jpg") => "jpeg",
        Some("image/gif") => "gif",
        Some("image/webp") => "webp",
        _ => {
            return Err(Untranslatable::new(
                "Images must be base64-encoded PNG, JPEG, GIF or WebP for a Bedrock model.",
                param,
            ));
        }
    };
    Ok(Image { format: format.into(), source: ImageSource { bytes: data.to_owned() } })
}

fn assistant_blocks(
    message: ChatMessage,
    i: usize,
    names: &mut ToolNames,
) -> Result<Vec<ContentBlock>, Untranslatable> {
    let mut out = Vec::new();
    // Claude's signed thinking goes back first, as Anthropic-shaped `thinking_blocks`.
    for raw in message.thinking_blocks.into_iter().flatten() {
        let block: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or_default();
        let text = |key: &str| block.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let reasoning = match block.get("type").and_then(|t| t.as_str()) {
            Some("thinking") => ReasoningContent {
                reasoning_text: Some(ReasoningText {
                    text: text("thinking").unwrap_or_default(),
                    signature: text("signature"),
                }),
                redacted_content: None,
            },
            Some("redacted_thinking") => ReasoningContent { reasoning_text: None, redacted_content: text("data") },
            _ => {
                return Err(Untranslatable::new(
                    "'thinking_blocks' must hold thinking or redacted_thinking blocks.",
                    format!("messages[{i}].thinking_blocks"),
                ));
            }
        };
        out.push(ContentBlock { reasoning_content: Some(reasoning), ..ContentBlock::default() });
    }
    let text = message.content.map(|c| c.text()).unwrap_or_default();
    if !text.trim().is_empty() {
        out.push(text_block(text));
    }
    for (j, call) in message.tool_calls.into_iter().flatten().enumerate() {
        let arguments = call.function.arguments.trim();
        let input = match serde_json::from_str::<Box<RawValue>>(if arguments.is_empty() { "{}" } else { arguments }) {
            Ok(raw) if raw.get().starts_with('{') => raw,
            _ => {
                return Err(Untranslatable::new(
                    "Tool call arguments must be a JSON object for a Bedrock model.",
                    format!("messages[{i}].tool_calls[{j}].function.arguments"),
                ));
            }
        };
        let tool_use = ToolUse { tool_use_id: tool_use_id(&call.id), name: names.sanitise(&call.function.name), input };
        out.push(ContentBlock { tool_use: Some(tool_use), ..ContentBlock::default() });
    }
    Ok(out)
}

fn tool_result(message: ChatMessage, i: usize) -> Result<ContentBlock, Untranslatable> {
    let id = message.tool_call_id.ok_or_else(|| {
        Untranslatable::new("Tool messages need a 'tool_call_id'.", format!("messages[{i}].tool_call_id"))
    })?;
    let text = message.content.map(|c| c.text()).unwrap_or_default();
    let content = if text.is_empty() { Vec::new() } else { vec![ToolResultContent { text }] };
    let result = ToolResult { tool_use_id: tool_use_id(&id), content };
    Ok(ContentBlock { tool_result: Some(result), ..ContentBlock::default() })
}
