//! Streaming: upstream bytes → SSE events → rewritten chunks → client frames, as they arrive.
//! Nothing is buffered beyond one event. Before the first frame is handed out, failures are
//! ordinary errors (the caller may retry or answer with an error status); after it, a failure
//! becomes an in-band SSE error event followed by a clean `[DONE]`. Exactly one end-of-stream
//! report is made per stream: on completion, on error, or when the client goes away.

// SSE framing is wire vocabulary (`api::sse`); these names stay for the callers that still use
// them from here (the cache, the metering tests).
pub use crate::api::sse;
pub use crate::api::sse::{data_frame, data_frame_with};

mod rewriter;
pub use rewriter::{ChunkRewriter, Step};

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::Instant;

use crate::api::sse::SseDecoder;
use crate::api::{ErrorBody, Usage};
use crate::ctx::{ChunkGaps, Generated};
use crate::error::GatewayError;

/// An upstream's answer body as it arrives.
pub type BodyStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, GatewayError>> + Send>>;

/// How a stream ended, for the observers.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    pub usage: Option<Usage>,
    /// `usage` is not the upstream's final count (see `ChunkRewriter::usage_final`).
    pub usage_partial: bool,
    pub finish_reason: Option<String>,
    pub error: Option<&'static str>,
    pub client_gone: bool,
    pub chunks: u32,
    pub time_to_first_chunk: Option<Duration>,
    pub gaps: ChunkGaps,
    pub generated: Option<Generated>,
}

pub type EndHook = Box<dyn FnOnce(StreamEnd) + Send>;

/// Sees every client frame as it is handed out (e.g. the cache assembling the answer). It must
/// bound what it keeps itself.
pub type FrameTap = Box<dyn FnMut(&[u8]) + Send>;

pub struct Relay {
    body: BodyStream,
    decoder: SseDecoder,
    rewriter: Box<dyn ChunkRewriter>,
    deployment: String,
    idle: Duration,
    deadline: Instant,
    request_started: std::time::Instant,
    upstream_ended: bool,
    done: bool,
    /// Frames translated but not yet handed out.
    pending: std::collections::VecDeque<Bytes>,
    scratch: Vec<Bytes>,
    chunks: u32,
    time_to_first_chunk: Option<Duration>,
    last_frame_at: Option<std::time::Instant>,
    gaps: ChunkGaps,
    on_end: Option<EndHook>,
    tap: Option<FrameTap>,
    /// While waiting for the upstream: since when.
    waiting_since: Option<Instant>,
    /// The idle gap's timer (or the total deadline's, if sooner), re-armed when a wait starts.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Relay {
    pub fn new(
        body: BodyStream,
        rewriter: Box<dyn ChunkRewriter>,
        deployment: String,
        idle: Duration,
        deadline: Instant,
        request_started: std::time::Instant,
    ) -> Self {
        Self {
            body,
            decoder: SseDecoder::new(),
            rewriter,
            deployment,
            idle,
            deadline,
            request_started,
            upstream_ended: false,
            done: false,
            pending: std::collections::VecDeque::new(),
            scratch: Vec::new(),
            chunks: 0,
            time_to_first_chunk: None,
            last_frame_at: None,
            gaps: ChunkGaps::default(),
            on_end: None,
            tap: None,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Bounds what one upstream event may hold (`SseDecoder::with_max_event_bytes`); set before
    /// the first frame is read.
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.decoder = SseDecoder::with_max_event_bytes(max);
        self
    }

    /// Installs a tap for the frames handed out from now on.
    pub fn set_tap(&mut self, tap: FrameTap) {
        self.tap = Some(tap);
    }

    /// The next frame for the client, `None` once the stream is complete.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, GatewayError> {
        std::future::poll_fn(|cx| self.poll_next_frame(cx)).await
    }

    /// `next_frame` as a poll: the client body polls it directly, so no future holding the
    /// relay is built and moved for every frame.
    fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, GatewayError>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                self.chunks += 1;
                if self.time_to_first_chunk.is_none() {
                    self.time_to_first_chunk = Some(self.request_started.elapsed());
                }
                let now = std::time::Instant::now();
                if let Some(last) = self.last_frame_at.replace(now) {
                    self.gaps.record(now - last);
                }
                if let Some(tap) = self.tap.as_mut() {
                    tap(&frame);
                }
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.done {
                return Poll::Ready(Ok(None));
            }
            let event = match self.decoder.next_event() {
                Ok(Some(event)) => Some(event),
                Ok(None) if self.upstream_ended => match self.decoder.finish() {
                    Ok(event) => event,
                    Err(e) => return Poll::Ready(Err(self.protocol(e.to_string()))),
                },
                Ok(None) => None,
                Err(e) => return Poll::Ready(Err(self.protocol(e.to_string()))),
            };
            if let Some(event) = event {
                let step = self.rewriter.on_event(&event, &mut self.scratch);
                self.pending.extend(self.scratch.drain(..));
                match step {
                    Step::Continue => {}
                    Step::Done => self.end(),
                    Step::Failed(body) => {
                        return Poll::Ready(Err(GatewayError::UpstreamStatus {
                            status: http::StatusCode::BAD_GATEWAY,
                            body,
                            retry_after: None,
                        }));
                    }
                }
                continue;
            }
            if self.upstream_ended {
                // The upstream closed cleanly without its end marker (some servers do).
                self.end();
                continue;
            }
            match self.body.as_mut().poll_next(cx) {
                Poll::Ready(item) => {
                    self.waiting_since = None;
                    match item {
                        Some(Ok(bytes)) => self.decoder.push(&bytes),
                        Some(Err(e)) => return Poll::Ready(Err(e)),
                        None => self.upstream_ended = true,
                    }
                }
                Poll::Pending => return self.poll_wait(cx),
            }
        }
    }

    /// The upstream has nothing yet: arms the idle timer when this wait starts, and fails the
    /// stream once it fires.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, GatewayError>> {
        let since = match self.waiting_since {
            Some(since) => since,
            None => {
                let now = Instant::now();
                self.waiting_since = Some(now);
                let wake = (now + self.idle).min(self.deadline);
                self.timer.as_mut().reset(wake);
                now
            }
        };
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.waiting_since = None;
        Poll::Ready(Err(GatewayError::UpstreamTimeout {
            deployment: self.deployment.clone(),
            phase: if Instant::now() >= self.deadline { "total" } else { "idle between chunks" },
            after_ms: since.elapsed().as_millis(),
        }))
    }

    fn end(&mut self) {
        self.done = true;
        self.rewriter.on_end(&mut self.scratch);
        self.pending.extend(self.scratch.drain(..));
    }

    /// The in-band error frames for a failure after the first frame.
    fn error_frames(&mut self, e: &GatewayError) -> Bytes {
        let mut body: ErrorBody = e.body();
        if matches!(e, GatewayError::UpstreamStatus { .. }) && body.error.code.is_none() {
            body.error.code = Some("upstream_stream_error".into());
        }
        self.rewriter.on_error(&body, &mut self.scratch);
        let mut frames = BytesMut::new();
        for frame in self.scratch.drain(..) {
            frames.put_slice(&frame);
        }
        frames.freeze()
    }

    fn protocol(&self, detail: String) -> GatewayError {
        GatewayError::UpstreamProtocol { deployment: self.deployment.clone(), detail }
    }

    fn report(&mut self, error: Option<&'static str>, client_gone: bool) {
        if let Some(hook) = self.on_end.take() {
            let usage = self.rewriter.usage();
            let usage_partial = usage.is_some() && !self.rewriter.usage_final();
            // Captured text only matters when there is no final output count to bill from.
            let generated = if usage.is_none() || usage_partial { self.rewriter.take_generated() } else { None };
            hook(StreamEnd {
                usage,
                usage_partial,
                finish_reason: self.rewriter.finish_reason(),
                generated,
                error,
                client_gone,
                chunks: self.chunks,
                time_to_first_chunk: self.time_to_first_chunk,
                gaps: std::mem::take(&mut self.gaps),
            });
        }
    }

    /// The client-facing body: `first` (already produced), then the rest as it arrives. `on_end`
    /// runs exactly once — at the end, after an in-band error, or when the body is dropped
    /// because the client went away (dropping it also drops, and so cancels, the upstream call).
    pub fn into_body(mut self, first: Bytes, on_end: EndHook) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        self.on_end = Some(on_end);
        RelayBody { relay: self, first: Some(first), failed: false }
    }
}

/// The client-facing body of a relay (`Relay::into_body`).
struct RelayBody {
    relay: Relay,
    first: Option<Bytes>,
    /// The in-band error went out: nothing follows.
    failed: bool,
}

impl Stream for RelayBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if this.failed {
            return Poll::Ready(None);
        }
        match this.relay.poll_next_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Ok(None)) => {
                this.relay.report(None, false);
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.relay.report(Some(e.label()), false);
                this.failed = true;
                Poll::Ready(Some(Ok(this.relay.error_frames(&e))))
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let gone = !self.done;
        self.report(None, gone);
    }
}

#[cfg(test)]
mod tests;
