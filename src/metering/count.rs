//! Local token counting, for when an upstream reports no usage: tiktoken encodings for OpenAI
//! families (ranks embedded in the binary) and Hugging Face `tokenizer.json` files loaded from
//! disk at start. Nothing is ever downloaded.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// The tiktoken encodings the binary carries.
pub const ENCODINGS: &[&str] = &["o200k_base", "o200k_harmony", "cl100k_base", "p50k_base", "r50k_base"];

/// Tokens a chat template adds per message, and once to prime the reply (OpenAI's published
/// accounting for its chat models; a fair estimate for other templates).
pub const PER_MESSAGE: u64 = 3;
pub const REPLY_PRIMER: u64 = 3;

#[derive(Clone)]
pub enum Tokenizer {
    Tiktoken(&'static CoreBPE),
    HuggingFace(Arc<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tokenizer::Tiktoken(_) => "Tokenizer::Tiktoken",
            Tokenizer::HuggingFace(_) => "Tokenizer::HuggingFace",
        })
    }
}

impl Tokenizer {
    /// Tokens in `text`. `special`: add the model's special tokens (a BERT `[CLS]`/`[SEP]`, a
    /// BOS) as a server does for an embedding or completion input; tiktoken adds none.
    pub fn count(&self, text: &str, special: bool) -> u64 {
        if text.is_empty() && !special {
            return 0;
        }
        match self {
            Tokenizer::Tiktoken(bpe) => bpe.count_ordinary(text) as u64,
            Tokenizer::HuggingFace(t) => match t.encode(text, special) {
                Ok(encoding) => encoding.get_ids().len() as u64,
                // Unencodable text: fall back to the rough four-bytes-a-token rule.
                Err(_) => (text.len() as u64).div_ceil(4),
            },
        }
    }
}

fn tiktoken(name: &str) -> Option<&'static CoreBPE> {
    Some(match name {
        "o200k_base" => tiktoken_rs::o200k_base_singleton(),
        "o200k_harmony" => tiktoken_rs::o200k_harmony_singleton(),
        "cl100k_base" => tiktoken_rs::cl100k_base_singleton(),
        "p50k_base" => tiktoken_rs::p50k_base_singleton(),
        "r50k_base" => tiktoken_rs::r50k_base_singleton(),
        _ => return None,
    })
}

/// Loads a `tokenizer.json`, with truncation and padding off (we count, we do not batch).
pub fn load_file(path: &str) -> Result<tokenizers::Tokenizer, String> {
    let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(|e| format!("{path}: {e}"))?;
    tokenizer.with_truncation(None).map_err(|e| format!("{path}: {e}"))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Every tokenizer the configuration names, by its spec (encoding name or file path).
#[derive(Debug, Default)]
pub struct Tokenizers {
    files: HashMap<String, Arc<tokenizers::Tokenizer>>,
}

impl Tokenizers {
    /// Checks every spec: encoding names must be known, files must load (done now, at start).
    pub fn load<'a>(specs: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut files = HashMap::new();
        for spec in specs {
            if ENCODINGS.contains(&spec) || files.contains_key(spec) {
                continue;
            }
            if !(spec.ends_with(".json") || spec.contains('/')) {
                return Err(format!(
                    "unknown tokenizer {spec:?} (expected one of {} or a path to a tokenizer.json)",
                    ENCODINGS.join(", ")
                ));
            }
            files.insert(spec.to_owned(), Arc::new(load_file(spec)?));
        }
        Ok(Self { files })
    }

    pub fn get(&self, spec: &str) -> Option<Tokenizer> {
        match tiktoken(spec) {
            Some(bpe) => Some(Tokenizer::Tiktoken(bpe)),
            None => self.files.get(spec).cloned().map(Tokenizer::HuggingFace),
        }
    }
}

/// The encoding tiktoken associates with an OpenAI model name (`gpt-4o` → `o200k_base`).
pub fn encoding_for_model(model: &str) -> Option<&'static str> {
    use tiktoken_rs::tokenizer::Tokenizer as T;
    Some(match tiktoken_rs::tokenizer::get_tokenizer(model)? {
        T::O200kBase => "o200k_base",
        T::O200kHarmony => "o200k_harmony",
        T::Cl100kBase => "cl100k_base",
        T::P50kBase | T::P50kEdit => "p50k_base",
        T::R50kBase | T::Gpt2 => "r50k_base",
    })
}

/// Prompt tokens of a request body, counted with `tokenizer`: chat `messages` (plus `system`
/// and `tools` when present) with the template overhead, or a completion `prompt` / embedding
/// `input` (strings counted with special tokens, token-id arrays by length).
pub fn prompt_tokens(body: &[u8], tokenizer: &Tokenizer) -> u64 {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else { return 0 };
    if let Some(Value::Array(messages)) = body.get("messages") {
        let mut total = REPLY_PRIMER;
        if let Some(system) = body.get("system") {
            total += PER_MESSAGE + content_tokens(system, tokenizer);
        }
        for message in messages {
            total += PER_MESSAGE;
            if let Some(role) = message.get("role").and_then(Value::as_str) {
                total += tokenizer.count(role, false);
            }
            if let Some(name) = message.get("name").and_then(Value::as_str) {
                total += 1 + tokenizer.count(name, false);
            }
            if let Some(content) = message.get("content") {
                total += content_tokens(content, tokenizer);
            }
            for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let function = call.get("function");
                for field in ["name", "arguments"] {
                    if let Some(s) = function.and_then(|f| f.get(field)).and_then(Value::as_str) {
                        total += tokenizer.count(s, false);
                    }
                }
            }
        }
        if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
            total += tokenizer.count(&tools.to_string(), false);
        }
        return total;
    }
    match body.get("prompt").or_else(|| body.get("input")) {
        Some(Value::String(s)) => tokenizer.count(s, true),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => tokenizer.count(s, true),
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// A message `content` (or Anthropic `system`): a string, or parts whose `text` is counted.
fn content_tokens(content: &Value, tokenizer: &Tokenizer) -> u64 {
    match content {
        Value::String(s) => tokenizer.count(s, false),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part {
                Value::String(s) => tokenizer.count(s, false),
                _ => part.get("text").and_then(Value::as_str).map(|t| tokenizer.count(t, false)).unwrap_or(0),
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiktoken_encodings_count_known_strings() {
        let tokenizers = Tokenizers::load(["cl100k_base", "o200k_base"]).unwrap();
        let cl100k = tokenizers.get("cl100k_base").unwrap();
        let o200k = tokenizers.get("o200k_base").unwrap();
        assert_eq!(cl100k.count("hello world", false), 2);
        assert_eq!(o200k.count("hello world", false), 2);
        assert_eq!(cl100k.count("", false), 0);
        // Special-token text is counted as ordinary text, never interpreted.
        assert!(cl100k.count("<|endoftext|>", false) > 1);
        assert_eq!(encoding_for_model("gpt-4o"), Some("o200k_base"));
        assert_eq!(encoding_for_model("gpt-4"), Some("cl100k_base"));
        assert!(Tokenizers::load(["bpe-from-space"]).is_err());
        assert!(Tokenizers::load(["/nonexistent/tokenizer.json"]).unwrap_err().contains("/nonexistent"));
    }

    #[test]
    fn prompts_are_counted_per_request_shape() {
        let t = Tokenizers::default().get("cl100k_base").unwrap();
        let hello = t.count("hello world", false);
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(prompt_tokens(chat, &t), REPLY_PRIMER + PER_MESSAGE + t.count("user", false) + hello);
        let parts =
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url"}]}]}"#;
        assert_eq!(prompt_tokens(parts, &t), prompt_tokens(chat, &t));
        assert_eq!(prompt_tokens(br#"{"prompt":["hello world","hello world"]}"#, &t), 2 * hello);
        assert_eq!(prompt_tokens(br#"{"input":[[1,2,3],[4]]}"#, &t), 4);
        assert_eq!(prompt_tokens(b"not json", &t), 0);
    }
}
