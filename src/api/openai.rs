//! OpenAI wire types the gateway itself reads or writes (requests pass through as `RawObject`).

use serde::{Deserialize, Serialize};

use super::anthropic::ServerToolUse;

/// `CompletionUsage`, as upstreams report it. Token counts are integers, always.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// Tools the vendor ran itself and bills per use (Anthropic's `usage.server_tool_use`): for
    /// metering only. Not an OpenAI field, so never sent to a client nor read from an upstream.
    #[serde(skip)]
    pub server_tools: ServerToolUse,
    /// Of `prompt_tokens_details.cache_write_tokens`, those written to the vendor's long-lived
    /// cache (Anthropic's `cache_creation.ephemeral_1h_input_tokens`), which bill at their own
    /// price: for spend only. Not an OpenAI field, so never sent to a client.
    #[serde(skip)]
    pub cache_write_long_tokens: u64,
}

impl Usage {
    /// Anthropic's usage in OpenAI's terms. Anthropic's `input_tokens` excludes cache reads and
    /// writes, OpenAI's `prompt_tokens` includes them; `output_tokens` already includes thinking.
    pub fn from_anthropic(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Self {
        let prompt_tokens = input + cache_read + cache_write;
        Self {
            prompt_tokens,
            completion_tokens: output,
            total_tokens: prompt_tokens + output,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: cache_read,
                cache_write_tokens: cache_write,
            }),
            completion_tokens_details: None,
            server_tools: ServerToolUse::default(),
            cache_write_long_tokens: 0,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, deserialize_with = "zero_if_null")]
    pub cached_tokens: u64,
    /// Prompt tokens written to a provider's prompt cache (Anthropic's cache creation).
    #[serde(default, deserialize_with = "zero_if_null", skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) fn zero_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// `ErrorResponse`: `{"error":{"message","type","param","code"}}`, all four always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ErrorBody {
    pub fn new(message: impl Into<String>, kind: &str, param: Option<String>, code: Option<&str>) -> Self {
        Self {
            error: ErrorDetail { message: message.into(), kind: kind.to_owned(), param, code: code.map(str::to_owned) },
        }
    }

    /// Reads an upstream error body in any of the shapes OpenAI-compatible servers use:
    /// OpenAI's `{"error":{...}}`, TGI's `{"error":"...","error_type":"..."}`, old vLLM's
    /// top-level `{"object":"error","message":...}`, or plain text.
    pub fn from_upstream(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Loose {
            error: Option<serde_json::Value>,
            error_type: Option<String>,
            message: Option<String>,
            #[serde(rename = "type")]
            kind: Option<String>,
            code: Option<serde_json::Value>,
            param: Option<String>,
        }
        let default_kind = default_kind_for(status);
        let text = || {
            let s = String::from_utf8_lossy(body);
            let s = s.trim();
            if s.is_empty() { format!("upstream returned HTTP {status}") } else { s.chars().take(2000).collect() }
        };
        let Ok(loose) = serde_json::from_slice::<Loose>(body) else {
            return Self::new(text(), default_kind, None, None);
        };
        match loose.error {
            Some(serde_json::Value::Object(obj)) => {
                let message = obj.get("message").and_then(|m| m.as_str()).map(str::to_owned).unwrap_or_else(text);
                let kind = obj.get("type").and_then(|t| t.as_str()).unwrap_or(default_kind);
                let param = obj.get("param").and_then(|p| p.as_str()).map(str::to_owned);
                let code = obj.get("code").and_then(code_string);
                Self { error: ErrorDetail { message, kind: kind.to_owned(), param, code } }
            }
            Some(serde_json::Value::String(message)) => {
                let kind = loose.error_type.as_deref().map(tgi_kind).unwrap_or(default_kind);
                Self::new(message, kind, None, None)
            }
            _ => match loose.message {
                Some(message) => Self {
                    error: ErrorDetail {
                        message,
                        kind: loose.kind.unwrap_or_else(|| default_kind.to_owned()),
                        param: loose.param,
                        code: loose.code.as_ref().and_then(code_string),
                    },
                },
                None => Self::new(text(), default_kind, None, None),
            },
        }
    }
}

fn code_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn tgi_kind(error_type: &str) -> &'static str {
    match error_type {
        "validation" | "tokenizer" => "invalid_request_error",
        "overloaded" => "rate_limit_error",
        _ => "server_error",
    }
}

/// The OpenAI error `type` conventionally paired with an HTTP status.
pub fn default_kind_for(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelEntry<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'a str,
}

#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    pub object: &'static str,
    pub data: Vec<ModelEntry<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_upstream_error_shape() {
        let openai = ErrorBody::from_upstream(
            400,
            br#"{"error":{"message":"bad","type":"invalid_request_error","param":"messages","code":null}}"#,
        );
        assert_eq!(openai.error.message, "bad");
        assert_eq!(openai.error.param.as_deref(), Some("messages"));

        let tgi = ErrorBody::from_upstream(422, br#"{"error":"Input validation error","error_type":"validation"}"#);
        assert_eq!(tgi.error.message, "Input validation error");
        assert_eq!(tgi.error.kind, "invalid_request_error");

        let vllm = ErrorBody::from_upstream(
            400,
            br#"{"object":"error","message":"too long","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(vllm.error.message, "too long");
        assert_eq!(vllm.error.code.as_deref(), Some("400"));

        let text = ErrorBody::from_upstream(502, b"Bad Gateway");
        assert_eq!(text.error.message, "Bad Gateway");
        assert_eq!(text.error.kind, "server_error");

        let empty = ErrorBody::from_upstream(401, b"");
        assert_eq!(empty.error.message, "upstream returned HTTP 401");
        assert_eq!(empty.error.kind, "authentication_error");
    }
}
