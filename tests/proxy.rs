//! Proxy behaviour a user notices on the wire: streaming without buffering, a client that goes
//! away cancelling its upstream request, and upstream connections kept and renewed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::{Gateway, MockUpstream};

async fn gateway_for(upstream: &MockUpstream) -> Gateway {
    Gateway::start(&format!(
        "keys: [{{ key: sk-test, team: t }}]\nteams: {{ t: {{ models: ['*'] }} }}\nproviders:\n  up: {{ dialect: openai, base_url: '{}' }}\nmodels:\n  m: {{ deployments: [{{ provider: up, model: x }}] }}\n",
        upstream.base_url()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream_request() {
    let upstream = MockUpstream::start().await;
    upstream.control.extra_chunks.store(200, Ordering::SeqCst);
    upstream.control.chunk_delay_ms.store(20, Ordering::SeqCst);
    let gw = gateway_for(&upstream).await;
    let response = gw.chat("m", true).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(upstream.control.in_flight.load(Ordering::SeqCst), 1, "the upstream is still streaming");
    drop(body);
    // The full answer would take 4 s; the upstream sees its connection closed long before.
    let deadline = Instant::now() + Duration::from_secs(2);
    while upstream.control.in_flight.load(Ordering::SeqCst) > 0 {
        assert!(Instant::now() < deadline, "the upstream request outlived the client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_reach_the_client_as_they_arrive() {
    let upstream = MockUpstream::start().await;
    upstream.control.extra_chunks.store(3, Ordering::SeqCst);
    upstream.control.chunk_delay_ms.store(300, Ordering::SeqCst);
    let gw = gateway_for(&upstream).await;
    let response = gw.chat("m", true).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.bytes_stream();
    let mut arrivals = Vec::new();
    let started = Instant::now();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        for _ in 0..chunk.windows(6).filter(|w| w == b"data: ").count() {
            arrivals.push(started.elapsed());
        }
    }
    // 5 content chunks, the finish chunk and [DONE], the upstream pausing 300 ms before each:
    // had the gateway buffered, they would all land together at the end.
    assert_eq!(arrivals.len(), 7);
    let spread = arrivals[arrivals.len() - 2] - arrivals[0];
    assert!(spread >= Duration::from_millis(900), "chunks arrived together ({arrivals:?}): buffered");
}

/// A bare HTTP/1.1 upstream answering every request on a connection with a fixed chat
/// completion; with `close_after_each`, it closes each connection shortly after answering (as
/// a server whose keep-alive timeout ran out), without saying `Connection: close`. Returns its
/// base URL and the number of connections it accepted.
async fn bare_upstream(close_after_each: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: headers, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    if close_after_each {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1"), accepted)
}

async fn gateway_to(base_url: &str) -> Gateway {
    Gateway::start(&format!(
        "keys: [{{ key: sk-test, team: t }}]\nteams: {{ t: {{ models: ['*'] }} }}\nproviders:\n  up: {{ dialect: openai, base_url: '{base_url}' }}\nmodels:\n  m: {{ deployments: [{{ provider: up, model: x }}] }}\n"
    ))
    .await
}

/// Sequential requests to a plain-HTTP upstream reuse one connection. (Idle connections are
/// kept per thread, each serving thread being one event loop: like one of the binary's.)
#[tokio::test(flavor = "current_thread")]
async fn upstream_connections_are_reused() {
    let (base_url, accepted) = bare_upstream(false).await;
    let gw = gateway_to(&base_url).await;
    for _ in 0..5 {
        let response = gw.chat("m", false).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["model"], "m", "{body}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one upstream connection for five requests");
}

/// An upstream that closed its idle connection meanwhile (its keep-alive ran out) costs the
/// client nothing: the request goes out again on a new connection instead of failing with 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closed_its_idle_connection_is_not_a_failure() {
    let (base_url, accepted) = bare_upstream(true).await;
    let gw = gateway_to(&base_url).await;
    for i in 1..=3 {
        let response = gw.chat("m", false).await;
        assert_eq!(response.status(), 200, "request {i}: {}", response.text().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "a new connection each time the last one was closed");
}

/// A client speaking HTTP/2 without upgrade (prior knowledge, as gRPC-style clients and some
/// service meshes do) is served on the same port.
#[tokio::test(flavor = "current_thread")]
async fn http2_clients_are_served_on_the_same_port() {
    let (base_url, _) = bare_upstream(false).await;
    let gw = gateway_to(&base_url).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = h2
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-test")
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["model"], "m", "{body}");
}

/// What a raw client connection gets from the gateway until it closes (`None` when the gateway
/// has not closed it within `patience`).
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, patience: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(patience, read_all).await.ok()?;
    Some(seen)
}

/// `server.header_read_timeout`: a client that sends its request head too slowly (slowloris),
/// or nothing at all, or leaves its keep-alive connection idle, loses the connection; a request
/// whose head arrives in pieces within the time is answered.
#[tokio::test(flavor = "current_thread")]
async fn slow_or_idle_client_connections_are_closed_after_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let (base_url, _) = bare_upstream(false).await;
    let gw = Gateway::start(&format!(
        "server: {{ header_read_timeout: 400ms }}\nkeys: [{{ key: sk-test, team: t }}]\nteams: {{ t: {{ models: ['*'] }} }}\nproviders:\n  up: {{ dialect: openai, base_url: '{base_url}' }}\nmodels:\n  m: {{ deployments: [{{ provider: up, model: x }}] }}\n"
    ))
    .await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let patience = Duration::from_secs(10);

    // Nothing sent: closed, unanswered.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent, patience).await, Some(vec![]), "a silent connection stays open");

    // Half a request head, then nothing: closed, unanswered.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(&request.as_bytes()[..40]).await.unwrap();
    assert_eq!(
        read_until_closed(&mut slow, patience).await,
        Some(vec![]),
        "a stalled request head keeps its connection"
    );

    // A head sent in three pieces, each well within the time: answered; then the connection,
    // left idle, is closed.
    let mut ok = TcpStream::connect(gw.addr).await.unwrap();
    for piece in [&request[..30], &request[30..90], &request[90..]] {
        ok.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = read_until_closed(&mut ok, patience).await.expect("an idle keep-alive connection stays open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains(r#""model":"m""#), "{answer}");
}

/// The header read timeout runs only while a request head is awaited: a stream lasting several
/// times as long is relayed to its end.
#[tokio::test(flavor = "current_thread")]
async fn a_stream_outlasting_the_header_read_timeout_is_not_cut() {
    let upstream = MockUpstream::start().await;
    upstream.control.extra_chunks.store(3, Ordering::SeqCst);
    upstream.control.chunk_delay_ms.store(300, Ordering::SeqCst);
    let gw = Gateway::start(&format!(
        "server: {{ header_read_timeout: 400ms }}\nkeys: [{{ key: sk-test, team: t }}]\nteams: {{ t: {{ models: ['*'] }} }}\nproviders:\n  up: {{ dialect: openai, base_url: '{}' }}\nmodels:\n  m: {{ deployments: [{{ provider: up, model: x }}] }}\n",
        upstream.base_url()
    ))
    .await;
    let started = Instant::now();
    let body = gw.chat("m", true).await.text().await.unwrap();
    assert!(started.elapsed() > Duration::from_millis(1200), "the stream was not slow: {:?}", started.elapsed());
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(!body.contains("\"error\""), "{body}");
}

/// A gateway whose default backend serves any model name cannot be made to hold what clients
/// choose: an overlong name is a 400 naming `model`, and made-up names share one
/// `<provider>/other` series in `/metrics` instead of adding one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_model_names_are_bounded() {
    let gw = Gateway::start(
        "keys: [{ key: sk-test, team: t }]\nteams: { t: { models: ['*'] } }\nproviders: { any: { dialect: mock } }\ndefault_backend: any\n",
    )
    .await;
    let body = |model: &str| serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.chat_as("sk-test", body(&"x".repeat(100 * 1024))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(support::json(r).await["error"]["param"], "model");
    for i in 0..20 {
        assert_eq!(gw.chat_as("sk-test", body(&format!("made-up-{i}"))).await.status(), 200);
    }
    let metrics = gw.metrics().await;
    assert!(!metrics.contains("made-up-"), "a client-chosen name became a series");
    assert!(
        metrics.contains(r#"llm_gateway_upstream_attempts_total{deployment="any/other",outcome="ok"} 20"#),
        "{metrics}"
    );
}
