//! Plain-HTTP/1.1 upstreams (the self-hosted servers: vLLM, Ollama, TGI, llama.cpp on the
//! cluster network): connections of our own, driven by the task that reads the answer.
//!
//! hyper-util's pooled client runs each connection in a task of its own and hands the body over
//! through a channel one HTTP chunk at a time, so every streamed event costs two cross-task
//! wake-ups and its own write to the client. Here the connection is polled by whoever polls the
//! body — the client's connection task — so the upstream's bytes are read, decoded and
//! forwarded in one place, and the events that arrived together leave together. TLS upstreams
//! (and HTTP/2) keep the pooled client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream};

use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per provider at most.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is not reused (servers close theirs sooner or later).
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Body bytes that arrived together are handed on as one piece up to this size.
const COALESCE: usize = 64 * 1024;

type Driver = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One connection: the request side and the future that does its I/O.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Driver>>,
    /// The driver finished: the connection is closed.
    done: bool,
}

impl Conn {
    /// Lets the connection do the I/O it can now; `cx` is woken when it can do more.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.done && self.driver.as_mut().poll(cx).is_ready() {
            self.done = true;
        }
    }

    /// Whether an idle connection can take a request: polled once (noticing a peer's close)
    /// and ready.
    fn usable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(std::task::Waker::noop()));
        !self.done && self.sender.is_ready()
    }
}

/// Idle lists per pool: a connection goes back to the list of the thread that used it.
const SHARDS: usize = 16;

/// The idle connections to one upstream, kept per thread: the gateway serves each connection
/// on one thread's event loop, and an upstream connection registered with that loop is
/// best reused there (from another thread it would work, at a cross-thread wake-up per read).
#[derive(Default)]
pub struct Pool {
    idle: [Mutex<Vec<(Conn, std::time::Instant)>>; SHARDS],
}

/// This thread's idle list.
fn shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Why a request got no answer.
pub enum SendError {
    Connect(std::io::Error),
    Http(hyper::Error),
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
            let mut idle = self.idle[shard()].lock().unwrap_or_else(|p| p.into_inner());
            // The oldest are first: those idle too long are closed now rather than at a checkout.
            let now = std::time::Instant::now();
            let stale = idle.iter().take_while(|(_, since)| now.duration_since(*since) >= IDLE_FOR).count();
            idle.drain(..stale);
            if idle.len() < MAX_IDLE {
                idle.push((conn, now));
            }
        }
    }

    /// Sends the request `make` builds (origin-form URI and `Host` already set) on an idle
    /// connection or a new one to `addr`, and waits for the status line and headers. A reused
    /// connection that the server closed meanwhile is retried once on a new one.
    pub async fn send(
        self: &std::sync::Arc<Self>,
        addr: &str,
        connect_timeout: Duration,
        mut make: impl FnMut() -> http::Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, H1Body), SendError> {
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
            let mut answer = std::pin::pin!(conn.sender.send_request(make()));
            let result = std::future::poll_fn(|cx| {
                conn.drive(cx);
                answer.poll_unpin(cx)
            })
            .await;
            match result {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = H1Body { body, conn: Some(conn), pool: self.clone(), pending: None };
                    return Ok((parts, body));
                }
                // The request never reached a live server: a fresh connection may succeed.
                Err(e) if reused && (e.is_canceled() || e.is_incomplete_message() || e.is_closed()) => {
                    reused = false;
                }
                Err(e) => return Err(SendError::Http(e)),
            }
        }
    }
}

async fn connect(addr: &str, timeout: Duration) -> std::io::Result<Conn> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, driver) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    Ok(Conn { sender, driver: Box::pin(driver), done: false })
}

/// An answer's body, read by driving its connection; the connection goes back to the pool
/// once the body is complete, and is closed if the body is dropped before (which cancels the
/// upstream's work).
pub struct H1Body {
    body: Incoming,
    conn: Option<Conn>,
    pool: std::sync::Arc<Pool>,
    /// An error met while handing on data that came before it.
    pending: Option<hyper::Error>,
}

impl Stream for H1Body {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(e) = this.pending.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let mut out: Option<Bytes> = None;
        let mut more: Option<BytesMut> = None;
        loop {
            if let Some(conn) = this.conn.as_mut() {
                conn.drive(cx);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    match (&out, &mut more) {
                        (None, _) => out = Some(data),
                        (Some(first), None) => {
                            let mut buf = BytesMut::with_capacity(first.len() + data.len());
                            buf.extend_from_slice(first);
                            buf.extend_from_slice(&data);
                            more = Some(buf);
                        }
                        (Some(_), Some(buf)) => buf.extend_from_slice(&data),
                    }
                    if more.as_ref().map_or(out.as_ref().map_or(0, Bytes::len), BytesMut::len) >= COALESCE {
                        break;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.conn = None;
                    if out.is_none() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.pending = Some(e);
                    break;
                }
                Poll::Ready(None) => {
                    if let Some(conn) = this.conn.take() {
                        this.pool.checkin(conn);
                    }
                    if out.is_none() {
                        return Poll::Ready(None);
                    }
                    break;
                }
                Poll::Pending => {
                    if out.is_none() {
                        return Poll::Pending;
                    }
                    break;
                }
            }
        }
        Poll::Ready(more.map(BytesMut::freeze).or(out).map(Ok))
    }
}
