//! The client's tools as chat function tools, and the way back. Function tools are
//! un-flattened; custom (free-form) tools become functions taking one string, `input`; the
//! tools of a namespace become functions named `<namespace>__<name>` (chat has no namespaces).
//! `ToolNames` remembers which chat names were custom or namespaced, so that the model's calls
//! answer as the client declared them.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::adapter::Untranslatable;
use crate::api::responses::Tool;

/// Between a namespace and its tool's name in a chat function name.
const NAMESPACE_SEPARATOR: &str = "__";

/// The client's name for each chat function that is not simply a function of that name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ToolNames(Vec<Renamed>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Renamed {
    chat: String,
    namespace: Option<String>,
    name: String,
    custom: bool,
}

/// What a chat function call is to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub custom: bool,
}

impl ToolNames {
    /// The client's view of a call to chat function `chat_name`.
    pub fn origin<'a>(&'a self, chat_name: &'a str) -> Origin<'a> {
        match self.0.iter().find(|r| r.chat == chat_name) {
            Some(r) => Origin { namespace: r.namespace.as_deref(), name: &r.name, custom: r.custom },
            None => Origin { namespace: None, name: chat_name, custom: false },
        }
    }

    pub fn is_custom(&self, chat_name: &str) -> bool {
        self.origin(chat_name).custom
    }
}

/// The chat function name of tool `name` in `namespace`.
pub fn chat_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}{NAMESPACE_SEPARATOR}{name}"),
        None => name.to_owned(),
    }
}

/// Chat's `{"type":"function","function":{name, description, parameters, strict}}`.
#[derive(Debug, Serialize)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDef,
}

#[derive(Debug, Serialize)]
struct FunctionDef {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// Function, custom and namespace tools as chat function tools; any other (hosted) tool is
/// named in the error.
pub fn function_tools(tools: Vec<Tool>) -> Result<(Vec<FunctionTool>, ToolNames), Untranslatable> {
    let mut out = Vec::with_capacity(tools.len());
    let mut names = ToolNames::default();
    for (i, tool) in tools.into_iter().enumerate() {
        if tool.kind == "namespace" {
            let Some(namespace) = tool.name.filter(|n| !n.is_empty()) else {
                return Err(Untranslatable::new("A namespace tool needs a name.", format!("tools[{i}].name")));
            };
            for (j, inner) in tool.tools.unwrap_or_default().into_iter().enumerate() {
                out.push(function_tool(inner, Some(&namespace), &format!("tools[{i}].tools[{j}]"), &mut names)?);
            }
        } else {
            out.push(function_tool(tool, None, &format!("tools[{i}]"), &mut names)?);
        }
    }
    Ok((out, names))
}

fn function_tool(
    tool: Tool,
    namespace: Option<&str>,
    at: &str,
    names: &mut ToolNames,
) -> Result<FunctionTool, Untranslatable> {
    let custom = match tool.kind.as_str() {
        "function" => false,
        "custom" => true,
        kind => {
            return Err(Untranslatable::new(
                format!(
                    "The '{kind}' tool is not available for this model (its upstream has no Responses API); only function, custom and namespace tools are."
                ),
                format!("{at}.type"),
            ));
        }
    };
    let Some(name) = tool.name.clone().filter(|n| !n.is_empty()) else {
        return Err(Untranslatable::new(format!("A {} tool needs a name.", tool.kind), format!("{at}.name")));
    };
    let chat = chat_name(namespace, &name);
    if custom || namespace.is_some() {
        names.0.push(Renamed { chat: chat.clone(), namespace: namespace.map(str::to_owned), name, custom });
    }
    let function = if custom {
        let parameters = Some(custom_parameters(&tool));
        FunctionDef { name: chat, description: tool.description, parameters, strict: None }
    } else {
        FunctionDef { name: chat, description: tool.description, parameters: tool.parameters, strict: tool.strict }
    };
    Ok(FunctionTool { kind: "function", function })
}

/// The parameters a custom tool takes once it is a function: its free-form text as `input`
/// (with the grammar it must follow, when it has one, for the model to read).
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
    serde_json::value::to_raw_value(&schema).unwrap_or_default()
}
