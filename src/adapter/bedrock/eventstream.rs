//! `application/vnd.amazon.eventstream` → events, incrementally: feed bytes as they arrive,
//! split anywhere, and take whole messages out. Framing and both CRC-32 checks are
//! `aws-smithy-eventstream`'s; this buffers a message until it is whole, bounds its size, and
//! names it. Each message comes out as an `SseEvent` so that the stream rewriter has one input
//! shape for every dialect: `event` is the `:event-type` for `:message-type: event`,
//! `exception:<:exception-type>` for an exception, `exception:<:error-code>` for an error
//! message; `data` is the JSON payload (an error message's text as `{"message": …}`).

use aws_smithy_eventstream::frame::read_message_from;
use bytes::{Buf, Bytes, BytesMut};

use crate::stream::sse::SseEvent;

/// The smallest message: prelude (12 bytes) and message CRC (4).
const MIN_MESSAGE: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("an event stream message of {0} bytes is outside the allowed size")]
    BadLength(usize),
    #[error("an invalid event stream message: {0}")]
    Invalid(String),
    #[error("the event stream ended inside a message")]
    Truncated,
}

#[derive(Debug)]
pub struct EventStreamDecoder {
    buf: BytesMut,
    max_message_bytes: usize,
}

impl EventStreamDecoder {
    /// A decoder whose messages may hold `max_message_bytes` at most (the provider's
    /// `max_event_bytes`): a corrupt length never makes it wait for gigabytes.
    pub fn new(max_message_bytes: usize) -> Self {
        Self { buf: BytesMut::new(), max_message_bytes }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if the bytes pushed so far hold one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let total = (&self.buf[..4]).get_u32() as usize;
        if !(MIN_MESSAGE..=self.max_message_bytes).contains(&total) {
            return Err(FrameError::BadLength(total));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        let message = read_message_from(frame).map_err(|e| FrameError::Invalid(e.to_string()))?;
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_owned())
        };
        let kind = header(":message-type").unwrap_or_default();
        let event = match kind.as_str() {
            "event" => header(":event-type").unwrap_or_default(),
            "exception" => format!("exception:{}", header(":exception-type").unwrap_or_default()),
            "error" => {
                let text = header(":error-message").unwrap_or_default();
                let data = serde_json::to_vec(&serde_json::json!({ "message": text })).unwrap_or_default();
                let code = header(":error-code").unwrap_or_default();
                return Ok(Some(SseEvent { event: Some(format!("exception:{code}")), data: Bytes::from(data) }));
            }
            other => return Err(FrameError::Invalid(format!("unknown :message-type {other:?}"))),
        };
        Ok(Some(SseEvent { event: Some(event), data: message.payload().clone() }))
    }

    /// The body ended: anything left is a message cut short.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, FrameError> {
        if self.buf.is_empty() { Ok(None) } else { Err(FrameError::Truncated) }
    }
}
