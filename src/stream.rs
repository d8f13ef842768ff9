//! Streaming: upstream bytes → SSE events → rewritten chunks → client frames, as they arrive.
//! Nothing is buffered beyond one event. Before the first frame is handed out, failures are
//! ordinary errors (the caller may retry or answer with an error status); after it, a failure
//! becomes an in-band SSE error event followed by a clean `[DONE]`. Exactly one end-of-stream
//! report is made per stream: on completion, on error, or when the client goes away.

// The SSE framing the relay reads, from the wire vocabulary (and still reachable here).
pub use crate::api::sse;
pub use crate::api::sse::{data_frame, data_frame_with};

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::Instant;

use crate::api::sse::{SseDecoder, SseEvent};
use crate::api::{ErrorBody, Usage};
use crate::ctx::{ChunkGaps, Generated};
use crate::error::GatewayError;

/// An upstream's answer body as it arrives.
pub type BodyStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, GatewayError>> + Send>>;

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
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::StreamExt;

    use super::*;
    use crate::adapter::anthropic::passthrough::MessagesRelay;
    use crate::adapter::anthropic::stream::ClaudeChunks;
    use crate::adapter::openai::OpenAiChunks;

    const MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"up\",\"content\":[],\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n";

    fn text_delta(text: &str) -> String {
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
        )
    }

    /// Relays `upstream` (then an upstream that dies, or one that stalls), reading `read` frames
    /// before the client hangs up (`None`: to the end); returns the end-of-stream report.
    async fn relay(
        upstream: Vec<String>,
        dies: bool,
        read: Option<usize>,
        rewriter: Box<dyn ChunkRewriter>,
    ) -> StreamEnd {
        let mut items: Vec<Result<Bytes, GatewayError>> = upstream.into_iter().map(|s| Ok(Bytes::from(s))).collect();
        if dies {
            items.push(Err(GatewayError::UpstreamProtocol {
                deployment: "d".into(),
                detail: "connection reset".into(),
            }));
        }
        let tail = if dies || read.is_none() {
            futures_util::stream::empty().boxed()
        } else {
            futures_util::stream::pending().boxed()
        };
        let body: BodyStream = Box::pin(futures_util::stream::iter(items).chain(tail));
        let far = Instant::now() + Duration::from_secs(60);
        let mut relay = Relay::new(body, rewriter, "d".into(), Duration::from_secs(60), far, std::time::Instant::now());
        let first = relay.next_frame().await.unwrap().unwrap();
        let ended = Arc::new(Mutex::new(None));
        let slot = ended.clone();
        let body = relay.into_body(first, Box::new(move |end| *slot.lock().unwrap() = Some(end)));
        match read {
            Some(n) => drop(body.take(n).collect::<Vec<_>>().await),
            None => drop(body.collect::<Vec<_>>().await),
        }
        ended.lock().unwrap().take().expect("one report")
    }

    fn text(end: &StreamEnd) -> String {
        let generated = end.generated.as_ref().expect("generated text for a local count");
        (generated.text)(&generated.fragments)
    }

    #[tokio::test]
    async fn an_anthropic_stream_cut_after_message_start_reports_partial_usage_and_the_text() {
        let upstream = vec![MESSAGE_START.to_owned(), text_delta("Hello"), text_delta(" world")];
        let openai_client = || Box::new(ClaudeChunks::new("claude", 1, false)) as Box<dyn ChunkRewriter>;
        let anthropic_client = || Box::new(MessagesRelay::new("claude")) as Box<dyn ChunkRewriter>;
        for make in [openai_client, anthropic_client] {
            // The upstream dies mid-stream.
            let end = relay(upstream.clone(), true, None, make()).await;
            assert!(end.error.is_some() && !end.client_gone);
            let usage = end.usage.unwrap();
            assert_eq!((usage.prompt_tokens, usage.completion_tokens, end.usage_partial), (42, 1, true));
            assert_eq!(text(&end), "Hello world");

            // The client hangs up after two frames (message_start, "Hello"); the upstream stalls.
            let end = relay(upstream.clone(), false, Some(2), make()).await;
            assert!(end.client_gone && end.error.is_none());
            assert!(end.usage_partial);
            assert_eq!(end.usage.unwrap().prompt_tokens, 42);
            // The relay reads upstream only as fast as the client does: " world" never came.
            assert_eq!(text(&end), "Hello");
        }
    }

    #[tokio::test]
    async fn a_complete_anthropic_stream_reports_final_usage_and_keeps_no_text() {
        let mut upstream = vec![MESSAGE_START.to_owned(), text_delta("Hello")];
        upstream.push("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
        let end = relay(upstream, false, None, Box::new(MessagesRelay::new("claude"))).await;
        let usage = end.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, end.usage_partial), (42, 2, false));
        assert!(end.generated.is_none());
    }

    #[tokio::test]
    async fn openai_streams_are_unchanged_usage_is_final_text_only_without_it() {
        let chunk = |body: &str| format!("data: {{\"id\":\"c\",\"model\":\"up\",{body}}}\n\n");
        let content = chunk(r#""choices":[{"index":0,"delta":{"content":"Hi"}}]"#);
        let usage = chunk(r#""choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}"#);
        let end = relay(
            vec![content.clone(), usage, "data: [DONE]\n\n".into()],
            false,
            None,
            Box::new(OpenAiChunks::new("m", true)),
        )
        .await;
        assert!(!end.usage_partial && end.generated.is_none());
        let end = relay(vec![content], true, None, Box::new(OpenAiChunks::new("m", true))).await;
        assert!(end.usage.is_none() && !end.usage_partial);
        assert_eq!(text(&end), "Hi");
    }

    /// An upstream event past the provider's bound ends the stream with an in-band error that
    /// names the bound, after the frames that went out before it.
    #[tokio::test]
    async fn an_event_past_the_bound_ends_the_stream_with_an_error_naming_it() {
        let chunk = |text: &str| {
            format!(
                "data: {{\"id\":\"c\",\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
            )
        };
        let upstream = [chunk("Hi"), chunk(&"x".repeat(2048))].map(|c| Ok(Bytes::from(c)));
        let body: BodyStream = Box::pin(futures_util::stream::iter(upstream));
        let far = Instant::now() + Duration::from_secs(60);
        let started = std::time::Instant::now();
        let mut relay = Relay::new(
            body,
            Box::new(OpenAiChunks::new("m", false)),
            "d".into(),
            Duration::from_secs(60),
            far,
            started,
        )
        .max_event_bytes(1024);
        let first = relay.next_frame().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("Hi"));
        let ended = Arc::new(Mutex::new(None));
        let slot = ended.clone();
        let frames: Vec<Bytes> = relay
            .into_body(first, Box::new(move |end| *slot.lock().unwrap() = Some(end)))
            .map(|frame| frame.unwrap())
            .collect()
            .await;
        let last = String::from_utf8_lossy(frames.last().unwrap()).into_owned();
        assert!(last.contains("exceeded 1024 bytes") && last.contains("max_event_bytes"), "{last}");
        assert!(last.ends_with("data: [DONE]\n\n"), "{last}");
        assert_eq!(ended.lock().unwrap().take().expect("one report").error, Some("upstream_protocol"));
    }

    /// A stream waiting for its upstream holds no more than it has not relayed: not the buffer
    /// a large event grew, nor that of a burst of events.
    #[tokio::test]
    async fn a_waiting_relay_holds_no_buffer_a_burst_grew() {
        let chunk = |text: &str| {
            format!(
                "data: {{\"id\":\"c\",\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
            )
        };
        let large = chunk(&"x".repeat(60_000));
        let burst: String = (0..100).map(|i| chunk(&i.to_string())).collect();
        // The upstream's reads, sent one at a time.
        let (read, reads) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let body: BodyStream = Box::pin(futures_util::stream::unfold(reads, |mut reads| async move {
            reads.recv().await.map(|bytes| (Ok(bytes), reads))
        }));
        let far = Instant::now() + Duration::from_secs(60);
        let rewriter = Box::new(OpenAiChunks::new("m", false));
        let mut relay = Relay::new(body, rewriter, "d".into(), Duration::from_secs(60), far, std::time::Instant::now());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The large event in two reads, then a wait with the next one's start buffered.
        for piece in [&large[..30_000], &large[30_000..], &burst[..10]] {
            read.send(Bytes::copy_from_slice(piece.as_bytes())).unwrap();
        }
        let Poll::Ready(Ok(Some(frame))) = relay.poll_next_frame(&mut cx) else { panic!("no frame") };
        assert!(frame.len() > 60_000);
        assert!(relay.poll_next_frame(&mut cx).is_pending());
        let held = relay.decoder.buffer_capacity();
        assert!(held <= 1024, "the decoder holds {held} bytes for 10");
        // A hundred events in one read, relayed, then a wait.
        read.send(Bytes::copy_from_slice(&burst.as_bytes()[10..])).unwrap();
        let mut frames = 0;
        while let Poll::Ready(Ok(Some(_))) = relay.poll_next_frame(&mut cx) {
            frames += 1;
        }
        assert_eq!(frames, 100);
        assert_eq!(relay.decoder.buffer_capacity(), 0);
    }

    /// The idle gap is timed from the last chunk, not from the start: chunks that come 100 ms
    /// apart pass a 300 ms idle timeout however long the stream runs, and a stall after them
    /// ends the stream with the in-band error once 300 ms pass.
    #[tokio::test]
    async fn the_idle_timeout_runs_from_the_last_chunk() {
        let chunk = |i: u32| {
            format!(
                "data: {{\"id\":\"c\",\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{i}\"}}}}]}}\n\n"
            )
        };
        let spaced = futures_util::stream::unfold(0u32, move |i| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            (i < 8).then(|| (Ok(Bytes::from(chunk(i))), i + 1))
        });
        let body: BodyStream = Box::pin(spaced.chain(futures_util::stream::pending()));
        let started = std::time::Instant::now();
        let far = Instant::now() + Duration::from_secs(60);
        let idle = Duration::from_millis(300);
        let mut relay = Relay::new(body, Box::new(OpenAiChunks::new("m", false)), "d".into(), idle, far, started);
        let first = relay.next_frame().await.unwrap().unwrap();
        let ended = Arc::new(Mutex::new(None));
        let slot = ended.clone();
        let frames: Vec<Bytes> = relay
            .into_body(first, Box::new(move |end| *slot.lock().unwrap() = Some(end)))
            .map(|frame| frame.unwrap())
            .collect()
            .await;
        let text: Vec<String> = frames.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
        // Eight chunks over 800 ms, then the error and the end.
        assert_eq!(text.iter().filter(|f| f.contains("\"delta\"")).count(), 8, "{text:?}");
        assert!(text.last().unwrap().contains("idle between chunks"), "{text:?}");
        assert!(started.elapsed() >= Duration::from_millis(1100), "the stall was cut short: {:?}", started.elapsed());
        let end = ended.lock().unwrap().take().expect("one report");
        assert_eq!(end.error, Some("upstream_timeout"));
    }
}
