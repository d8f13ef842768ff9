//! Proxy behaviour a user notices on the wire: streaming without buffering, and a client that
//! goes away cancelling its upstream request.

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
