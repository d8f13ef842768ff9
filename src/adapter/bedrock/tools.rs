//! OpenAI `tools` and `tool_choice` → Converse `toolConfig`, with the tool names Bedrock
//! accepts and the stub tool a history of tool calls needs (rules in `adapter::bedrock`).

use serde_json::value::RawValue;

use super::ToolNames;
use crate::adapter::Untranslatable;
use crate::adapter::gemini::request::field;
use crate::api::RawObject;
use crate::api::chat;
use crate::api::converse::{InputSchema, Tool, ToolChoice, ToolConfig, ToolSpec};

/// Stands in for the tools when Converse needs a `toolConfig` the client did not give.
const STUB_TOOL: &str = "gateway_no_tool";

/// The `toolConfig` for `request`; `history_has_tools` when earlier turns hold tool calls or
/// results (Converse then requires one).
pub fn tool_config(
    request: &RawObject,
    history_has_tools: bool,
    names: &mut ToolNames,
) -> Result<Option<ToolConfig>, Untranslatable> {
    let declared: Vec<chat::Tool> = field(request, "tools")?.unwrap_or_default();
    let mut tools = Vec::with_capacity(declared.len());
    for (i, tool) in declared.into_iter().enumerate() {
        let function = match (tool.kind.as_str(), tool.function) {
            ("function", Some(f)) => f,
            _ => {
                return Err(Untranslatable::new(
                    "Only function tools can be used with a Bedrock model.",
                    format!("tools[{i}]"),
                ));
            }
        };
        let json = match function.parameters {
            Some(p) => p,
            None => empty_schema()?,
        };
        let spec = ToolSpec {
            name: names.sanitise(&function.name),
            description: function.description,
            input_schema: InputSchema { json },
        };
        tools.push(Tool { tool_spec: spec });
    }
    let choice = match field::<chat::ToolChoice>(request, "tool_choice")? {
        None => None,
        Some(chat::ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => Some(ToolChoice::Auto {}),
            "required" => Some(ToolChoice::Any {}),
            "none" => {
                tools.clear();
                None
            }
            other => {
                return Err(Untranslatable::new(
                    format!("Unsupported 'tool_choice' {other:?} (expected auto, none, required or a function)."),
                    "tool_choice",
                ));
            }
        },
        Some(chat::ToolChoice::Named { kind, function: Some(f) }) if kind == "function" => {
            Some(ToolChoice::Tool { name: names.sanitise(&f.name) })
        }
        Some(chat::ToolChoice::Named { .. }) => {
            return Err(Untranslatable::new("Only a named function can be forced as 'tool_choice'.", "tool_choice"));
        }
    };
    if tools.is_empty() {
        if !history_has_tools {
            return Ok(None);
        }
        let spec = ToolSpec {
            name: STUB_TOOL.into(),
            description: Some("Unavailable. Never call this tool.".into()),
            input_schema: InputSchema { json: empty_schema()? },
        };
        return Ok(Some(ToolConfig { tools: vec![Tool { tool_spec: spec }], tool_choice: None }));
    }
    Ok(Some(ToolConfig { tools, tool_choice: choice }))
}

fn empty_schema() -> Result<Box<RawValue>, Untranslatable> {
    RawValue::from_string(r#"{"type":"object","properties":{}}"#.into())
        .map_err(|e| Untranslatable::new(format!("Could not build the request: {e}"), "tools"))
}
