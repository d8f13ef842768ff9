//! Installations sharing one Valkey (issue #26): two gateways with different
//! `valkey.key_prefix`es on one real `valkey-server` share no admin-made key, no rate counter
//! and no cache entry, and every key either writes starts with its own prefix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::valkey::ValkeyServer;
use support::{Gateway, MockUpstream, json};

const ADMIN: &str = "sk-admin-0123456789";

/// One installation: the same teams, keys and models as the other, under `prefix`. Team `k`
/// gets the admin-made key, team `t` has a request rate, team `c` asks the cache.
fn config(valkey: &ValkeyServer, upstream: &MockUpstream, prefix: &str) -> String {
    format!(
        "valkey: {{ url: '{}', key_prefix: '{prefix}' }}\n\
         admin: {{ key_env: ADMIN_KEY }}\n\
         keys: [{{ key: sk-t, team: t }}, {{ key: sk-c, team: c }}]\n\
         teams: {{ k: {{ models: ['*'] }}, t: {{ models: ['*'], limits: {{ rpm: 2 }} }}, c: {{ models: ['*'] }} }}\n\
         providers: {{ up: {{ dialect: openai, base_url: '{}' }} }}\n\
         models: {{ gpt: {{ deployments: [{{ provider: up, model: up-model }}] }} }}\n\
         cache: {{ exact: {{ ttl: 1h, l1_ttl: 0s }} }}\n",
        valkey.url(),
        upstream.base_url()
    )
}

fn chat(question: &str) -> Value {
    json!({"model": "gpt", "messages": [{"role": "user", "content": question}]})
}

/// (status, `x-llm-gateway-cache`) of a chat request.
async fn ask(gw: &Gateway, key: &str, question: &str) -> (u16, String) {
    let r = gw.chat_as(key, chat(question)).await;
    let cache = r.headers().get("x-llm-gateway-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (r.status().as_u16(), cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_with_different_key_prefixes_share_nothing_on_one_valkey() {
    let valkey = ValkeyServer::start().await;
    let upstream = MockUpstream::start().await;
    let env = [("ADMIN_KEY", ADMIN)];
    let a = Gateway::start_with_env(&config(&valkey, &upstream, "release-a"), &env).await;
    let b = Gateway::start_with_env(&config(&valkey, &upstream, "release-b"), &env).await;
    // What b sees of a: each item is a defect.
    let mut shared = Vec::new();

    // An admin-made key of a is unknown to b.
    let r = a
        .client
        .post(a.url("/admin/keys"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"team": "k"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made = json(r).await["key"].as_str().unwrap().to_owned();
    assert_eq!(ask(&a, &made, "key check").await.0, 200, "a made the key");
    match ask(&b, &made, "key check").await.0 {
        401 => {}
        200 => shared.push("b accepts a key made through a's admin API"),
        other => panic!("b answered {other} to a's key"),
    }

    // Team t's request rate (rpm 2: the bucket holds one request): a spends its counter, b's
    // is its own.
    assert_eq!(ask(&a, "sk-t", "rate 1").await.0, 200);
    assert_eq!(ask(&a, "sk-t", "rate 2").await.0, 429, "a spent team t's bucket");
    match ask(&b, "sk-t", "rate 3").await.0 {
        200 => {}
        429 => shared.push("b refuses team t with 429: a's rate counter"),
        other => panic!("b answered {other} to team t"),
    }

    // A cache entry of a does not answer b.
    let question = "What is the capital of France?";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, cache) = ask(&a, "sk-c", question).await;
        assert_eq!(status, 200);
        if cache == "hit" {
            break;
        }
        assert!(Instant::now() < deadline, "a never answered from its own cache ({cache})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match ask(&b, "sk-c", question).await {
        (200, cache) if cache == "miss" => {}
        (200, cache) if cache == "hit" => shared.push("b answers from a's cache entry"),
        other => panic!("b answered {other:?} to the cached question"),
    }
    assert!(shared.is_empty(), "two installations on one Valkey share state: {shared:#?}");

    // Every key in Valkey is under one of the two prefixes, followed by `:`, and the counters
    // keep their hash tag (`{t}`) whole.
    let keys: Vec<String> = valkey.cmd(redis::cmd("KEYS").arg("*")).await;
    for key in &keys {
        assert!(key.starts_with("release-a:") || key.starts_with("release-b:"), "{key} is under no prefix: {keys:?}");
    }
    for prefix in ["release-a:lg:keys", "release-a:lg:{t}:rpm:t", "release-b:lg:{t}:rpm:t", "release-a:llmgw:cache:x:"]
    {
        assert!(keys.iter().any(|k| k.starts_with(prefix)), "no {prefix}… in {keys:?}");
    }
}
