//! Parsing client requests: the fields the gateway acts on are checked and typed, with an
//! OpenAI-style 400 naming the field when they are wrong; everything else stays verbatim.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::api::{RawObject, tokens};
use crate::ctx::Endpoint;
use crate::error::GatewayError;

#[derive(Debug)]
pub struct ParsedRequest {
    pub body: RawObject,
    pub model: String,
    pub stream: bool,
    pub client_wants_usage: bool,
    /// A local estimate of the prompt's tokens (for context-window routing).
    pub prompt_tokens_estimate: u64,
    /// The completion budget the client asked for (`max_completion_tokens` or `max_tokens`).
    pub max_tokens: Option<u64>,
    /// Completions generated per request (`n`, or `best_of` when larger): each spends the
    /// completion budget.
    pub choices: u64,
    /// A Responses request's `previous_response_id`, resolved in the gateway's store: the body
    /// with the stored history before its input and where the chain was made, or unknown.
    pub previous: Option<crate::responses_store::Previous>,
}

/// The longest model name accepted: room for Bedrock ARNs and Hugging Face repository paths,
/// and a bound on what a client can put into logs, metering events and traces.
pub const MAX_MODEL_BYTES: usize = 256;

pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<ParsedRequest, GatewayError> {
    let body = RawObject::from_slice(bytes).map_err(|e| {
        let what = if e.is_data() { "must be a JSON object" } else { "is not valid JSON" };
        GatewayError::bad_request(format!("The request body {what}: {e}"), None)
    })?;
    let model = model_of(&body)?;
    let stream: bool = optional(&body, "stream", "a boolean")?.unwrap_or(false);
    let (prompt_tokens_estimate, mut max_tokens) = check_endpoint_fields(endpoint, &body)?;
    let mut client_wants_usage = false;
    let mut choices = 1;
    if matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        let legacy_max = optional::<u64>(&body, "max_tokens", "a non-negative integer")?;
        max_tokens = max_tokens.or(legacy_max);
        choices = choices_of(&body)?;
        client_wants_usage = wants_usage(&body, stream)?;
    }
    Ok(ParsedRequest {
        body,
        model,
        stream,
        client_wants_usage,
        prompt_tokens_estimate,
        max_tokens,
        choices,
        previous: None,
    })
}

/// `model`: a non-empty string of at most [`MAX_MODEL_BYTES`].
fn model_of(body: &RawObject) -> Result<String, GatewayError> {
    let model: String = required(body, "model", "a string")?;
    if model.is_empty() {
        return Err(GatewayError::bad_request("'model' must not be empty.", Some("model")));
    }
    if model.len() > MAX_MODEL_BYTES {
        return Err(GatewayError::bad_request(
            format!("'model' is {} bytes long; model names are at most {MAX_MODEL_BYTES}.", model.len()),
            Some("model"),
        ));
    }
    Ok(model)
}

/// The endpoint's own fields that the gateway reads: checked, and the prompt's token estimate
/// with the output cap the body names (`max_completion_tokens`, `max_tokens`, `max_output_tokens`).
fn check_endpoint_fields(endpoint: Endpoint, body: &RawObject) -> Result<(u64, Option<u64>), GatewayError> {
    match endpoint {
        Endpoint::ChatCompletions => {
            let estimate = check_chat_messages(body)?;
            optional::<Vec<IgnoredAny>>(body, "tools", "an array")?;
            let max_tokens = optional::<u64>(body, "max_completion_tokens", "a non-negative integer")?;
            check_stop(body)?;
            Ok((estimate, max_tokens))
        }
        Endpoint::Completions => {
            let prompt: Value = required(body, "prompt", "a string or an array")?;
            if !(prompt.is_string() || prompt.is_array()) {
                return Err(type_error("prompt", "a string or an array", &prompt));
            }
            check_stop(body)?;
            Ok((tokens::estimate_content(&prompt), None))
        }
        Endpoint::Embeddings => {
            let input: Value = required(body, "input", "a string or an array")?;
            if !(input.is_string() || input.is_array()) {
                return Err(type_error("input", "a string or an array", &input));
            }
            if input.as_array().is_some_and(Vec::is_empty) {
                return Err(GatewayError::bad_request("'input' must not be empty.", Some("input")));
            }
            optional::<u64>(body, "dimensions", "a positive integer")?;
            Ok((tokens::estimate_content(&input), None))
        }
        Endpoint::Messages => check_messages_fields(body),
        Endpoint::Responses => {
            let estimate = estimate_responses_request(body)?;
            Ok((estimate, optional::<u64>(body, "max_output_tokens", "a non-negative integer")?))
        }
    }
}

/// A Messages body: roles, content blocks and every other field are Claude's to judge on a
/// Claude deployment (Claude Code sends system turns and new block types), and the
/// translator's on any other: only what the gateway itself reads is checked here.
fn check_messages_fields(body: &RawObject) -> Result<(u64, Option<u64>), GatewayError> {
    let messages = messages_of(body)?;
    for (i, message) in messages.iter().enumerate() {
        if !message.is_object() {
            return Err(type_error(&format!("messages[{i}]"), "an object", message));
        }
    }
    let max_tokens = required::<u64>(body, "max_tokens", "a non-negative integer")?;
    let system = optional::<Value>(body, "system", "a string or an array")?;
    if let Some(system) = &system
        && !(system.is_string() || system.is_array())
    {
        return Err(type_error("system", "a string or an array", system));
    }
    Ok((estimate_messages_request(body, &messages, system.as_ref()), Some(max_tokens)))
}

/// How many answers the upstream writes: `n`, or `best_of` when larger (each is generated).
fn choices_of(body: &RawObject) -> Result<u64, GatewayError> {
    let mut choices = 1;
    if let Some(n) = optional::<u64>(body, "n", "a positive integer")? {
        if n == 0 {
            return Err(GatewayError::bad_request("'n' must be at least 1.", Some("n")));
        }
        choices = n;
    }
    if let Some(best_of) = optional::<u64>(body, "best_of", "a positive integer")? {
        choices = choices.max(best_of);
    }
    Ok(choices)
}

/// `stream_options.include_usage`, allowed only on a stream.
fn wants_usage(body: &RawObject, stream: bool) -> Result<bool, GatewayError> {
    let Some(options) = optional::<serde_json::Map<String, Value>>(body, "stream_options", "an object")? else {
        return Ok(false);
    };
    let wants = match options.get("include_usage") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(type_error("stream_options.include_usage", "a boolean", other)),
    };
    if !stream {
        return Err(GatewayError::bad_request(
            "'stream_options' is only allowed when 'stream' is true.",
            Some("stream_options"),
        ));
    }
    Ok(wants)
}

/// A chat message, as far as the gateway reads it: its role is the upstream's (or the
/// translator's) to judge, so that a role added by OpenAI tomorrow passes through.
#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// Checks a chat `messages` array (objects with string/array/null content) and
/// estimates its prompt tokens. It runs on every chat request: the messages are read in one
/// pass as borrowed views of the body, and a tree is built only for array content or to
/// describe a wrong type.
fn check_chat_messages(body: &RawObject) -> Result<u64, GatewayError> {
    let Some(raw) = body.get("messages").filter(|raw| *raw != "null") else {
        return Err(GatewayError::bad_request("Missing required parameter: 'messages'.", Some("messages")));
    };
    let views: Vec<MessageView> = serde_json::from_str(raw).map_err(|_| shape_error(raw))?;
    if views.is_empty() {
        return Err(GatewayError::bad_request("'messages' must contain at least one message.", Some("messages")));
    }
    let mut estimate = 0;
    for (i, view) in views.iter().enumerate() {
        estimate += tokens::PER_MESSAGE_OVERHEAD;
        let Some(content) = view.content else { continue };
        estimate += content_estimate(content).ok_or_else(|| {
            type_error(&format!("messages[{i}].content"), "a string or an array", &value_of(content.get()))
        })?;
    }
    Ok(estimate)
}

/// Why `messages` could not be read as message objects, naming the field: it is not an array,
/// or one of its elements is not an object (or not a valid one).
fn shape_error(raw: &str) -> GatewayError {
    let Ok(messages) = serde_json::from_str::<Vec<&RawValue>>(raw) else {
        return type_error("messages", "an array", &value_of(raw));
    };
    for (i, message) in messages.iter().enumerate() {
        if !message.get().starts_with('{') {
            return type_error(&format!("messages[{i}]"), "an object", &value_of(message.get()));
        }
        if let Err(e) = serde_json::from_str::<MessageView>(message.get()) {
            return GatewayError::bad_request(
                format!("Invalid value for 'messages[{i}]': {e}"),
                Some(&format!("messages[{i}]")),
            );
        }
    }
    GatewayError::bad_request("'messages' could not be read.", Some("messages"))
}

/// A message content's estimate: a string or an array of parts (`None`: neither).
fn content_estimate(content: &RawValue) -> Option<u64> {
    match content.get().as_bytes().first() {
        Some(b'"') => Some(serde_json::from_str::<Cow<str>>(content.get()).map(|s| tokens::estimate(&s)).unwrap_or(0)),
        Some(b'[') => Some(tokens::estimate_content(&value_of(content.get()))),
        _ => None,
    }
}

fn value_of(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or(Value::Null)
}

fn messages_of(body: &RawObject) -> Result<Vec<Value>, GatewayError> {
    let messages: Vec<Value> = required(body, "messages", "an array")?;
    if messages.is_empty() {
        return Err(GatewayError::bad_request("'messages' must contain at least one message.", Some("messages")));
    }
    Ok(messages)
}

/// A local estimate of a Messages request's input tokens: system, messages (tool inputs and
/// results included) and tool definitions, about four characters a token.
fn estimate_messages_request(body: &RawObject, messages: &[Value], system: Option<&Value>) -> u64 {
    let blocks: u64 = messages
        .iter()
        .map(|m| {
            tokens::PER_MESSAGE_OVERHEAD
                + match m.get("content") {
                    Some(Value::Array(blocks)) => blocks.iter().map(estimate_block).sum(),
                    Some(other) => tokens::estimate_content(other),
                    None => 0,
                }
        })
        .sum();
    let system = system.map(tokens::estimate_content).unwrap_or(0);
    let tools = body.get("tools").map(tokens::estimate).unwrap_or(0);
    blocks + system + tools
}

fn estimate_block(block: &Value) -> u64 {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => block.get("text").and_then(Value::as_str).map(tokens::estimate).unwrap_or(0),
        Some("image") => tokens::IMAGE_PART,
        Some("tool_use") => block.get("input").map(|i| tokens::estimate(&i.to_string())).unwrap_or(0),
        Some("tool_result") => match block.get("content") {
            Some(Value::Array(inner)) => inner.iter().map(estimate_block).sum(),
            Some(other) => tokens::estimate_content(other),
            None => 0,
        },
        _ => tokens::estimate(&block.to_string()),
    }
}

/// A Responses request's `input` (a string or an array of items) checked, and a local estimate
/// of its tokens with the instructions and tools.
pub fn estimate_responses_request(body: &RawObject) -> Result<u64, GatewayError> {
    let input = optional::<Value>(body, "input", "a string or an array")?;
    let input = match &input {
        None => 0,
        Some(Value::String(text)) => tokens::PER_MESSAGE_OVERHEAD + tokens::estimate(text),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                tokens::PER_MESSAGE_OVERHEAD
                    + match item.get("content").or_else(|| item.get("output")) {
                        Some(content @ (Value::String(_) | Value::Array(_))) => tokens::estimate_content(content),
                        _ => tokens::estimate(&item.to_string()),
                    }
            })
            .sum(),
        Some(other) => return Err(type_error("input", "a string or an array", other)),
    };
    let instructions = optional::<String>(body, "instructions", "a string")?.map(|i| tokens::estimate(&i)).unwrap_or(0);
    let tools = body.get("tools").map(tokens::estimate).unwrap_or(0);
    Ok(input + instructions + tools)
}

/// `POST /v1/messages/count_tokens`: the model and a local estimate of the input tokens.
pub fn count_tokens(bytes: &[u8]) -> Result<(String, u64), GatewayError> {
    let body = RawObject::from_slice(bytes).map_err(|e| {
        let what = if e.is_data() { "must be a JSON object" } else { "is not valid JSON" };
        GatewayError::bad_request(format!("The request body {what}: {e}"), None)
    })?;
    let model: String = required(&body, "model", "a string")?;
    let messages = messages_of(&body)?;
    let system = optional::<Value>(&body, "system", "a string or an array")?;
    Ok((model, estimate_messages_request(&body, &messages, system.as_ref())))
}

fn required<T: DeserializeOwned>(body: &RawObject, field: &str, expected: &str) -> Result<T, GatewayError> {
    optional(body, field, expected)?
        .ok_or_else(|| GatewayError::bad_request(format!("Missing required parameter: '{field}'."), Some(field)))
}

fn optional<T: DeserializeOwned>(body: &RawObject, field: &str, expected: &str) -> Result<Option<T>, GatewayError> {
    let Some(raw) = body.get(field) else {
        return Ok(None);
    };
    if raw == "null" {
        return Ok(None);
    }
    serde_json::from_str(raw).map(Some).map_err(|_| {
        let value: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        type_error(field, expected, &value)
    })
}

fn check_stop(body: &RawObject) -> Result<(), GatewayError> {
    match optional::<Value>(body, "stop", "a string or an array of strings")? {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
        Some(other) => Err(type_error("stop", "a string or an array of strings", &other)),
    }
}

fn type_error(field: &str, expected: &str, got: &Value) -> GatewayError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    GatewayError::bad_request(
        format!("Invalid type for '{field}': expected {expected}, but got {got} instead."),
        Some(field),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(endpoint: Endpoint, body: &str) -> Option<String> {
        match parse(endpoint, body.as_bytes()) {
            Err(GatewayError::BadRequest { param, .. }) => param,
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn names_the_offending_field() {
        use Endpoint::*;
        assert_eq!(param_of(ChatCompletions, r#"{"messages":[]}"#).as_deref(), Some("model"));
        assert_eq!(param_of(ChatCompletions, r#"{"model":1,"messages":[]}"#).as_deref(), Some("model"));
        assert_eq!(param_of(ChatCompletions, r#"{"model":"m","messages":"hi"}"#).as_deref(), Some("messages"));
        assert_eq!(
            param_of(ChatCompletions, r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#)
                .as_deref(),
            Some("stream")
        );
        assert_eq!(
            param_of(
                ChatCompletions,
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#
            )
            .as_deref(),
            Some("stream_options")
        );
        assert_eq!(param_of(Embeddings, r#"{"model":"m","input":5}"#).as_deref(), Some("input"));
        assert_eq!(param_of(Completions, r#"{"model":"m"}"#).as_deref(), Some("prompt"));
        let long = "m".repeat(MAX_MODEL_BYTES + 1);
        assert_eq!(
            param_of(ChatCompletions, &format!(r#"{{"model":"{long}","messages":[]}}"#)).as_deref(),
            Some("model")
        );
        assert_eq!(param_of(ChatCompletions, r#"{"model":"m""#), None);
        let user = r#"[{"role":"user","content":"hi"}]"#;
        assert_eq!(param_of(Messages, &format!(r#"{{"model":"m","messages":{user}}}"#)).as_deref(), Some("max_tokens"));
        assert_eq!(
            param_of(Messages, r#"{"model":"m","max_tokens":5,"messages":[7]}"#).as_deref(),
            Some("messages[0]")
        );
        assert_eq!(
            param_of(Messages, &format!(r#"{{"model":"m","max_tokens":5,"messages":{user},"system":7}}"#)).as_deref(),
            Some("system")
        );
    }

    #[test]
    fn reads_a_messages_request_and_estimates_its_tokens() {
        let req = parse(
            Endpoint::Messages,
            br#"{"model":"claude","max_tokens":300,"stream":true,"system":"12345678","messages":[{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image","source":{"type":"url","url":"x"}}]}]}"#,
        )
        .unwrap();
        assert!(req.stream);
        assert_eq!(req.max_tokens, Some(300));
        assert_eq!(req.prompt_tokens_estimate, 2 + tokens::PER_MESSAGE_OVERHEAD + 1 + tokens::IMAGE_PART);
        let (model, n) =
            count_tokens(br#"{"model":"claude","messages":[{"role":"user","content":"abcdefgh"}]}"#).unwrap();
        assert_eq!((model.as_str(), n), ("claude", tokens::PER_MESSAGE_OVERHEAD + 2));
    }

    #[test]
    fn chat_estimates_match_the_tree_based_estimate() {
        for messages in [
            r#"[{"role":"user","content":"hello there"}]"#,
            r#"[{"role":"system","content":"Be brief.\u00e9\n"},{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":null,"tool_calls":[]}]"#,
            r#"[{"role":"tool","content":"42","tool_call_id":"c1","name":"f"}]"#,
            r#"[{"role":"developer","content":"x"},{"role":"assistant","tool_calls":[]}]"#,
        ] {
            let req = parse(Endpoint::ChatCompletions, format!(r#"{{"model":"m","messages":{messages}}}"#).as_bytes())
                .unwrap();
            let tree: Vec<Value> = serde_json::from_str(messages).unwrap();
            assert_eq!(req.prompt_tokens_estimate, tokens::estimate_messages(&tree), "{messages}");
        }
        for (bad, param) in [
            (r#"[5]"#, "messages[0]"),
            (r#"[]"#, "messages"),
            (r#"[{"role":"user","content":"x","content":"y"}]"#, "messages[0]"),
            (r#"[{"role":"user","content":"x"},{"role":"user","content":5}]"#, "messages[1].content"),
            (r#"null"#, "messages"),
            (r#"{"role":"user"}"#, "messages"),
        ] {
            let body = format!(r#"{{"model":"m","messages":{bad}}}"#);
            assert_eq!(param_of(Endpoint::ChatCompletions, &body).as_deref(), Some(param), "{bad}");
        }
    }

    /// What only the upstream can judge passes: new roles and block types, Claude Code's system
    /// turns and top-level fields, sampling values outside today's documented ranges.
    #[test]
    fn leaves_to_the_upstream_what_the_gateway_does_not_act_on() {
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"robot","content":"x"}],"temperature":3}"#,
            r#"{"model":"m","messages":[{"content":"x"},{"role":"critic","content":"y","weight":2}],"top_p":7}"#,
        ] {
            parse(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
        }
        let claude_code = r##"{"model":"claude-opus-5-5","max_tokens":128000,"stream":true,
            "messages":[{"role":"user","content":[{"type":"text","text":"hello"}]},
                        {"role":"system","content":[{"type":"text","text":"# Environment"}]},
                        {"role":"assistant","content":[{"type":"future_block","x":1}]}],
            "thinking":{"type":"adaptive","display":"omitted"},"context_management":{"edits":[]},
            "output_config":{"effort":"medium"},"temperature":1.5}"##;
        let req = parse(Endpoint::Messages, claude_code.as_bytes()).unwrap();
        assert!(req.stream && req.max_tokens == Some(128_000));
        assert!(req.body.contains("context_management"));
    }

    #[test]
    fn reads_how_many_completions_a_request_makes() {
        let choices = |extra: &str| {
            parse(
                Endpoint::ChatCompletions,
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#).as_bytes(),
            )
            .unwrap()
            .choices
        };
        assert_eq!((choices(""), choices(r#","n":3"#), choices(r#","n":2,"best_of":5"#)), (1, 3, 5));
    }

    #[test]
    fn accepts_and_reads_a_streaming_request() {
        let req = parse(
            Endpoint::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true},"seed":7}"#,
        )
        .unwrap();
        assert_eq!(req.model, "m");
        assert!(req.stream && req.client_wants_usage);
        assert!(req.body.contains("seed"));
    }
}
