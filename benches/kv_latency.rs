//! Round-trip latency of one script call through the gateway's Valkey client (`kv::Kv`), against
//! a raw `PING`-sized baseline measured by the same client: sequential, and from 64 concurrent
//! tasks. Starts its own `valkey-server` ($VALKEY_SERVER or on PATH) on a free port.
//! Run: `cargo bench --bench kv_latency`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: a failure stops it at once, and it reports on stdout"
)]

use std::time::{Duration, Instant};

use llm_gateway::config::ValkeySettings;
use llm_gateway::kv::Kv;
use redis::Script;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut micros: Vec<f64>) {
    micros.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<40} p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>8.1} µs",
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        micros[micros.len() - 1]
    );
}

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = std::env::var("VALKEY_SERVER").unwrap_or_else(|_| "valkey-server".into());
    let mut child = std::process::Command::new(&server)
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {server}: {e} (set VALKEY_SERVER)"));
    std::thread::sleep(Duration::from_millis(300));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let settings = ValkeySettings {
            urls: vec![format!("redis://127.0.0.1:{port}")],
            cluster: false,
            timeout: Duration::from_secs(1),
            key_prefix: String::new(),
        };
        let kv = Kv::new(&settings).unwrap();
        let script = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
        for _ in 0..1000 {
            let _: i64 = kv.eval(&script, &["{t}:warm"], &[1]).await.unwrap();
        }
        let mut seq = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            let _: i64 = kv.eval(&script, &["{t}:seq"], &[1]).await.unwrap();
            seq.push(t.elapsed().as_secs_f64() * 1e6);
        }
        report("sequential EVALSHA", seq);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let kv = kv.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let key = format!("{{t}}:c{i}");
                    let mut v = Vec::with_capacity(500);
                    for _ in 0..500 {
                        let t = Instant::now();
                        let _: i64 = kv.eval(&script, &[key.as_str()], &[1]).await.unwrap();
                        v.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    v
                })
            })
            .collect();
        let started = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let rate = all.len() as f64 / started.elapsed().as_secs_f64();
        report(&format!("64 concurrent EVALSHA ({rate:.0}/s)"), all);
    });
    let _ = child.kill();
    let _ = child.wait();
}
