//! HTTP/1.1 client connections, served by a codec of our own.
//!
//! Why not hyper's HTTP/1 server, which served them before: it holds two 8 KiB buffers per
//! connection for the connection's whole life (a read buffer of `INIT_BUFFER_SIZE` and a write
//! buffer allocated at that size; its server builder, unlike its client's, sizes neither). A heap
//! profile of 2,000 idle streams (heaptrack, `benches/README.md`) put them at 16.7 of the 23.6 KB a
//! stream held; an agent session holds its stream for minutes, and a pod's streams are what its
//! memory limit is spent on. Here a connection holds a read buffer only while a request head or
//! body is arriving, and an answer's bytes only until the socket has taken them: between two
//! events a stream holds its connection's state (some 200 bytes) and nothing else.
//!
//! What it does, by RFC 9112: request heads parsed with `httparse` (at most `MAX_HEAD` bytes and
//! `MAX_HEADERS` fields, lines ended by CRLF only), bodies framed by `Content-Length` (digits
//! only; equal repeats allowed) or chunked transfer coding (the framing decoder of
//! `crate::http::h1`), both at once refused, any other transfer coding answered 501;
//! `Expect: 100-continue` answered when the application first reads the body; keep-alive by
//! version and `Connection`; answers framed by their length when known, else chunked (HTTP/1.1)
//! or by the connection's close (HTTP/1.0); `HEAD`, 204 and 304 without a body. One request at a
//! time: a pipelined request waits, read ahead up to `MAX_HEAD` bytes, until the answer before it
//! is sent. A request whose body the application left unread ends its connection after the
//! answer, which is drained a while first (`LINGER`), so that the client reads the answer rather
//! than a reset.
//!
//! A client that closes its connection while its request is handled cancels the handling: the
//! application's future (or its answer's body) is dropped, as hyper's server does, and the
//! gateway's end hook reports the request as `499 client_gone`. The property tests in `props.rs`
//! feed random and mutated requests to this server and to hyper's on the same bytes and compare
//! what the application receives.

use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::net::TcpStream;

use crate::http::h1::{Framing, Pieces, has_token, last_token, same_length, trimmed, visible};

/// A request's line and header fields may take this much at most (else 431).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Header fields in a request at most (else 431).
const MAX_HEADERS: usize = 100;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
/// Answer bytes gathered from ready body frames before they are written.
const WRITE_BATCH: usize = 16 * 1024;
/// An answer buffer larger than this is let go of while its stream waits for an event.
const KEEP_WRITE: usize = 1024;
/// How long, and how many bytes of, an unread request body are drained before its connection
/// closes.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A connection's socket and what has been read from it, shared by the connection's task and
/// the body of the request it serves (which reads the socket when the application reads it).
struct Shared {
    io: Socket,
    input: Mutex<Input>,
}

/// A client connection's socket, and whether its readiness may be cleared after a short read
/// (see `poll_fill`): decided once, when the connection starts.
struct Socket {
    tcp: TcpStream,
    /// The connection is served on a single-threaded runtime (the serving threads' event loops),
    /// which takes in readiness events only while its tasks yield.
    single_threaded: bool,
}

impl Socket {
    fn new(tcp: TcpStream) -> Self {
        let single_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        Self { tcp, single_threaded }
    }
}

impl std::ops::Deref for Socket {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.tcp
    }
}

struct Input {
    /// Bytes read and not yet consumed. Let go of (`trimmed`) before each wait.
    buf: BytesMut,
    /// The current request's body: what is still to come (`Length(0)` once complete).
    framing: Framing,
    /// The body failed (a framing error, or the connection ended within it).
    failed: bool,
    /// How much of a `100 Continue` has been written, while one is owed.
    continue_written: Option<usize>,
}

impl Shared {
    fn input(&self) -> std::sync::MutexGuard<'_, Input> {
        self.input.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Input {
    fn body_done(&self) -> bool {
        matches!(self.framing, Framing::Length(0)) && !self.failed
    }

    fn poll_body(&mut self, io: &Socket, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.failed {
            return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, "the request body failed"))));
        }
        while let Some(written) = self.continue_written {
            if written == CONTINUE.len() {
                self.continue_written = None;
                break;
            }
            match io.try_write(&CONTINUE[written..]) {
                Ok(n) => self.continue_written = Some(written + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(io.poll_write_ready(cx))?,
                Err(e) => return self.fail(e),
            }
        }
        let mut out = Pieces::default();
        loop {
            match self.framing.decode(&mut self.buf, &mut out) {
                Ok(true) => return Poll::Ready(out.take().map(|data| Ok(Bytes::copy_from_slice(&data)))),
                Ok(false) => {}
                Err(e) => return self.fail(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            // A copy: a piece is a view into the read buffer, which the request (whose context
            // keeps its body for as long as it runs) would otherwise keep alive whole.
            if let Some(data) = out.take() {
                return Poll::Ready(Some(Ok(Bytes::copy_from_slice(&data))));
            }
            match poll_fill(io, &mut self.buf, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return self
                        .fail(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed within the body"));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return self.fail(e),
            }
        }
    }

    /// Consumes what is left of the body from the read buffer without reading the socket;
    /// whether the body is complete now.
    fn skip_buffered_body(&mut self) -> bool {
        let mut out = Pieces::default();
        while !self.failed && !self.body_done() {
            let before = self.buf.len();
            match self.framing.decode(&mut self.buf, &mut out) {
                Ok(true) => break,
                Ok(false) if self.buf.len() == before && out.is_empty() => break,
                Ok(false) => drop(out.take()),
                Err(_) => self.failed = true,
            }
        }
        self.body_done()
    }

    fn fail<T>(&mut self, e: io::Error) -> Poll<Option<io::Result<T>>> {
        self.failed = true;
        Poll::Ready(Some(Err(e)))
    }

    /// Resolves once the client has closed the connection (or it failed). What is read
    /// meanwhile (the rest of the body, a pipelined request) joins the read buffer, where the
    /// body's reader and the next head's parser take it from, up to `MAX_HEAD` bytes: past that,
    /// this waits for nothing.
    fn poll_gone(&mut self, io: &Socket, cx: &mut Context<'_>) -> Poll<()> {
        while self.buf.len() < MAX_HEAD {
            match poll_fill(io, &mut self.buf, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
            }
        }
        Poll::Pending
    }
}

/// Reads what the socket has into `buf`: `Ready(Ok(0))` at its end. Room is made only once the
/// socket is readable, and `buf` is let go of before a wait when it is empty.
fn poll_fill(io: &Socket, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    loop {
        if io.poll_read_ready(cx)?.is_pending() {
            *buf = trimmed(std::mem::take(buf));
            return Poll::Pending;
        }
        buf.reserve(READ_SIZE);
        let room = buf.capacity() - buf.len();
        match io.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Ok(n) if n > 0 && n < room && io.single_threaded => {
                // A short read emptied the socket: its readiness is cleared here rather than by
                // a read that would fail with `EAGAIN` (one system call per request). Bytes
                // that come later raise a new readiness event (epoll is edge-triggered), which
                // the event loop takes in only once this task yields: on a single-threaded
                // runtime (the serving threads'), none can be taken in between and lost.
                let _ = io.try_io(tokio::io::Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                return Poll::Ready(Ok(n));
            }
            read => return Poll::Ready(read),
        }
    }
}

/// A request's body, read from its connection as the application polls it.
pub struct Body {
    shared: Option<Arc<Shared>>,
    length: Option<u64>,
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let Some(shared) = &self.shared else { return Poll::Ready(None) };
        let polled = shared.input().poll_body(&shared.io, cx);
        polled.map(|data| data.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.shared.as_ref().is_none_or(|shared| shared.input().body_done())
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

/// A parsed request head: the request without its body, and how the connection goes on.
#[derive(Debug)]
pub(crate) struct Head {
    pub request: Request<()>,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Parses a complete request head at the front of `buf` and consumes it; `None` while
/// incomplete; the status to answer when it is not a request this server takes.
pub(crate) fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, StatusCode> {
    // Slots left uninitialised: filling a hundred of them would cost more than the parse.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
        Ok(httparse::Status::Complete(_)) => return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    // RFC 9112 ends every line with CRLF; httparse also takes a bare LF. Refused: a bare LF one
    // parser takes for a line end and another for data is how requests are smuggled.
    let bytes = &buf[..length];
    if memchr::memchr_iter(b'\n', bytes).any(|at| at == 0 || bytes[at - 1] != b'\r') {
        return Err(StatusCode::BAD_REQUEST);
    }
    // The head's bytes, copied to an allocation of their size: the request's header values are
    // views into it, and the connection's read buffer is let go of between requests.
    let head = Bytes::copy_from_slice(bytes);
    let view = |part: &[u8]| {
        let at = part.as_ptr() as usize - bytes.as_ptr() as usize;
        head.slice(at..at + part.len())
    };
    let bad = StatusCode::BAD_REQUEST;
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(|_| bad)?;
    let uri = Uri::from_maybe_shared(view(parsed.path.unwrap_or_default().as_bytes())).map_err(|_| bad)?;
    let http11 = parsed.version == Some(1);
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let (mut transfer_coded, mut chunked, mut close, mut keep_alive_asked, mut expect_continue) =
        (false, false, false, false, false);
    let mut content_length: Result<Option<u64>, ()> = Ok(None);
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| bad)?;
        let value = field.value;
        if name == http::header::TRANSFER_ENCODING {
            // Chunked only when it is the one coding applied: one field, one token.
            chunked = !transfer_coded
                && visible(value)
                && last_token(value).eq_ignore_ascii_case(b"chunked")
                && !value.contains(&b',');
            transfer_coded = true;
        } else if name == http::header::CONTENT_LENGTH {
            let repeated = matches!(content_length, Ok(Some(_)));
            // One length per field in a request (a list of equal ones, which RFC 9110 §8.6 lets
            // a recipient take, is refused here, as hyper refuses it).
            content_length = match value.contains(&b',') {
                true => Err(()),
                false => content_length.and_then(|seen| same_length(seen, value)),
            };
            if repeated {
                // The same length again: one field is kept (as hyper does).
                continue;
            }
        } else if name == http::header::CONNECTION {
            close |= has_token(value, b"close");
            keep_alive_asked |= has_token(value, b"keep-alive");
        } else if name == http::header::EXPECT {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        let value = HeaderValue::from_maybe_shared(view(value)).map_err(|_| bad)?;
        headers.append(name, value);
    }
    let framing = if transfer_coded {
        // A transfer coding in HTTP/1.0, or beside a length, is faulty framing (RFC 9112 §6.1,
        // §6.3): refused rather than guessed at.
        if !http11 || !matches!(content_length, Ok(None)) {
            return Err(bad);
        }
        if !chunked {
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        Framing::Chunked(crate::http::h1::Chunk::Size)
    } else {
        Framing::Length(content_length.map_err(|()| bad)?.unwrap_or(0))
    };
    buf.advance(length);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
    *request.headers_mut() = headers;
    let keep_alive = if http11 { !close } else { keep_alive_asked && !close };
    let expect_continue = expect_continue && http11 && !matches!(framing, Framing::Length(0));
    Ok(Some(Head { request, framing, keep_alive, expect_continue }))
}

/// Serves one HTTP/1.x connection until it closes, the client is gone, or (`stopping`) the
/// server stops: a request in flight is answered first.
pub(crate) async fn serve<S, B>(
    tcp: TcpStream,
    service: S,
    head_timeout: Duration,
    accepted: Instant,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Body>, Response = Response<B>>,
    B: HttpBody<Data = Bytes>,
{
    let input = Input { buf: BytesMut::new(), framing: Framing::Length(0), failed: false, continue_written: None };
    let shared = Arc::new(Shared { io: Socket::new(tcp), input: Mutex::new(input) });
    let mut ready_at = accepted;
    loop {
        let head = match next_head(&shared, ready_at + head_timeout, &mut stopping).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(status) => {
                let _ = write_all(&shared.io, refusal(status).as_bytes()).await;
                linger(&shared).await;
                return;
            }
        };
        let Head { request, framing, keep_alive, expect_continue } = head;
        let length = match framing {
            Framing::Length(length) => Some(length),
            _ => None,
        };
        {
            let mut input = shared.input();
            input.framing = framing;
            input.failed = false;
            input.continue_written = expect_continue.then_some(0);
        }
        let asked =
            Asked { head: request.method() == Method::HEAD, http10: request.version() == Version::HTTP_10, keep_alive };
        let body = Body { shared: (length != Some(0)).then(|| shared.clone()), length };
        let answer = service.call(request.map(|()| body));
        let Some(response) = until_answered(&shared, answer).await else { return };
        let Ok(response) = response else { return };
        let stopping_now = *stopping.borrow();
        let kept = write_answer(&shared, response, asked, stopping_now).await;
        let body_done = shared.input().body_done();
        if !body_done {
            linger(&shared).await;
            return;
        }
        if !kept || *stopping.borrow() {
            return;
        }
        ready_at = Instant::now();
    }
}

/// What the request asked of its answer's framing.
#[derive(Clone, Copy)]
struct Asked {
    head: bool,
    http10: bool,
    keep_alive: bool,
}

/// Waits for the next request head, at most until `deadline`; `None` once the connection ends,
/// the deadline passes or the server stops while no request has begun.
async fn next_head(
    shared: &Shared,
    deadline: Instant,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Head>, StatusCode> {
    loop {
        let idle = {
            let mut input = shared.input();
            if let Some(head) = parse_head(&mut input.buf)? {
                return Ok(Some(head));
            }
            input.buf.is_empty()
        };
        let read = std::future::poll_fn(|cx| poll_fill(&shared.io, &mut shared.input().buf, cx));
        tokio::select! {
            read = tokio::time::timeout_at(deadline.into(), read) => match read {
                Ok(Ok(1..)) => {}
                _ => return Ok(None),
            },
            _ = stopping.wait_for(|stop| *stop), if idle => return Ok(None),
        }
    }
}

/// The application's answer, or `None` when the client went away first (its future is
/// dropped then, which cancels the request).
async fn until_answered<F: Future>(shared: &Shared, answer: F) -> Option<F::Output> {
    let mut answer = std::pin::pin!(answer);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(answered) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(answered));
        }
        shared.input().poll_gone(&shared.io, cx).map(|()| None)
    })
    .await
}

/// How an answer's body is delimited on the wire.
#[derive(Clone, Copy, PartialEq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    ToClose,
}

/// Writes the answer; whether the connection may carry another request after it.
async fn write_answer<B: HttpBody<Data = Bytes>>(
    shared: &Shared,
    response: Response<B>,
    asked: Asked,
    stopping: bool,
) -> bool {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    // A body the application left unread (an answer to a request it refused) is skipped when it
    // has arrived whole; else the connection closes after the answer, and says so.
    let body_read = shared.input().skip_buffered_body();
    let mut keep_alive = asked.keep_alive
        && body_read
        && !stopping
        && !parts.headers.get_all(http::header::CONNECTION).iter().any(|v| has_token(v.as_bytes(), b"close"));
    let declared =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| same_length(None, v.as_bytes()).ok().flatten());
    let mut out = if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        Out::None
    } else if let Some(length) = declared.or(body.size_hint().exact()) {
        Out::Length(length)
    } else if !asked.http10 {
        Out::Chunked
    } else {
        keep_alive = false;
        Out::ToClose
    };
    let mut wire = Vec::with_capacity(256);
    write_head(&mut wire, status, &parts.headers, out, keep_alive, asked.http10);
    if asked.head || out == Out::None {
        return write_all(&shared.io, &wire).await.is_ok() && keep_alive;
    }
    let mut body = std::pin::pin!(body);
    loop {
        let gathered = std::future::poll_fn(|cx| gather(body.as_mut(), cx, &mut wire, &mut out, shared)).await;
        if write_all(&shared.io, &wire).await.is_err() {
            return false;
        }
        wire.clear();
        if wire.capacity() > KEEP_WRITE {
            wire = Vec::new();
        }
        match gathered {
            Gathered::More => {}
            Gathered::End => return keep_alive && matches!(out, Out::Length(0) | Out::Chunked),
            // The answer cannot be completed: the connection closes without its end, which
            // tells the client it is incomplete.
            Gathered::Failed | Gathered::Gone => return false,
        }
    }
}

enum Gathered {
    /// Bytes to write; more to come.
    More,
    /// The body's end, its last bytes (and the chunked terminator) in the buffer.
    End,
    /// The body failed, or gave more than its length.
    Failed,
    /// The client went away while the stream waited for its next event.
    Gone,
}

/// Takes the body's frames that are ready into `wire`, framed; waits (watching the client)
/// while none is.
fn gather<B: HttpBody<Data = Bytes>>(
    mut body: Pin<&mut B>,
    cx: &mut Context<'_>,
    wire: &mut Vec<u8>,
    out: &mut Out,
    shared: &Shared,
) -> Poll<Gathered> {
    while wire.len() < WRITE_BATCH {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                match out {
                    Out::Chunked => {
                        let _ = write!(wire, "{:x}\r\n", data.len());
                        wire.extend_from_slice(&data);
                        wire.extend_from_slice(b"\r\n");
                    }
                    Out::Length(rest) => {
                        if data.len() as u64 > *rest {
                            return Poll::Ready(Gathered::Failed);
                        }
                        *rest -= data.len() as u64;
                        wire.extend_from_slice(&data);
                    }
                    Out::ToClose => wire.extend_from_slice(&data),
                    Out::None => {}
                }
            }
            Poll::Ready(Some(Err(_))) => return Poll::Ready(Gathered::Failed),
            Poll::Ready(None) => {
                if *out == Out::Chunked {
                    wire.extend_from_slice(b"0\r\n\r\n");
                }
                return Poll::Ready(Gathered::End);
            }
            Poll::Pending if wire.is_empty() => {
                return shared.input().poll_gone(&shared.io, cx).map(|()| Gathered::Gone);
            }
            Poll::Pending => return Poll::Ready(Gathered::More),
        }
    }
    Poll::Ready(Gathered::More)
}

/// The status line and header fields of an answer, with its framing and connection fields.
fn write_head(wire: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, out: Out, keep_alive: bool, http10: bool) {
    wire.extend_from_slice(b"HTTP/1.1 ");
    wire.extend_from_slice(status.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    wire.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // The framing and connection fields are this server's to write.
        if matches!(*name, http::header::CONTENT_LENGTH | http::header::TRANSFER_ENCODING | http::header::CONNECTION) {
            continue;
        }
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    match out {
        Out::Length(length) => {
            let _ = write!(wire, "content-length: {length}\r\n");
        }
        Out::Chunked => wire.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Out::None | Out::ToClose => {}
    }
    if !headers.contains_key(http::header::DATE) {
        wire.extend_from_slice(b"date: ");
        wire.extend_from_slice(&date::now());
        wire.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        wire.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        wire.extend_from_slice(b"connection: keep-alive\r\n");
    }
    wire.extend_from_slice(b"\r\n");
}

/// The answer to a request head this server does not take; the connection closes after it.
fn refusal(status: StatusCode) -> String {
    format!(
        "HTTP/1.1 {} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
}

/// Writes all of `bytes`, waiting while the socket is full.
async fn write_all(io: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match io.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the connection's sending side, then reads and drops what the client still sends, for at
/// most `LINGER` and `LINGER_BYTES`, so that closing a socket with unread bytes (which resets
/// the connection, and can destroy the answer the client has not read yet) comes after the
/// client had time to read it.
async fn linger(shared: &Shared) {
    // The end of the answer is sent now (a client reading to the close stops waiting).
    let _ = socket2::SockRef::from(&shared.io.tcp).shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut drained = 0;
        while drained < LINGER_BYTES {
            let read = std::future::poll_fn(|cx| {
                let mut input = shared.input();
                input.buf.clear();
                poll_fill(&shared.io, &mut input.buf, cx)
            });
            match read.await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The `Date` field's value (RFC 9110 §6.6.1), formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    pub(super) fn now() -> [u8; 29] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with_borrow_mut(|(at, formatted)| {
            if *at != second {
                let text = httpdate::fmt_http_date(now);
                if text.len() == formatted.len() {
                    formatted.copy_from_slice(text.as_bytes());
                }
                *at = second;
            }
            *formatted
        })
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests;
