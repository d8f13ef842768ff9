//! The server stage: the listener, request ids, the unauthenticated probes, and a graceful
//! drain on SIGTERM (stop accepting, let in-flight streams finish up to a deadline).
//!
//! How requests are served. `server.threads` serving threads (default: the CPUs the process may
//! use, a cgroup quota included; started by `main`), each a single-threaded tokio event loop
//! accepting from the same listening socket: a connection, and everything its requests do, stay on
//! one thread — as in nginx's and Envoy's workers — so no request pays for a work-stealing
//! scheduler's cross-thread wake-ups. Idle plain-HTTP upstream connections are kept per thread
//! (`upstream::h1`), so a request reuses one its own event loop drives. One HTTP/2 client
//! connection is served by one thread; many connections spread over all of them. Work a thread's
//! requests leave running at shutdown (cache stores, limit top-ups) finishes before the gateway
//! stops its background work.
//!
//! Each thread's `serve` is an accept loop of our own. An HTTP/1 connection (nearly every
//! client's) is served by the gateway's own HTTP/1.1 server (`h1`: it holds no buffer while a
//! stream waits for its next event, where hyper's holds 16 KiB for the connection's life); a
//! connection that opens with HTTP/2's preface by hyper-util's. The loop also keeps a timer due
//! within the second: tokio's timer writes its event loop's eventfd whenever a timer is set
//! earlier than the loop's next planned wake-up, which with nothing else pending would be every
//! request's first timeout. A proxied request then costs six system calls: two reads, two writes
//! and two epoll waits. The four proxied endpoints (`POST /v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`, `/v1/messages`) go from the connection straight to the
//! gateway's handler (`App::proxied`); axum's router, with the same routes, serves every other
//! path.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use tokio::net::TcpListener;

use crate::ingress::RequestId;

pub mod h1;

pub use crate::ctx::{REQUEST_ID_HEADER, new_request_id};

/// Takes the client's `x-request-id` when it is sane, else makes one; puts it on the request
/// (for the handlers) and on the response. A tower layer of its own rather than
/// `axum::middleware::from_fn`, which boxes a future for every request.
#[derive(Clone, Copy)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> WithRequestId<S> {
        WithRequestId(inner)
    }
}

#[derive(Clone)]
pub struct WithRequestId<S>(S);

impl<S: tower::Service<Request, Response = Response>> tower::Service<Request> for WithRequestId<S> {
    type Response = Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = request_id_of(request.headers());
        request.extensions_mut().insert(RequestId(id.clone()));
        RequestIdFuture { inner: self.0.call(request), id: Some(id) }
    }
}

/// The client's `x-request-id` when it is sane (1 to 128 visible ASCII characters), else a new one.
pub(crate) fn request_id_of(headers: &http::HeaderMap) -> Arc<str> {
    headers
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from)
        .unwrap_or_else(new_request_id)
}

pin_project_lite::pin_project! {
    /// The inner service's answer, with the request id put on it.
    pub struct RequestIdFuture<F> {
        #[pin]
        pub inner: F,
        pub id: Option<Arc<str>>,
    }
}

impl<F: Future<Output = Result<Response, E>>, E> Future for RequestIdFuture<F> {
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(value) = this.id.take().and_then(|id| HeaderValue::from_str(&id).ok()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        Poll::Ready(Ok(response))
    }
}

/// What `serve` serves: the application as a service of requests with either server's body —
/// hyper's (HTTP/2 connections) and the gateway's own (HTTP/1, `h1`).
pub trait Serves: hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + hyper::service::Service<http::Request<h1::Body>, Response = Response, Error = Infallible, Future: Send + 'static>
    + Send
    + 'static
{
}

impl<S> Serves for S where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + hyper::service::Service<
            http::Request<h1::Body>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// A served request's body, as the application reads it (axum's).
pub trait ServedBody: Send + 'static {
    fn into_axum(self) -> axum::body::Body;
}

impl ServedBody for hyper::body::Incoming {
    fn into_axum(self) -> axum::body::Body {
        axum::body::Body::new(http_body_util::BodyExt::map_frame(self, own_frame))
    }
}

impl ServedBody for h1::Body {
    /// (Its pieces are copies already.)
    fn into_axum(self) -> axum::body::Body {
        axum::body::Body::new(self)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains for at most `grace`.
///
/// Each connection is served on this thread: by `h1`, or by hyper-util's HTTP/2 connection when
/// it opens with HTTP/2's preface.
///
/// A connection must send its next request head within `options.header_read_timeout` of being
/// ready for it (accepted, or its last answer sent), else it is closed: a client sending its
/// headers a byte at a time (slowloris) or an idle keep-alive connection holds a socket no longer.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()>
where
    S: Serves + Clone,
{
    // tokio's timer wakes its event loop (an eventfd write, then an extra epoll_wait) whenever a
    // timer is set earlier than the loop's next planned wake-up — with no timer pending, every
    // request's first timeout does. A tick each second keeps a wake-up planned within the
    // second, so requests' timeouts (a second and longer) never cost that system call pair.
    let ticker = tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
        }
    });
    let _ticker = AbortOnDrop(ticker);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Every connection holds a sender: the channel closes when the last connection has.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY, a small SSE frame written after the previous one waits for the
        // client's delayed ACK (~40 ms per event on Linux): stream latency would be Nagle's.
        let _ = tcp.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let app = Touching(app.clone(), activity.clone(), Some(Peer(peer.ip())));
        tokio::spawn(connection(tcp, app, activity, options, stopping.clone(), open.clone()));
    }
    drop(listener);
    let grace = options.grace;
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    let _ = stop.send(true);
    drop(open);
    if tokio::time::timeout(grace, all_closed.recv()).await.is_err() {
        tracing::warn!("shutdown grace period over: closing the remaining connections");
    }
    Ok(())
}

/// Serves one client connection (HTTP/1.1, or HTTP/2 by its preface) until it closes; once
/// `stopping`, finishes the requests in flight and closes.
async fn connection<S>(
    tcp: tokio::net::TcpStream,
    app: Touching<S>,
    activity: Arc<Activity>,
    options: ServeOptions,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    _open: tokio::sync::mpsc::Sender<()>,
) where
    S: Serves,
{
    // Until the first bytes tell the protocol, the header timeout is this wait's.
    let accepted = std::time::Instant::now();
    // (`peek`, not `readable`: a new socket's readiness starts set, before any byte came.)
    let mut first = [0u8; 4];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(options.header_read_timeout, tcp.peek(&mut first)) => match peeked {
            Ok(Ok(n @ 1..)) => n,
            _ => return,
        },
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    // A connection whose first bytes cannot begin HTTP/2's preface is HTTP/1 (nearly every
    // client's), served by the gateway's own HTTP/1 server (`h1`).
    if !H2_PREFACE.starts_with(&first[..peeked]) {
        let head_timeout = options.header_read_timeout.min(options.idle_timeout);
        return h1::serve(tcp, app, head_timeout, accepted, stopping).await;
    }
    let io = hyper_util::rt::TokioIo::new(tcp);
    let timer = hyper_util::rt::TokioTimer::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(timer).header_read_timeout(options.header_read_timeout);
    let conn = std::pin::pin!(builder.serve_connection(io, app));
    until_idle(conn, |c| c.graceful_shutdown(), &activity, options.idle_timeout, stopping).await;
}

/// What a client connection opening with HTTP/2 (prior knowledge, as h2c clients do) sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `conn` until it ends; closes it gracefully once it has started no request for
/// `idle_timeout` (an HTTP/2 connection has no header timer between requests) or the server is
/// stopping.
async fn until_idle<C: Future>(
    mut conn: Pin<&mut C>,
    shut_down: impl FnOnce(Pin<&mut C>),
    activity: &Activity,
    idle_timeout: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let idle_until = activity.last() + idle_timeout;
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stopping.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep_until(idle_until.into()) => {
                if activity.last() + idle_timeout <= std::time::Instant::now() {
                    break;
                }
            }
        }
    }
    shut_down(conn.as_mut());
    let _ = conn.await;
}

/// When a connection last started a request.
struct Activity {
    opened: std::time::Instant,
    /// Milliseconds after `opened`.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { opened: std::time::Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> std::time::Instant {
        self.opened + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// How client connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// After the shutdown signal, how long requests in flight may take to finish.
    pub grace: Duration,
    /// See `serve`.
    pub header_read_timeout: Duration,
    /// A connection that starts no request for this long is closed.
    pub idle_timeout: Duration,
}

impl From<&crate::config::ServerSettings> for ServeOptions {
    fn from(server: &crate::config::ServerSettings) -> Self {
        Self {
            grace: server.shutdown_grace,
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
        }
    }
}

/// A failed accept: the next one is tried at once when only that connection failed, after a
/// pause when the process is out of something (file descriptors, memory).
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection's service: the application's, noting when each request starts (the idle
/// timeout counts from the last).
#[derive(Clone)]
struct Touching<S>(S, Arc<Activity>, Option<Peer>);

/// The address of the client at the other end of a request's connection (a request extension
/// put by the server stage). Behind a proxy or an ingress controller this is the proxy's.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

impl<B, S: hyper::service::Service<http::Request<B>>> hyper::service::Service<http::Request<B>> for Touching<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: http::Request<B>) -> S::Future {
        self.1.touch();
        if let Some(peer) = self.2 {
            request.extensions_mut().insert(peer);
        }
        self.0.call(request)
    }
}

/// A request body's piece, copied out of the connection's read buffer. hyper hands out slices of
/// that buffer (8 KiB or more), and the request's context keeps its body for as long as the
/// request runs — a stream's whole life: a slice would keep the whole buffer alive with it,
/// beside the buffer the connection reads into next.
pub(crate) fn own_frame(frame: hyper::body::Frame<bytes::Bytes>) -> hyper::body::Frame<bytes::Bytes> {
    frame.map_data(|data| bytes::Bytes::copy_from_slice(&data))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once `stop` says so (or its sender is gone).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_prefixed_random_hex() {
        let (a, b) = (super::new_request_id(), super::new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 36);
            assert!(
                id.starts_with("req_") && id[4..].bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }
}
