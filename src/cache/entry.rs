//! A cached answer: the final `chat.completion` object (however it was delivered), when it was
//! made and when it stops being served, stored compressed; for semantic entries also the
//! question it answered (the last user message), which the lexical guard compares. The same
//! encoding lives in the replica's memory, in the exact key and in a semantic entry.

use bytes::Bytes;
use serde::Deserialize;

use crate::api::Usage;

const VERSION: u8 = 2;
const HEADER: usize = 1 + 8 + 8 + 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub created_ms: u64,
    /// Absolute expiry: hits never extend it.
    pub expires_ms: u64,
    /// The last user message it answered (semantic entries; empty for exact ones).
    pub question: String,
    /// The `chat.completion` JSON.
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a cache entry of this version")]
    Version,
    #[error("the entry is truncated or corrupt")]
    Corrupt,
    #[error("the entry would expand past {0} bytes")]
    TooLarge(usize),
}

impl Stored {
    pub fn encode(&self) -> Vec<u8> {
        let compressed = lz4_flex::compress_prepend_size(&self.body);
        let mut out = Vec::with_capacity(HEADER + compressed.len());
        out.push(VERSION);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&(self.question.len() as u32).to_le_bytes());
        out.extend_from_slice(self.question.as_bytes());
        out.extend_from_slice(&compressed);
        out
    }

    /// Decodes, refusing anything that would expand past `max_bytes` (a corrupt or hostile
    /// value must not make us allocate without bound).
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER + 4 {
            return Err(DecodeError::Corrupt);
        }
        if bytes[0] != VERSION {
            return Err(DecodeError::Version);
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let created_ms = u64_at(1);
        let expires_ms = u64_at(9);
        let question_len = u32::from_le_bytes(bytes[17..21].try_into().unwrap_or_default()) as usize;
        if question_len > max_bytes || bytes.len() < HEADER + question_len + 4 {
            return Err(DecodeError::Corrupt);
        }
        let question =
            String::from_utf8(bytes[HEADER..HEADER + question_len].to_vec()).map_err(|_| DecodeError::Corrupt)?;
        let payload = &bytes[HEADER + question_len..];
        let size = u32::from_le_bytes(payload[..4].try_into().unwrap_or_default()) as usize;
        if size > max_bytes {
            return Err(DecodeError::TooLarge(max_bytes));
        }
        let body = lz4_flex::decompress_size_prepended(payload).map_err(|_| DecodeError::Corrupt)?;
        Ok(Self { created_ms, expires_ms, question, body: Bytes::from(body) })
    }

    /// Bytes this entry holds in memory (for the replica's size-bounded caches).
    pub fn weight(&self) -> u32 {
        u32::try_from(self.body.len() + self.question.len() + 64).unwrap_or(u32::MAX)
    }
}

/// The parts of a stored `chat.completion` that a stream replay needs.
#[derive(Debug, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    #[serde(default)]
    pub service_tier: Option<String>,
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: Function,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Deserialize)]
pub struct Function {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// Why an answer is not stored. Labels are metric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Unreadable,
    NoFinish,
    ContentFilter,
    Length,
    TooLarge,
}

impl NotStored {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::NoFinish => "no_finish",
            Self::ContentFilter => "content_filter",
            Self::Length => "length",
            Self::TooLarge => "too_large",
        }
    }
}

/// Whether a final `chat.completion` body is a clean success worth storing.
pub fn check_storable(body: &[u8], store_length_stops: bool, max_bytes: usize) -> Result<(), NotStored> {
    if body.len() > max_bytes {
        return Err(NotStored::TooLarge);
    }
    let completion: Completion = serde_json::from_slice(body).map_err(|_| NotStored::Unreadable)?;
    if completion.choices.len() != 1 {
        return Err(NotStored::Unreadable);
    }
    match completion.choices[0].finish_reason.as_deref() {
        Some("stop" | "tool_calls" | "function_call") => Ok(()),
        Some("length") if store_length_stops => Ok(()),
        Some("length") => Err(NotStored::Length),
        Some("content_filter") => Err(NotStored::ContentFilter),
        _ => Err(NotStored::NoFinish),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let body = Bytes::from(r#"{"id":"x","choices":[]}"#.repeat(50));
        let stored = Stored { created_ms: 7, expires_ms: 9, question: "Grüße?".into(), body: body.clone() };
        let bytes = stored.encode();
        assert!(bytes.len() < body.len(), "compressed");
        assert_eq!(Stored::decode(&bytes, 1 << 20).unwrap(), stored);
        assert_eq!(Stored::decode(&bytes, 10), Err(DecodeError::TooLarge(10)));
        assert_eq!(Stored::decode(&bytes[..10], 1 << 20), Err(DecodeError::Corrupt));
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert_eq!(Stored::decode(&wrong, 1 << 20), Err(DecodeError::Version));
    }

    #[test]
    fn only_clean_finishes_are_storable() {
        let body = |finish: &str| {
            format!(
                r#"{{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":{finish}}}]}}"#
            )
        };
        assert_eq!(check_storable(body("\"stop\"").as_bytes(), false, 1 << 20), Ok(()));
        assert_eq!(check_storable(body("\"tool_calls\"").as_bytes(), false, 1 << 20), Ok(()));
        assert_eq!(check_storable(body("\"length\"").as_bytes(), false, 1 << 20), Err(NotStored::Length));
        assert_eq!(check_storable(body("\"length\"").as_bytes(), true, 1 << 20), Ok(()));
        assert_eq!(check_storable(body("\"content_filter\"").as_bytes(), true, 1 << 20), Err(NotStored::ContentFilter));
        assert_eq!(check_storable(body("null").as_bytes(), true, 1 << 20), Err(NotStored::NoFinish));
        assert_eq!(check_storable(body("\"stop\"").as_bytes(), true, 10), Err(NotStored::TooLarge));
    }
}
