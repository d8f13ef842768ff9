//! What a request is, for the cache: the exact key (a hash of everything that can change the
//! answer), and for the semantic tier the text to embed (the last user message only) plus the
//! hard partition (everything else that can change the answer, hashed). Two requests can share a
//! semantic entry only when every byte outside the last user message's text is equal.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::RawObject;

/// Bump when the key derivation changes: old entries then simply stop matching.
const SCHEMA: &[u8] = b"llmgw-cache-v1";

/// Members that never change the answer: how it is delivered, and the client's model name (the
/// resolved model group is hashed instead).
const DELIVERY_ONLY: &[&str] = &["model", "stream", "stream_options"];

/// Why a request does not use (a tier of) the cache. Labels are metric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// More than one choice asked for.
    MultipleChoices,
    /// Token log-probabilities asked for (not replayable).
    Logprobs,
    /// The body is not what the cache understands.
    Unreadable,
    /// Semantic only: the last message is a tool result / assistant turn.
    LastNotUser,
    Temperature,
    LongConversation,
    /// The last user message has no text.
    NoText,
    TooLong,
}

impl Skip {
    pub fn label(self) -> &'static str {
        match self {
            Self::MultipleChoices => "n",
            Self::Logprobs => "logprobs",
            Self::Unreadable => "unreadable",
            Self::LastNotUser => "last_not_user",
            Self::Temperature => "temperature",
            Self::LongConversation => "long_conversation",
            Self::NoText => "no_text",
            Self::TooLong => "too_long",
        }
    }
}

/// The cache's view of one chat completion request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    pub exact: [u8; 32],
    /// `Err` says why the semantic tier cannot be used for this request.
    pub semantic: Result<SemanticKey, Skip>,
}

#[derive(Debug, Clone)]
pub struct SemanticKey {
    /// The last user message's text, the only thing embedded.
    pub text: String,
    /// Hash of everything else; combined with the embedder's identity into the partition.
    pub scope: [u8; 32],
}

/// Eligibility limits of the semantic tier.
#[derive(Debug, Clone, Copy)]
pub struct SemanticRules {
    pub max_temperature: f64,
    pub max_messages: usize,
    pub max_chars: usize,
}

/// A partition id: 16 bytes of SHA-256, written as 32 hex digits in Valkey keys.
pub type PartitionId = [u8; 16];

/// The partition of a semantic key for a given embedder (its id and vector width): vectors of
/// different models or widths can never be compared.
pub fn partition(scope: &[u8; 32], embedder_id: &str, dims: usize) -> PartitionId {
    let mut h = Sha256::new();
    h.update(SCHEMA);
    h.update(b"partition");
    h.update(scope);
    h.update((embedder_id.len() as u64).to_le_bytes());
    h.update(embedder_id.as_bytes());
    h.update((dims as u64).to_le_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Builds the keys for `body` sent by `team` for the resolved `model_group`; `Err` when the
/// request must bypass the cache altogether.
pub fn request_key(
    team: &str,
    model_group: &str,
    body: &RawObject,
    rules: Option<SemanticRules>,
) -> Result<RequestKey, Skip> {
    let mut fields: Vec<(&str, Value)> = Vec::new();
    for key in body.keys() {
        if DELIVERY_ONLY.contains(&key) || fields.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let raw = body.get(key).ok_or(Skip::Unreadable)?;
        let value: Value = serde_json::from_str(raw).map_err(|_| Skip::Unreadable)?;
        fields.push((key, value));
    }
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
    match get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_f64() == Some(1.0) => {}
        Some(_) => return Err(Skip::MultipleChoices),
    }
    if matches!(get("logprobs"), Some(Value::Bool(true))) || get("top_logprobs").is_some_and(|v| !v.is_null()) {
        return Err(Skip::Logprobs);
    }
    let Some(Value::Array(messages)) = get("messages") else {
        return Err(Skip::Unreadable);
    };

    let mut exact = scoped_hasher(b"exact", team, model_group);
    for (key, value) in &fields {
        write_member(&mut exact, key, value);
    }
    let exact: [u8; 32] = exact.finalize().into();

    let semantic = match rules {
        None => Err(Skip::Unreadable),
        Some(rules) => semantic_key(team, model_group, &fields, messages, rules),
    };
    Ok(RequestKey { exact, semantic })
}

/// The exact key of a `/v1/responses` request (no semantic tier): every member but how the
/// answer is delivered, under its own scope so that it never meets a chat request's.
pub fn responses_key(team: &str, model_group: &str, body: &RawObject) -> Result<RequestKey, Skip> {
    let mut fields: Vec<(&str, Value)> = Vec::new();
    for key in body.keys() {
        if DELIVERY_ONLY.contains(&key) || fields.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let value: Value =
            serde_json::from_str(body.get(key).ok_or(Skip::Unreadable)?).map_err(|_| Skip::Unreadable)?;
        fields.push((key, value));
    }
    if !fields.iter().any(|(k, _)| *k == "input") {
        return Err(Skip::Unreadable);
    }
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let mut exact = scoped_hasher(b"responses", team, model_group);
    for (key, value) in &fields {
        write_member(&mut exact, key, value);
    }
    Ok(RequestKey { exact: exact.finalize().into(), semantic: Err(Skip::Unreadable) })
}

fn semantic_key(
    team: &str,
    model_group: &str,
    fields: &[(&str, Value)],
    messages: &[Value],
    rules: SemanticRules,
) -> Result<SemanticKey, Skip> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err(Skip::Unreadable);
    };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(Skip::LastNotUser);
    }
    if messages.len() > rules.max_messages {
        return Err(Skip::LongConversation);
    }
    // OpenAI's default temperature is 1.
    let temperature = fields.iter().find(|(k, _)| *k == "temperature").and_then(|(_, v)| v.as_f64()).unwrap_or(1.0);
    if temperature > rules.max_temperature {
        return Err(Skip::Temperature);
    }
    let (text, rest_of_last) = split_text(last)?;
    if text.trim().is_empty() {
        return Err(Skip::NoText);
    }
    if text.chars().count() > rules.max_chars {
        return Err(Skip::TooLong);
    }

    let mut scope = scoped_hasher(b"semantic", team, model_group);
    for (key, value) in fields {
        if *key != "messages" {
            write_member(&mut scope, key, value);
        }
    }
    // The system / developer prompt and every earlier turn are hard partition members (written
    // whole, so they are covered twice over: by the system-prompt hash and by the prefix hash).
    let mut system = Sha256::new();
    for m in earlier {
        if matches!(m.get("role").and_then(Value::as_str), Some("system" | "developer")) {
            write_value(&mut system, m);
        }
    }
    scope.update(b"system");
    scope.update(system.finalize());
    let mut prefix = Sha256::new();
    for m in earlier {
        write_value(&mut prefix, m);
    }
    scope.update(b"earlier");
    scope.update((earlier.len() as u64).to_le_bytes());
    scope.update(prefix.finalize());
    // The last message minus its text: its name, and any image / audio / file parts.
    scope.update(b"last");
    write_value(&mut scope, &rest_of_last);
    Ok(SemanticKey { text, scope: scope.finalize().into() })
}

/// The text of a user message and the message with its text removed (non-text parts kept in
/// place, so a different image means a different partition).
fn split_text(message: &Value) -> Result<(String, Value), Skip> {
    let Value::Object(object) = message else { return Err(Skip::Unreadable) };
    let mut rest = object.clone();
    match object.get("content") {
        Some(Value::String(text)) => {
            rest.remove("content");
            Ok((text.clone(), Value::Object(rest)))
        }
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut others = Vec::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => {
                        texts.push(text);
                        // Where the text sat among other parts is part of the question.
                        others.push(Value::String("<text>".into()));
                    }
                    _ => others.push(part.clone()),
                }
            }
            rest.insert("content".into(), Value::Array(others));
            Ok((texts.join("\n"), Value::Object(rest)))
        }
        _ => Err(Skip::NoText),
    }
}

fn scoped_hasher(tier: &[u8], team: &str, model_group: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(SCHEMA);
    h.update(tier);
    for part in [team, model_group] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h
}

fn write_member(h: &mut Sha256, key: &str, value: &Value) {
    let mut buf = Vec::with_capacity(64);
    crate::api::object::write_json_string(&mut buf, key);
    buf.push(b':');
    canonical(value, &mut buf);
    h.update((buf.len() as u64).to_le_bytes());
    h.update(&buf);
}

fn write_value(h: &mut Sha256, value: &Value) {
    let mut buf = Vec::with_capacity(128);
    canonical(value, &mut buf);
    h.update((buf.len() as u64).to_le_bytes());
    h.update(&buf);
}

/// Canonical JSON: object members sorted by key, numbers normalised (`1`, `1.0` and `1e0` are
/// the same number), strings in one escaping.
pub fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    out.extend_from_slice((f as i64).to_string().as_bytes());
                } else {
                    out.extend_from_slice(format!("{f:e}").as_bytes());
                }
            }
        }
        Value::String(s) => crate::api::object::write_json_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                crate::api::object::write_json_string(out, k);
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: SemanticRules = SemanticRules { max_temperature: 1.0, max_messages: 4, max_chars: 2000 };

    fn key(team: &str, body: serde_json::Value) -> RequestKey {
        let raw = RawObject::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
        request_key(team, "gpt", &raw, Some(RULES)).unwrap()
    }

    fn chat(system: &str, user: &str) -> serde_json::Value {
        serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": user}]})
    }

    #[test]
    fn delivery_and_spelling_do_not_change_the_key_but_content_and_scope_do() {
        let a = key(
            "t",
            serde_json::json!({"model": "a", "temperature": 1, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let b = key(
            "t",
            serde_json::json!({"messages": [{"content": "hi", "role": "user"}], "temperature": 1.0, "stream": true, "model": "b"}),
        );
        assert_eq!(a.exact, b.exact);
        let c = key(
            "t",
            serde_json::json!({"model": "a", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_ne!(a.exact, c.exact);
        assert_ne!(
            a.exact,
            key(
                "u",
                serde_json::json!({"model": "a", "temperature": 1, "messages": [{"role": "user", "content": "hi"}]})
            )
            .exact
        );
    }

    #[test]
    fn only_the_last_user_text_is_outside_the_partition() {
        let a = key("t", chat("be terse", "How do I reset my password?"));
        let b = key("t", chat("be terse", "How can I reset my password?"));
        let (sa, sb) = (a.semantic.unwrap(), b.semantic.unwrap());
        assert_eq!(sa.scope, sb.scope);
        assert_eq!(sa.text, "How do I reset my password?");
        let other_system = key("t", chat("be verbose", "How do I reset my password?")).semantic.unwrap();
        assert_ne!(sa.scope, other_system.scope);
        let other_team = key("u", chat("be terse", "How do I reset my password?")).semantic.unwrap();
        assert_ne!(sa.scope, other_team.scope);
        let mut with_tools = chat("be terse", "How do I reset my password?");
        with_tools["tools"] = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        assert_ne!(sa.scope, key("t", with_tools).semantic.unwrap().scope);
    }

    #[test]
    fn eligibility() {
        let mut hot = chat("s", "q");
        hot["temperature"] = serde_json::json!(1.5);
        assert_eq!(key("t", hot).semantic.unwrap_err(), Skip::Temperature);
        let tool_last = serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "42"}]});
        assert_eq!(key("t", tool_last).semantic.unwrap_err(), Skip::LastNotUser);
        let mut many = chat("s", "q");
        many["n"] = serde_json::json!(2);
        let raw = RawObject::from_slice(&serde_json::to_vec(&many).unwrap()).unwrap();
        assert_eq!(request_key("t", "gpt", &raw, Some(RULES)).unwrap_err(), Skip::MultipleChoices);
        let image = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:a"}}]}]});
        let image2 = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:b"}}]}]});
        let (a, b) = (key("t", image).semantic.unwrap(), key("t", image2).semantic.unwrap());
        assert_eq!(a.text, "what is this");
        assert_ne!(a.scope, b.scope, "a different image is a different partition");
    }

    #[test]
    fn canonical_numbers_and_order() {
        let mut out = Vec::new();
        canonical(&serde_json::json!({"b": 1.0, "a": [1e0, 0.5, "x\n"]}), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a":[1,5e-1,"x\n"],"b":1}"#);
    }
}
