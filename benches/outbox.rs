//! Outbox throughput on this machine: usage events per second (1) appended to and read back from
//! the on-disk outbox, and (2) through the whole pipeline — observer → queue → writer thread →
//! outbox → sender → an in-process OpenMeter sink answering 204.
//!
//! `cargo bench --bench outbox` (release build; `-- --events N` to change the count).

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
use llm_gateway::api::Usage;
use llm_gateway::auth::Principal;
use llm_gateway::config::metering::Fsync;
use llm_gateway::config::{Config, TeamPolicy};
use llm_gateway::ctx::{Endpoint, Observer, Outcome, RequestCtx};
use llm_gateway::metering::event::{self, Envelope, TokenType};
use llm_gateway::metering::{self, outbox};
use llm_gateway::telemetry::metrics::MeteringMetrics;

fn main() {
    let events: u64 =
        std::env::args().skip_while(|a| a != "--events").nth(1).and_then(|n| n.parse().ok()).unwrap_or(400_000);
    let dir = std::env::temp_dir().join(format!("llm-gateway-outbox-bench-{}", std::process::id()));
    raw_outbox(&dir.join("raw"), events);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(pipeline(&dir.join("pipeline"), events / 2));
    let _ = std::fs::remove_dir_all(&dir);
}

fn sample_line(i: u64) -> Vec<u8> {
    let uid = format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15);
    let request_id = format!("req_{i:032x}");
    let envelope = Envelope {
        uid: &uid,
        source: "llm-gateway/bench-0",
        event_type: "llm.tokens",
        subject: "team-a",
        time: "2026-11-26T08:18:07.123Z",
        model: "gpt-4o-mini",
        deployment: "openai/gpt-4o-mini",
        provider: "openai",
        key_id: "key-a",
        team: "team-a",
        request_id: &request_id,
        cached: false,
        estimated: false,
        currency: "USD",
    };
    let mut out = Vec::new();
    let cost = event::EventCost { nanos: 1234 * 150, micros: 185 };
    event::write_line(&mut out, &envelope, TokenType::Input, 1234, cost);
    out
}

/// Appends in writer-sized batches (fsync every second, the default), then reads everything
/// back in sender-sized batches, acknowledging each.
fn raw_outbox(dir: &std::path::Path, events: u64) {
    let shared = Arc::new(outbox::Shared::default());
    let (mut writer, mut reader, _) =
        outbox::open(dir, 16 << 20, Fsync::Interval(Duration::from_secs(1)), shared).expect("open");
    let line = sample_line(7);
    let per_batch = 100;
    let batch: Vec<u8> = (0..per_batch).flat_map(|_| line.clone()).collect();
    let started = Instant::now();
    for _ in 0..events / per_batch {
        writer.append(&batch).expect("append");
        writer.maybe_sync().expect("sync");
    }
    writer.sync().expect("sync");
    let wrote = started.elapsed();
    let started = Instant::now();
    let mut read = 0u64;
    let mut b = outbox::Batch::default();
    loop {
        b.clear();
        let n = reader.read_more(&mut b, 500, 1 << 20).expect("read");
        if n == 0 {
            break;
        }
        read += n as u64;
        reader.ack().expect("ack");
    }
    let readback = started.elapsed();
    let total = events / per_batch * per_batch;
    assert_eq!(read, total);
    println!(
        "outbox append: {total} events ({} B each) in {:.3}s = {:.0} events/s ({:.1} MB/s)",
        line.len(),
        wrote.as_secs_f64(),
        total as f64 / wrote.as_secs_f64(),
        (total * line.len() as u64) as f64 / wrote.as_secs_f64() / 1e6
    );
    println!(
        "outbox read+ack (500/batch): {total} events in {:.3}s = {:.0} events/s",
        readback.as_secs_f64(),
        total as f64 / readback.as_secs_f64()
    );
}

/// The whole pipeline: `requests` finished requests (two events each) handed to the observer as
/// fast as one thread can, delivered to a local sink.
async fn pipeline(dir: &std::path::Path, requests: u64) {
    let received = Arc::new(AtomicU64::new(0));
    let sink = {
        let received = received.clone();
        axum::Router::new().route(
            "/api/v1/events",
            axum::routing::post(move |body: Bytes| {
                let received = received.clone();
                async move {
                    let n = serde_json::from_slice::<Vec<serde_json::Value>>(&body).map(|v| v.len()).unwrap_or(0);
                    received.fetch_add(n as u64, Ordering::Relaxed);
                    http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, sink).await });
    let yaml = format!(
        "keys: [{{ key: sk, team: team-a }}]\nteams: {{ team-a: {{ models: ['*'] }} }}\n\
         providers: {{ openai: {{ vendor: openai }} }}\n\
         models: {{ gpt-4o-mini: {{ deployments: [{{ provider: openai, model: gpt-4o-mini }}] }} }}\n\
         metering:\n  openmeter: {{ url: 'http://{addr}' }}\n  outbox_dir: '{}'\n  source: bench\n\
         \x20 queue_capacity: 1000000\n  batch: {{ max_events: 1000, max_wait: 50ms }}\n",
        dir.display()
    );
    let config = Config::from_yaml(&yaml, &std::collections::HashMap::<&str, &str>::new()).expect("config");
    let metrics = Arc::new(MeteringMetrics::default());
    let settings = config.metering.clone().expect("metering");
    let (observer, running) = metering::start(&config, &settings, metrics.clone()).expect("start");
    let ctx = RequestCtx {
        request_id: "req-bench".into(),
        started: Instant::now(),
        endpoint: Endpoint::ChatCompletions,
        principal: Some(Principal {
            team: "team-a".into(),
            key_id: "key-a".into(),
            grant: Default::default(),
            policy: Arc::new(TeamPolicy {
                models: vec![],
                model_overrides: Default::default(),
                tier: None,
                limits: Default::default(),
                model_limits: Default::default(),
            }),
        }),
        client_model: "gpt-4o-mini".into(),
        client: Default::default(),
        stream: true,
        client_wants_usage: false,
        deployment: Some("openai/gpt-4o-mini".into()),
        priced: None,
        attempts: 1,
        trace: Default::default(),
        body: Bytes::new(),
        cache: Default::default(),
        reservation: None,
        query: None,
    };
    let outcome = Outcome {
        usage: Some(Usage { prompt_tokens: 1234, completion_tokens: 321, total_tokens: 1555, ..Default::default() }),
        ..Outcome::failed(200, "")
    };
    let started = Instant::now();
    let mut finish_ns = Vec::with_capacity(requests as usize);
    for _ in 0..requests {
        let t = Instant::now();
        observer.finished(&ctx, &outcome);
        finish_ns.push(t.elapsed().as_nanos() as u64);
    }
    let handed = started.elapsed();
    let events = requests * 2;
    while metrics.persisted.get() < events {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let persisted = started.elapsed();
    while received.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = started.elapsed();
    finish_ns.sort_unstable();
    let pct = |p: f64| finish_ns[((finish_ns.len() as f64 - 1.0) * p) as usize];
    println!(
        "observer.finished() on the request path: p50 {} ns, p99 {} ns, max {} ns ({requests} calls in {:.3}s)",
        pct(0.5),
        pct(0.99),
        finish_ns.last().copied().unwrap_or(0),
        handed.as_secs_f64()
    );
    println!(
        "pipeline persisted: {events} events in {:.3}s = {:.0} events/s",
        persisted.as_secs_f64(),
        events as f64 / persisted.as_secs_f64()
    );
    println!(
        "pipeline delivered to OpenMeter sink: {events} events in {:.3}s = {:.0} events/s",
        delivered.as_secs_f64(),
        events as f64 / delivered.as_secs_f64()
    );
    assert_eq!(metrics.dropped_queue_full.get(), 0);
    running.shutdown(Duration::from_secs(5)).await;
}
