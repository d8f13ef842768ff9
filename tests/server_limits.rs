//! What bounds the gateway's memory and sockets against slow or many clients: a body that does
//! not arrive in time is a 408; a credential with a concurrency limit cannot hold more slow
//! uploads than its limit; a connection that starts no request (HTTP/1 or HTTP/2) is closed
//! after the idle timeout; past `max_in_flight` requests the answer is an immediate 503 with
//! `Retry-After`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, MockUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(server: &str, key_limits: &str, upstream: &MockUpstream) -> String {
    format!(
        "server: {{ {server} }}\nkeys: [{{ key: sk-test, team: t, limits: {{ {key_limits} }} }}]\nteams: {{ t: {{ models: ['*'] }} }}\n\
         providers: {{ up: {{ dialect: openai, base_url: '{}', auth: none }} }}\nmodels: {{ m: {{ deployments: [{{ provider: up, model: x }}] }} }}\n",
        upstream.base_url()
    )
}

/// A request whose head is sent and whose body stops after `sent` of `declared` bytes.
async fn partial_upload(gw: &Gateway, declared: usize, sent: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-test\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&b"{\"model\":\"m\",\"messages\":[".repeat(declared)[..sent]).await.unwrap();
    tcp
}

/// The status line of what the gateway answers on `tcp` within `within` (`None`: nothing).
async fn status_within(tcp: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, tcp.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_a_408() {
    let upstream = MockUpstream::start().await;
    let gw = Gateway::start(&config("body_read_timeout: 300ms", "rpm: 1000", &upstream)).await;
    let started = Instant::now();
    let mut tcp = partial_upload(&gw, 1000, 10).await;
    let status = status_within(&mut tcp, Duration::from_secs(5)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 408 Request Timeout"), "after {:?}", started.elapsed());
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_hold_more_slow_uploads_than_its_concurrency_limit() {
    let upstream = MockUpstream::start().await;
    let gw = Gateway::start(&config("body_read_timeout: 10s", "max_concurrent: 2", &upstream)).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(partial_upload(&gw, 1000, 10).await);
    }
    // Give the two uploads time to be admitted to their reads.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = partial_upload(&gw, 1000, 10).await;
    let status = status_within(&mut third, Duration::from_secs(3)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 429 Too Many Requests"));
    drop(slow);
    // Their places come back once those clients are gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.chat_as("sk-test", body).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_http2_included() {
    let upstream = MockUpstream::start().await;
    let gw = Gateway::start(&config("idle_timeout: 300ms, header_read_timeout: 60s", "rpm: 1000", &upstream)).await;
    // HTTP/2 with prior knowledge: one request, then nothing.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(conn);
    let request = http::Request::get(format!("http://{}/health", gw.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection is still open after 5 s");

    // HTTP/1.1 likewise, even with a long header timeout.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n").await.unwrap();
    assert_eq!(status_within(&mut tcp, Duration::from_secs(2)).await.as_deref(), Some("HTTP/1.1 200 OK"));
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(eof.is_ok(), "the idle HTTP/1.1 connection is still open after 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_in_flight_the_answer_is_a_503_with_retry_after() {
    let upstream = MockUpstream::start().await;
    upstream.set_delay(1500);
    let gw = Gateway::start(&config("max_in_flight: 2", "rpm: 100000", &upstream)).await;
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let send = || {
        let request = gw.client.post(gw.url("/v1/chat/completions")).bearer_auth("sk-test");
        tokio::spawn(request.header("content-type", "application/json").body(body.to_string()).send())
    };
    let slow: Vec<_> = (0..2).map(|_| send()).collect();
    // Both are in flight once the upstream has them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.requests() < 2 {
        assert!(Instant::now() < deadline, "the two slow requests never reached the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = gw.chat_as("sk-test", body.clone()).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(support::json(refused).await["error"]["code"], "gateway_overloaded");
    for r in slow {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(gw.chat_as("sk-test", body).await.status(), 200, "room again once they are done");
}
