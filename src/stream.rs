//! Streaming: upstream bytes → SSE events → rewritten chunks → client frames, as they arrive.
//! Nothing is buffered beyond one event. Before the first frame is handed out, failures are
//! ordinary errors (the caller may retry or answer with an error status); after it, a failure
//! becomes an in-band SSE error event followed by a clean `[DONE]`. Exactly one end-of-stream
//! report is made per stream: on completion, on error, or when the client goes away.

pub mod sse;

use std::convert::Infallible;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use crate::adapter::{ChunkAction, ChunkRewriter};
use crate::api::{ErrorBody, Usage};
use crate::error::GatewayError;
use crate::upstream::BodyStream;
use sse::SseDecoder;

const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// How a stream ended, for the observers.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    pub usage: Option<Usage>,
    pub error: Option<&'static str>,
    pub client_gone: bool,
    pub chunks: u32,
    pub time_to_first_chunk: Option<Duration>,
}

pub type EndHook = Box<dyn FnOnce(StreamEnd) + Send>;

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
    chunks: u32,
    time_to_first_chunk: Option<Duration>,
    on_end: Option<EndHook>,
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
            chunks: 0,
            time_to_first_chunk: None,
            on_end: None,
        }
    }

    /// The next frame for the client (`data: ...\n\n`), `None` once the stream is complete.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, GatewayError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let event = match self.decoder.next_event() {
                Ok(Some(event)) => Some(event),
                Ok(None) if self.upstream_ended => self.decoder.finish().map_err(|e| self.protocol(e.to_string()))?,
                Ok(None) => None,
                Err(e) => return Err(self.protocol(e.to_string())),
            };
            if let Some(event) = event {
                match self.rewriter.rewrite(&event.data) {
                    ChunkAction::Forward(json) => {
                        self.chunks += 1;
                        if self.time_to_first_chunk.is_none() {
                            self.time_to_first_chunk = Some(self.request_started.elapsed());
                        }
                        return Ok(Some(data_frame(&json)));
                    }
                    ChunkAction::Skip => continue,
                    ChunkAction::Done => {
                        self.done = true;
                        return Ok(Some(Bytes::from_static(DONE_FRAME)));
                    }
                    ChunkAction::Error(body) => {
                        return Err(GatewayError::UpstreamStatus {
                            status: http::StatusCode::BAD_GATEWAY,
                            body,
                            retry_after: None,
                        });
                    }
                }
            }
            if self.upstream_ended {
                // The upstream closed cleanly without `[DONE]` (some servers do): end it properly.
                self.done = true;
                return Ok(Some(Bytes::from_static(DONE_FRAME)));
            }
            let now = Instant::now();
            let wake = (now + self.idle).min(self.deadline);
            match tokio::time::timeout_at(wake, self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.decoder.push(&bytes),
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => self.upstream_ended = true,
                Err(_) => {
                    return Err(GatewayError::UpstreamTimeout {
                        deployment: self.deployment.clone(),
                        phase: if Instant::now() >= self.deadline { "total" } else { "idle between chunks" },
                        after_ms: now.elapsed().as_millis() + self.idle.as_millis().min(1),
                    });
                }
            }
        }
    }

    fn protocol(&self, detail: String) -> GatewayError {
        GatewayError::UpstreamProtocol { deployment: self.deployment.clone(), detail }
    }

    fn report(&mut self, error: Option<&'static str>, client_gone: bool) {
        if let Some(hook) = self.on_end.take() {
            hook(StreamEnd {
                usage: self.rewriter.usage(),
                error,
                client_gone,
                chunks: self.chunks,
                time_to_first_chunk: self.time_to_first_chunk,
            });
        }
    }

    /// The client-facing body: `first` (already produced), then the rest as it arrives. `on_end`
    /// runs exactly once — at the end, after an in-band error, or when the body is dropped
    /// because the client went away (dropping it also drops, and so cancels, the upstream call).
    pub fn into_body(mut self, first: Bytes, on_end: EndHook) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        self.on_end = Some(on_end);
        let state = (self, Some(first), false);
        futures_util::stream::unfold(state, |(mut relay, first, failed)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (relay, None, failed)));
            }
            if failed {
                return None;
            }
            match relay.next_frame().await {
                Ok(Some(frame)) => Some((Ok(frame), (relay, None, false))),
                Ok(None) => {
                    relay.report(None, false);
                    None
                }
                Err(e) => {
                    relay.report(Some(e.label()), false);
                    let mut frames = BytesMut::new();
                    frames.put_slice(&data_frame(&error_json(&e)));
                    frames.put_slice(DONE_FRAME);
                    Some((Ok(frames.freeze()), (relay, None, true)))
                }
            }
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let gone = !self.done;
        self.report(None, gone);
    }
}

fn error_json(e: &GatewayError) -> Vec<u8> {
    let mut body: ErrorBody = e.body();
    if matches!(e, GatewayError::UpstreamStatus { .. }) && body.error.code.is_none() {
        body.error.code = Some("upstream_stream_error".into());
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

fn data_frame(json: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(json.len() + 8);
    frame.put_slice(b"data: ");
    frame.put_slice(json);
    frame.put_slice(b"\n\n");
    frame.freeze()
}
