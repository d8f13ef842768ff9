//! The CLI transport (the `cli` dialect, the original service's `LLM_BACKEND=cli`): a
//! command-line model client — by default the Claude Code CLI in stream-json mode — driven
//! through a pool of pre-warmed sessions. Like `mock`, it is an in-process upstream: the answer
//! is produced as OpenAI JSON or SSE bytes, so routing, streaming, usage and the observers treat
//! it like any HTTP upstream.
//!
//! The pure parts: `protocol` (prompt rendering, line decoding) and `shape` (the answer written
//! as OpenAI's). Then `session`, one child process, and `pool`, the sessions of one provider and
//! their supervisor. A session keeps the conversation of the requests it answered, so a request
//! only ever gets a session of its caller's partition (team, or team and key): one team never
//! sees another's prompts.

pub mod pool;
pub mod protocol;
pub mod session;
mod shape;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::api::{ErrorBody, RawObject, Usage, tokens};
use crate::config::{CliProtocol, Config, Dialect};
use crate::ctx::Endpoint;
use crate::ctx::Principal;
use crate::error::GatewayError;
use crate::upstream::UpstreamResponse;
use pool::{AcquireError, Lease, Partition, Pool};
use session::SessionError;
use shape::Shape;

/// The session pools of every `cli` provider, by provider name.
#[derive(Default)]
pub struct Pools {
    pools: BTreeMap<String, Arc<Pool>>,
}

impl Pools {
    /// One (not yet started) pool per `cli` provider; `Pool::supervise` starts each.
    pub fn new(config: &Config) -> Self {
        let mut pools = BTreeMap::new();
        for provider in config.providers.values().chain(config.default_backend.iter()) {
            if let (Dialect::Cli, Some(spec)) = (provider.dialect, &provider.cli) {
                pools.entry(provider.name.clone()).or_insert_with(|| Pool::new(&provider.name, spec.clone()));
            }
        }
        Self { pools }
    }

    pub fn get(&self, provider: &str) -> Option<&Arc<Pool>> {
        self.pools.get(provider)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }
}

/// Answers one request of `principal` through a session of `pool` that serves the principal's
/// partition and no other. `first_byte_by` bounds the wait for a session
/// and, for a non-stream request, the whole answer (an HTTP upstream's status line comes only
/// with its complete answer too). A stream's body reads the session as the client reads the
/// body. The session goes back to the pool once the CLI finished its answer, and is killed if the
/// answer is abandoned (timeout, client gone) or the CLI fails.
pub async fn respond(
    pool: &Arc<Pool>,
    principal: Option<&Principal>,
    endpoint: Endpoint,
    request: &RawObject,
    deployment: &str,
    stream: bool,
    first_byte_by: Instant,
) -> Result<UpstreamResponse, GatewayError> {
    let asked = Instant::now();
    let prompt = match protocol::render_prompt(endpoint, request) {
        Ok(p) => p,
        Err(message) => return Ok(error_response(StatusCode::BAD_REQUEST, &message)),
    };
    let partition = Partition::of(principal, pool.spec.partition_by);
    let mut lease = pool.acquire(&partition, first_byte_by).await.map_err(|e| acquire_error(deployment, e))?;
    let protocol = pool.spec.protocol;
    let (input, close) = match protocol {
        CliProtocol::ClaudeStreamJson => (protocol::user_line(&prompt), false),
        CliProtocol::PlainText => (prompt.clone().into_bytes(), true),
    };
    // A CLI that does not read its input must not hold the request past its first-byte time.
    let sent = match lease.session() {
        Some(session) => match tokio::time::timeout_at(first_byte_by, session.send(&input, close)).await {
            Ok(sent) => sent,
            Err(_) => Err(SessionError::Timeout(first_byte_by.saturating_duration_since(asked))),
        },
        None => Err(SessionError::Protocol("no session".into())),
    };
    if let Err(e) = sent {
        let error = session_error(deployment, &e);
        lease.fail(&e);
        return Err(error);
    }
    tracing::debug!(provider = %pool.provider, session = lease.id(), "cli request sent");

    let reply = Reply {
        lease: Some(lease),
        deployment: deployment.to_owned(),
        protocol,
        shape: Shape::new(endpoint, request, stream),
        answer: protocol::Answer::default(),
        utf8: protocol::Utf8Chunks::default(),
        output_ended: false,
        text: String::new(),
        completion_chars: 0,
        prompt_tokens: tokens::estimate(&prompt).max(1),
        read: 0,
    };
    if !stream {
        return whole_response(reply, deployment, asked, first_byte_by).await;
    }
    let mut headers = HeaderMap::new();
    let body = futures_util::stream::unfold(reply, |mut reply| async move {
        let item = reply.next().await?;
        Some((item, reply))
    })
    .boxed();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(UpstreamResponse { status: StatusCode::OK, headers, body })
}

/// Why no session could be had, as the client sees it.
fn acquire_error(deployment: &str, e: AcquireError) -> GatewayError {
    match e {
        AcquireError::Busy { waited_ms, .. } => GatewayError::UpstreamTimeout {
            deployment: deployment.to_owned(),
            phase: "waiting for a free CLI session",
            after_ms: waited_ms,
        },
        AcquireError::Start(e) => session_error(deployment, &e),
        AcquireError::Closed => {
            GatewayError::Unavailable { message: "The gateway is shutting down.".into(), retry_after_secs: Some(1) }
        }
    }
}

/// A non-streamed answer: the whole reply, read by the first-byte deadline.
async fn whole_response(
    mut reply: Reply,
    deployment: &str,
    asked: Instant,
    first_byte_by: Instant,
) -> Result<UpstreamResponse, GatewayError> {
    let whole = async {
        let mut out = BytesMut::new();
        while let Some(bytes) = reply.next().await {
            out.put(bytes?);
        }
        Ok::<_, GatewayError>(out.freeze())
    };
    // On timeout the reply is dropped, and with it the session (killed).
    let json = tokio::time::timeout_at(first_byte_by, whole).await.map_err(|_| GatewayError::UpstreamTimeout {
        deployment: deployment.to_owned(),
        phase: "first byte",
        after_ms: asked.elapsed().as_millis(),
    })??;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = futures_util::stream::once(async move { Ok(json) }).boxed();
    Ok(UpstreamResponse { status: StatusCode::OK, headers, body })
}

/// One answer being read from a session.
struct Reply {
    lease: Option<Lease>,
    deployment: String,
    protocol: CliProtocol,
    shape: Shape,
    answer: protocol::Answer,
    utf8: protocol::Utf8Chunks,
    /// Plain text: the CLI closed its output (what remains is its exit status).
    output_ended: bool,
    /// The whole answer, for non-stream responses (bounded by `max_output_bytes`).
    text: String,
    completion_chars: u64,
    prompt_tokens: u64,
    read: usize,
}

impl Reply {
    /// The next body bytes: SSE frames or, at the end, the JSON answer; empty bytes for output
    /// that carries no text (it still shows the CLI is alive to the idle timeout).
    async fn next(&mut self) -> Option<Result<Bytes, GatewayError>> {
        self.lease.as_ref()?;
        match self.step().await {
            Ok(protocol::Step::Text(text)) => {
                self.completion_chars += text.chars().count() as u64;
                if self.shape.stream {
                    Some(Ok(self.shape.delta_frame(&text)))
                } else {
                    self.text.push_str(&text);
                    Some(Ok(Bytes::new()))
                }
            }
            Ok(protocol::Step::Nothing) => Some(Ok(Bytes::new())),
            Ok(protocol::Step::Done(done)) => {
                let lease = self.lease.take()?;
                if let Some(message) = done.error {
                    // The CLI answered properly, with an error of its own: the session is fine.
                    lease.done();
                    let body = ErrorBody::new(
                        format!("The CLI reported an error: {message}"),
                        "upstream_error",
                        None,
                        Some("cli_error"),
                    );
                    return Some(Err(GatewayError::UpstreamStatus {
                        status: StatusCode::BAD_GATEWAY,
                        body,
                        retry_after: None,
                    }));
                }
                lease.done();
                let mut last = String::new();
                if !self.answer.emitted_any()
                    && let Some(text) = done.text
                {
                    self.completion_chars += text.chars().count() as u64;
                    last = text;
                }
                let usage = done.usage.unwrap_or_else(|| {
                    let completion = self.completion_chars.div_ceil(4);
                    Usage {
                        prompt_tokens: self.prompt_tokens,
                        completion_tokens: completion,
                        total_tokens: self.prompt_tokens + completion,
                        ..Default::default()
                    }
                });
                Some(Ok(self.final_bytes(&last, usage)))
            }
            Err(e) => {
                let lease = self.lease.take()?;
                let error = session_error(&self.deployment, &e);
                lease.fail(&e);
                Some(Err(error))
            }
        }
    }

    /// Reads the session until it says something: text, nothing of interest, or the end.
    async fn step(&mut self) -> Result<protocol::Step, SessionError> {
        let lease = self.lease.as_mut().ok_or_else(|| SessionError::Protocol("no session".into()))?;
        let (limit_line, limit_output) = (lease.spec().max_line_bytes, lease.spec().max_output_bytes);
        let session = lease.session().ok_or_else(|| SessionError::Protocol("no session".into()))?;
        match self.protocol {
            CliProtocol::ClaudeStreamJson => {
                let Some(line) = session.next_line(limit_line).await.map_err(|e| session.exited_or(e))? else {
                    return Err(session.end_of_output().await);
                };
                self.read += line.len() + 1;
                if self.read > limit_output {
                    return Err(SessionError::OutputTooLarge { limit: limit_output });
                }
                let event = protocol::parse_line(&line).map_err(SessionError::Protocol)?;
                Ok(self.answer.on_event(event))
            }
            CliProtocol::PlainText if !self.output_ended => {
                match session.next_chunk().await.map_err(|e| session.exited_or(e))? {
                    Some(chunk) => {
                        self.read += chunk.len();
                        if self.read > limit_output {
                            return Err(SessionError::OutputTooLarge { limit: limit_output });
                        }
                        Ok(text_step(self.utf8.push(&chunk)))
                    }
                    None => {
                        self.output_ended = true;
                        Ok(text_step(self.utf8.finish()))
                    }
                }
            }
            CliProtocol::PlainText => match session.wait_exit(std::time::Duration::from_secs(5)).await {
                Some(status) if status.success() => {
                    Ok(protocol::Step::Done(protocol::Completion { text: None, usage: None, error: None }))
                }
                Some(status) => Err(SessionError::Exited(session.describe_exit_settled(status).await)),
                None => Err(SessionError::Exited("closed its output but did not exit".into())),
            },
        }
    }

    /// The end of the answer: for streams the last text (if any) and the closing frames;
    /// otherwise the whole JSON response.
    fn final_bytes(&mut self, last_text: &str, usage: Usage) -> Bytes {
        if self.shape.stream {
            return self.shape.stream_end(last_text, usage);
        }
        self.text.push_str(last_text);
        self.shape.whole(&self.text, usage)
    }
}

fn text_step(text: String) -> protocol::Step {
    if text.is_empty() { protocol::Step::Nothing } else { protocol::Step::Text(text) }
}

/// A session failure as the client sees it: 502 (the CLI could not start, broke off or broke
/// its protocol) — retryable on another deployment before the first byte, like any upstream.
fn session_error(deployment: &str, e: &SessionError) -> GatewayError {
    match e {
        SessionError::Spawn { .. } => {
            GatewayError::UpstreamUnreachable { deployment: deployment.to_owned(), detail: e.to_string() }
        }
        SessionError::Timeout(after) => GatewayError::UpstreamTimeout {
            deployment: deployment.to_owned(),
            phase: "writing the request to the CLI",
            after_ms: after.as_millis(),
        },
        SessionError::Reported(message) => GatewayError::UpstreamStatus {
            status: StatusCode::BAD_GATEWAY,
            body: ErrorBody::new(
                format!("The CLI reported an error: {message}"),
                "upstream_error",
                None,
                Some("cli_error"),
            ),
            retry_after: None,
        },
        _ => GatewayError::UpstreamProtocol { deployment: deployment.to_owned(), detail: e.to_string() },
    }
}

fn error_response(status: StatusCode, message: &str) -> UpstreamResponse {
    let body = ErrorBody::new(message, "invalid_request_error", None, None);
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    UpstreamResponse { status, headers, body: futures_util::stream::once(async move { Ok(bytes) }).boxed() }
}
