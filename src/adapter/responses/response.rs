//! A whole chat completion → a `response` object, and the envelope every response object the
//! bridge writes shares (whole, and in the stream's events): its id and creation time, passed
//! in; the client's model name; the request's settings echoed as the Responses API does, with
//! the API's defaults for those the client left out.

use serde::Serialize;
use serde_json::value::RawValue;

use super::tools::ToolNames;
use crate::api::chat::{ChatCompletion, ToolCall};
use crate::api::responses::{IncompleteDetails, OutputContent, OutputItem, ResponseError, ResponseUsage, SummaryText};
use crate::api::{RawObject, Usage};

/// The request's members echoed in every response object, with the API's default when absent.
const ECHOED: [(&str, &str); 13] = [
    ("instructions", "null"),
    ("tools", "[]"),
    ("tool_choice", "\"auto\""),
    ("parallel_tool_calls", "true"),
    ("temperature", "1"),
    ("top_p", "1"),
    ("max_output_tokens", "null"),
    ("text", r#"{"format":{"type":"text"}}"#),
    ("reasoning", r#"{"effort":null,"summary":null}"#),
    ("metadata", "{}"),
    ("previous_response_id", "null"),
    ("store", "true"),
    ("truncation", "\"disabled\""),
];

/// What a response object says besides its status, output and usage.
#[derive(Debug, Clone)]
pub struct Envelope {
    id: String,
    created_at: u64,
    model: String,
    /// `ECHOED`'s members, as the request's JSON text (or the default), in that order.
    echoed: Vec<Box<RawValue>>,
}

/// How a response ended, beyond its output.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub incomplete: Option<IncompleteDetails>,
    pub error: Option<ResponseError>,
    pub usage: Option<ResponseUsage>,
}

impl Outcome {
    /// The status a response with this outcome has once it is over.
    pub fn status(&self) -> &'static str {
        if self.error.is_some() {
            "failed"
        } else if self.incomplete.is_some() {
            "incomplete"
        } else {
            "completed"
        }
    }
}

impl Envelope {
    /// `id` (`resp_…`) and `created_at` are the caller's; `client_model` is the name the client
    /// asked for.
    pub fn new(request: &RawObject, id: String, created_at: u64, client_model: &str) -> Self {
        let echoed = ECHOED
            .iter()
            .map(|(key, default)| {
                let tools = (*key == "tools").then(|| request.get(key).and_then(echoed_tools)).flatten();
                let text = tools.as_deref().or(request.get(key)).unwrap_or(default);
                RawValue::from_string(text.to_owned())
                    .or_else(|_| RawValue::from_string((*default).to_owned()))
                    .unwrap_or_default()
            })
            .collect();
        Self { id, created_at, model: client_model.to_owned(), echoed }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The id of output item `index`: `prefix` (`msg`, `fc`, `rs`, `ctc`) and the response's.
    pub fn item_id(&self, prefix: &str, index: usize) -> String {
        let own = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{own}_{index}")
    }

    /// The response object with `status` (`in_progress` while streaming, else the outcome's).
    pub fn object(&self, status: &str, output: &[OutputItem], outcome: &Outcome) -> serde_json::Value {
        #[derive(Serialize)]
        struct Object<'a> {
            id: &'a str,
            object: &'static str,
            created_at: u64,
            status: &'a str,
            /// Left null: the bridge reads no clock.
            completed_at: Option<u64>,
            background: bool,
            error: &'a Option<ResponseError>,
            incomplete_details: &'a Option<IncompleteDetails>,
            model: &'a str,
            output: &'a [OutputItem],
            /// Left out until known: the schema does not allow null.
            #[serde(skip_serializing_if = "Option::is_none")]
            usage: Option<&'a ResponseUsage>,
        }
        let object = Object {
            id: &self.id,
            object: "response",
            created_at: self.created_at,
            status,
            completed_at: None,
            background: false,
            error: &outcome.error,
            incomplete_details: &outcome.incomplete,
            model: &self.model,
            output,
            usage: outcome.usage.as_ref(),
        };
        let mut value = serde_json::to_value(object).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            for ((key, _), raw) in ECHOED.iter().zip(&self.echoed) {
                map.insert((*key).to_owned(), serde_json::from_str(raw.get()).unwrap_or_default());
            }
        }
        value
    }
}

/// The request's tools as a response echoes them: a function tool always says `strict` and
/// `parameters` (null when the client left them out: the bridge enforces neither).
fn echoed_tools(text: &str) -> Option<String> {
    let mut tools: Vec<serde_json::Value> = serde_json::from_str(text).ok()?;
    for tool in &mut tools {
        if let Some(tool) = tool.as_object_mut().filter(|t| t.get("type").and_then(|t| t.as_str()) == Some("function"))
        {
            for key in ["strict", "parameters"] {
                tool.entry(key).or_insert(serde_json::Value::Null);
            }
        }
    }
    serde_json::to_string(&tools).ok()
}

/// chat `finish_reason` → the Responses incomplete reason (`None`: the response completed).
pub fn incomplete(finish_reason: Option<&str>) -> Option<IncompleteDetails> {
    match finish_reason? {
        "length" => Some(IncompleteDetails { reason: "max_output_tokens" }),
        "content_filter" => Some(IncompleteDetails { reason: "content_filter" }),
        _ => None,
    }
}

/// A tool call as its output item, as the client declared the tool: a `custom_tool_call` (its
/// `input` unwrapped from the arguments the model wrote) or a `function_call`, with its
/// namespace when it had one.
pub fn call_item(
    call: ToolCall,
    id_of: impl Fn(&str) -> String,
    tools: &ToolNames,
    status: &'static str,
) -> OutputItem {
    let origin = tools.origin(&call.function.name);
    let (namespace, name) = (origin.namespace.map(str::to_owned), origin.name.to_owned());
    if origin.custom {
        let input = custom_input(&call.function.arguments);
        return OutputItem::CustomToolCall { id: id_of("ctc"), call_id: call.id, namespace, name, input, status };
    }
    let arguments = call.function.arguments;
    OutputItem::FunctionCall { id: id_of("fc"), call_id: call.id, namespace, name, arguments, status }
}

/// A custom tool's input from the function arguments it was asked for as (`{"input": "…"}`);
/// what the model wrote, when it wrote something else.
fn custom_input(arguments: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Arguments {
        input: String,
    }
    serde_json::from_str::<Arguments>(arguments).map_or_else(|_| arguments.to_owned(), |a| a.input)
}

/// Translates a whole chat completion; the usage for the observers too.
pub fn to_response(
    body: &[u8],
    envelope: &Envelope,
    tools: &ToolNames,
) -> serde_json::Result<(Vec<u8>, Option<Usage>)> {
    let completion: ChatCompletion = serde_json::from_slice(body)?;
    let choice = completion.choices.into_iter().next().unwrap_or_default();
    let message = choice.message;
    let outcome = Outcome {
        incomplete: incomplete(choice.finish_reason.as_deref()),
        error: None,
        usage: completion.usage.as_ref().map(ResponseUsage::from),
    };
    let status = if outcome.incomplete.is_some() { "incomplete" } else { "completed" };
    let mut output = Vec::new();
    if let Some(reasoning) = message.reasoning_content.or(message.reasoning).filter(|r| !r.is_empty()) {
        let id = envelope.item_id("rs", output.len());
        output.push(OutputItem::Reasoning { id, summary: vec![SummaryText::new(reasoning)], status: "completed" });
    }
    let text = message.content.map(|c| c.text()).unwrap_or_default();
    let calls = message.tool_calls.unwrap_or_default();
    let mut content = Vec::new();
    if !text.is_empty() || (calls.is_empty() && message.refusal.is_none()) {
        content.push(OutputContent::text(text));
    }
    if let Some(refusal) = message.refusal {
        content.push(OutputContent::Refusal { refusal });
    }
    if !content.is_empty() {
        output.push(OutputItem::message(envelope.item_id("msg", output.len()), status, content));
    }
    for (i, mut call) in calls.into_iter().enumerate() {
        if call.id.is_empty() {
            call.id = format!("call_{}", envelope.item_id("gw", i));
        }
        let index = output.len();
        output.push(call_item(call, |prefix| envelope.item_id(prefix, index), tools, "completed"));
    }
    let object = envelope.object(outcome.status(), &output, &outcome);
    Ok((serde_json::to_vec(&object)?, completion.usage))
}
