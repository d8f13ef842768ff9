//! Responses request → chat completions request, for an upstream that only speaks chat.
//! `instructions` lead as a system message; message items become messages (developer as
//! system, the widest-understood role); `function_call` items join the assistant message before
//! them as `tool_calls` and `function_call_output` items become tool messages, linked by
//! `call_id`; reasoning items are dropped (no chat upstream reads them back). Function tools are
//! un-flattened; custom (free-form) tools become function tools taking one string, `input`, and
//! their names are kept so the answer's calls to them can be turned back into
//! `custom_tool_call`s. What chat cannot express is named in an `Untranslatable`.

use serde::Serialize;
use serde_json::value::RawValue;

use super::messages::Messages;
use crate::adapter::Untranslatable;
use crate::api::RawObject;
use crate::api::chat::{self, NamedFunction};
use crate::api::responses::{Input, ReasoningConfig, TextConfig, Tool, ToolChoice};

/// The chat request, and what the answer's translation needs to know about it.
#[derive(Debug)]
pub struct ChatRequest {
    pub body: Vec<u8>,
    pub custom_tools: CustomTools,
}

/// The names of the client's custom tools: calls to them answer as `custom_tool_call`s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CustomTools(Vec<String>);

impl CustomTools {
    pub fn new(names: Vec<String>) -> Self {
        Self(names)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n == name)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<chat::ChatMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<FunctionTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<chat::ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Chat's `{"type":"function","function":{name, description, parameters, strict}}`.
#[derive(Serialize)]
struct FunctionTool {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDef,
}

#[derive(Serialize)]
struct FunctionDef {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// Translates a Responses request for a chat-completions deployment of `upstream_model`.
/// `ask_usage` adds `stream_options.include_usage` to a stream (the bridge needs the usage for
/// `response.completed`; only an upstream that rejects the option should go without).
/// `metadata` is not forwarded: chat accepts it only with `store`, which the bridge never sets.
pub fn to_chat(request: &RawObject, upstream_model: &str, ask_usage: bool) -> Result<ChatRequest, Untranslatable> {
    if request.parse::<bool>("background").map_err(|e| invalid("background", e))? == Some(true) {
        return Err(Untranslatable::new(
            "Background responses are not supported for this model (its upstream has no Responses API).",
            "background",
        ));
    }
    let stream = request.parse::<bool>("stream").map_err(|e| invalid("stream", e))?;
    let tools = request.parse::<Vec<Tool>>("tools").map_err(|e| invalid("tools", e))?.unwrap_or_default();
    let (tools, custom_tools) = function_tools(tools)?;

    let mut messages = Messages::default();
    if let Some(instructions) = request.parse::<String>("instructions").map_err(|e| invalid("instructions", e))?
        && !instructions.is_empty()
    {
        messages.system(instructions);
    }
    match request.parse::<Input>("input").map_err(|e| invalid("input", e))? {
        None => {}
        Some(Input::Text(text)) => messages.user_text(text),
        Some(Input::Items(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                messages.item(item, i)?;
            }
        }
    }

    let tool_choice = match request.parse::<ToolChoice>("tool_choice").map_err(|e| invalid("tool_choice", e))? {
        None => None,
        Some(choice) => Some(tool_choice(choice)?),
    };
    let format = request.parse::<TextConfig>("text").map_err(|e| invalid("text", e))?.and_then(|t| t.format);
    let response_format = match format {
        None => None,
        Some(format) => response_format(format)?,
    };
    let reasoning = request.parse::<ReasoningConfig>("reasoning").map_err(|e| invalid("reasoning", e))?;
    let raw = |key: &str| -> Result<Option<&RawValue>, Untranslatable> {
        match request.get(key) {
            None | Some("null") => Ok(None),
            Some(text) => serde_json::from_str(text).map(Some).map_err(|e| invalid(key, e)),
        }
    };
    let streaming = stream == Some(true);
    let body = Body {
        model: upstream_model,
        messages: messages.finish(),
        max_completion_tokens: request
            .parse::<u64>("max_output_tokens")
            .map_err(|e| invalid("max_output_tokens", e))?,
        temperature: raw("temperature")?,
        top_p: raw("top_p")?,
        stream,
        stream_options: (streaming && ask_usage).then_some(StreamOptions { include_usage: true }),
        tools,
        tool_choice,
        parallel_tool_calls: request
            .parse::<bool>("parallel_tool_calls")
            .map_err(|e| invalid("parallel_tool_calls", e))?,
        response_format,
        // `none` is every chat model's default, and older servers reject the word.
        reasoning_effort: reasoning.and_then(|r| r.effort).filter(|e| e != "none"),
        user: raw("user")?,
    };
    let body = serde_json::to_vec(&body).map_err(|e| invalid("input", e))?;
    Ok(ChatRequest { body, custom_tools })
}

fn invalid(field: &str, e: serde_json::Error) -> Untranslatable {
    Untranslatable::new(format!("Invalid '{field}': {e}"), field)
}

/// The parameters a custom tool takes once it is a function: its free-form text as `input`.
fn custom_parameters(tool: &Tool) -> Box<RawValue> {
    let mut description = String::from("The tool's input, as free-form text.");
    if let Some(format) = &tool.format
        && format.kind == "grammar"
        && let Some(definition) = &format.definition
    {
        let syntax = format.syntax.as_deref().unwrap_or("lark");
        description = format!("The tool's input, as text that follows this {syntax} grammar:\n{definition}");
    }
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"input": {"type": "string", "description": description}},
        "required": ["input"],
        "additionalProperties": false,
    });
    serde_json::value::to_raw_value(&schema).unwrap_or_else(|_| Box::<RawValue>::default())
}

/// Function and custom tools as chat function tools; any other (hosted) tool is named.
fn function_tools(tools: Vec<Tool>) -> Result<(Vec<FunctionTool>, CustomTools), Untranslatable> {
    let mut out = Vec::with_capacity(tools.len());
    let mut custom = Vec::new();
    for (i, tool) in tools.into_iter().enumerate() {
        let Some(name) = tool.name.clone().filter(|_| matches!(tool.kind.as_str(), "function" | "custom")) else {
            let message = match tool.kind.as_str() {
                "function" | "custom" => format!("A {} tool needs a name.", tool.kind),
                kind => format!(
                    "The '{kind}' tool is not available for this model (its upstream has no Responses API); only function and custom tools are."
                ),
            };
            let field = if matches!(tool.kind.as_str(), "function" | "custom") { "name" } else { "type" };
            return Err(Untranslatable::new(message, format!("tools[{i}].{field}")));
        };
        let function = if tool.kind == "custom" {
            custom.push(name.clone());
            let parameters = Some(custom_parameters(&tool));
            FunctionDef { name, description: tool.description, parameters, strict: None }
        } else {
            FunctionDef { name, description: tool.description, parameters: tool.parameters, strict: tool.strict }
        };
        out.push(FunctionTool { kind: "function", function });
    }
    Ok((out, CustomTools::new(custom)))
}

fn tool_choice(choice: ToolChoice) -> Result<chat::ToolChoice, Untranslatable> {
    match choice {
        ToolChoice::Mode(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => {
            Ok(chat::ToolChoice::Mode(mode))
        }
        ToolChoice::Named { kind, name: Some(name) } if kind == "function" || kind == "custom" => {
            Ok(chat::ToolChoice::Named { kind: "function".into(), function: Some(NamedFunction { name }) })
        }
        ToolChoice::Mode(mode) => Err(Untranslatable::new(format!("Unknown tool_choice '{mode}'."), "tool_choice")),
        ToolChoice::Named { kind, .. } => Err(Untranslatable::new(
            format!(
                "tool_choice of type '{kind}' is not available for this model (its upstream has no Responses API)."
            ),
            "tool_choice.type",
        )),
    }
}

fn response_format(format: crate::api::responses::TextFormat) -> Result<Option<serde_json::Value>, Untranslatable> {
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(serde_json::json!({"type": "json_object"}))),
        "json_schema" => {
            let (Some(name), Some(schema)) = (format.name, format.schema) else {
                return Err(Untranslatable::new(
                    "text.format of type json_schema needs a name and a schema.",
                    "text.format",
                ));
            };
            let mut json_schema = serde_json::json!({"name": name, "schema": schema});
            if let Some(strict) = format.strict {
                json_schema["strict"] = strict.into();
            }
            if let Some(description) = format.description {
                json_schema["description"] = description.into();
            }
            Ok(Some(serde_json::json!({"type": "json_schema", "json_schema": json_schema})))
        }
        kind => Err(Untranslatable::new(format!("Unknown text.format type '{kind}'."), "text.format.type")),
    }
}
