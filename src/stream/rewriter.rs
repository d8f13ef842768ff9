//! The contract between the relay and a dialect's stream translation: the relay decodes the
//! upstream's events and hands each to a `ChunkRewriter`, which writes the client's frames and
//! keeps what the end-of-stream report needs. Declared here, by the relay that drives it (the
//! stream layer knows no dialect); every adapter implements it (`adapter::ChunkRewriter`).

use bytes::Bytes;

use crate::api::sse::SseEvent;
use crate::api::{ErrorBody, Usage};
use crate::ctx::Generated;

/// What the relay does after one upstream event.
#[derive(Debug, PartialEq)]
pub enum Step {
    Continue,
    /// The upstream says the stream is complete.
    Done,
    /// The upstream reported an error inside the stream.
    Failed(ErrorBody),
}

/// A dialect's stream translation, event by event. Implementations push complete client frames
/// (`data: ...\n\n`, or `event: ...\ndata: ...\n\n`) and remember what the end-of-stream
/// observers need.
pub trait ChunkRewriter: Send {
    /// Translates one upstream event into zero or more client frames.
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step;
    /// The upstream finished cleanly: the client's closing frames (e.g. `data: [DONE]`).
    fn on_end(&mut self, out: &mut Vec<Bytes>);
    /// A failure after frames went out: the client's in-band error and closing frames.
    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>);
    /// The last usage the upstream reported, if any.
    fn usage(&self) -> Option<Usage>;
    /// Whether `usage()` is the upstream's final count. Anthropic reports the input (and a token
    /// or so of output) in `message_start` and the output only in `message_delta`: a stream
    /// that ends between the two has partial usage, whose output is then counted locally.
    fn usage_final(&self) -> bool {
        true
    }
    /// The finish reason the upstream reported, if any.
    fn finish_reason(&self) -> Option<String> {
        None
    }
    /// What the upstream generated so far (raw, bounded), for counting locally when the stream
    /// ends without usage, or with partial usage (cut, client gone, or an upstream that never
    /// reports it).
    fn take_generated(&mut self) -> Option<Generated> {
        None
    }
}
