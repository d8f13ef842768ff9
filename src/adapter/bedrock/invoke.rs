//! InvokeModelWithResponseStream for Claude: each event-stream `chunk` message carries
//! `{"bytes": <base64>}`, the JSON of one Anthropic Messages stream event. Decoded here into
//! that event (named by its `type`), so that the Messages relay and the chat translation read
//! what Anthropic's own API would have sent; an exception message becomes Anthropic's `error`
//! event, its type from Bedrock's classification.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;

use super::error::classify;
use crate::api::anthropic::{ErrorBody, error_type_for};

#[derive(Deserialize)]
struct Chunk {
    bytes: String,
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

/// The Anthropic event (name, JSON) in one InvokeModel stream message; `None` for a message
/// of another kind (none is known: skipped, as a new one would be).
pub fn anthropic_event(name: &str, payload: &[u8]) -> Result<Option<(String, Bytes)>, String> {
    if let Some(exception) = name.strip_prefix("exception:") {
        let classified = classify(0, Some(exception), payload);
        let kind = error_type_for(classified.status);
        let body = ErrorBody::new(kind, classified.body.error.message);
        let data = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        return Ok(Some(("error".into(), Bytes::from(data))));
    }
    if name != "chunk" {
        return Ok(None);
    }
    let chunk: Chunk = serde_json::from_slice(payload).map_err(|e| format!("a chunk without its bytes: {e}"))?;
    let json = STANDARD.decode(chunk.bytes.as_bytes()).map_err(|e| format!("a chunk's bytes are not base64: {e}"))?;
    let event: TypeOnly =
        serde_json::from_slice(&json).map_err(|e| format!("a chunk's bytes are not a Messages event: {e}"))?;
    Ok(Some((event.kind, Bytes::from(json))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_the_messages_event_it_carries_and_an_exception_anthropics_error() {
        let event = br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        let payload = format!(r#"{{"bytes":"{}","p":"abcd"}}"#, STANDARD.encode(event));
        let (name, data) = anthropic_event("chunk", payload.as_bytes()).unwrap().unwrap();
        assert_eq!((name.as_str(), &data[..]), ("content_block_delta", &event[..]));

        let (name, data) =
            anthropic_event("exception:throttlingException", br#"{"message":"slow down"}"#).unwrap().unwrap();
        let error: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(name, "error");
        assert_eq!(
            error,
            serde_json::json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );

        assert!(anthropic_event("chunk", br#"{"bytes":"not base64!"}"#).unwrap_err().contains("base64"));
        assert!(anthropic_event("chunk", br#"{}"#).is_err());
        assert_eq!(anthropic_event("somethingNew", b"{}").unwrap(), None);
    }
}
