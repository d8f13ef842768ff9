//! The metering path's cost on requests: two gateways in one process, identical except that one
//! meters every request to an in-process OpenMeter sink (events delivered during the run), both
//! serving the built-in mock backend (no upstream network, so the gateway's own work is the whole
//! latency: the harshest ratio). Rounds alternate between the two so drift hits both alike.
//!
//! `cargo bench --bench metering_overhead` (release; `-- --rounds N --requests N`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: a failure stops it at once, and it reports on stdout"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use llm_gateway::app;
use llm_gateway::config::Config;

const BASE: &str = "keys: [{ key: sk-bench, team: team-a }]\nteams: { team-a: { models: ['*'] } }\n\
                    providers: { mock: { dialect: mock } }\n\
                    models: { gpt-4o-mini: { deployments: [{ provider: mock, model: mock-chat }] } }\n\
                    server: { log_level: warn }\n";

fn arg(name: &str, default: usize) -> usize {
    std::env::args().skip_while(|a| a != name).nth(1).and_then(|n| n.parse().ok()).unwrap_or(default)
}

struct Target {
    name: &'static str,
    url: String,
    _background: app::Background,
}

async fn serve(name: &'static str, yaml: &str) -> Target {
    let config = Config::from_yaml(yaml, &std::collections::HashMap::<&str, &str>::new()).expect("config");
    let (app, background) = app::build(&config).expect("build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let options = llm_gateway::server::ServeOptions::from(&config.server);
    // The binary's own serving loop.
    tokio::spawn(async move { llm_gateway::server::serve(listener, app, std::future::pending(), options).await });
    Target { name, url: format!("http://{addr}/v1/chat/completions"), _background: background }
}

async fn one(client: &reqwest::Client, url: &str, stream: bool) -> Duration {
    let body = if stream {
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello there, how are you today?"}]}"#
    } else {
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, how are you today?"}]}"#
    };
    let t = Instant::now();
    let response = client.post(url).bearer_auth("sk-bench").body(body).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.expect("body");
    assert!(!bytes.is_empty());
    t.elapsed()
}

/// Sequential requests, alternating between the two gateways request by request (so both see
/// the same machine at the same moment): each one's latencies.
async fn paired_latencies(client: &reqwest::Client, urls: [&str; 2], n: usize, stream: bool) -> [Vec<Duration>; 2] {
    let mut out = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for i in 0..n {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for j in order {
            out[j].push(one(client, urls[j], stream).await);
        }
    }
    out
}

/// `n` requests over `concurrency` connections: requests per second.
async fn throughput(client: &reqwest::Client, url: &str, n: usize, concurrency: usize, stream: bool) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / concurrency {
                one(&client, &url, stream).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (n / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6
}

fn main() {
    let rounds = arg("--rounds", 6);
    let requests = arg("--requests", 2000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let received = Arc::new(AtomicU64::new(0));
        let sink = {
            let received = received.clone();
            axum::Router::new().route(
                "/api/v1/events",
                axum::routing::post(move |body: Bytes| {
                    let received = received.clone();
                    async move {
                        let events = body.windows(13).filter(|w| *w == b"\"specversion\"").count();
                        received.fetch_add(events as u64, Ordering::Relaxed);
                        http::StatusCode::NO_CONTENT
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sink_addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, sink).await });
        let outbox = std::env::temp_dir().join(format!("llm-gateway-overhead-bench-{}", std::process::id()));
        let metered = format!(
            "{BASE}metering:\n  openmeter: {{ url: 'http://{sink_addr}' }}\n  outbox_dir: '{}'\n  source: bench\n",
            outbox.display()
        );
        let targets = [serve("metering off", BASE).await, serve("metering on", &metered).await];
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");
        let urls = [targets[0].url.as_str(), targets[1].url.as_str()];
        paired_latencies(&client, urls, 200, false).await; // warm-up
        for stream in [false, true] {
            let kind = if stream { "stream" } else { "non-stream" };
            let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
            let mut rps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                let [off, on] = paired_latencies(&client, urls, requests / 4, stream).await;
                lat[0].extend(off);
                lat[1].extend(on);
                // Alternate which goes first, so neither always gets the warmer cache.
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    rps[i].push(throughput(&client, urls[i], requests, 32, stream).await);
                }
            }
            let mut summary = Vec::new();
            for i in 0..2 {
                lat[i].sort_unstable();
                rps[i].sort_by(f64::total_cmp);
                let median_rps = rps[i][rps[i].len() / 2];
                summary.push((pct(&lat[i], 0.5), pct(&lat[i], 0.99), median_rps));
                println!(
                    "{kind:10} {:13} c=1 p50 {:7.1} us  p99 {:7.1} us | c=32 median {:8.0} req/s",
                    targets[i].name, summary[i].0, summary[i].1, summary[i].2
                );
            }
            println!(
                "{kind:10} ratio on/off: p50 {:.3}  p99 {:.3}  throughput(off/on) {:.3}",
                summary[1].0 / summary[0].0,
                summary[1].1 / summary[0].1,
                summary[0].2 / summary[1].2
            );
        }
        // Every metered request's events reached the sink.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("events delivered to the sink during the run: {}", received.load(Ordering::Relaxed));
        let _ = std::fs::remove_dir_all(&outbox);
    });
}
