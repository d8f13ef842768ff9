//! Input items as stored and listed: a request's `input` as items with ids, a stored response's
//! history (what `previous_response_id` puts before the next input), and a page of them.

use serde_json::{Value, json};

use super::Stored;
use crate::api::RawObject;

/// `body`'s `input` as items (a string is one user message), each with an id (those the client
/// gave are kept; the others are numbered under `response_id`).
pub fn input_items(body: &RawObject, response_id: &str) -> Vec<Value> {
    let items = match body.parse::<Value>("input").ok().flatten() {
        Some(Value::String(text)) => vec![json!({"type": "message", "role": "user", "content": text})],
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let own = response_id.strip_prefix("resp_").unwrap_or(response_id);
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            let Some(map) = item.as_object_mut() else { return item };
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("message").to_owned();
            map.entry("type").or_insert_with(|| kind.clone().into());
            if kind == "message" {
                // The listing's shape: content as parts.
                if let Some(Value::String(text)) = map.get("content") {
                    let part = if map.get("role").and_then(Value::as_str) == Some("assistant") {
                        json!({"type": "output_text", "text": text, "annotations": []})
                    } else {
                        json!({"type": "input_text", "text": text})
                    };
                    map.insert("content".into(), json!([part]));
                }
            }
            if !map.get("id").is_some_and(Value::is_string) {
                let prefix = match kind.as_str() {
                    "message" => "msg",
                    "function_call" => "fc",
                    "function_call_output" => "fco",
                    "custom_tool_call" => "ctc",
                    "custom_tool_call_output" => "ctco",
                    "reasoning" => "rs",
                    _ => "item",
                };
                map.insert("id".into(), format!("{prefix}_{own}_in{i}").into());
            }
            item
        })
        .collect()
}

/// What a response continued by `previous_response_id` starts from: its input, then its output.
pub fn history(stored: &Stored) -> Vec<Value> {
    let output = stored.response.get("output").and_then(Value::as_array).cloned().unwrap_or_default();
    stored.input.iter().cloned().chain(output).collect()
}

/// A chain's request for a native deployment other than the one that made it: the history as
/// `input` without `previous_response_id`, and without what is valid only where it was made —
/// the items' ids (the other would look them up) and reasoning items (their encrypted content).
pub fn replayable(resolved: &RawObject) -> RawObject {
    let mut body = resolved.clone();
    body.remove("previous_response_id");
    if let Some(Value::Array(items)) = body.parse::<Value>("input").ok().flatten() {
        let items: Vec<Value> = items
            .into_iter()
            .filter(|item| item.get("type").and_then(Value::as_str) != Some("reasoning"))
            .map(|mut item| {
                // (An `item_reference` is nothing but its id.)
                if let Some(map) = item.as_object_mut().filter(|m| m.get("type") != Some(&"item_reference".into())) {
                    map.remove("id");
                }
                item
            })
            .collect();
        // (Set from what was just parsed: cannot fail.)
        let _ = body.set("input", &items);
    }
    body
}

/// A page of `items` in the API's list shape: `order` `asc` or `desc` (the default), those
/// after the item `after`, at most `limit` (1–100, default 20).
pub fn page(items: &[Value], limit: Option<usize>, after: Option<&str>, order: Option<&str>) -> Result<Value, String> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err("'limit' must be between 1 and 100.".into());
    }
    let ordered: Vec<&Value> = match order.unwrap_or("desc") {
        "asc" => items.iter().collect(),
        "desc" => items.iter().rev().collect(),
        other => return Err(format!("'order' must be 'asc' or 'desc', not '{other}'.")),
    };
    let id_of = |item: &Value| item.get("id").and_then(Value::as_str).map(str::to_owned);
    let start = match after {
        None => 0,
        Some(after) => match ordered.iter().position(|item| id_of(item).as_deref() == Some(after)) {
            Some(i) => i + 1,
            None => return Err(format!("No input item with id '{after}' in this response.")),
        },
    };
    let data: Vec<&Value> = ordered.iter().skip(start).take(limit).copied().collect();
    let has_more = start + data.len() < ordered.len();
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": data.first().and_then(|i| id_of(i)),
        "last_id": data.last().and_then(|i| id_of(i)),
        "has_more": has_more,
    }))
}
