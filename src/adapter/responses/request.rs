//! Responses request → chat completions request, for an upstream that only speaks chat.
//! `instructions` lead as a system message; message items become messages (developer as
//! system, the widest-understood role); `function_call` items join the assistant message before
//! them as `tool_calls` and `function_call_output` items become tool messages, linked by
//! `call_id`; reasoning items are dropped (no chat upstream reads them back). Tools go through
//! `tools`, which remembers what the answer's calls were to the client. What chat cannot
//! express is named in an `Untranslatable`.

use serde::Serialize;
use serde_json::value::RawValue;

use super::messages::Messages;
use super::tools::{FunctionTool, ToolNames, function_tools};
use crate::adapter::Untranslatable;
use crate::api::RawObject;
use crate::api::chat::{self, NamedFunction};
use crate::api::responses::{Input, ReasoningConfig, TextConfig, Tool, ToolChoice};

/// The chat request, and what the answer's translation needs to know about it.
#[derive(Debug)]
pub struct ChatRequest {
    pub body: Vec<u8>,
    pub tools: ToolNames,
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

/// Translates a Responses request for a chat-completions deployment of `upstream_model`.
/// `ask_usage` adds `stream_options.include_usage` to a stream (the bridge needs the usage for
/// `response.completed`; only an upstream that rejects the option should go without).
/// `metadata` is not forwarded: chat accepts it only with `store`, which the bridge never sets.
///
/// State kept elsewhere (`previous_response_id`, `conversation`, a stored `prompt`) is named in
/// the error rather than dropped with the history it stands for: whoever holds the stored
/// items resolves them into `input` and removes the member before calling this (and echoes
/// the client's original request through `Envelope`).
pub fn to_chat(request: &RawObject, upstream_model: &str, ask_usage: bool) -> Result<ChatRequest, Untranslatable> {
    if request.parse::<bool>("background").map_err(|e| invalid("background", e))? == Some(true) {
        return Err(Untranslatable::new(
            "Background responses are not supported for this model (its upstream has no Responses API).",
            "background",
        ));
    }
    for stored in ["previous_response_id", "conversation", "prompt"] {
        if request.parse::<serde::de::IgnoredAny>(stored).map_err(|e| invalid(stored, e))?.is_some() {
            return Err(Untranslatable::new(
                format!(
                    "'{stored}' refers to state stored by the Responses API, which is not available for this model; send the whole conversation as input."
                ),
                stored,
            ));
        }
    }
    let stream = request.parse::<bool>("stream").map_err(|e| invalid("stream", e))?;
    let tools = request.parse::<Vec<Tool>>("tools").map_err(|e| invalid("tools", e))?.unwrap_or_default();
    let (tools, tool_names) = function_tools(tools)?;

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
    Ok(ChatRequest { body, tools: tool_names })
}

fn invalid(field: &str, e: serde_json::Error) -> Untranslatable {
    Untranslatable::new(format!("Invalid '{field}': {e}"), field)
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
