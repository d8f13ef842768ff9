//! Limits against real replicas and a real Valkey: request rates exact across two gateways,
//! token reservations that stop concurrent streams from overshooting and are refunded with the
//! real usage, concurrency caps, daily budgets over an injected clock, the Valkey-down policies,
//! and a 3-node cluster behaving like a standalone server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llm_gateway::clock::{ManualClock, parse_timestamp};
use serde_json::{Value, json};
use support::valkey::{ValkeyCluster, ValkeyServer};
use support::{Gateway, MockUpstream, json};

const KEY: &str = "sk-test";

fn standalone(v: &ValkeyServer) -> String {
    format!("valkey: {{ url: '{}', timeout: 1s }}\n", v.url())
}

fn cluster(c: &ValkeyCluster) -> String {
    let urls: Vec<String> = c.urls().iter().map(|u| format!("'{u}'")).collect();
    format!("valkey: {{ urls: [{}], cluster: true, timeout: 1s }}\n", urls.join(", "))
}

/// A gateway config: `store` (a `valkey:` section or nothing), then `rest` (limits, keys,
/// teams), serving model `m` from the built-in mock or from `upstream`.
fn config(store: &str, rest: &str, upstream: Option<&MockUpstream>) -> String {
    let provider = match upstream {
        Some(u) => format!("{{ dialect: openai, base_url: '{}', auth: none }}", u.base_url()),
        None => "{ dialect: mock }".to_owned(),
    };
    format!("{store}{rest}providers: {{ p: {provider} }}\nmodels: {{ m: {{ deployments: [{{ provider: p }}] }} }}\n")
}

fn hello(max_tokens: u64, stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": max_tokens, "stream": stream})
}

/// The prompt estimate of `hello`: 4 tokens a message plus ⌈5 chars / 4⌉.
const HELLO_PROMPT: u64 = 6;

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or_else(|| panic!("no {name} header"))
}

/// Eight clients hammer one key through two replicas for `secs` seconds. The request-rate
/// bucket holds 10 s worth of requests (`limits.request_burst`, default), so GCRA admits a full
/// bucket at once — ⌈rpm × 10 / 60⌉ — and then exactly one request every 60/rpm seconds: over
/// `secs` seconds that is `burst + rpm × secs / 60` in total, whatever the replica count. A
/// per-replica limiter would admit twice that.
async fn request_rate_is_exact_across_replicas(store: &str, rpm: u64, secs: u64) {
    let yaml = config(
        store,
        &format!(
            "limits: {{ replicas: 2 }}\nkeys: [{{ key: {KEY}, team: t, limits: {{ rpm: {rpm} }} }}]\nteams: {{ t: {{ models: ['*'] }} }}\n"
        ),
        None,
    );
    let replicas = [Arc::new(Gateway::start(&yaml).await), Arc::new(Gateway::start(&yaml).await)];
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for i in 0..8 {
        let gw = replicas[i % 2].clone();
        let (accepted, refused) = (accepted.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = gw.chat_as(KEY, hello(5, false)).await;
                match r.status().as_u16() {
                    200 => accepted.fetch_add(1, Ordering::Relaxed),
                    429 => refused.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
                };
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let burst = (rpm * 10).div_ceil(60);
    let expected = burst + rpm * secs / 60;
    let accepted = accepted.load(Ordering::Relaxed);
    let tolerance = expected * 2 / 100;
    eprintln!("{rpm}/min for {secs} s through 2 replicas: accepted {accepted}, expected {expected} ± {tolerance}");
    assert!(
        accepted.abs_diff(expected) <= tolerance,
        "accepted {accepted} requests, expected {expected} ± {tolerance} (burst {burst} + {rpm}/min for {secs} s)"
    );
    assert!(refused.load(Ordering::Relaxed) > accepted, "the clients did hammer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_exactly_one_limit_of_requests() {
    let valkey = ValkeyServer::start().await;
    request_rate_is_exact_across_replicas(&standalone(&valkey), 300, 20).await;
}

/// A counter of `/metrics` text, 0 when absent.
fn counter(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap_or(0.0) as u64
}

/// A key allowed `budget` requests a day, with `limits` (the `limits:` section's settings).
fn daily_requests_config(valkey: &ValkeyServer, limits: &str, budget: u64) -> String {
    config(
        &standalone(valkey),
        &format!(
            "limits: {{ {limits} }}\nkeys: [{{ key: {KEY}, team: t, limits: {{ daily_requests: {budget} }} }}]\nteams: {{ t: {{ models: ['*'] }} }}\n"
        ),
        None,
    )
}

/// Far from a limit each replica takes allowances — capacity ahead of demand, at most 1/32 of
/// the limit — and admits from them without a round trip; near the limit every admission is
/// Valkey's. Eight clients hammering a budget of 2,000 requests a day through two replicas get
/// exactly 2,000 admitted, most of them decided without Valkey, and what a replica held unused
/// when the clients stopped goes back to the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowances_decide_far_from_a_limit_and_never_add_to_it() {
    let valkey = ValkeyServer::start().await;
    let yaml = daily_requests_config(&valkey, "replicas: 2", 2000);
    let replicas = [Arc::new(Gateway::start(&yaml).await), Arc::new(Gateway::start(&yaml).await)];
    let accepted = Arc::new(AtomicU64::new(0));
    // Each client goes on until it was refused five times in a row.
    let round = || async {
        let mut clients = Vec::new();
        for i in 0..8 {
            let (gw, accepted) = (replicas[i % 2].clone(), accepted.clone());
            clients.push(tokio::spawn(async move {
                let mut refused = 0;
                while refused < 5 {
                    let r = gw.chat_as(KEY, hello(5, false)).await;
                    match r.status().as_u16() {
                        200 => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            refused = 0;
                        }
                        429 => refused += 1,
                        other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
                    }
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
    };
    round().await;
    let first = accepted.load(Ordering::Relaxed);
    assert!(first <= 2000, "allowances admitted {first} of a budget of 2,000");
    // Allowances unused for 250 ms go back; whatever was still held is admitted now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    round().await;
    assert_eq!(accepted.load(Ordering::Relaxed), 2000, "first round {first}");
    let (mut local, mut remote) = (0, 0);
    for gw in &replicas {
        let text = gw.metrics().await;
        local += counter(&text, "llm_gateway_limit_decisions_total{decided_by=\"allowance\"}");
        remote += counter(&text, "llm_gateway_limit_decisions_total{decided_by=\"valkey\"}");
        let q = gw.quota(KEY).await;
        let used = q["limits"].as_object().unwrap().values().next().unwrap()["daily_requests"]["used"].clone();
        assert_eq!(used, 2000, "{q}");
    }
    eprintln!("admitted from allowances {local}, by Valkey {remote}");
    assert!(local > 3 * remote, "most admissions far from the limit need no round trip: {local} vs {remote}");
}

/// `limits: { allowances: false }`: every admission is decided in Valkey, one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowances_can_be_turned_off() {
    let valkey = ValkeyServer::start().await;
    let yaml = daily_requests_config(&valkey, "allowances: false", 2000);
    let gw = Gateway::start(&yaml).await;
    for _ in 0..40 {
        assert_eq!(gw.chat_as(KEY, hello(5, false)).await.status(), 200);
    }
    let text = gw.metrics().await;
    assert_eq!(counter(&text, "llm_gateway_limit_decisions_total{decided_by=\"valkey\"}"), 40, "{text}");
    assert_eq!(counter(&text, "llm_gateway_limit_decisions_total{decided_by=\"allowance\"}"), 0);
    let q = gw.quota(KEY).await;
    assert_eq!(q["limits"].as_object().unwrap().values().next().unwrap()["daily_requests"]["used"], 40, "{q}");
}

/// 20 streams at once against 10,000 tokens a minute, each reserving its prompt plus
/// `max_tokens` (1,006): only ⌊10,000 / 1,006⌋ = 9 fit. When they end, each is charged its real
/// usage (7 tokens) and the rest is refunded, so a second wave fits 9 again at once (the bucket
/// refills by itself at only 167 tokens a second).
async fn streams_reserve_tokens_and_refund_the_unused(store: &str) {
    let upstream = MockUpstream::start().await;
    upstream.set_delay(800);
    let yaml = config(
        store,
        &format!("keys: [{{ key: {KEY}, team: t }}]\nteams: {{ t: {{ models: ['*'], limits: {{ tpm: 10000 }} }} }}\n"),
        Some(&upstream),
    );
    let gw = Arc::new(Gateway::start(&yaml).await);
    let estimate = HELLO_PROMPT + 1000;
    for wave in 0..2 {
        let mut streams = Vec::new();
        for _ in 0..20 {
            let gw = gw.clone();
            streams.push(tokio::spawn(async move {
                let r = gw.chat_as(KEY, hello(1000, true)).await;
                let status = r.status().as_u16();
                if status == 429 {
                    assert!(r.headers().contains_key("retry-after"));
                    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "10000");
                    let body = json(r).await;
                    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
                    assert!(body["error"]["message"].as_str().unwrap().contains("tokens per minute"), "{body}");
                } else {
                    assert_eq!(status, 200);
                    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "10000");
                    let text = r.text().await.unwrap();
                    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
                }
                status
            }));
        }
        let mut admitted = 0;
        for s in streams {
            admitted += u64::from(s.await.unwrap() == 200);
        }
        assert_eq!(admitted, 10_000 / estimate, "wave {wave}: reservations keep concurrent streams within the budget");
        eventually("the unused reservations are refunded", Duration::from_secs(5), || async {
            let q = gw.quota(KEY).await;
            q["limits"]["team t"]["tpm"]["used"].as_u64().unwrap() <= admitted * 7
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reserve_tokens_and_refund_the_unused_shared() {
    let valkey = ValkeyServer::start().await;
    streams_reserve_tokens_and_refund_the_unused(&standalone(&valkey)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reserve_tokens_and_refund_the_unused_in_process() {
    streams_reserve_tokens_and_refund_the_unused("").await;
}

async fn third_concurrent_request_is_refused(store: &str) {
    let upstream = MockUpstream::start().await;
    upstream.set_delay(1500);
    let yaml = config(
        store,
        &format!(
            "keys: [{{ key: {KEY}, team: t, limits: {{ max_concurrent: 2 }} }}]\n\
             teams: {{ t: {{ models: ['*'], limits: {{ max_concurrent: 3 }} }} }}\n"
        ),
        Some(&upstream),
    );
    let gw = Arc::new(Gateway::start(&yaml).await);
    let held: Vec<_> = (0..2)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.chat_as(KEY, hello(5, i == 1)).await.status().as_u16() })
        })
        .collect();
    eventually("two requests in flight", Duration::from_secs(5), || async {
        upstream.control.in_flight.load(Ordering::SeqCst) == 2
    })
    .await;
    let third = gw.chat_as(KEY, hello(5, false)).await;
    assert_eq!(third.status(), 429);
    assert_eq!(header(&third, "retry-after"), "1");
    let body = json(third).await;
    assert!(body["error"]["message"].as_str().unwrap().starts_with("Too many concurrent requests on key"), "{body}");
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    upstream.set_delay(0);
    // The leases are released when the requests end (a stream at its last chunk), from the key's
    // set and the team's: pairs keep being admitted long after a leaked lease would block them.
    for round in 0..4 {
        eventually(&format!("round {round}: the leases are released"), Duration::from_secs(2), || async {
            let (a, b) = tokio::join!(gw.chat_as(KEY, hello(5, false)), gw.chat_as(KEY, hello(5, true)));
            let ok = a.status() == 200 && b.status() == 200;
            let _ = tokio::join!(a.bytes(), b.bytes());
            ok
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_concurrent_request_is_refused_shared() {
    let valkey = ValkeyServer::start().await;
    third_concurrent_request_is_refused(&standalone(&valkey)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_concurrent_request_is_refused_in_process() {
    third_concurrent_request_is_refused("").await;
}

/// Forty requests at once against a cap of five concurrent: admissions that arrive together
/// share Valkey calls (see `admit.lua`) and are still decided one by one — exactly five each
/// time, their leases released when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_decided_request_by_request() {
    let valkey = ValkeyServer::start().await;
    let upstream = MockUpstream::start().await;
    upstream.set_delay(1000);
    let yaml = config(
        &standalone(&valkey),
        &format!(
            "keys: [{{ key: {KEY}, team: t, limits: {{ max_concurrent: 5 }} }}]\nteams: {{ t: {{ models: ['*'] }} }}\n"
        ),
        Some(&upstream),
    );
    let gw = Arc::new(Gateway::start(&yaml).await);
    for burst in 0..2 {
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let gw = gw.clone();
                tokio::spawn(async move {
                    let r = gw.chat_as(KEY, hello(5, false)).await;
                    (r.status().as_u16(), json(r).await)
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            if status == 200 {
                admitted += 1;
                continue;
            }
            assert_eq!(status, 429, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("Too many concurrent requests on key"), "{body}");
        }
        assert_eq!(admitted, 5, "burst {burst}: exactly the concurrency cap is admitted");
        // The five leases are released once their requests ended.
        eventually("the leases are released", Duration::from_secs(3), || async {
            let r = gw.chat_as(KEY, hello(5, false)).await;
            let ok = r.status() == 200;
            let _ = r.bytes().await;
            ok
        })
        .await;
    }
}

/// A client that sends its next request as soon as the last answer arrived, against a cap of
/// one: the slot the answer gave back is free for it, although its release travels to Valkey
/// after the answer (streams and whole answers alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_client_at_the_cap_is_never_refused() {
    let valkey = ValkeyServer::start().await;
    let yaml = config(
        &standalone(&valkey),
        &format!(
            "keys: [{{ key: {KEY}, team: t, limits: {{ max_concurrent: 1 }} }}]\nteams: {{ t: {{ models: ['*'] }} }}\n"
        ),
        None,
    );
    let gw = Gateway::start(&yaml).await;
    for i in 0..200 {
        let r = gw.chat_as(KEY, hello(5, i % 2 == 1)).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
    }
}

/// A team with 40 tokens a day; each request reserves 26 (prompt + max_tokens 20) and really
/// uses what the mock reports. Requests are admitted while the settled usage plus 26 fits, then
/// refused with `insufficient_quota` until midnight UTC on the injected clock.
async fn daily_budget_refuses_until_the_day_rolls_over(store: &str) {
    let start = parse_timestamp("2026-03-10T23:00:00Z").unwrap() * 1000;
    let clock = Arc::new(ManualClock::new(start));
    let yaml = config(
        store,
        &format!(
            "keys: [{{ key: {KEY}, team: t }}]\nteams: {{ t: {{ models: ['*'], limits: {{ daily_tokens: 40 }} }} }}\n"
        ),
        None,
    );
    let gw = Gateway::start_with_clock(&yaml, &[], clock.clone()).await;
    let reserve = HELLO_PROMPT + 20;
    let mut used = 0;
    let refusal = loop {
        let r = gw.chat_as(KEY, hello(20, false)).await;
        if r.status() == 429 {
            break r;
        }
        assert_eq!(r.status(), 200);
        assert!(used + reserve <= 40, "admitted with {used} used: the reservation would overshoot");
        used += json(r).await["usage"]["total_tokens"].as_u64().unwrap();
        eventually("the usage is settled", Duration::from_secs(2), || async {
            gw.quota(KEY).await["limits"]["team t"]["daily_tokens"]["used"] == used
        })
        .await;
    };
    assert!(used + reserve > 40, "refused with {used} used although the reservation fits");
    assert_eq!(header(&refusal, "retry-after"), "3600", "an hour until midnight UTC");
    let body = json(refusal).await;
    assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    let quota = gw.quota(KEY).await;
    assert_eq!(quota["limits"]["team t"]["daily_tokens"]["resets_at"], "2026-03-11T00:00:00Z", "{quota}");

    clock.advance(30 * 60 * 1000);
    let r = gw.chat_as(KEY, hello(20, false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "1800");
    clock.advance(31 * 60 * 1000);
    assert_eq!(gw.chat_as(KEY, hello(20, false)).await.status(), 200, "a new day, a new budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budget_refuses_until_the_day_rolls_over_shared() {
    let valkey = ValkeyServer::start().await;
    daily_budget_refuses_until_the_day_rolls_over(&standalone(&valkey)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budget_refuses_until_the_day_rolls_over_in_process() {
    daily_budget_refuses_until_the_day_rolls_over("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_rate_limit_headers() {
    let yaml = config(
        "",
        &format!(
            "keys: [{{ key: {KEY}, team: t, limits: {{ rpm: 60 }} }}, {{ key: sk-free, team: f }}]\n\
             teams: {{ t: {{ models: ['*'], limits: {{ tpm: 10000 }} }}, f: {{ models: ['*'] }} }}\n"
        ),
        None,
    );
    let gw = Gateway::start(&yaml).await;
    let r = gw.chat_as(KEY, hello(20, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "60");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "9", "a 10-second burst of a 60/min limit");
    assert_eq!(header(&r, "x-ratelimit-reset-requests"), "1s");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "10000");
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), (10_000 - HELLO_PROMPT - 20).to_string());
    assert_eq!(header(&r, "x-ratelimit-reset-tokens"), "156ms", "26 tokens at 10,000 a minute");
    let s = gw.chat_as(KEY, hello(20, true)).await;
    assert_eq!(header(&s, "x-ratelimit-remaining-requests"), "8");
    let _ = s.bytes().await;
    // An unlimited team gets no such headers; a refused request gets them with Retry-After.
    assert!(!gw.chat_as("sk-free", hello(20, false)).await.headers().contains_key("x-ratelimit-limit-requests"));
    let mut last = None;
    for _ in 0..10 {
        last = Some(gw.chat_as(KEY, hello(20, false)).await);
    }
    let refused = last.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&refused, "retry-after"), "1");
    let body = json(refused).await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("requests per minute (RPM) on key"), "{body}");
    assert!(gw.metrics().await.contains("llm_gateway_rate_limited_total{reason=\"rpm\"} 2\n"));
    let q = gw.quota(KEY).await;
    assert_eq!(q["team"], "t");
    assert_eq!(q["mode"], "local");
    assert_eq!(q["limits"]["key f3abf2a6cc4f"]["rpm"]["remaining"], 0, "{q}");
}

/// `GET /v1/models` (or `/v1/models/{id}`) with `key`.
async fn models(gw: &Gateway, key: &str, path: &str) -> reqwest::Response {
    let r = gw.client.get(gw.url(path)).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r
}

/// A model listing carries the caller's `x-ratelimit-*` levels as they stand, but takes nothing
/// from them: 12 requests a minute (a bucket of 2, one back every 5 s) still admit two chats
/// after any number of listings. `/v1/models/{id}` also counts the team's limits on that model.
/// With Valkey the levels are the shared ones: a chat on one replica shows on the other.
async fn model_listings_report_the_limits_without_spending_them(store: &str) {
    let yaml = config(
        store,
        &format!(
            "keys: [{{ key: {KEY}, team: t, limits: {{ rpm: 12 }} }}, {{ key: sk-free, team: f }}]\n\
             teams: {{ t: {{ models: ['*'], limits: {{ tpm: 10000 }}, model_limits: {{ m: {{ tpm: 500 }} }} }}, f: {{ models: ['*'] }} }}\n"
        ),
        None,
    );
    let a = Gateway::start(&yaml).await;
    let b = if store.is_empty() { None } else { Some(Gateway::start(&yaml).await) };
    let other = b.as_ref().unwrap_or(&a);

    let r = models(&a, KEY, "/v1/models").await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "12");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "2", "a fresh bucket: the whole burst");
    assert_eq!(header(&r, "x-ratelimit-reset-requests"), "0s");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "10000", "the listing is about no one model");
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "10000");
    let r = models(&a, KEY, "/v1/models/m").await;
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "500", "the team's limit on model m is tighter");
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "12");

    let r = a.chat_as(KEY, hello(20, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "1");
    for _ in 0..5 {
        let r = models(other, KEY, "/v1/models").await;
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "1", "the chat shows; the listings take nothing");
        assert_ne!(header(&r, "x-ratelimit-reset-requests"), "0s", "the bucket is refilling");
    }
    let r = other.chat_as(KEY, hello(20, false)).await;
    assert_eq!(r.status(), 200, "five listings spent nothing of a bucket of two");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    let r = models(&a, KEY, "/v1/models").await;
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(a.chat_as(KEY, hello(20, false)).await.status(), 429);

    // No limits, no headers.
    assert!(!models(&a, "sk-free", "/v1/models").await.headers().contains_key("x-ratelimit-limit-requests"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_listings_report_the_limits_without_spending_them_shared() {
    let valkey = ValkeyServer::start().await;
    model_listings_report_the_limits_without_spending_them(&standalone(&valkey)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_listings_report_the_limits_without_spending_them_in_process() {
    model_listings_report_the_limits_without_spending_them("").await;
}

async fn sent(gw: &Gateway, key: &str) -> reqwest::Response {
    gw.chat_as(key, hello(5, false)).await
}

/// Valkey dies: with `fail-open`, each of the two replicas enforces half of each limit on its
/// own (reported in /health, /quota, metrics and the log); when Valkey is back, the shared
/// limits resume and the budgets spent meanwhile are added to the shared counters. Keys k1..k3
/// (60 requests a minute, a burst of 10) keep the phases apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_down_fails_open_to_per_replica_limits_then_resumes() {
    let mut valkey = ValkeyServer::start().await;
    let yaml = config(
        &standalone(&valkey),
        "limits: { replicas: 2, on_valkey_down: fail-open }\n\
         keys: [{ key: k1, team: t, limits: { rpm: 60 } }, { key: k2, team: t, limits: { rpm: 60, daily_requests: 100 } }, { key: k3, team: t, limits: { rpm: 60 } }]\n\
         teams: { t: { models: ['*'] } }\n",
        None,
    );
    let (a, b) = (Gateway::start(&yaml).await, Gateway::start(&yaml).await);
    let mut ok = 0;
    for i in 0..12 {
        let r = if i % 2 == 0 { sent(&a, "k1").await } else { sent(&b, "k1").await };
        ok += usize::from(r.status() == 200);
    }
    assert_eq!(ok, 10, "shared: one burst across both replicas");

    valkey.kill();
    let mut ok_a = 0;
    for _ in 0..8 {
        ok_a += usize::from(sent(&a, "k2").await.status() == 200);
    }
    let mut ok_b = 0;
    for _ in 0..8 {
        ok_b += usize::from(sent(&b, "k2").await.status() == 200);
    }
    assert_eq!((ok_a, ok_b), (5, 5), "fail-open: each replica enforces half");
    let r = models(&a, "k3", "/v1/models").await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "30", "a listing reports the per-replica limit in force");
    assert_eq!(a.health().await["limits"]["mode"], "fail-open");
    assert_eq!(a.quota("k2").await["mode"], "fail-open");
    let m = a.metrics().await;
    assert!(m.contains("llm_gateway_limits_degraded 1\n"), "{m}");
    assert!(m.contains("llm_gateway_limits_fallback_total{policy=\"fail-open\"} 8\n"), "{m}");

    valkey.restart().await;
    for gw in [&a, &b] {
        eventually("shared limits resume", Duration::from_secs(5), || async {
            gw.health().await["limits"]["mode"] == "shared"
        })
        .await;
    }
    assert!(a.metrics().await.contains("llm_gateway_limits_degraded 0\n"));
    // What each replica spent alone was added to the shared budget when Valkey came back.
    let k2 = format!("key {}", llm_gateway::config::key_id(&llm_gateway::config::sha256(b"k2")));
    assert_eq!(a.quota("k2").await["limits"][&k2]["daily_requests"]["used"], 10);
    let mut ok = 0;
    for i in 0..12 {
        let r = if i % 2 == 0 { sent(&a, "k3").await } else { sent(&b, "k3").await };
        ok += usize::from(r.status() == 200);
    }
    assert_eq!(ok, 10, "shared again: one burst across both replicas");
}

/// Issue #26, item 13c: a team that spent 90% of its daily budget does not get a fresh budget
/// when Valkey goes down under `fail-open`. The replica starts its per-replica budget (half of
/// 40 requests, with two replicas) from its share of the last shared level it saw (36 → 18), so
/// it refuses once its share of the remaining 10% is spent, not after 20 more requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_budgets_start_from_the_last_shared_level_not_from_zero() {
    let mut valkey = ValkeyServer::start().await;
    let yaml = config(
        &standalone(&valkey),
        "limits: { replicas: 2, on_valkey_down: fail-open }\n\
         keys: [{ key: k, team: t }]\n\
         teams: { t: { models: ['*'], limits: { daily_requests: 40 } } }\n",
        None,
    );
    let gw = Gateway::start(&yaml).await;
    for i in 0..36 {
        assert_eq!(sent(&gw, "k").await.status(), 200, "shared: request {i} of 40");
    }
    assert_eq!(gw.quota("k").await["limits"]["team t"]["daily_requests"]["used"], 36);

    valkey.kill();
    let mut admitted = 0;
    let mut refusal = None;
    for _ in 0..25 {
        let r = sent(&gw, "k").await;
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => refusal = Some(json(r).await),
            other => panic!("status {other}"),
        }
    }
    assert_eq!(gw.health().await["limits"]["mode"], "fail-open");
    assert_eq!(admitted, 2, "alone, the replica admits its share of what was left of the budget (4 / 2)");
    let refusal = refusal.expect("the budget refuses");
    assert_eq!(refusal["error"]["code"], "insufficient_quota", "{refusal}");
    let quota = gw.quota("k").await;
    let budget = &quota["limits"]["team t"]["daily_requests"];
    assert_eq!((budget["limit"].as_u64(), budget["used"].as_u64()), (Some(20), Some(20)), "{quota}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_down_fails_closed_with_503_then_resumes() {
    let mut valkey = ValkeyServer::start().await;
    let yaml = config(
        &standalone(&valkey),
        &format!(
            "limits: {{ on_valkey_down: fail-closed }}\n\
             keys: [{{ key: {KEY}, team: t, limits: {{ rpm: 600 }} }}, {{ key: sk-free, team: f }}]\n\
             teams: {{ t: {{ models: ['*'] }}, f: {{ models: ['*'] }} }}\n"
        ),
        None,
    );
    let gw = Gateway::start(&yaml).await;
    assert_eq!(gw.chat_as(KEY, hello(5, false)).await.status(), 200);
    valkey.kill();
    // The allowance the replica took with that admission (3 of the 100-request burst) is spent
    // in Valkey already, so it may still admit; the first contact with Valkey after it applies
    // the policy.
    let mut admitted = 0;
    let r = loop {
        let r = gw.chat_as(KEY, hello(5, false)).await;
        if r.status() != 200 {
            break r;
        }
        admitted += 1;
        assert!(admitted <= 3, "only the allowance in hand may admit once Valkey is gone");
    };
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "1");
    let body = json(r).await;
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert_eq!(gw.chat_as("sk-free", hello(5, false)).await.status(), 200, "nothing to check for an unlimited team");
    assert_eq!(gw.health().await["limits"]["mode"], "fail-closed");
    let r = models(&gw, KEY, "/v1/models").await;
    assert!(!r.headers().contains_key("x-ratelimit-limit-requests"), "fail-closed: the levels are unknown");
    assert!(gw.metrics().await.contains("llm_gateway_limits_fallback_total{policy=\"fail-closed\"} 1\n"));
    valkey.restart().await;
    eventually("shared limits resume", Duration::from_secs(5), || async {
        gw.chat_as(KEY, hello(5, false)).await.status() == 200
    })
    .await;
}

/// `GET /ready`: (status, body).
async fn ready(gw: &Gateway) -> (u16, Value) {
    let r = gw.client.get(gw.url("/ready")).send().await.unwrap();
    (r.status().as_u16(), json(r).await)
}

/// `/ready` follows Valkey: 503 naming it under fail-closed, 200 `degraded` under fail-open (the
/// replica still serves), 200 again once it answers; `/health` (liveness) is 200 throughout. No
/// request needs to hit Valkey first: the readiness check itself notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reflects_valkey_and_its_policy() {
    let mut valkey = ValkeyServer::start().await;
    let rest = |policy: &str| {
        format!(
            "limits: {{ replicas: 3, on_valkey_down: {policy} }}\nkeys: [{{ key: {KEY}, team: t }}]\nteams: {{ t: {{ models: ['*'] }} }}\n"
        )
    };
    let closed = Gateway::start(&config(&standalone(&valkey), &rest("fail-closed"), None)).await;
    let open = Gateway::start(&config(&standalone(&valkey), &rest("fail-open"), None)).await;
    let alone = Gateway::start(&config("", &rest("fail-closed"), None)).await;
    let live = |gw: &Gateway| {
        let request = gw.client.get(gw.url("/health"));
        async move { request.send().await.unwrap().status().as_u16() }
    };

    assert_eq!(ready(&alone).await, (200, json!({"status": "ready"})), "no Valkey, nothing to wait for");
    for (gw, policy) in [(&closed, "fail-closed"), (&open, "fail-open")] {
        assert_eq!(
            ready(gw).await,
            (200, json!({"status": "ready", "dependencies": {"valkey": {"status": "ok", "policy": policy}}}))
        );
    }

    valkey.kill();
    let (status, body) = ready(&closed).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failing"], json!(["valkey"]));
    assert_eq!(body["dependencies"]["valkey"]["status"], "unreachable");
    assert_eq!(body["dependencies"]["valkey"]["policy"], "fail-closed");
    assert_eq!(closed.health().await["limits"]["mode"], "fail-closed", "the limits switched with it");
    let (status, body) = ready(&open).await;
    assert_eq!(status, 200, "fail-open: the replica still serves, {body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["failing"], json!(["valkey"]));
    assert_eq!(body["dependencies"]["valkey"]["policy"], "fail-open");
    assert!(body["dependencies"]["valkey"]["limits"].as_str().unwrap().contains("1/3 of each limit"), "{body}");
    for gw in [&closed, &open, &alone] {
        assert_eq!(live(gw).await, 200, "liveness does not depend on Valkey");
    }
    assert_eq!(ready(&alone).await.0, 200);

    valkey.restart().await;
    for gw in [&closed, &open] {
        eventually("ready again", Duration::from_secs(5), || async { ready(gw).await.1["status"] == "ready" }).await;
        assert_eq!(ready(gw).await.0, 200);
    }
}

/// The same behaviour on a 3-node cluster: every counter of a team carries the team's hash tag,
/// so each admission is one script in one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_behaves_like_a_standalone_server() {
    let valkey = ValkeyCluster::start().await;
    let store = cluster(&valkey);
    request_rate_is_exact_across_replicas(&store, 600, 5).await;
    streams_reserve_tokens_and_refund_the_unused(&store).await;
    third_concurrent_request_is_refused(&store).await;
    daily_budget_refuses_until_the_day_rolls_over(&store).await;
}

/// Concurrency leases outlive neither their request nor their replica: a replica that crashed
/// holding one (never settled, never renewed) stops blocking within `lease_ttl`, while a live
/// replica renews its leases for as long as its requests run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replicas_leases_expire_and_live_ones_are_renewed() {
    use llm_gateway::auth::{Grant, Principal};
    use llm_gateway::config::limits::{LimitSettings, Limits};
    use llm_gateway::config::{TeamPolicy, ValkeySettings};
    use llm_gateway::limits::{Demand, Limiter};

    let valkey = ValkeyServer::start().await;
    let settings = LimitSettings { lease_ttl: Duration::from_secs(3), ..LimitSettings::default() };
    let replica = || {
        let kv = llm_gateway::kv::Kv::new(&ValkeySettings {
            urls: vec![valkey.url()],
            cluster: false,
            timeout: Duration::from_millis(200),
            key_prefix: String::new(),
        })
        .unwrap();
        let metrics = Arc::new(llm_gateway::telemetry::metrics::Metrics::new(Default::default(), false));
        Arc::new(Limiter::new(settings.clone(), Some(kv), Arc::new(llm_gateway::clock::SystemClock), metrics))
    };
    let principal = |key: &str| Principal {
        team: "t".into(),
        key_id: key.into(),
        policy: Arc::new(TeamPolicy::default()),
        grant: Arc::new(Grant {
            subject: format!("k:{key}").into(),
            limits: Limits { max_concurrent: Some(1), ..Limits::default() },
            ..Grant::default()
        }),
    };
    let demand =
        Demand { model: "m", prompt_tokens: 1, max_tokens: Some(1), completion: true, choices: 1, worst_price: None };

    let crashed = replica();
    let held_by_crashed = crashed.admit(&principal("a"), &demand).await.unwrap();
    assert!(held_by_crashed.is_some());
    drop(crashed);
    let alive = replica();
    let mut tasks = tokio::task::JoinSet::new();
    alive.spawn_background(&mut tasks);
    assert!(alive.admit(&principal("c"), &demand).await.unwrap().is_some());

    let other = replica();
    let started = Instant::now();
    assert!(other.admit(&principal("a"), &demand).await.is_err(), "the lease is still held");
    eventually("the crashed replica's lease expires", Duration::from_secs(6), || async {
        other.admit(&principal("a"), &demand).await.is_ok()
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(2500), "expired early: {:?}", started.elapsed());
    assert!(other.admit(&principal("c"), &demand).await.is_err(), "the live replica renewed its lease");
}

/// Per-model limits belong to the model group, whatever a client calls it: a request through an
/// alias, or through a team's override, spends the group's limit (the alias is not a way around
/// it), and a limit written under an alias's name is the group's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_model_limits_apply_to_the_group_under_every_name() {
    for limits_under in ["m", "fast"] {
        let yaml = format!(
            "keys: [{{ key: {KEY}, team: t }}]\n\
             teams: {{ t: {{ models: ['*'], model_limits: {{ {limits_under}: {{ daily_requests: 2 }} }}, model_overrides: {{ other: m }} }} }}\n\
             aliases: {{ fast: m }}\n\
             providers: {{ p: {{ dialect: mock }} }}\nmodels: {{ m: {{ deployments: [{{ provider: p }}] }}, other: {{ deployments: [{{ provider: p }}] }} }}\n"
        );
        let gw = Gateway::start(&yaml).await;
        let named =
            |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5});
        assert_eq!(gw.chat_as(KEY, named("fast")).await.status(), 200, "{limits_under}");
        assert_eq!(gw.chat_as(KEY, named("other")).await.status(), 200, "{limits_under}");
        for name in ["m", "fast", "other"] {
            assert_eq!(gw.chat_as(KEY, named(name)).await.status(), 429, "{limits_under}: {name} is the same group");
        }
    }
}
