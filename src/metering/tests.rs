//! Metering unit tests: records → events (types, costs, estimates, cache hits), Anthropic usage
//! from recorded fixtures, admission under a full outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::*;
use crate::api::openai::{CompletionTokensDetails, PromptTokensDetails};
use crate::config::Config;
use crate::ctx::Principal;
use crate::stream::sse::SseDecoder;

const CONFIG: &str = "
keys: [{ key: sk-a, team: team-a, id: key-a }]
teams: { team-a: { models: ['*'] } }
providers:
  openai: { vendor: openai }
  local: { dialect: openai, base_url: 'http://127.0.0.1:9/v1' }
models:
  gpt-4o:
    deployments: [{ provider: openai, model: gpt-4o }]
  qwen:
    deployments: [{ provider: local, model: qwen3 }]
metering:
  openmeter: { url: 'http://127.0.0.1:9' }
  source: gw-test
  outbox_dir: /nonexistent
  tokenizers: { qwen3: cl100k_base }
";

fn pipeline() -> Pipeline {
    let config = Config::from_yaml(CONFIG, &HashMap::<&str, &str>::new()).unwrap();
    let settings = config.metering.clone().unwrap();
    let deployments = Deployments::new(&config, &settings);
    let tokenizers = Tokenizers::load(deployments.tokenizer_specs()).unwrap();
    Pipeline {
        settings: Arc::new(settings),
        deployments,
        tokenizers,
        queue: Arc::new(Queue::new(64)),
        metrics: Arc::new(MeteringMetrics::default()),
        full: Arc::new(AtomicBool::new(false)),
        shared: Arc::new(outbox::Shared::default()),
    }
}

fn record(deployment: &str, usage: Option<Usage>, estimate: Option<EstimateInput>) -> Record {
    Record {
        request_id: "req-1".into(),
        unix_ms: 1_795_681_087_123,
        subject: "team-a".into(),
        team: "team-a".into(),
        key_id: "key-a".into(),
        model: "client-model".into(),
        deployment: deployment.into(),
        usage,
        cached: false,
        estimate,
    }
}

fn events(p: &Pipeline, r: &Record) -> Vec<Value> {
    let mut out = Vec::new();
    let n = p.lines_of(r, &mut out);
    let events: Vec<Value> =
        out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(events.len() as u64, n);
    events
}

fn by_type(events: &[Value]) -> HashMap<String, (u64, u64)> {
    events
        .iter()
        .map(|e| {
            let d = &e["data"];
            (d["type"].as_str().unwrap().to_owned(), (d["tokens"].as_u64().unwrap(), d["cost_nanos"].as_u64().unwrap()))
        })
        .collect()
}

#[test]
fn usage_becomes_one_priced_event_per_type_with_stable_shared_fields() {
    let p = pipeline();
    let usage = Usage {
        prompt_tokens: 1000,
        completion_tokens: 300,
        total_tokens: 1300,
        prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 600, cache_write_tokens: 0 }),
        completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: 100 }),
        ..Usage::default()
    };
    let events = events(&p, &record("openai/gpt-4o", Some(usage), None));
    // gpt-4o in providers/openai.yaml: input 2500, output 10000, cached input 1250 nano-dollars.
    let types = by_type(&events);
    assert_eq!(types["input"], (400, 400 * 2500));
    assert_eq!(types["cache_read"], (600, 600 * 1250));
    assert_eq!(types["output"], (200, 200 * 10_000));
    assert_eq!(types["reasoning"], (100, 100 * 10_000));
    assert_eq!(types.values().map(|(t, _)| t).sum::<u64>(), 1300, "no token counted twice");
    // data.cost in micro-dollars, adding up to the request's: 400 × 2.5 + 600 × 1.25 + 300 × 10.
    assert_eq!(events.iter().map(|e| e["data"]["cost"].as_u64().unwrap()).sum::<u64>(), 1000 + 750 + 3000);
    assert!(events.iter().all(|e| e["data"]["currency"] == "USD"));
    let uid = events[0]["id"].as_str().unwrap().split(':').next().unwrap().to_owned();
    for e in &events {
        assert_eq!(e["id"], format!("{uid}:{}", e["data"]["type"].as_str().unwrap()));
        assert_eq!(e["source"], "gw-test");
        assert_eq!(e["type"], "llm.tokens");
        assert_eq!(e["subject"], "team-a");
        assert_eq!(e["time"], "2026-11-26T08:18:07.123Z");
        let d = &e["data"];
        assert_eq!((d["model"].as_str(), d["deployment"].as_str()), (Some("client-model"), Some("openai/gpt-4o")));
        assert_eq!((d["provider"].as_str(), d["key_id"].as_str()), (Some("openai"), Some("key-a")));
        assert_eq!((d["estimated"].as_bool(), d["cached"].as_bool()), (Some(false), Some(false)));
        assert_eq!(d["request_id"], "req-1");
    }
    // Another request gets other ids, even with the same request id.
    let again = events_ids(&p, &record("openai/gpt-4o", Some(usage), None));
    assert!(again.iter().all(|id| !id.starts_with(&uid)));
}

fn events_ids(p: &Pipeline, r: &Record) -> Vec<String> {
    events(p, r).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_gateway_cache_hit_is_metered_as_cached_at_no_cost() {
    let p = pipeline();
    let mut r = record(
        "openai/gpt-4o",
        Some(Usage { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, ..Default::default() }),
        None,
    );
    r.cached = true;
    let events = events(&p, &r);
    assert_eq!(by_type(&events), HashMap::from([("input".into(), (10, 0)), ("output".into(), (5, 0))]));
    assert!(events.iter().all(|e| e["data"]["cached"] == true));
}

#[test]
fn without_usage_the_model_tokenizer_counts_and_the_events_say_estimated() {
    let p = pipeline();
    let answer = "The quick brown fox jumps over the lazy dog.";
    let body = br#"{"model":"qwen","messages":[{"role":"user","content":"Say something about a fox."}]}"#;
    let fragments = format!("[{{\"index\":0,\"delta\":{{\"content\":{}}}}}]", serde_json::to_string(answer).unwrap());
    let input = EstimateInput {
        endpoint: Endpoint::ChatCompletions,
        body: Bytes::from_static(body),
        generated: Some(Generated {
            fragments: Bytes::from(fragments),
            overflow_bytes: 0,
            text: crate::adapter::openai::choices_text,
        }),
    };
    let events = events(&p, &record("local/qwen3", None, Some(input)));
    let cl100k = p.tokenizers.get("cl100k_base").unwrap();
    let types = by_type(&events);
    assert_eq!(types["output"].0, cl100k.count(answer, false));
    assert_eq!(types["input"].0, count::prompt_tokens(body, &cl100k));
    assert_eq!(types["output"].1, 0, "a self-hosted model has no price");
    assert!(events.iter().all(|e| e["data"]["estimated"] == true));
    assert_eq!(p.metrics.estimated.get(), 2);
}

#[test]
fn partial_usage_bills_its_input_exactly_and_counts_only_the_output_locally() {
    let p = pipeline();
    let answer = "The quick brown fox jumps over the lazy dog.";
    // An Anthropic stream cut after `message_start`: input and cache counts, output 1.
    let started = Usage::from_anthropic(12, 1, 2000, 100);
    let cut = |text: &str| EstimateInput {
        endpoint: Endpoint::Messages,
        body: Bytes::from_static(br#"{"model":"claude","max_tokens":9,"messages":[{"role":"user","content":"fox?"}]}"#),
        generated: Some(Generated {
            fragments: Bytes::from(text.to_owned()),
            overflow_bytes: 0,
            text: crate::ctx::utf8_text,
        }),
    };
    let metered = events(&p, &record("local/qwen3", Some(started), Some(cut(answer))));
    let counted = p.tokenizers.get("cl100k_base").unwrap().count(answer, false);
    assert!(counted > 1);
    let types = by_type(&metered);
    let tokens: HashMap<&str, u64> = types.iter().map(|(t, (n, _))| (t.as_str(), *n)).collect();
    assert_eq!(tokens, HashMap::from([("input", 12), ("cache_read", 2000), ("cache_write", 100), ("output", counted)]));
    for e in &metered {
        let estimated = e["data"]["type"] == "output";
        assert_eq!(e["data"]["estimated"], estimated, "only the output is the gateway's count: {e}");
    }
    assert_eq!(p.metrics.estimated.get(), 1);

    // Nothing generated yet: what the upstream had reported stands, still flagged.
    let metered = events(&p, &record("local/qwen3", Some(started), Some(cut(""))));
    let output: Vec<_> = metered.iter().filter(|e| e["data"]["type"] == "output").collect();
    assert_eq!((output[0]["data"]["tokens"].as_u64(), output[0]["data"]["estimated"].as_bool()), (Some(1), Some(true)));
}

#[test]
fn an_embedding_without_usage_counts_its_input_only() {
    let p = pipeline();
    let input = EstimateInput {
        endpoint: Endpoint::Embeddings,
        body: Bytes::from_static(br#"{"model":"qwen","input":["hello world","hello world"]}"#),
        generated: None,
    };
    let types = by_type(&events(&p, &record("local/qwen3", None, Some(input))));
    assert_eq!(types, HashMap::from([("input".into(), (4, 0))]));
}

/// The usage an Anthropic stream reports, folded the way the protocol says: `message_start`
/// carries input and cache counts, each `message_delta` a cumulative output (and maybe input).
fn anthropic_stream_usage(fixture: &str) -> Usage {
    let bytes = std::fs::read(format!("{}/tests/fixtures/anthropic/{fixture}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut decoder = SseDecoder::new();
    decoder.push(&bytes);
    let (mut input, mut output, mut read, mut write) = (0, 0, 0, 0);
    let mut fold = |u: &Value| {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        input = get("input_tokens").unwrap_or(input);
        output = get("output_tokens").unwrap_or(output);
        read = get("cache_read_input_tokens").unwrap_or(read);
        write = get("cache_creation_input_tokens").unwrap_or(write);
    };
    while let Some(event) = decoder.next_event().unwrap() {
        let data: Value = serde_json::from_slice(&event.data).unwrap();
        match data["type"].as_str() {
            Some("message_start") => fold(&data["message"]["usage"]),
            Some("message_delta") => fold(&data["usage"]),
            _ => {}
        }
    }
    Usage::from_anthropic(input, output, read, write)
}

#[test]
fn anthropic_stream_usage_is_metered_per_type_without_double_counting() {
    let p = pipeline();
    let usage = anthropic_stream_usage("stream_text.sse");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (25, 15));
    assert_eq!(by_type(&events(&p, &record("local/qwen3", Some(usage), None))).len(), 2);

    let usage = anthropic_stream_usage("stream_cache_usage.sse");
    let types = by_type(&events(&p, &record("local/qwen3", Some(usage), None)));
    assert_eq!(types["input"].0, 12, "Anthropic input_tokens exclude the cache");
    assert_eq!(types["cache_write"].0, 100);
    assert_eq!(types["cache_read"].0, 2000);
    assert_eq!(types["output"].0, 87, "the last cumulative message_delta wins");
    assert_eq!(types.values().map(|(t, _)| t).sum::<u64>(), 12 + 100 + 2000 + 87);
}

fn anthropic_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/anthropic/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The usage a stream rewriter reports after a recorded stream went through it.
fn relayed_usage(mut rewriter: impl crate::stream::ChunkRewriter, fixture: &str) -> Option<Usage> {
    let mut decoder = SseDecoder::new();
    decoder.push(&anthropic_fixture(fixture));
    let mut out = Vec::new();
    while let Some(event) = decoder.next_event().unwrap() {
        rewriter.on_event(&event, &mut out);
    }
    rewriter.usage()
}

/// Issue #26, item 13d: Anthropic runs web searches and fetches itself and bills them per use
/// (`usage.server_tool_use`). Each kind is metered as an event of its own with the count, through
/// every path an Anthropic answer takes: a stream passed through or translated for an OpenAI
/// client, a whole message passed through or translated. The token events stay as they were.
#[test]
fn vendor_server_tool_uses_are_metered_as_events_of_their_own() {
    use crate::adapter::anthropic::{passthrough, response, stream};
    let p = pipeline();
    let message = anthropic_fixture("message_web_search.json");
    let paths = [
        ("stream passed through", relayed_usage(passthrough::MessagesRelay::new("c"), "stream_web_search.sse"), 2, 0),
        ("stream translated", relayed_usage(stream::ClaudeChunks::new("c", 0, false), "stream_web_search.sse"), 2, 0),
        ("message passed through", passthrough::response(&message, "c").unwrap().1, 1, 1),
        ("message translated", Some(response::to_chat(&message, "c", 0).unwrap().1), 1, 1),
    ];
    for (path, usage, searches, fetches) in paths {
        let usage = usage.unwrap_or_else(|| panic!("{path}: no usage"));
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10_682, 510), "{path}");
        let events = events(&p, &record("local/qwen3", Some(usage), None));
        let uses: HashMap<&str, &Value> = events
            .iter()
            .filter(|e| e["type"] != "llm.tokens")
            .map(|e| (e["data"]["type"].as_str().unwrap(), e))
            .collect();
        let expected: HashMap<&str, u64> = [("web_search_requests", searches), ("web_fetch_requests", fetches)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            uses.iter().map(|(t, e)| (*t, e["data"]["requests"].as_u64().unwrap_or(0))).collect::<HashMap<_, _>>(),
            expected,
            "{path}: {events:#?}"
        );
        for (kind, e) in &uses {
            assert_eq!(e["type"], "llm.server_tools", "{path}: {e}");
            assert_eq!(e["id"].as_str().unwrap().split_once(':').unwrap().1, *kind, "{path}: {e}");
            assert_eq!(
                (e["data"]["team"].as_str(), e["data"]["model"].as_str()),
                (Some("team-a"), Some("client-model"))
            );
            assert!(e["data"].get("tokens").is_none(), "{path}: a use is not a token: {e}");
        }
        let tokens: u64 =
            events.iter().filter(|e| e["type"] == "llm.tokens").map(|e| e["data"]["tokens"].as_u64().unwrap()).sum();
        assert_eq!(tokens, 10_682 + 510, "{path}: the token events are unchanged");
    }
}

#[test]
fn a_full_outbox_refuses_new_requests_under_the_reject_policy() {
    let p = pipeline();
    let metering = Metering {
        settings: p.settings.clone(),
        queue: p.queue.clone(),
        metrics: p.metrics.clone(),
        full: p.full.clone(),
    };
    let ctx = RequestCtx {
        request_id: "r".into(),
        started: std::time::Instant::now(),
        endpoint: Endpoint::ChatCompletions,
        principal: Some(Principal {
            team: "team-a".into(),
            key_id: "key-a".into(),
            grant: Default::default(),
            policy: Arc::new(crate::config::TeamPolicy {
                models: vec![],
                model_overrides: Default::default(),
                tier: None,
                limits: Default::default(),
                model_limits: Default::default(),
            }),
        }),
        client_model: "gpt-4o".into(),
        client: Default::default(),
        stream: false,
        client_wants_usage: false,
        deployment: Some("openai/gpt-4o".into()),
        priced: None,
        attempts: 1,
        trace: Default::default(),
        body: Bytes::new(),
        cache: Default::default(),
        reservation: None,
        query: None,
    };
    assert!(metering.admit(&ctx).is_ok());
    p.full.store(true, Ordering::Relaxed);
    let refused = metering.admit(&ctx).unwrap_err();
    assert_eq!(refused.status(), 503);
    assert_eq!(p.metrics.rejected_requests.get(), 1);
    // An admitted request still finishing is recorded, not lost.
    let outcome = Outcome { usage: Some(Usage { prompt_tokens: 3, ..Default::default() }), ..Outcome::failed(200, "") };
    metering.finished(&ctx, &outcome);
    assert_eq!(p.queue.len(), 1);
    // A failed request without usage generated nothing.
    metering.finished(&ctx, &Outcome::failed(502, "upstream_status"));
    assert_eq!(p.queue.len(), 1);
}
