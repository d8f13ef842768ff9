//! Plain-HTTP/1.1 upstreams (the self-hosted servers: vLLM, Ollama, TGI, llama.cpp on the
//! cluster network): connections and an HTTP/1.1 client codec of our own, driven by the task
//! that reads the answer.
//!
//! The gateway sends one kind of request — a `POST` with a `Content-Length` body, its head
//! mostly fixed per provider and path — and reads answers framed by `Content-Length`, chunked
//! transfer coding or the connection's close. That is all this client does: the request is
//! written while the connection is read (an upstream may answer before taking all of it), the
//! answer's head is parsed with `httparse` and held to RFC 9112's CRLF and length rules (a
//! property test compares the framing with hyper's client on the same bytes), its body is decoded
//! from the connection's read buffer by whoever polls the body — the client's connection task —
//! so the upstream's bytes are read, decoded and forwarded in one place, and the pieces of body
//! that arrived together leave together. TLS upstreams (and HTTP/2) keep hyper-util's pooled
//! client.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

pub use crate::http::h1::Error;
use crate::http::h1::{Chunk, Framing, Pieces, has_token, last_token, same_length, trimmed, visible};

/// Idle connections kept per provider and thread at most.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is not reused (servers close theirs sooner or later).
const IDLE_FOR: Duration = Duration::from_secs(60);
/// An answer's status line and headers may take this much at most.
const MAX_HEAD: usize = 64 * 1024;
/// Header lines in an answer at most.
const MAX_HEADERS: usize = 100;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// Why an exchange failed, and whether the upstream can have seen the request.
struct Failed {
    error: Error,
    /// No byte of the request was written: the upstream cannot have acted on it.
    unsent: bool,
}

/// Where an exchange is: how much of the request went out, and what came back meanwhile.
#[derive(Default)]
struct Sending {
    written: usize,
    /// Writing failed: an answer already on its way may still be read.
    failed: Option<io::Error>,
    /// A success that came before the whole request was written: it is returned once it is.
    early: Option<Head>,
}

/// Why a request got no answer.
pub enum SendError {
    Connect(io::Error),
    Http(Error),
}

/// One connection and the bytes read from it that are not consumed yet.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Reads what the socket has into the buffer: `Ready(Ok(0))` at its end. Room is made only
    /// once the socket is readable, and the buffer is trimmed before a wait (`trimmed`).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self.io.poll_read_ready(cx) {
            Poll::Pending => {
                self.trim();
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        self.buf.reserve(READ_SIZE);
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if read.is_pending() {
            // (The readiness was stale.)
            self.trim();
        }
        read
    }

    /// Sizes the read buffer to what it holds before a wait: an empty one is let go (the pieces
    /// of body handed out keep their own bytes alive, and free them once relayed), a small
    /// remainder (a partial chunk-size line) is moved to a buffer of its size. A larger one (a
    /// head arriving in pieces) stays where it is, so that it is not copied again at every read.
    fn trim(&mut self) {
        self.buf = trimmed(std::mem::take(&mut self.buf));
    }

    /// Whether an idle connection can take a request: the server has neither closed it nor
    /// sent anything unasked (costs a system call only when the socket became readable).
    fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: a close or unasked bytes, or only readiness left over from the last
            // read of the previous answer.
            Poll::Ready(Ok(())) => matches!(self.poll_read(&mut cx), Poll::Pending),
        }
    }

    /// Writes the request and reads the answer's status line and headers. The connection is
    /// read while the request is written: an upstream may answer before it has taken the whole
    /// request (a `413`, an authentication failure) and read no more of it (RFC 9112 §9.5).
    async fn exchange(&mut self, request: &[u8]) -> Result<Head, Failed> {
        let mut sending = Sending::default();
        std::future::poll_fn(|cx| self.poll_exchange(cx, request, &mut sending)).await
    }

    fn poll_exchange(&mut self, cx: &mut Context<'_>, request: &[u8], s: &mut Sending) -> Poll<Result<Head, Failed>> {
        loop {
            if s.written < request.len() && s.failed.is_none() {
                match Pin::new(&mut self.io).poll_write(cx, &request[s.written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        s.written += n;
                        continue;
                    }
                    Poll::Ready(Ok(_)) => s.failed = Some(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Err(e)) => s.failed = Some(e),
                    Poll::Pending => {}
                }
                // Nothing of the request went out: it may go on another connection.
                if s.written == 0
                    && let Some(e) = s.failed.take()
                {
                    return Poll::Ready(Err(Failed { error: Error::Io(e), unsent: true }));
                }
            }
            let sent = s.written == request.len();
            if let Some(mut head) = s.early.take() {
                if sent {
                    return Poll::Ready(Ok(head));
                }
                if s.failed.is_some() {
                    head.keep_alive = false;
                    return Poll::Ready(Ok(head));
                }
                s.early = Some(head);
            }
            // While an early success waits for the request's end, its body is read ahead only
            // so far.
            if s.early.is_some() && self.buf.len() >= MAX_HEAD {
                return Poll::Pending;
            }
            match self.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if let Some(mut head) = s.early.take() {
                        // (Its framing tells whether the body came whole.)
                        head.keep_alive = false;
                        return Poll::Ready(Ok(head));
                    }
                    let error = s.failed.take().map_or(Error::Closed, Error::Io);
                    return Poll::Ready(Err(Failed { error, unsent: s.written == 0 }));
                }
                Poll::Ready(Ok(_)) if s.early.is_some() => {}
                Poll::Ready(Ok(_)) => {
                    let failed = |error| Failed { error, unsent: false };
                    while let Some(mut head) = parse_head(&mut self.buf).map_err(failed)? {
                        // Interim answers (`100 Continue`, `103 Early Hints`) precede the real one.
                        if head.status.is_informational() {
                            continue;
                        }
                        if sent {
                            return Poll::Ready(Ok(head));
                        }
                        if !head.status.is_success() || s.failed.is_some() {
                            // Refused before the whole request was taken: the rest is not sent,
                            // and the connection, which carried part of a request, is not reused.
                            head.keep_alive = false;
                            return Poll::Ready(Ok(head));
                        }
                        s.early = Some(head);
                        break;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed { error: Error::Io(e), unsent: s.written == 0 })),
            }
        }
    }
}

/// An answer's status line and headers, and how its body is framed.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request after this answer.
    keep_alive: bool,
}

/// Parses a complete answer head at the front of `buf` and consumes it; `None` while incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Slots left uninitialised: filling a hundred of them would cost more than the parse.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let length =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(Error::Invalid("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
            Err(_) => return Err(Error::Invalid("malformed status line or headers")),
        };
    let status =
        response.code.and_then(|code| StatusCode::from_u16(code).ok()).ok_or(Error::Invalid("bad status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Only the answer to a request that asks for an upgrade, which the gateway never does;
        // the connection speaks another protocol after it, so it is neither read on nor reused.
        return Err(Error::Invalid("101 Switching Protocols to a request without Upgrade"));
    }
    // RFC 9112 ends every line with CRLF. httparse also takes a bare LF (which §2.2 allows a
    // recipient): refused here, since a bare LF that one parser takes for a line end and
    // another for data is how answers are split.
    if memchr::memchr_iter(b'\n', &buf[..length]).any(|at| at == 0 || buf[at - 1] != b'\r') {
        return Err(Error::Invalid("bare LF in the response head"));
    }
    let http11 = response.version == Some(1);
    let mut keep_alive = http11;
    let mut chunked = false;
    let mut transfer_coded = false;
    // `Err` once a value is not a length, or not the same length as another: an error only
    // when the length frames the body (a transfer coding overrides it).
    let mut content_length: Result<Option<u64>, ()> = Ok(None);
    // The headers of a success are not kept: the gateway frames its own answer and reads
    // nothing from them (from an error it reads `Retry-After`).
    let keep = !status.is_success();
    let mut headers = HeaderMap::with_capacity(if keep { response.headers.len() } else { 0 });
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_coded = true;
            // Chunked only when it is the last coding applied (of the last such header).
            chunked = visible(header.value) && last_token(header.value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_length = content_length.and_then(|seen| same_length(seen, header.value));
        } else if name.eq_ignore_ascii_case(b"connection") && has_token(header.value, b"close") {
            keep_alive = false;
        }
        if keep {
            let name = HeaderName::from_bytes(name).map_err(|_| Error::Invalid("bad header name"))?;
            let value = HeaderValue::from_bytes(header.value).map_err(|_| Error::Invalid("bad header value"))?;
            headers.append(name, value);
        }
    }
    let framing = framing(status, http11, transfer_coded, chunked, content_length)?;
    if transfer_coded && !matches!(content_length, Ok(None)) {
        // Both framings: the coding wins, but the message may be an attempt to split answers
        // (RFC 9112 §6.3): the connection is not trusted with another request.
        keep_alive = false;
    }
    if matches!(framing, Framing::ToEnd) {
        keep_alive = false;
    }
    buf.advance(length);
    Ok(Some(Head { status, headers, framing, keep_alive }))
}

/// How the body is delimited (RFC 9112 §6.3): none for 1xx, 204 and 304, then the transfer
/// coding, then `Content-Length`, else the end of the connection.
fn framing(
    status: StatusCode,
    http11: bool,
    transfer_coded: bool,
    chunked: bool,
    content_length: Result<Option<u64>, ()>,
) -> Result<Framing, Error> {
    if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Ok(Framing::Length(0))
    } else if transfer_coded && !http11 {
        // An HTTP/1.0 message with a transfer coding has faulty framing (RFC 9112 §6.1).
        Err(Error::Invalid("transfer-encoding in an HTTP/1.0 response"))
    } else if chunked {
        Ok(Framing::Chunked(Chunk::Size))
    } else if transfer_coded {
        // Another transfer coding last: the body ends with the connection.
        Ok(Framing::ToEnd)
    } else {
        match content_length {
            Ok(Some(length)) => Ok(Framing::Length(length)),
            Ok(None) => Ok(Framing::ToEnd),
            Err(()) => Err(Error::Invalid("bad content-length")),
        }
    }
}

/// Idle lists per pool: a connection goes back to the list of the thread that used it.
const SHARDS: usize = 16;

/// The idle connections to one upstream, kept per thread: the gateway serves each connection
/// on one thread's event loop, and an upstream connection registered with that loop is
/// best reused there (from another thread it would work, at a cross-thread wake-up per read).
#[derive(Default)]
pub struct Pool {
    idle: [Mutex<Vec<(Conn, Instant)>>; SHARDS],
}

/// This thread's idle list.
fn shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// An answer whose status and headers are in; its body is read from the connection.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: H1Body,
}

impl Pool {
    fn checkout(&self) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.idle[shard()].lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if since.elapsed() < IDLE_FOR && conn.usable() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, mut conn: Conn) {
        if conn.usable() {
            // (Empty, as `usable` requires: an idle connection keeps no read buffer.)
            conn.trim();
            let mut idle = self.idle[shard()].lock().unwrap_or_else(|p| p.into_inner());
            // The oldest are first: those idle too long are closed now rather than at a checkout.
            let now = Instant::now();
            let stale = idle.iter().take_while(|(_, since)| now.duration_since(*since) >= IDLE_FOR).count();
            idle.drain(..stale);
            if idle.len() < MAX_IDLE {
                idle.push((conn, now));
            }
        }
    }

    /// Sends `request` (a whole HTTP/1.1 request: head and body) on an idle connection or a new
    /// one to `addr`, and waits for the answer's status line and headers. A reused connection
    /// that took no byte of the request (the server had closed it meanwhile) is replaced by a
    /// new one; once any byte went out, the server may have acted on the request, and a `POST`
    /// is not sent again (RFC 9112 §9.3.1).
    pub async fn send(
        self: &Arc<Self>,
        addr: &str,
        connect_timeout: Duration,
        request: &[u8],
    ) -> Result<Answer, SendError> {
        let mut reused = true;
        loop {
            let idle = if reused { self.checkout() } else { None };
            let mut conn = match idle {
                Some(conn) => conn,
                None => {
                    reused = false;
                    connect(addr, connect_timeout).await.map_err(SendError::Connect)?
                }
            };
            match conn.exchange(request).await {
                Ok(head) => {
                    let body = H1Body {
                        conn: Some(conn),
                        framing: head.framing,
                        keep_alive: head.keep_alive,
                        pool: self.clone(),
                        pending: None,
                    };
                    return Ok(Answer { status: head.status, headers: head.headers, body });
                }
                Err(failed) if reused && failed.unsent => reused = false,
                Err(failed) => return Err(SendError::Http(failed.error)),
            }
        }
    }
}

async fn connect(addr: &str, timeout: Duration) -> io::Result<Conn> {
    let io = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    io.set_nodelay(true)?;
    Ok(Conn { io, buf: BytesMut::new() })
}

/// An answer's body, read from its connection; the connection goes back to the pool once the
/// body is complete, and is closed if the body is dropped before (which cancels the upstream's
/// work).
pub struct H1Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
    /// An error met while handing on data that came before it.
    pending: Option<Error>,
}

impl H1Body {
    /// The body is complete: the connection goes back to the pool if it can carry another
    /// request (`checkin` refuses one with anything unasked after the body).
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
        {
            self.pool.checkin(conn);
        }
    }

    fn fail(&mut self, e: Error, out: &mut Pieces) -> Poll<Option<Result<Bytes, Error>>> {
        self.conn = None;
        match out.take() {
            None => Poll::Ready(Some(Err(e))),
            Some(data) => {
                self.pending = Some(e);
                Poll::Ready(Some(Ok(data)))
            }
        }
    }
}

impl Stream for H1Body {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(e) = this.pending.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let mut out = Pieces::default();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(out.take().map(Ok)) };
            match this.framing.decode(&mut conn.buf, &mut out) {
                Ok(true) => {
                    this.finish();
                    return Poll::Ready(out.take().map(Ok));
                }
                Ok(false) => {}
                Err(e) => return this.fail(e, &mut out),
            }
            // What the last read brought is handed on before reading again.
            if !out.is_empty() {
                return Poll::Ready(out.take().map(Ok));
            }
            match conn.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let end = this.framing.at_eof();
                    this.conn = None;
                    return match end {
                        Ok(()) => Poll::Ready(None),
                        Err(e) => this.fail(e, &mut out),
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(Error::Io(e), &mut out),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod props;

#[cfg(test)]
mod tests;
