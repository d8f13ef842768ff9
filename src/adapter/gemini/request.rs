//! OpenAI chat request → Gemini `generateContent` body. System and developer messages become
//! `systemInstruction`; assistant turns become `model` turns; tool messages become
//! `functionResponse` parts of one `user` turn, named from the earlier call; neighbouring
//! turns of one role are merged. What Gemini cannot express is a 400 naming the field.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::split_call_id;
use crate::adapter::Untranslatable;
use crate::api::RawObject;
use crate::api::chat::{self, ChatContent, ChatMessage, ContentPart};
use crate::api::gemini::{
    Blob, Content, FileData, FunctionCall, FunctionCallingConfig, FunctionDeclaration, FunctionResponse,
    GenerateContentRequest, GenerationConfig, Part, ThinkingConfig, Tool, ToolConfig,
};

/// `reasoning_effort` → thinking budget (module doc of `adapter::gemini`).
pub const EFFORT_BUDGETS: &[(&str, u64)] = &[("minimal", 1024), ("low", 1024), ("medium", 2048), ("high", 4096)];
/// The Gemini API refuses more stop sequences than this.
const MAX_STOP_SEQUENCES: usize = 5;

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

/// Translates an OpenAI chat request into a Gemini body (the model and `stream` go in the path).
pub fn from_chat(request: &RawObject) -> Result<Vec<u8>, Untranslatable> {
    let messages: Vec<ChatMessage> = field(request, "messages")?.unwrap_or_default();
    let mut system = Vec::new();
    let mut turns: Vec<Content> = Vec::new();
    // Earlier calls' ids (signature stripped) → names, for the tool results that follow them.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        match message.role.as_str() {
            "system" | "developer" => system.extend(parts(message.content, i)?),
            "user" => push_turn(&mut turns, "user", parts(message.content, i)?),
            "assistant" => push_turn(&mut turns, "model", model_parts(message, i, &mut calls)?),
            "tool" => push_turn(&mut turns, "user", vec![function_response(message, i, &calls)?]),
            other => {
                return Err(Untranslatable::new(
                    format!("Messages with role '{other}' cannot be sent to a Gemini model."),
                    format!("messages[{i}].role"),
                ));
            }
        }
    }
    let (tools, tool_config) = tools(request)?;
    let body = GenerateContentRequest {
        contents: turns,
        system_instruction: (!system.is_empty()).then_some(Content { role: None, parts: system }),
        tools,
        tool_config,
        generation_config: Some(generation_config(request)?),
    };
    serde_json::to_vec(&body).map_err(|e| Untranslatable::new(format!("Could not build the request: {e}"), "messages"))
}

fn generation_config(request: &RawObject) -> Result<GenerationConfig, Untranslatable> {
    let stop_sequences = match field::<Stop>(request, "stop")? {
        None => None,
        Some(Stop::One(s)) => Some(vec![s]),
        Some(Stop::Many(v)) => Some(v),
    }
    .filter(|v| !v.is_empty());
    if stop_sequences.as_ref().is_some_and(|v| v.len() > MAX_STOP_SEQUENCES) {
        return Err(Untranslatable::new("Gemini models accept at most 5 stop sequences.", "stop"));
    }
    let mut config = GenerationConfig {
        temperature: field(request, "temperature")?,
        top_p: field(request, "top_p")?,
        max_output_tokens: field::<u64>(request, "max_completion_tokens")?.or(field(request, "max_tokens")?),
        stop_sequences,
        candidate_count: field::<u64>(request, "n")?.filter(|n| *n != 1),
        seed: field(request, "seed")?,
        presence_penalty: field(request, "presence_penalty")?,
        frequency_penalty: field(request, "frequency_penalty")?,
        ..GenerationConfig::default()
    };
    if let Some(format) = field::<ResponseFormat>(request, "response_format")? {
        match format.kind.as_str() {
            "json_schema" => {
                config.response_mime_type = Some("application/json");
                config.response_json_schema = format.json_schema.and_then(|s| s.schema);
            }
            "json_object" => config.response_mime_type = Some("application/json"),
            _ => {}
        }
    }
    if let Some(effort) = field::<String>(request, "reasoning_effort")?
        && effort != "none"
    {
        let Some(&(_, budget)) = EFFORT_BUDGETS.iter().find(|(name, _)| *name == effort) else {
            return Err(Untranslatable::new(
                format!("Unsupported 'reasoning_effort' {effort:?} (expected minimal, low, medium or high)."),
                "reasoning_effort",
            ));
        };
        config.thinking_config = Some(ThinkingConfig { thinking_budget: budget, include_thoughts: true });
    }
    Ok(config)
}

pub(crate) fn field<T: serde::de::DeserializeOwned>(
    request: &RawObject,
    name: &str,
) -> Result<Option<T>, Untranslatable> {
    match request.get(name) {
        None | Some("null") => Ok(None),
        Some(raw) => {
            serde_json::from_str(raw).map(Some).map_err(|e| Untranslatable::new(format!("Invalid '{name}': {e}"), name))
        }
    }
}

/// Appends a turn, merging it into the previous one of the same role.
fn push_turn(turns: &mut Vec<Content>, role: &str, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
        _ => turns.push(Content { role: Some(role.to_owned()), parts }),
    }
}

fn text_part(text: String) -> Part {
    Part { text: Some(text), ..Part::default() }
}

fn parts(content: Option<ChatContent>, i: usize) -> Result<Vec<Part>, Untranslatable> {
    Ok(match content {
        None => Vec::new(),
        Some(ChatContent::Text(text)) => (!text.is_empty()).then(|| text_part(text)).into_iter().collect(),
        Some(ChatContent::Parts(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for (j, part) in list.into_iter().enumerate() {
                if let Some(part) = part_of(part, &format!("messages[{i}].content[{j}]"))? {
                    out.push(part);
                }
            }
            out
        }
    })
}

fn part_of(part: ContentPart, param: &str) -> Result<Option<Part>, Untranslatable> {
    Ok(match part {
        ContentPart::Text { text, .. } | ContentPart::Refusal { refusal: text } => {
            (!text.is_empty()).then(|| text_part(text))
        }
        ContentPart::ImageUrl { image_url } => Some(media(&image_url.url, param)?),
        ContentPart::File { file } => match file.file_data {
            Some(data) => Some(media(&data, param)?),
            None => {
                return Err(Untranslatable::new(
                    "Files must be sent inline as 'file_data' (a base64 data URL) for a Gemini model.",
                    param,
                ));
            }
        },
        ContentPart::InputAudio { input_audio } => {
            let data = input_audio.get("data").and_then(|d| d.as_str()).unwrap_or_default();
            let format = input_audio.get("format").and_then(|d| d.as_str()).unwrap_or("wav");
            Some(Part {
                inline_data: Some(Blob { mime_type: format!("audio/{format}"), data: data.to_owned() }),
                ..Part::default()
            })
        }
    })
}

/// `data:<mime>;base64,<data>` → `inlineData`; an https, http or `gs://` URL → `fileData`, its
/// type guessed from the extension (JPEG when unknown: Gemini needs one).
fn media(url: &str, param: &str) -> Result<Part, Untranslatable> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let Some(mime_type) = meta.strip_suffix(";base64") else {
            return Err(Untranslatable::new("Data URLs must be base64-encoded for a Gemini model.", param));
        };
        let blob = Blob { mime_type: mime_type.to_owned(), data: data.to_owned() };
        return Ok(Part { inline_data: Some(blob), ..Part::default() });
    }
    if !["https://", "http://", "gs://"].iter().any(|scheme| url.starts_with(scheme)) {
        return Err(Untranslatable::new("Image URLs must be https, gs:// or base64 data URLs.", param));
    }
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    let mime_type =
        [(".png", "image/png"), (".webp", "image/webp"), (".gif", "image/gif"), (".pdf", "application/pdf")]
            .iter()
            .find(|(ext, _)| path.ends_with(ext))
            .map_or("image/jpeg", |(_, mime)| mime);
    Ok(Part {
        file_data: Some(FileData { mime_type: mime_type.to_owned(), file_uri: url.to_owned() }),
        ..Part::default()
    })
}

fn model_parts(message: ChatMessage, i: usize, calls: &mut Vec<(String, String)>) -> Result<Vec<Part>, Untranslatable> {
    let mut out = Vec::new();
    if let Some(content) = message.content {
        let text = content.text();
        if !text.is_empty() {
            out.push(text_part(text));
        }
    }
    for (j, call) in message.tool_calls.into_iter().flatten().enumerate() {
        let (id, signature) = split_call_id(&call.id);
        let args = call.function.arguments.trim();
        let args = if args.is_empty() { "{}" } else { args };
        let args = match serde_json::from_str::<Box<RawValue>>(args) {
            Ok(raw) if raw.get().starts_with('{') => raw,
            _ => {
                return Err(Untranslatable::new(
                    "Tool call arguments must be a JSON object for a Gemini model.",
                    format!("messages[{i}].tool_calls[{j}].function.arguments"),
                ));
            }
        };
        let signature = signature.map(str::to_owned);
        calls.push((id.to_owned(), call.function.name.clone()));
        out.push(Part {
            function_call: Some(FunctionCall { name: call.function.name, args: Some(args) }),
            thought_signature: signature,
            ..Part::default()
        });
    }
    Ok(out)
}

/// A tool message as a `functionResponse`: a JSON object result goes as is, anything else as
/// `{"result": …}` (Gemini wants an object).
fn function_response(message: ChatMessage, i: usize, calls: &[(String, String)]) -> Result<Part, Untranslatable> {
    let param = format!("messages[{i}].tool_call_id");
    let id = message.tool_call_id.ok_or_else(|| Untranslatable::new("Tool messages need a 'tool_call_id'.", &param))?;
    let (id, _) = split_call_id(&id);
    let Some((_, name)) = calls.iter().rev().find(|(call, _)| call == id) else {
        return Err(Untranslatable::new(
            format!(
                "Tool message for '{id}' follows no assistant tool call with that id; Gemini needs the function's name."
            ),
            param,
        ));
    };
    let text = message.content.map(|c| c.text()).unwrap_or_default();
    let response = match serde_json::from_str::<Box<RawValue>>(&text) {
        Ok(raw) if raw.get().starts_with('{') => raw,
        Ok(raw) => wrap(&raw)?,
        Err(_) => wrap(&text)?,
    };
    Ok(Part { function_response: Some(FunctionResponse { name: name.clone(), response }), ..Part::default() })
}

fn wrap(value: &impl serde::Serialize) -> Result<Box<RawValue>, Untranslatable> {
    serde_json::value::to_raw_value(&serde_json::json!({ "result": value }))
        .map_err(|e| Untranslatable::new(format!("Could not build the tool result: {e}"), "messages"))
}

type Tools = (Option<Vec<Tool>>, Option<ToolConfig>);

fn tools(request: &RawObject) -> Result<Tools, Untranslatable> {
    let declared: Vec<chat::Tool> = field(request, "tools")?.unwrap_or_default();
    let mut declarations = Vec::with_capacity(declared.len());
    for (i, tool) in declared.into_iter().enumerate() {
        let function = match (tool.kind.as_str(), tool.function) {
            ("function", Some(f)) => f,
            _ => {
                return Err(Untranslatable::new(
                    "Only function tools can be used with a Gemini model.",
                    format!("tools[{i}]"),
                ));
            }
        };
        declarations.push(FunctionDeclaration {
            name: function.name,
            description: function.description,
            parameters_json_schema: function.parameters,
        });
    }
    if declarations.is_empty() {
        return Ok((None, None));
    }
    let config = |mode, names| ToolConfig {
        function_calling_config: FunctionCallingConfig { mode, allowed_function_names: names },
    };
    let choice = match field::<chat::ToolChoice>(request, "tool_choice")? {
        None => None,
        Some(chat::ToolChoice::Mode(mode)) => Some(match mode.as_str() {
            "auto" => config("AUTO", None),
            "none" => config("NONE", None),
            "required" => config("ANY", None),
            other => {
                return Err(Untranslatable::new(
                    format!("Unsupported 'tool_choice' {other:?} (expected auto, none, required or a function)."),
                    "tool_choice",
                ));
            }
        }),
        Some(chat::ToolChoice::Named { kind, function: Some(f) }) if kind == "function" => {
            Some(config("ANY", Some(vec![f.name])))
        }
        Some(chat::ToolChoice::Named { .. }) => {
            return Err(Untranslatable::new("Only a named function can be forced as 'tool_choice'.", "tool_choice"));
        }
    };
    Ok((Some(vec![Tool { function_declarations: declarations }]), choice))
}
