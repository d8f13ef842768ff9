//! A Responses client on an upstream whose answer is first translated to chat chunks by the
//! upstream dialect's own rewriter (Claude: `anthropic::stream::ClaudeChunks`): the inner
//! rewriter's chat frames are decoded again and fed to `ResponsesFromChunks`, so each
//! translation is written once. Usage, its finality and the generated text come from the inner
//! rewriter, which reads the upstream's own accounting.

use bytes::Bytes;

use super::stream::ResponsesFromChunks;
use crate::adapter::{ChunkRewriter, Step};
use crate::api::sse::{SseDecoder, SseEvent};
use crate::api::{ErrorBody, Usage};
use crate::ctx::Generated;

pub struct ThroughChat {
    inner: Box<dyn ChunkRewriter>,
    outer: ResponsesFromChunks,
    decoder: SseDecoder,
    /// The inner rewriter's chat frames, until they are fed on.
    frames: Vec<Bytes>,
}

impl ThroughChat {
    /// `inner` must write chat chunks with a usage chunk (`include_usage`).
    pub fn new(inner: Box<dyn ChunkRewriter>, outer: ResponsesFromChunks) -> Self {
        Self { inner, outer, decoder: SseDecoder::new(), frames: Vec::new() }
    }

    /// Feeds the inner rewriter's frames to the outer one.
    fn relay(&mut self, out: &mut Vec<Bytes>) -> Step {
        for frame in self.frames.drain(..) {
            self.decoder.push(&frame);
        }
        let mut step = Step::Continue;
        loop {
            match self.decoder.next_event() {
                Ok(Some(event)) => match self.outer.on_event(&event, out) {
                    Step::Continue => {}
                    Step::Done => step = Step::Done,
                    failed @ Step::Failed(_) => return failed,
                },
                Ok(None) => return step,
                Err(e) => {
                    let message = format!("The translated stream could not be read: {e}");
                    return Step::Failed(ErrorBody::new(message, "api_error", None, Some("upstream_protocol")));
                }
            }
        }
    }
}

impl ChunkRewriter for ThroughChat {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        let inner = self.inner.on_event(event, &mut self.frames);
        let outer = self.relay(out);
        match (inner, outer) {
            (failed @ Step::Failed(_), _) | (_, failed @ Step::Failed(_)) => failed,
            (Step::Done, _) | (_, Step::Done) => Step::Done,
            (Step::Continue, Step::Continue) => Step::Continue,
        }
    }

    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        self.inner.on_end(&mut self.frames);
        // A failure here has nothing left to stop: the outer rewriter ends the stream either way.
        let _ = self.relay(out);
        self.outer.on_end(out);
    }

    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        self.outer.on_error(error, out);
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }

    fn usage_final(&self) -> bool {
        self.inner.usage_final()
    }

    fn finish_reason(&self) -> Option<String> {
        self.outer.finish_reason()
    }

    fn take_generated(&mut self) -> Option<Generated> {
        self.inner.take_generated()
    }
}
