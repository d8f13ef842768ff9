//! Anthropic client, Anthropic upstream: the body goes through untouched but for `model`; the
//! answer comes back untouched but for `model`, with the usage read on the way for metering.
//! Streams are relayed event by event with their names; `message_start` gets the client's model
//! name, `message_start` and `message_delta` give the usage, `message_stop` ends the stream.
//! Content block events' text is kept as they pass (bounded, compactly: `capture`), to count the
//! output locally when the stream ends before `message_delta` reports it.

use bytes::Bytes;
use serde::Deserialize;

use super::{event_frame, events_text};
use crate::adapter::capture::{ANTHROPIC_EVENTS, TextCapture};
use crate::adapter::{ChunkRewriter, Step};
use crate::api::anthropic::{ErrorDetail, UsageReport};
use crate::api::sse::SseEvent;
use crate::api::{ErrorBody, RawObject, Usage};
use crate::ctx::Generated;

/// The request body for the deployment: the client's, with the upstream's model name.
pub fn request(request: &RawObject, upstream_model: &str) -> serde_json::Result<Vec<u8>> {
    let mut body = request.clone();
    body.set("model", upstream_model)?;
    Ok(body.to_vec())
}

/// A whole response with the client's model name, and its usage in OpenAI terms.
pub fn response(body: &[u8], client_model: &str) -> serde_json::Result<(Vec<u8>, Option<Usage>)> {
    let mut message = RawObject::from_slice(body)?;
    let usage = message.parse::<UsageReport>("usage").ok().flatten().map(|u| u.to_openai());
    if message.contains("model") {
        message.set("model", client_model)?;
    }
    Ok((message.to_vec(), usage))
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<UsageReport>,
}

#[derive(Deserialize)]
struct ErrorOnly {
    error: ErrorDetail,
}

pub struct MessagesRelay {
    client_model: String,
    usage: Option<UsageReport>,
    /// `message_delta` gave the final output count (until then `usage` is `message_start`'s).
    usage_final: bool,
    /// The text of the `content_block_start` / `content_block_delta` payloads (bounded).
    generated: TextCapture,
}

impl MessagesRelay {
    pub fn new(client_model: &str) -> Self {
        Self {
            client_model: client_model.to_owned(),
            usage: None,
            usage_final: false,
            generated: TextCapture::new(&ANTHROPIC_EVENTS),
        }
    }

    fn message_start(&mut self, data: &[u8]) -> serde_json::Result<Vec<u8>> {
        let mut event = RawObject::from_slice(data)?;
        if let Some(raw) = event.get("message") {
            let mut message = RawObject::from_slice(raw.as_bytes())?;
            if let Ok(Some(usage)) = message.parse::<UsageReport>("usage") {
                self.usage = Some(usage);
            }
            message.set("model", &self.client_model)?;
            event.set_object("message", &message);
        }
        Ok(event.to_vec())
    }
}

impl ChunkRewriter for MessagesRelay {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        // The event name says what it is; only a nameless event needs its JSON read for that.
        let kind = match &event.event {
            Some(name) => name.clone(),
            None => serde_json::from_slice::<TypeOnly>(&event.data).map(|t| t.kind).unwrap_or_default(),
        };
        match kind.as_str() {
            "message_start" => match self.message_start(&event.data) {
                Ok(data) => out.push(event_frame(&kind, &data)),
                Err(e) => {
                    return Step::Failed(ErrorBody::new(
                        format!("The upstream sent an invalid message_start: {e}"),
                        "api_error",
                        None,
                        Some("upstream_protocol"),
                    ));
                }
            },
            "content_block_delta" | "content_block_start" => {
                self.generated.push(&event.data);
                out.push(event_frame(&kind, &event.data));
            }
            "message_delta" => {
                if let Ok(UsageOnly { usage: Some(later) }) = serde_json::from_slice(&event.data) {
                    self.usage.get_or_insert_default().merge(&later);
                    self.usage_final |= later.output_tokens.is_some();
                }
                out.push(event_frame(&kind, &event.data));
            }
            "message_stop" => {
                out.push(event_frame(&kind, &event.data));
                return Step::Done;
            }
            "error" => {
                let detail = serde_json::from_slice::<ErrorOnly>(&event.data).map(|e| e.error).unwrap_or_else(|_| {
                    ErrorDetail { kind: "api_error".into(), message: String::from_utf8_lossy(&event.data).into_owned() }
                });
                return Step::Failed(ErrorBody::new(detail.message, &detail.kind, None, None));
            }
            _ => out.push(event_frame(&kind, &event.data)),
        }
        Step::Continue
    }

    fn on_end(&mut self, _out: &mut Vec<Bytes>) {}

    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        out.push(super::error_event(error));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.to_openai())
    }

    fn usage_final(&self) -> bool {
        self.usage_final
    }

    fn take_generated(&mut self) -> Option<Generated> {
        Some(self.generated.take(events_text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_only_change_the_model() {
        let req =
            RawObject::from_slice(br#"{"model":"claude","max_tokens":5,"messages":[],"x_new":{"a":1.50}}"#).unwrap();
        assert_eq!(
            String::from_utf8(request(&req, "claude-sonnet-4-5").unwrap()).unwrap(),
            r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"x_new":{"a":1.50}}"#
        );
        let (body, usage) = response(
            br#"{"id":"msg_1","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":5}}"#,
            "claude",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"id":"msg_1","model":"claude","content":[],"usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":5}}"#
        );
        let usage = usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 5));
    }
}

#[cfg(test)]
mod cut_tests {
    use super::*;
    use crate::adapter::anthropic::fixtures::{cut_before, read, run};

    fn generated_text(relay: &mut MessagesRelay) -> String {
        let generated = relay.take_generated().unwrap();
        (generated.text)(&generated.fragments)
    }

    #[test]
    fn a_stream_cut_before_message_delta_has_partial_usage_and_keeps_the_text_relayed() {
        let whole = read("anthropic/stream_tools.sse");
        let sent = r#"I'll check both.get_weather{"city": "Paris"}get_time"#;
        let mut cut = MessagesRelay::new("claude");
        run(cut_before(&whole, r#""type":"message_delta""#), &[], &mut cut);
        let usage = cut.usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, cut.usage_final()), (2212, 2, false));
        assert_eq!(generated_text(&mut cut), sent);

        let mut complete = MessagesRelay::new("claude");
        run(&whole, &[], &mut complete);
        assert_eq!((complete.usage().unwrap().completion_tokens, complete.usage_final()), (61, true));

        // Thinking is kept, signatures are not text.
        let mut thinking = MessagesRelay::new("claude");
        run(cut_before(&read("anthropic/stream_thinking.sse"), r#""type":"text_delta""#), &[], &mut thinking);
        assert_eq!(generated_text(&mut thinking), "27 * 453: 27*400=10800, 27*53=1431, total 12231.");
    }
}
