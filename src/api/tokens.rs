//! Rough local token estimates (about four characters a token) for routing decisions made before
//! any tokenizer runs: context-window checks and admission estimates.

use serde_json::Value;

/// Tokens a chat template adds around each message.
pub const PER_MESSAGE_OVERHEAD: u64 = 4;
/// What one image part is assumed to cost when its size is unknown.
pub const IMAGE_PART: u64 = 85;

pub fn estimate(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Prompt tokens of a chat `messages` array, OpenAI content shapes included.
pub fn estimate_messages(messages: &[Value]) -> u64 {
    messages.iter().map(|m| PER_MESSAGE_OVERHEAD + m.get("content").map(estimate_content).unwrap_or(0)).sum()
}

/// A `content`, `prompt` or `input` value: a string, or an array of strings, token ids or parts.
pub fn estimate_content(content: &Value) -> u64 {
    match content {
        Value::String(s) => estimate(s),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => estimate(s),
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                Value::Object(part) => match part.get("text").and_then(Value::as_str) {
                    Some(text) => estimate(text),
                    None if part.get("type").and_then(Value::as_str) == Some("image_url") => IMAGE_PART,
                    None => 0,
                },
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates_each_content_shape() {
        assert_eq!(estimate("abcdefgh"), 2);
        let messages = [
            json!({"role": "system", "content": "12345678"}),
            json!({"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {"url": "x"}}]}),
        ];
        assert_eq!(estimate_messages(&messages), 4 + 2 + 4 + 1 + IMAGE_PART);
        assert_eq!(estimate_content(&json!([[1, 2, 3], [4]])), 4);
    }
}
