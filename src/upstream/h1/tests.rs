use super::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn decode_all(framing: Framing, wire: &[u8], split: usize) -> Result<(Vec<u8>, bool), Error> {
    let mut framing = framing;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut complete = false;
    for part in [&wire[..split], &wire[split..]] {
        buf.extend_from_slice(part);
        let mut out = Pieces::default();
        complete = framing.decode(&mut buf, &mut out)?;
        body.extend_from_slice(&out.take().unwrap_or_default());
        if complete {
            break;
        }
    }
    Ok((body, complete))
}

#[test]
fn a_chunked_body_decodes_the_same_wherever_the_bytes_split() {
    let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
    for split in 0..=wire.len() {
        let (body, complete) = decode_all(Framing::Chunked(Chunk::Size), wire, split).unwrap();
        assert_eq!(body, b"hello, world", "split at {split}");
        assert!(complete, "split at {split}");
    }
}

#[test]
fn a_length_framed_body_ends_at_its_length() {
    let (body, complete) = decode_all(Framing::Length(5), b"hello", 2).unwrap();
    assert_eq!((body.as_slice(), complete), (&b"hello"[..], true));
    let (body, complete) = decode_all(Framing::Length(5), b"hel", 1).unwrap();
    assert_eq!((body.as_slice(), complete), (&b"hel"[..], false));
}

#[test]
fn bad_chunk_framing_is_an_error() {
    for wire in [&b"zz\r\nhello\r\n"[..], b"5\r\nhello!!\r\n", b"\r\n", b"1234567890abcdef0\r\n"] {
        assert!(
            matches!(decode_all(Framing::Chunked(Chunk::Size), wire, 0), Err(Error::Invalid(_))),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn the_head_decides_framing_and_reuse() {
    let head = |text: &str| parse_head(&mut BytesMut::from(text)).unwrap().unwrap();
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
    assert_eq!((h.status, h.framing, h.keep_alive), (StatusCode::OK, Framing::Length(12), true));
    // Only an error's headers are kept (a success's are not read).
    assert!(h.headers.is_empty());
    let h = head("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
    assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
    assert_eq!(h.headers["retry-after"], "3");
    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
    let h = head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
    assert!(!h.keep_alive);
    let h = head("HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::ToEnd, false));
    let h = head("HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
    assert!(parse_head(&mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le")).unwrap().is_none());
    for bad in ["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n"] {
        assert!(matches!(parse_head(&mut BytesMut::from(bad)), Err(Error::Invalid(_))), "{bad}");
    }
}

/// A server that answers each connection's requests with `answers` in turn, then closes it
/// (an empty answer: closes it on reading that request). Returns its address and the
/// number of connections it accepted.
async fn server(answers: Vec<&'static [u8]>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answers = answers.clone();
            tokio::spawn(async move {
                for answer in answers {
                    let mut request = vec![0u8; 4096];
                    if socket.read(&mut request).await.unwrap_or(0) == 0 || answer.is_empty() {
                        return;
                    }
                    // Written in two parts, splitting the head.
                    let (a, b) = answer.split_at(answer.len() / 2);
                    socket.write_all(a).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    socket.write_all(b).await.unwrap();
                }
            });
        }
    });
    (addr, accepted)
}

async fn body_of(answer: Answer) -> Result<Vec<u8>, Error> {
    let mut body = answer.body;
    let mut all = Vec::new();
    while let Some(piece) = body.next().await {
        all.extend_from_slice(&piece?);
    }
    Ok(all)
}

const REQUEST: &[u8] = b"POST /v1/x HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n";

#[tokio::test]
async fn answers_are_read_and_the_connection_reused() {
    let (addr, accepted) = server(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ])
    .await;
    let pool = Arc::new(Pool::default());
    let Ok(answer) = pool.send(&addr, Duration::from_secs(5), REQUEST).await else { panic!("no answer") };
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(body_of(answer).await.unwrap(), b"hello");
    let Ok(answer) = pool.send(&addr, Duration::from_secs(5), REQUEST).await else { panic!("no answer") };
    assert_eq!(body_of(answer).await.unwrap(), b"abc");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The server closed the connection after its two answers: the third request goes on a
    // new connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let Ok(answer) = pool.send(&addr, Duration::from_secs(5), REQUEST).await else { panic!("no answer") };
    assert_eq!(body_of(answer).await.unwrap(), b"hello");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A reused connection the server closes after reading the request: the server may have
/// acted on it (a POST is not idempotent: a generation is paid for), so it is not sent
/// again (RFC 9112 §9.3.1) — the failure is the upstream's.
#[tokio::test]
async fn a_request_the_upstream_closed_on_after_reading_it_is_not_sent_again() {
    let (addr, accepted) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi", b""]).await;
    let pool = Arc::new(Pool::default());
    let Ok(answer) = pool.send(&addr, Duration::from_secs(5), REQUEST).await else { panic!("no answer") };
    assert_eq!(body_of(answer).await.unwrap(), b"hi");
    let result = pool.send(&addr, Duration::from_secs(5), REQUEST).await;
    assert!(matches!(result, Err(SendError::Http(Error::Closed))), "the request was sent again");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // On a new connection, the same close is the upstream's failure too.
    let (addr, _) = server(vec![b""]).await;
    let result = pool.send(&addr, Duration::from_secs(5), REQUEST).await;
    assert!(matches!(result, Err(SendError::Http(Error::Closed))));
}

/// A reused connection that takes no byte of the request (the write fails at once): nothing
/// reached the upstream, and the request goes out on a new connection.
#[tokio::test]
async fn a_reused_connection_that_takes_no_byte_is_replaced() {
    // A connection whose own sending side is shut: the first write fails, nothing sent. Its
    // server holds it open (so the pool keeps it).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let held = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let mut dead = connect(&held.to_string(), Duration::from_secs(5)).await.unwrap();
    dead.io.shutdown().await.unwrap();
    let pool = Arc::new(Pool::default());
    pool.checkin(dead);
    let (addr, accepted) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"]).await;
    let Ok(answer) = pool.send(&addr, Duration::from_secs(5), REQUEST).await else { panic!("no answer") };
    assert_eq!(body_of(answer).await.unwrap(), b"hi");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// `101 Switching Protocols` answers a request that asked for no upgrade: the connection
/// speaks something else from then on, so the answer is refused and the connection never
/// goes back to the pool.
#[tokio::test]
async fn a_101_answer_is_refused_and_its_connection_not_pooled() {
    let (addr, accepted) = server(vec![
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
    ])
    .await;
    let pool = Arc::new(Pool::default());
    for _ in 0..2 {
        match pool.send(&addr, Duration::from_secs(5), REQUEST).await {
            Err(SendError::Http(Error::Invalid(_))) => {}
            Ok(answer) => panic!("a {} answer was taken", answer.status),
            Err(_) => panic!("not refused as invalid"),
        }
    }
    // Each request on a connection of its own: the first was not pooled.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A signed or malformed `Content-Length` is refused: RFC 9110 wants `1*DIGIT`, and a
/// recipient that is lenient where another is strict frames the bytes differently (the
/// ground of response splitting).
#[test]
fn a_signed_content_length_is_refused() {
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
    ] {
        assert!(matches!(parse_head(&mut BytesMut::from(bad)), Err(Error::Invalid(_))), "{bad:?} was taken");
    }
    // Identical values, listed or repeated, are one length (RFC 9110 §8.6).
    let h = parse_head(&mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"));
    assert_eq!(h.unwrap().unwrap().framing, Framing::Length(5));
}

/// Bare LF line ends are refused, in the head and in chunked framing: RFC 9112 wants CRLF,
/// and a bare LF that one recipient takes for a line end and another for data is how
/// responses are split.
#[test]
fn bare_lf_line_ends_are_refused() {
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\n",
    ] {
        assert!(matches!(parse_head(&mut BytesMut::from(bad)), Err(Error::Invalid(_))), "{bad:?} was taken");
    }
    for bad in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\r\nhello\r\n0\r\nx-t: 1\n\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    ] {
        assert!(
            matches!(decode_all(Framing::Chunked(Chunk::Size), bad, 0), Err(Error::Invalid(_))),
            "{:?} was taken",
            String::from_utf8_lossy(bad)
        );
    }
}

/// An upstream that answers before it has read the whole request (a `413` for a body too
/// large, an auth failure) is heard: its answer is returned instead of a write error, the
/// rest of the request is not sent, and the connection is not reused.
#[tokio::test]
async fn an_answer_before_the_request_was_written_is_returned() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let first = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                // Reads a little of the request, answers, and reads nothing more: holding
                // the connection for a while (the first), or closing it at once, which
                // resets it under the request being written (the second).
                let mut head = vec![0u8; 1024];
                let _ = socket.read(&mut head).await;
                let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!";
                socket.write_all(answer).await.unwrap();
                if first {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    });
    // Far more than the sockets' buffers hold: the write cannot finish before the server reads.
    let mut request = b"POST /v1/x HTTP/1.1\r\nhost: t\r\ncontent-length: 33554432\r\n\r\n".to_vec();
    request.resize(request.len() + 32 * 1024 * 1024, b'x');
    let pool = Arc::new(Pool::default());
    for _ in 0..2 {
        let started = Instant::now();
        let answer = match pool.send(&addr, Duration::from_secs(5), &request).await {
            Ok(answer) => answer,
            Err(SendError::Http(e)) => panic!("the early answer was lost: {e}"),
            Err(SendError::Connect(e)) => panic!("{e}"),
        };
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body_of(answer).await.unwrap(), b"too big!");
        assert!(started.elapsed() < Duration::from_millis(400), "waited for the server to close");
    }
    // The server did not take the whole request: its connection is not reused.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A stream between two events holds no read buffer, nor does an idle pooled connection:
/// what a read brought is handed on, and the buffer it came in is let go before the wait
/// (each of thousands of slow streams held a 16 KiB one, reserved before every read).
#[tokio::test]
async fn a_waiting_body_and_an_idle_connection_hold_no_read_buffer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (next, mut told) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let _ = socket.read(&mut request).await;
        let event = format!("data: {}\n\n", "x".repeat(12_000));
        let head = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n", event.len());
        socket.write_all(format!("{head}{event}\r\n").as_bytes()).await.unwrap();
        // The next event (a partial chunk-size line first), then the end, when told.
        told.recv().await;
        socket.write_all(b"2").await.unwrap();
        told.recv().await;
        socket.write_all(b"\r\nhi\r\n0\r\n\r\n").await.unwrap();
        // Held open: the connection goes back to the pool.
        let _ = socket.read(&mut request).await;
    });
    let pool = Arc::new(Pool::default());
    let Ok(answer) = pool.send(&addr, Duration::from_secs(5), REQUEST).await else { panic!("no answer") };
    let mut body = answer.body;
    let mut got = 0;
    while got < 12_008 {
        got += body.next().await.unwrap().unwrap().len();
    }
    let held = |body: &H1Body| body.conn.as_ref().map(|conn| conn.buf.capacity());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(Pin::new(&mut body).poll_next(&mut cx).is_pending());
    assert_eq!(held(&body), Some(0), "the read buffer is held through the wait");
    // Part of a line waits in a buffer of its own size.
    next.send(()).await.unwrap();
    while held(&body) != Some(1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(Pin::new(&mut body).poll_next(&mut cx).is_pending());
    }
    next.send(()).await.unwrap();
    assert_eq!(&body.next().await.unwrap().unwrap()[..], b"hi");
    assert!(body.next().await.is_none());
    let idle = pool.idle[shard()].lock().unwrap();
    assert_eq!(idle.iter().map(|(conn, _)| conn.buf.capacity()).collect::<Vec<_>>(), [0], "pooled with its buffer");
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_after_the_data_that_came() {
    let (addr, _) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\npartial"]).await;
    let pool = Arc::new(Pool::default());
    let Ok(answer) = pool.send(&addr, Duration::from_secs(5), REQUEST).await else { panic!("no answer") };
    let mut body = answer.body;
    let mut got = Vec::new();
    let error = loop {
        match body.next().await {
            Some(Ok(piece)) => got.extend_from_slice(&piece),
            Some(Err(e)) => break e,
            None => panic!("the body ended without an error"),
        }
    };
    assert_eq!(got, b"partial");
    assert!(matches!(error, Error::Closed), "{error}");
}

#[tokio::test]
async fn a_malformed_answer_is_an_error() {
    let (addr, _) = server(vec![b"SMTP ready\r\n\r\n"]).await;
    let pool = Arc::new(Pool::default());
    let result = pool.send(&addr, Duration::from_secs(5), REQUEST).await;
    assert!(matches!(result, Err(SendError::Http(Error::Invalid(_)))));
}
