//! The HTTP/1 server over loopback TCP, byte for byte: framing both ways, keep-alive and its end,
//! `100 Continue`, pipelining, refusals, timeouts, and a client that goes away.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Body, Socket};

type Answer = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

/// Serves every connection to the returned address with `app`, the head timeout `head`.
async fn server<F, Fut>(head: Duration, app: F) -> std::net::SocketAddr
where
    F: Fn(Request<Body>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Answer> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (_stop, stopping) = tokio::sync::watch::channel(false);
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let app = app.clone();
            let service = hyper::service::service_fn(move |request| {
                let answer = app(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let stopping = stopping.clone();
            tokio::spawn(super::serve(tcp, service, head, Instant::now(), stopping));
        }
    });
    addr
}

fn full(body: impl Into<Bytes>) -> Answer {
    Response::new(Full::new(body.into()).boxed())
}

/// Echoes the method, path and body, answering with a length.
async fn echo(request: Request<Body>) -> Answer {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_else(|_| Bytes::from_static(b"<failed>"));
    full(format!("{} {} {}", parts.method, parts.uri, String::from_utf8_lossy(&body)))
}

/// Reads from `tcp` until `done` says the bytes so far are complete, or the connection ends.
async fn read_until(tcp: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&String::from_utf8_lossy(&got)) {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer within 5 s; so far {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether the connection is closed: its next read is the end (or a reset).
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

fn ends_with_body(text: &str, body: &str) -> bool {
    text.ends_with(body)
}

#[tokio::test]
async fn two_requests_on_one_connection_with_length_and_chunked_bodies() {
    let addr = server(Duration::from_secs(5), echo).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /a?x=1 HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
    let first = read_until(&mut tcp, |t| ends_with_body(t, "POST /a?x=1 hello")).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.contains("content-length: 17\r\n") && first.contains("date: "), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    tcp.write_all(b"POST /b HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n")
        .await
        .unwrap();
    let second = read_until(&mut tcp, |t| ends_with_body(t, "POST /b abcde")).await;
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let addr = server(Duration::from_secs(5), echo).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /1 HTTP/1.1\r\nhost: t\r\n\r\nGET /2 HTTP/1.1\r\nhost: t\r\n\r\nGET /3 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_until(&mut tcp, |_| false).await;
    let bodies: Vec<_> = all.match_indices("GET /").map(|(at, _)| &all[at..at + 6]).collect();
    assert_eq!(bodies, ["GET /1", "GET /2", "GET /3"], "{all}");
    assert!(all.ends_with("GET /3 "), "{all}");
    assert!(all.contains("connection: close\r\n"), "the last answer says the connection closes: {all}");
}

#[tokio::test]
async fn a_stream_of_unknown_length_is_chunked_for_http11_and_close_delimited_for_http10() {
    let app = |_request: Request<Body>| async {
        let frames =
            futures_util::StreamExt::map(futures_util::stream::iter(["data: a\n\n", "", "data: bb\n\n"]), |s| {
                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(s.as_bytes())))
            });
        Response::new(BodyExt::boxed(StreamBody::new(frames)))
    };
    let addr = server(Duration::from_secs(5), app).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /s HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let chunked = read_until(&mut tcp, |t| t.ends_with("0\r\n\r\n")).await;
    assert!(chunked.contains("transfer-encoding: chunked\r\n"), "{chunked}");
    assert!(chunked.ends_with("\r\n\r\n9\r\ndata: a\n\n\r\na\r\ndata: bb\n\n\r\n0\r\n\r\n"), "{chunked:?}");
    // HTTP/1.0 has no chunked coding: the body ends with the connection.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /s HTTP/1.0\r\n\r\n").await.unwrap();
    let plain = read_until(&mut tcp, |_| false).await;
    assert!(plain.starts_with("HTTP/1.1 200 OK\r\n") && plain.contains("connection: close\r\n"), "{plain}");
    assert!(!plain.contains("transfer-encoding") && plain.ends_with("\r\n\r\ndata: a\n\ndata: bb\n\n"), "{plain:?}");
}

#[tokio::test]
async fn http10_keep_alive_is_kept_only_when_asked() {
    let addr = server(Duration::from_secs(5), echo).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /k HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await.unwrap();
    let kept = read_until(&mut tcp, |t| t.ends_with("GET /k ")).await;
    assert!(kept.contains("connection: keep-alive\r\n"), "{kept}");
    tcp.write_all(b"GET /l HTTP/1.0\r\n\r\n").await.unwrap();
    let last = read_until(&mut tcp, |_| false).await;
    assert!(last.contains("connection: close\r\n") && last.ends_with("GET /l "), "{last}");
}

#[tokio::test]
async fn head_answers_carry_the_length_and_no_body() {
    let addr = server(Duration::from_secs(5), |_| async { full("twelve bytes") }).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"HEAD / HTTP/1.1\r\nhost: t\r\n\r\nGET / HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let both = read_until(&mut tcp, |t| t.ends_with("twelve bytes")).await;
    assert_eq!(both.matches("content-length: 12\r\n").count(), 2, "{both}");
    assert_eq!(both.matches("twelve bytes").count(), 1, "the HEAD answer has no body: {both}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_read() {
    let addr = server(Duration::from_secs(5), echo).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /e HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n").await.unwrap();
    let interim = read_until(&mut tcp, |t| t.ends_with("\r\n\r\n")).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"body").await.unwrap();
    let answer = read_until(&mut tcp, |t| t.ends_with("POST /e body")).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[tokio::test]
async fn an_answer_that_leaves_the_body_unread_reaches_the_client_and_closes() {
    let app = |_request: Request<Body>| async {
        let mut answer = full("no");
        *answer.status_mut() = http::StatusCode::UNAUTHORIZED;
        answer
    };
    let addr = server(Duration::from_secs(5), app).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // A large body the server never reads, still being sent when the answer comes.
    tcp.write_all(b"POST /u HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n").await.unwrap();
    tcp.write_all(&vec![b'x'; 200_000]).await.unwrap();
    let answer = read_until(&mut tcp, |t| t.ends_with("no")).await;
    assert!(answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{answer}");
    // The client is told not to send another request on it.
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    // A small unread body that came whole is skipped: the connection carries the next request.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /u HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
    let answer = read_until(&mut tcp, |t| t.ends_with("no")).await;
    assert!(!answer.contains("connection: close"), "{answer}");
    tcp.write_all(b"POST /u HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        .await
        .unwrap();
    let again = read_until(&mut tcp, |t| t.ends_with("no")).await;
    assert!(again.starts_with("HTTP/1.1 401 ") && !again.contains("connection: close"), "{again}");
}

#[tokio::test]
async fn heads_this_server_does_not_take_are_refused_with_their_status() {
    let addr = server(Duration::from_secs(5), echo).await;
    let cases: &[(&[u8], &str)] = &[
        (b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", "501 Not Implemented"),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "501 Not Implemented"),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n", "501 Not Implemented"),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n", "400 Bad Request"),
        (b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\ncontent-length: +3\r\n\r\n", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\nhost: t\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", "400 Bad Request"),
        (b"G@T / HTTP/1.1\r\n\r\n", "400 Bad Request"),
    ];
    for (request, status) in cases {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let answer = read_until(&mut tcp, |_| false).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{:?}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let large = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(super::MAX_HEAD));
    tcp.write_all(large.as_bytes()).await.unwrap();
    let answer = read_until(&mut tcp, |_| false).await;
    assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
    tcp.write_all(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).await.unwrap();
    let answer = read_until(&mut tcp, |_| false).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[tokio::test]
async fn a_head_that_does_not_come_in_time_closes_the_connection() {
    let addr = server(Duration::from_millis(300), echo).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    // A slow client: part of a head, then nothing.
    tcp.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
    assert!(closed(&mut tcp).await);
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());
    // Idle after an answer: the same timeout.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    read_until(&mut tcp, |t| t.ends_with("GET /x ")).await;
    assert!(closed(&mut tcp).await);
}

/// Counts the drops of what it guards.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn wait_for(count: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while count.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "only {} of {n} drops", count.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_request_before_and_during_the_answer() {
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = drops.clone();
    let app = move |request: Request<Body>| {
        let guard = Dropped(guard.clone());
        async move {
            if request.uri().path() == "/slow" {
                // An answer that never comes.
                let _guard = guard;
                std::future::pending::<()>().await;
                unreachable!()
            }
            // A stream whose second event never comes.
            let frames = futures_util::stream::unfold((0, Some(guard)), |(n, guard)| async move {
                if n == 1 {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                Some((
                    Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"data: 1\n\n"))),
                    (n + 1, guard),
                ))
            });
            Response::new(BodyExt::boxed(StreamBody::new(frames)))
        }
    };
    let addr = server(Duration::from_secs(5), app).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /slow HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(tcp);
    wait_for(&drops, 1).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    read_until(&mut tcp, |t| t.ends_with("data: 1\n\n\r\n")).await;
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop(tcp);
    wait_for(&drops, 2).await;
}

#[tokio::test]
async fn a_body_cut_by_the_close_is_an_error_to_the_application() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let app = move |request: Request<Body>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(request.into_body().collect().await.is_err());
            full("")
        }
    };
    let addr = server(Duration::from_secs(5), app).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc").await.unwrap();
    tcp.shutdown().await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
    assert_eq!(failed, Some(true));
}

/// What an idle stream's connection holds: a wait for the client's next bytes lets go of the
/// read buffer (it is allocated again only once the socket is readable).
#[tokio::test]
async fn a_connection_waiting_for_bytes_holds_no_read_buffer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let server = Socket::new(listener.accept().await.unwrap().0);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let read = std::future::poll_fn(|cx| super::poll_fill(&server, &mut buf, cx)).await.unwrap();
    assert_eq!(read, 18);
    assert!(buf.capacity() >= super::READ_SIZE);
    // The head is consumed; nothing more has come.
    buf.clear();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(super::poll_fill(&server, &mut buf, &mut cx).is_pending());
    assert_eq!(buf.capacity(), 0, "an empty buffer is let go of while the connection waits");
    // A partial head stays where it is.
    client.write_all(b"GET /next").await.unwrap();
    let read = std::future::poll_fn(|cx| super::poll_fill(&server, &mut buf, cx)).await.unwrap();
    assert_eq!(&buf[..read], b"GET /next");
    assert!(super::poll_fill(&server, &mut buf, &mut cx).is_pending());
    assert_eq!(&buf[..], b"GET /next");
}
