//! Bedrock's errors in OpenAI's shape: an error answer (`x-amzn-ErrorType` header, body
//! `{"message": …}`) or an exception event inside a 200 stream. Each becomes the status the
//! client sees, the OpenAI error body, and whether another attempt may succeed. A refusal of
//! the gateway's own AWS credentials is the gateway's fault, not the client's: a 502 that says
//! so.

use crate::api::ErrorBody;
use crate::api::converse::ErrorMessage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub status: u16,
    pub body: ErrorBody,
    pub retryable: bool,
}

/// Classifies a Bedrock error. `error_type` is the `x-amzn-ErrorType` header (which may carry
/// a `:<namespace>` suffix) or an exception event's type (camelCase in streams); `status` is
/// the HTTP status, used when the type is unknown; `body` is the JSON answer.
pub fn classify(status: u16, error_type: Option<&str>, body: &[u8]) -> Classified {
    let message = serde_json::from_slice::<ErrorMessage>(body).map(|m| m.message).unwrap_or_default();
    let message = if message.is_empty() { String::from_utf8_lossy(body).chars().take(2000).collect() } else { message };
    let name = error_type.unwrap_or_default().split(':').next().unwrap_or_default().trim();
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix("exception").unwrap_or(&lower);
    let code = (!name.is_empty()).then_some(name);
    let (status, kind, retryable, message) = match lower {
        "throttling" | "modelnotready" | "servicequotaexceeded" => (429, "rate_limit_error", true, message),
        "serviceunavailable" => (503, "server_error", true, message),
        "internalserver" => (500, "server_error", true, message),
        "modeltimeout" => (504, "server_error", true, message),
        "modelstreamerror" | "modelerror" => (502, "server_error", true, message),
        "validation" => (400, "invalid_request_error", false, message),
        "resourcenotfound" => (404, "not_found_error", false, message),
        "accessdenied"
        | "unrecognizedclient"
        | "invalidsignature"
        | "expiredtoken"
        | "incompletesignature"
        | "missingauthenticationtoken" => {
            (502, "server_error", false, format!("Bedrock refused the gateway's AWS credentials ({name}): {message}"))
        }
        _ => {
            let status = if (400..=599).contains(&status) { status } else { 502 };
            (status, crate::api::openai::default_kind_for(status), status == 429 || status >= 500, message)
        }
    };
    let message = if message.is_empty() { format!("Bedrock returned HTTP {status}") } else { message };
    Classified { status, body: ErrorBody::new(message, kind, None, code), retryable }
}
