//! Exact-hit latency end to end at 64 connections, against the upstream hop it replaces: the
//! same load (64 concurrent keep-alive connections, one small chat completion each request) sent
//! (1) straight to a fast local mock upstream, (2) through the gateway with the cache bypassed
//! (`Cache-Control: no-store`), and (3) through the gateway answered from the exact cache.
//! Everything runs on this machine's loopback. Run: `cargo bench --bench cache_hit_load`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: a failure stops it at once, and it reports on stdout"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_gateway::app;
use llm_gateway::config::Config;

const CONNECTIONS: usize = 64;
const REQUESTS: usize = 20_000;

async fn upstream() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            axum::Json(serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "The refund policy is 30 days, no questions asked."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn send(
    client: reqwest::Client,
    url: String,
    body: bytes::Bytes,
    headers: &'static [(&'static str, &'static str)],
) {
    let mut request = client.post(url).bearer_auth("sk-bench").header("content-type", "application/json").body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success());
    response.bytes().await.unwrap();
}

async fn load(name: &str, url: String, headers: &'static [(&'static str, &'static str)]) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "gpt", "messages": [{"role": "user", "content": "What is the refund policy?"}]}))
    .unwrap();
    let body = bytes::Bytes::from(body);
    // Warm up (and fill the cache).
    for _ in 0..CONNECTIONS {
        send(client.clone(), url.clone(), body.clone(), headers).await;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS {
                    let t = Instant::now();
                    send(client.clone(), url.clone(), body.clone(), headers).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "{name:<40} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        all.len() as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let up = upstream().await;
        let yaml = format!(
            "keys:\n  - {{ key: sk-bench, team: t }}\nteams:\n  t: {{ models: ['*'] }}\nproviders:\n  up: {{ dialect: openai, base_url: 'http://{up}/v1' }}\nmodels:\n  gpt:\n    deployments:\n      - {{ provider: up, model: up }}\ncache:\n  exact: {{ ttl: 1h }}\n"
        );
        let config = Config::from_yaml(&yaml, &std::collections::HashMap::<&str, &str>::new()).unwrap();
        let (app, _background) = app::build(&config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = listener.local_addr().unwrap();
        let options = llm_gateway::server::ServeOptions::from(&config.server);
        // The binary's own serving loop.
        tokio::spawn(async move {
            llm_gateway::server::serve(listener, app, std::future::pending(), options).await.unwrap()
        });
        println!("{REQUESTS} requests over {CONNECTIONS} connections, client, gateway and upstream on one 2-core machine");
        load("direct to the upstream (the hop)", format!("http://{up}/v1/chat/completions"), &[]).await;
        load("gateway, cache bypassed (no-store)", format!("http://{gw}/v1/chat/completions"), &[("cache-control", "no-store")])
            .await;
        load("gateway, exact cache hit", format!("http://{gw}/v1/chat/completions"), &[]).await;
    });
}
