//! The exact tier for `/v1/responses`: an entry is the finished `response` object (whole, or
//! taken from a stream's terminal event); a hit serves it again as a new response — a fresh id
//! and creation time, the client's model name — whole or replayed as the stream of events.
//! (Chains with `previous_response_id` are never looked up: see `Cache::lookup`.)

use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::entry::NotStored;
use crate::adapter::responses::{bridge, native, replay};
use crate::api::Usage;
use crate::stream::sse::SseDecoder;

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default, borrow)]
    object: Option<&'a str>,
    #[serde(default, borrow)]
    status: Option<&'a str>,
}

/// Whether a finished `response` object is a clean success worth storing (`incomplete`, cut by
/// the output budget, only when length stops are stored).
pub fn check_storable(body: &[u8], store_length_stops: bool, max_bytes: usize) -> Result<(), NotStored> {
    if body.len() > max_bytes {
        return Err(NotStored::TooLarge);
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|_| NotStored::Unreadable)?;
    match (probe.object, probe.status) {
        (Some("response"), Some("completed")) => Ok(()),
        (Some("response"), Some("incomplete")) if store_length_stops => Ok(()),
        (Some("response"), Some("incomplete")) => Err(NotStored::Length),
        (Some("response"), _) => Err(NotStored::NoFinish),
        _ => Err(NotStored::Unreadable),
    }
}

/// A stored object served again: the answer (a stream when `stream`), the object the client
/// got (for the gateway's store of responses), and its usage.
pub fn hit(body: &[u8], client_model: &str, stream: bool, now: u64) -> Option<(Response, Value, Option<Usage>)> {
    let mut object: Value = serde_json::from_slice(body).ok()?;
    let map = object.as_object_mut()?;
    map.insert("id".into(), bridge::new_id().into());
    map.insert("created_at".into(), now.into());
    if map.get("completed_at").is_some_and(|v| !v.is_null()) {
        map.insert("completed_at".into(), now.into());
    }
    map.insert("model".into(), client_model.into());
    let usage = native::usage_of(&object);
    let response = if stream {
        super::replay::sse_response(replay::frames(&object, None))
    } else {
        super::replay::json_response(serde_json::to_vec(&object).ok()?)
    };
    Some((response, object, usage))
}

/// A Responses stream, frame by frame as the client receives it: keeps the object of its
/// terminal event (bounded; nothing else is parsed).
#[derive(Default)]
pub struct Terminal {
    max_bytes: usize,
    collected: usize,
    spoiled: bool,
    decoder: SseDecoder,
    object: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct TerminalEvent<'a> {
    #[serde(borrow)]
    response: &'a serde_json::value::RawValue,
}

impl Terminal {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, ..Self::default() }
    }

    pub fn frame(&mut self, frame: &[u8]) {
        if self.spoiled {
            return;
        }
        self.collected += frame.len();
        if self.collected > self.max_bytes.saturating_mul(4).max(64 * 1024) {
            self.spoiled = true;
            return;
        }
        self.decoder.push(frame);
        while let Ok(Some(event)) = self.decoder.next_event() {
            match event.event.as_deref() {
                Some("response.completed" | "response.incomplete") => {
                    match serde_json::from_slice::<TerminalEvent>(&event.data) {
                        Ok(terminal) => self.object = Some(terminal.response.get().as_bytes().to_vec()),
                        Err(_) => self.spoiled = true,
                    }
                }
                Some("error" | "response.failed") => self.spoiled = true,
                _ => {}
            }
        }
    }

    /// The finished object, unless the stream failed or never finished.
    pub fn finish(self) -> Option<Vec<u8>> {
        if self.spoiled { None } else { self.object }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/responses").join(name);
        std::fs::read(path).unwrap()
    }

    #[test]
    fn only_finished_responses_are_storable() {
        let check = |body: &str, stops| check_storable(body.as_bytes(), stops, 1 << 20);
        assert_eq!(check(r#"{"object":"response","status":"completed"}"#, false), Ok(()));
        assert_eq!(check(r#"{"object":"response","status":"incomplete"}"#, false), Err(NotStored::Length));
        assert_eq!(check(r#"{"object":"response","status":"incomplete"}"#, true), Ok(()));
        assert_eq!(check(r#"{"object":"response","status":"failed"}"#, true), Err(NotStored::NoFinish));
        assert_eq!(check(r#"{"object":"chat.completion","choices":[]}"#, true), Err(NotStored::Unreadable));
        assert_eq!(check_storable(&fixture("completion_text.response.json"), false, 10), Err(NotStored::TooLarge));
    }

    #[test]
    fn a_stream_yields_its_terminal_object_however_it_is_framed() {
        let stream = fixture("chat_stream_text.responses.sse");
        let last = String::from_utf8(stream.clone()).unwrap();
        let last = last.trim_end().rsplit("\n\n").next().unwrap().split_once("data: ").unwrap().1.to_owned();
        let expected: Value = serde_json::from_str::<Value>(&last).unwrap()["response"].clone();
        for cut in 0..=stream.len() {
            let mut terminal = Terminal::new(1 << 20);
            terminal.frame(&stream[..cut]);
            terminal.frame(&stream[cut..]);
            let object: Value = serde_json::from_slice(&terminal.finish().expect("finished")).unwrap();
            assert_eq!(object, expected, "cut at {cut}");
        }
        let mut failed = Terminal::new(1 << 20);
        failed.frame(&fixture("chat_stream_error.responses.sse"));
        assert_eq!(failed.finish(), None, "a failed stream is not stored");
    }

    #[test]
    fn a_hit_is_a_new_response_for_the_client() {
        let body = fixture("completion_text.response.json");
        let (_, object, usage) = hit(&body, "my-model", false, 42).unwrap();
        let original: Value = serde_json::from_slice(&body).unwrap();
        assert_ne!(object["id"], original["id"]);
        assert_eq!((object["model"].as_str(), object["created_at"].as_u64()), (Some("my-model"), Some(42)));
        assert_eq!(object["output"], original["output"]);
        assert_eq!(usage.unwrap().total_tokens, original["usage"]["total_tokens"].as_u64().unwrap());
    }
}
