//! Routing under chaos, against real sockets: load balancing, retries, fallbacks, circuit
//! breaking. Mock upstreams are controlled while the gateway runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{Gateway, MockUpstream, closed_port_url, deployment_of, json};

fn config(providers: &[(&str, String)], models: &str, extra: &str) -> String {
    let mut yaml = String::from("keys: [{ key: sk-test, team: t }]\nteams: { t: { models: ['*'] } }\nproviders:\n");
    for (name, url) in providers {
        yaml.push_str(&format!(
            "  {name}: {{ dialect: openai, base_url: '{url}', timeouts: {{ connect: 1s, first_byte: 5s }} }}\n"
        ));
    }
    yaml.push_str("models:\n");
    yaml.push_str(models);
    yaml.push_str(extra);
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_follows_the_weights() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(&config(
        &[("a", a.base_url()), ("b", b.base_url())],
        "  m:\n    deployments:\n      - { provider: a, model: x, weight: 3 }\n      - { provider: b, model: x, weight: 1 }\n",
        "",
    ))
    .await;
    let total = 2000;
    let mut handles = Vec::new();
    for _ in 0..16 {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        handles.push(tokio::spawn(async move {
            for _ in 0..total / 16 {
                let r = client
                    .post(&url)
                    .bearer_auth("sk-test")
                    .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let share_a = f64::from(a.requests()) / f64::from(total);
    assert_eq!(a.requests() + b.requests(), total);
    assert!((share_a - 0.75).abs() <= 0.05, "deployment a got {:.3} of the traffic, expected 0.75 ± 0.05", share_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_sends_to_the_idle_deployment() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.set_delay(400);
    b.set_delay(400);
    let gw = Gateway::start(&config(
        &[("a", a.base_url()), ("b", b.base_url())],
        "  m:\n    strategy: least-busy\n    deployments:\n      - { provider: a, model: x }\n      - { provider: b, model: x }\n",
        "",
    ))
    .await;
    for _ in 0..5 {
        let gw_client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        let first = tokio::spawn(async move {
            gw_client
                .post(url)
                .bearer_auth("sk-test")
                .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .unwrap()
        });
        // Wait until one upstream holds the first request.
        let mut waited = 0;
        while a.control.in_flight.load(Ordering::SeqCst) + b.control.in_flight.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            waited += 1;
            assert!(waited < 2000, "the first request never reached an upstream");
        }
        let busy = if a.control.in_flight.load(Ordering::SeqCst) > 0 { "a/x" } else { "b/x" };
        let second = gw.chat("m", false).await;
        assert_eq!(second.status(), 200);
        assert_ne!(deployment_of(&second), busy, "the second request went to the busy deployment");
        assert_eq!(deployment_of(&first.await.unwrap()), busy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_strategy_moves_traffic_away_from_a_slow_deployment() {
    let (slow, fast) = (MockUpstream::start().await, MockUpstream::start().await);
    slow.set_delay(120);
    let gw = Gateway::start(&config(
        &[("slow", slow.base_url()), ("fast", fast.base_url())],
        "  m:\n    strategy: latency\n    deployments:\n      - { provider: slow, model: x }\n      - { provider: fast, model: x }\n",
        "",
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(gw.chat("m", false).await.status(), 200);
    }
    let before = fast.requests();
    for _ in 0..100 {
        assert_eq!(gw.chat("m", false).await.status(), 200);
    }
    let to_fast = fast.requests() - before;
    assert!(to_fast >= 90, "only {to_fast} of 100 requests went to the fast deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deployment_trips_its_breaker_while_every_request_succeeds() {
    let (sick, healthy) = (MockUpstream::start().await, MockUpstream::start().await);
    sick.set_status(500);
    let gw = Gateway::start(&config(
        &[("sick", sick.base_url()), ("healthy", healthy.base_url())],
        "  m:\n    strategy: priority\n    deployments:\n      - { provider: sick, model: x }\n      - { provider: healthy, model: x }\n",
        "circuit_breaker: { consecutive_failures: 3, open_for: 300ms, max_open_for: 5s }\nretry: { backoff: 1ms }\n",
    ))
    .await;
    for _ in 0..20 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200, "a request failed although a healthy deployment exists");
        assert_eq!(deployment_of(&r), "healthy/x");
    }
    assert_eq!(sick.requests(), 3, "the breaker opened after exactly 3 failures");
    assert_eq!(gw.breaker("sick/x").await, "open");
    let health = gw.health().await;
    let sick_report =
        health["deployments"].as_array().unwrap().iter().find(|d| d["deployment"] == "sick/x").unwrap().clone();
    assert!(sick_report["last_trip_reason"].as_str().unwrap().contains("3 consecutive failures"), "{sick_report}");

    // After the open period one probe goes through; it fails, so the breaker re-opens for longer.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(gw.breaker("sick/x").await, "half-open");
    assert_eq!(gw.chat("m", false).await.status(), 200);
    assert_eq!(sick.requests(), 4, "exactly one probe in half-open");
    assert_eq!(gw.breaker("sick/x").await, "open");

    // The deployment recovers: the next probe succeeds and the breaker closes.
    sick.set_status(0);
    tokio::time::sleep(Duration::from_millis(650)).await;
    let r = gw.chat("m", false).await;
    assert_eq!(deployment_of(&r), "sick/x", "the probe goes to the recovering deployment");
    assert_eq!(gw.breaker("sick/x").await, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deployment_down_answers_503_at_once_without_calling_upstreams() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.set_status(503);
    b.set_status(503);
    let gw = Gateway::start(&config(
        &[("a", a.base_url()), ("b", b.base_url())],
        "  m:\n    deployments:\n      - { provider: a, model: x }\n      - { provider: b, model: x }\n",
        "circuit_breaker: { consecutive_failures: 2, open_for: 60s }\nretry: { backoff: 1ms }\n",
    ))
    .await;
    for _ in 0..2 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 503, "the upstream's own 503 is passed on while breakers are closed");
    }
    assert_eq!(gw.breaker("a/x").await, "open");
    assert_eq!(gw.breaker("b/x").await, "open");
    // Now make the upstreams hang: a gateway that still called them would take seconds.
    a.set_delay(10_000);
    b.set_delay(10_000);
    let calls = a.requests() + b.requests();
    let started = std::time::Instant::now();
    let r = gw.chat("m", false).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 503);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after} tells when a probe is next allowed");
    let body = json(r).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("`m`"), "{body}");
    assert_eq!(body["error"]["code"], "model_unavailable");
    assert_eq!(a.requests() + b.requests(), calls, "no upstream was called");
    assert!(elapsed < Duration::from_secs(5), "answered without waiting on the upstreams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_deployment_is_skipped_for_its_retry_after() {
    let (limited, other) = (MockUpstream::start().await, MockUpstream::start().await);
    limited.set_status(429);
    limited.control.retry_after.store(30, Ordering::SeqCst);
    let gw = Gateway::start(&config(
        &[("limited", limited.base_url()), ("other", other.base_url())],
        "  m:\n    strategy: priority\n    deployments:\n      - { provider: limited, model: x }\n      - { provider: other, model: x }\n",
        "retry: { backoff: 1ms }\n",
    ))
    .await;
    for _ in 0..20 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(deployment_of(&r), "other/x");
    }
    assert_eq!(limited.requests(), 1, "after its 429 the limited deployment is left alone");
    assert_eq!(gw.breaker("limited/x").await, "closed", "a 429 is not a breaker failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_drop_ends_with_an_sse_error_is_not_retried_and_counts_for_the_breaker() {
    let (cut, spare) = (MockUpstream::start().await, MockUpstream::start().await);
    cut.control.drop_midstream.store(true, Ordering::SeqCst);
    let gw = Gateway::start(&config(
        &[("cut", cut.base_url()), ("spare", spare.base_url())],
        "  m:\n    strategy: priority\n    deployments:\n      - { provider: cut, model: x }\n      - { provider: spare, model: x }\n",
        "circuit_breaker: { consecutive_failures: 1, open_for: 60s }\n",
    ))
    .await;
    let r = gw.chat("m", true).await;
    assert_eq!(r.status(), 200, "headers went out with the first chunk");
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events[0].contains("\"Hel\""), "{text}");
    assert!(events[events.len() - 2].starts_with("data: {\"error\":"), "{text}");
    assert_eq!(events[events.len() - 1], "data: [DONE]", "a clean end after the error event");
    assert_eq!(spare.requests(), 0, "nothing is retried once a byte reached the client");
    assert_eq!(gw.breaker("cut/x").await, "open", "the mid-stream failure counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_never_retried_but_connect_errors_are() {
    let (bad, spare) = (MockUpstream::start().await, MockUpstream::start().await);
    bad.set_status(400);
    let refused = closed_port_url().await;
    let gw = Gateway::start(&config(
        &[("bad", bad.base_url()), ("spare", spare.base_url()), ("refused", refused)],
        "  m:\n    strategy: priority\n    deployments:\n      - { provider: bad, model: x }\n      - { provider: spare, model: x }\n  r:\n    strategy: priority\n    deployments:\n      - { provider: refused, model: x }\n      - { provider: spare, model: y }\n",
        "retry: { backoff: 1ms }\n",
    ))
    .await;
    let r = gw.chat("m", false).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-llm-gateway-attempts"], "1");
    assert_eq!(spare.requests(), 0, "a 400 is the request's fault: not retried elsewhere");
    assert_eq!(gw.breaker("bad/x").await, "closed");

    let r = gw.chat("r", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(deployment_of(&r), "spare/y");
    assert_eq!(r.headers()["x-llm-gateway-attempts"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_context_window_and_content_policy() {
    let (small, large, primary, backup, strict) = (
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
    );
    primary.set_status(500);
    strict.set_status(400);
    *strict.control.error_code.lock().unwrap() = Some("content_filter".into());
    let gw = Gateway::start(&config(
        &[("small", small.base_url()), ("large", large.base_url()), ("primary", primary.base_url()), ("backup", backup.base_url()), ("strict", strict.base_url())],
        "  chat-small:\n    deployments: [{ provider: small, model: s, context_window: 100 }]\n    context_window_fallbacks: [chat-large]\n    content_policy_fallbacks: [chat-large]\n  chat-large:\n    deployments: [{ provider: large, model: l, context_window: 100000 }]\n  main:\n    deployments: [{ provider: primary, model: p }]\n    fallbacks: [spare-group]\n  spare-group:\n    deployments: [{ provider: backup, model: b }]\n  picky:\n    deployments: [{ provider: strict, model: p }]\n    content_policy_fallbacks: [chat-large]\n",
        "aliases: { gpt-4o: chat-small }\nretry: { backoff: 1ms }\n",
    ))
    .await;
    let r = gw.chat("chat-small", false).await;
    assert_eq!(deployment_of(&r), "small/s", "a short prompt fits the small window");
    let long = "word ".repeat(200);
    let r =
        gw.chat_with(serde_json::json!({"model": "chat-small", "messages": [{"role": "user", "content": long}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(deployment_of(&r), "large/l", "the long prompt went to the larger window");
    let body = json(r).await;
    assert_eq!(body["model"], "chat-small", "the client still sees its own model name");

    let r = gw.chat("gpt-4o", false).await;
    assert_eq!(deployment_of(&r), "small/s", "an alias resolves to its group");
    let r = gw.chat("main", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(deployment_of(&r), "backup/b", "the whole group failed: its fallback served");
    let r = gw.chat("picky", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(deployment_of(&r), "large/l", "a content-policy refusal goes to the content-policy fallback");
    let r = gw.chat("nope", false).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_override_routes_a_lower_tier_team_to_an_internal_model() {
    let (external, internal) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml = format!(
        "keys:\n  - {{ key: sk-test, team: pro }}\n  - {{ key: sk-free, team: free }}\nteams:\n  pro: {{ models: ['*'] }}\n  free: {{ models: ['*'], model_overrides: {{ gpt-4o: internal }} }}\nproviders:\n  ext: {{ dialect: openai, base_url: '{}' }}\n  int: {{ dialect: openai, base_url: '{}' }}\nmodels:\n  gpt-4o: {{ deployments: [{{ provider: ext, model: gpt-4o }}] }}\n  internal: {{ deployments: [{{ provider: int, model: qwen3 }}] }}\n",
        external.base_url(),
        internal.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    assert_eq!(deployment_of(&gw.chat("gpt-4o", false).await), "ext/gpt-4o");
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-free")
        .body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(deployment_of(&r), "int/qwen3");
    assert_eq!(json(r).await["model"], "gpt-4o");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_check_opens_the_breaker_before_users_hit_it() {
    let (dead, alive) = (MockUpstream::start().await, MockUpstream::start().await);
    dead.set_status(503);
    let yaml = format!(
        "keys: [{{ key: sk-test, team: t }}]\nteams: {{ t: {{ models: ['*'] }} }}\nproviders:\n  dead: {{ dialect: openai, base_url: '{}', health_check: {{ interval: 100ms }} }}\n  alive: {{ dialect: openai, base_url: '{}' }}\nmodels:\n  m:\n    strategy: priority\n    deployments: [{{ provider: dead, model: x }}, {{ provider: alive, model: x }}]\ncircuit_breaker: {{ consecutive_failures: 2, open_for: 60s }}\n",
        dead.base_url(),
        alive.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let mut waited = 0;
    while gw.breaker("dead/x").await != "open" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(waited < 100, "the health check never opened the breaker");
    }
    let r = gw.chat("m", false).await;
    assert_eq!(deployment_of(&r), "alive/x");
    assert_eq!(dead.requests(), 0, "no user request was sent to the dead deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_only_deployment_is_rate_limited_answers_429_with_the_remaining_wait() {
    let limited = MockUpstream::start().await;
    limited.set_status(429);
    limited.control.retry_after.store(20, Ordering::SeqCst);
    let gw = Gateway::start(&config(
        &[("limited", limited.base_url())],
        "  m:\n    deployments: [{ provider: limited, model: x }]\n",
        "",
    ))
    .await;
    let first = gw.chat("m", false).await;
    assert_eq!(first.status(), 429, "the upstream's 429 is passed on");
    assert_eq!(first.headers()["retry-after"], "20");
    let second = gw.chat("m", false).await;
    assert_eq!(second.status(), 429, "still rate limited: 429, not 503");
    let wait: u64 = second.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "retry-after {wait}");
    assert_eq!(json(second).await["error"]["type"], "rate_limit_error");
    assert_eq!(limited.requests(), 1, "the cooling-down upstream was not called again");
}

/// Priority tiers come before the strategy: a weighted group sends everything to its lowest
/// `priority` tier (listed last here, with the smaller weight), and to the next tier only when
/// that one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lowest_priority_tier_is_tried_first_whatever_the_weights() {
    let (a, b, c) = (MockUpstream::start().await, MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(&config(
        &[("a", a.base_url()), ("b", b.base_url()), ("c", c.base_url()), ("gone", closed_port_url().await)],
        "  m:\n    deployments:\n      - { provider: a, model: x, weight: 9, priority: 1 }\n      - { provider: b, model: x, weight: 1 }\n      - { provider: c, model: x, weight: 1 }\n  n:\n    deployments:\n      - { provider: a, model: x, priority: 1 }\n      - { provider: gone, model: x }\n",
        "",
    ))
    .await;
    for _ in 0..40 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(a.requests(), 0, "the priority-1 deployment took requests while priority 0 was healthy");
    assert_eq!(b.requests() + c.requests(), 40);
    assert!(
        b.requests() > 0 && c.requests() > 0,
        "the tier's own weights split it: {} / {}",
        b.requests(),
        c.requests()
    );
    // The only priority-0 deployment of `n` is unreachable: its requests fall back to tier 1.
    let r = gw.chat("n", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(deployment_of(&r), "a/x");
    assert_eq!(a.requests(), 1);
}
