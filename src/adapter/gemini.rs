//! The Gemini dialect (`generateContent`, shared by Vertex AI and the Gemini API), for OpenAI
//! chat clients: `request` (chat request → Gemini body), `response` (answer → chat
//! completion), `stream` (`streamGenerateContent?alt=sse` events → chat chunks). All pure.
//!
//! Rules this dialect fixes, stated once:
//! - **Tool-call ids.** Vertex v1 has no call ids, so every `functionCall` gets one here:
//!   `call_<12 hex>_<n>`, the hex a SHA-256 of the answer's `responseId`, the candidate, the
//!   call's position `n`, its name and arguments — the same on every replay of one answer, and
//!   different between turns. An id Gemini sends itself is not used (Vertex would refuse it
//!   back). Tool results are paired by looking the `tool_call_id` up in the request's own
//!   earlier assistant `tool_calls`, whose names Gemini requires in `functionResponse`.
//! - **Thought signatures** ride in the tool-call id: `<id>__thought__<signature>`. A client
//!   sends the id back unchanged, and the request puts the signature back on that
//!   `functionCall` part. Signatures on text parts are not kept (Gemini only requires the
//!   function-call ones).
//! - **Reasoning effort** → `thinkingConfig.thinkingBudget`: minimal and low 1024, medium
//!   2048, high 4096, with `includeThoughts` (thought parts come back as
//!   `reasoning_content`). `"none"` sends no thinking config (a budget of 0 is refused by Pro).
//! - **Usage**: prompt = `promptTokenCount` + `toolUsePromptTokenCount`; completion =
//!   `candidatesTokenCount` + `thoughtsTokenCount`; cached = `cachedContentTokenCount`;
//!   reasoning = `thoughtsTokenCount`.

pub mod chunks;
pub mod request;
pub mod response;
pub mod stream;

use sha2::{Digest, Sha256};

use crate::api::gemini::UsageMetadata;
use crate::api::openai::{CompletionTokensDetails, PromptTokensDetails};
use crate::api::{ErrorBody, Usage};

/// Separates a generated tool-call id from the thought signature it carries.
pub const SIGNATURE_SEPARATOR: &str = "__thought__";

/// The path suffix after `…/models/{model}` for a whole or a streamed answer.
pub fn method(stream: bool) -> &'static str {
    if stream { ":streamGenerateContent?alt=sse" } else { ":generateContent" }
}

/// The Gemini API path (`https://generativelanguage.googleapis.com` base): `models/` is added
/// unless the model is already a resource name (`tunedModels/…`, `models/…`).
pub fn gemini_api_path(model: &str, stream: bool) -> String {
    let prefix = if model.contains('/') { "" } else { "models/" };
    format!("/v1beta/{prefix}{model}{}", method(stream))
}

/// The Vertex AI path (`https://{location}-aiplatform.googleapis.com` base) of a Google
/// publisher model.
pub fn vertex_path(project: &str, location: &str, model: &str, stream: bool) -> String {
    format!("/v1/projects/{project}/locations/{location}/publishers/google/models/{model}{}", method(stream))
}

/// The OpenAI finish reason of a candidate; `saw_calls` when it produced any `functionCall`
/// (Gemini ends those with `STOP`).
pub fn finish_reason(reason: &str, saw_calls: bool) -> &'static str {
    match reason {
        "STOP" if saw_calls => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "MODEL_ARMOR"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "IMAGE_OTHER" => "content_filter",
        // A call the model botched still asked for a tool: the client sees no call and stops.
        // STOP, OTHER, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, new ones.
        _ if saw_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's counts in OpenAI's terms (see the module doc).
pub fn usage(meta: &UsageMetadata) -> Usage {
    let prompt_tokens = meta.prompt_token_count + meta.tool_use_prompt_token_count;
    let completion_tokens = meta.candidates_token_count + meta.thoughts_token_count;
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: meta.cached_content_token_count,
            cache_write_tokens: 0,
        }),
        completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: meta.thoughts_token_count }),
        ..Usage::default()
    }
}

/// The id of the `position`-th call of `candidate` in the answer `response_id` (module doc).
pub fn call_id(
    response_id: &str,
    candidate: u32,
    position: u32,
    name: &str,
    args: &str,
    signature: Option<&str>,
) -> String {
    let mut hash = Sha256::new();
    for piece in
        [response_id.as_bytes(), &candidate.to_be_bytes(), &position.to_be_bytes(), name.as_bytes(), args.as_bytes()]
    {
        hash.update((piece.len() as u64).to_be_bytes());
        hash.update(piece);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    match signature {
        Some(sig) if !sig.is_empty() => format!("call_{hex}_{position}{SIGNATURE_SEPARATOR}{sig}"),
        _ => format!("call_{hex}_{position}"),
    }
}

/// A tool-call id split into the id proper and the thought signature it carries.
pub fn split_call_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_SEPARATOR) {
        Some((base, sig)) if !sig.is_empty() => (base, Some(sig)),
        _ => (id, None),
    }
}

/// A Google error (`{"error":{"code","message","status"}}`) in OpenAI's shape; a bad Gemini
/// API key comes as a 400 `API_KEY_INVALID` and is reported as an authentication error.
pub fn error_body(status: &crate::api::gemini::Status) -> ErrorBody {
    let kind = match status.status.as_str() {
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => "authentication_error",
        "INVALID_ARGUMENT" if status.message.contains("API key") => "authentication_error",
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" => "invalid_request_error",
        _ => "server_error",
    };
    let code = (!status.status.is_empty()).then_some(status.status.as_str());
    ErrorBody::new(status.message.clone(), kind, None, code)
}

/// An error answer from Vertex AI or the Gemini API (`{"error":…}`, which Vertex may wrap in
/// an array) in OpenAI's shape; other bodies are read as any upstream's.
pub fn upstream_error(http_status: u16, body: &[u8]) -> ErrorBody {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: crate::api::gemini::Status,
    }
    // (A struct reads from an array too, field by field: the shape is chosen first.)
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<[Envelope; 1]>(body).map(|[e]| e)
    } else {
        serde_json::from_slice::<Envelope>(body)
    };
    match parsed {
        Ok(envelope) => error_body(&envelope.error),
        Err(_) => ErrorBody::from_upstream(http_status, body),
    }
}

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
mod tests;
