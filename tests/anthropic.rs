//! Anthropic both ways, through the real gateway and real sockets: OpenAI clients on a Claude
//! deployment, Anthropic clients on `/v1/messages` passed through to Claude or translated for an
//! OpenAI-compatible upstream, Anthropic error shapes, overload failover, count_tokens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::anthropic::MockAnthropic;
use support::{Gateway, MockUpstream, deployment_of, json};

const UPSTREAM_KEY: &str = "sk-ant-upstream-secret";

fn config(claude: &str, openai: &str) -> String {
    format!(
        "keys: [{{ key: sk-test, team: t }}, {{ key: sk-narrow, team: narrow }}]
teams: {{ t: {{ models: ['*'] }}, narrow: {{ models: ['gpt-ish'] }} }}
retry: {{ backoff: 1ms }}
providers:
  claude: {{ dialect: anthropic, base_url: '{claude}', api_key_env: TEST_ANTHROPIC_KEY, auth: api-key, auth_header: x-api-key,
            headers: {{ anthropic-version: '2023-06-01' }} }}
  openai: {{ dialect: openai, base_url: '{openai}' }}
  mock: {{ dialect: mock }}
models:
  claude-sonnet: {{ deployments: [{{ provider: claude, model: claude-sonnet-4-5 }}] }}
  claude-tools: {{ deployments: [{{ provider: claude, model: tools }}] }}
  claude-busy: {{ deployments: [{{ provider: claude, model: overloaded }}] }}
  claude-busy-stream: {{ deployments: [{{ provider: claude, model: overloaded-stream }}] }}
  claude-spill:
    strategy: priority
    deployments: [{{ provider: claude, model: overloaded }}, {{ provider: claude, model: claude-haiku-4-5, priority: 1 }}]
  gpt-ish: {{ deployments: [{{ provider: openai, model: x }}] }}
  mocked: {{ deployments: [{{ provider: mock, model: mock-chat }}] }}
"
    )
}

async fn start() -> (Gateway, MockAnthropic, MockUpstream) {
    let (claude, openai) = (MockAnthropic::start().await, MockUpstream::start().await);
    let gw = Gateway::start_with_env(
        &config(&claude.base_url(), &openai.base_url()),
        &[("TEST_ANTHROPIC_KEY", UPSTREAM_KEY)],
    )
    .await;
    (gw, claude, openai)
}

async fn messages(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "fine-grained-tool-streaming-2025-05-14")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap()
}

fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::String(data)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_claude_whole_and_streamed() {
    let (gw, claude, _) = start().await;
    let r = gw
        .chat_with(json!({"model": "claude-tools", "messages": [
            {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(deployment_of(&r), "claude/tools");
    let body = json(r).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Checking.");
    assert_eq!(message["tool_calls"][0]["id"], "toolu_A");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["model"], "claude-tools");
    assert_eq!(body["usage"]["prompt_tokens"], 125);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 100);

    let (headers, sent) = claude.last();
    assert_eq!(headers["x-api-key"], UPSTREAM_KEY);
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(headers.get("authorization").is_none(), "the team key never reaches the upstream");
    assert_eq!(sent["system"], "Be terse.");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["tools"][0]["input_schema"], json!({"type": "object"}));

    let r = gw
        .chat_with(json!({"model": "claude-tools", "stream": true, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "Weather?"}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let chunks: Vec<Value> = sse_events(&text).into_iter().map(|(_, d)| d).collect();
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "Hello from Claude");
    let calls: Vec<&Value> =
        chunks.iter().flat_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten()).collect();
    assert_eq!(calls[0]["id"], "toolu_A");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls.iter().rfind(|c| c["index"] == 1).unwrap()["function"]["arguments"], "{}");
    let usage = &chunks[chunks.len() - 2]["usage"];
    assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(125), Some(9)));
    assert_eq!(claude.last().1["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_fails_over_and_each_dialect_sees_its_own_status() {
    let (gw, claude, _) = start().await;
    let r = gw.chat("claude-spill", false).await;
    assert_eq!(r.status(), 200, "a 529 is retried on the next deployment");
    assert_eq!(deployment_of(&r), "claude/claude-haiku-4-5");
    assert_eq!(claude.count(), 2);

    let r = gw.chat("claude-busy", false).await;
    assert_eq!(r.status(), 503, "OpenAI clients see Anthropic's 529 as a 503");
    let body = json(r).await;
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["error"]["message"], "Overloaded");

    let r = messages(
        &gw,
        "sk-test",
        json!({"model": "claude-busy", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 529);
    assert_eq!(json(r).await, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));

    // After the first event, an overload becomes the in-band error of the client's dialect.
    let r = gw.chat("claude-busy-stream", true).await;
    let text = r.text().await.unwrap();
    assert!(text.contains(r#""type":"overloaded_error""#) && text.ends_with("data: [DONE]\n\n"), "{text}");
    let r = messages(
        &gw,
        "sk-test",
        json!({"model": "claude-busy-stream", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let events = sse_events(&r.text().await.unwrap());
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "overloaded_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pass_through_to_claude() {
    let (gw, claude, _) = start().await;
    let request = json!({"model": "claude-sonnet", "max_tokens": 50, "system": "Be terse.",
                         "messages": [{"role": "user", "content": "Hi"}], "top_k": 3, "future_field": {"a": 1}});
    let r = messages(&gw, "sk-test", request.clone()).await;
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    assert_eq!(body["model"], "claude-sonnet");
    assert_eq!(body["content"][0]["text"], "Hello from Claude");
    let (headers, sent) = claude.last();
    let mut expected = request;
    expected["model"] = json!("claude-sonnet-4-5");
    assert_eq!(sent, expected, "the body goes through untouched but for the model");
    assert_eq!(headers["anthropic-beta"], "fine-grained-tool-streaming-2025-05-14");
    assert_eq!(headers["x-api-key"], UPSTREAM_KEY);

    let r = messages(
        &gw,
        "sk-test",
        json!({"model": "claude-sonnet", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let events = sse_events(&r.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[0].1["message"]["model"], "claude-sonnet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_on_openai_compatible_and_mock_upstreams() {
    let (gw, _, openai) = start().await;
    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .bearer_auth("sk-test")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"model": "gpt-ish", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}),
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"], json!([{"type": "text", "text": "ok: Hi"}]), "the mock echoes the question");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 5);
    assert_eq!(body["usage"]["output_tokens"], 1);
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(openai.requests(), 1);

    let r = messages(
        &gw,
        "sk-test",
        json!({"model": "gpt-ish", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let events = sse_events(&r.text().await.unwrap());
    let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello: Hi");
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert_eq!(events[events.len() - 2].1["delta"]["stop_reason"], "end_turn");

    let r = messages(
        &gw,
        "sk-test",
        json!({"model": "mocked", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi there"}]}),
    )
    .await;
    let events = sse_events(&r.text().await.unwrap());
    let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Mock response to: Hi there");
    let usage = &events[events.len() - 2].1["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0 && usage["output_tokens"].as_u64().unwrap() > 0, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_errors_have_anthropic_shape() {
    let (gw, _, _) = start().await;
    let cases = [
        (
            "",
            json!({"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            401,
            "authentication_error",
        ),
        (
            "sk-test",
            json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
        ),
        (
            "sk-narrow",
            json!({"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            403,
            "permission_error",
        ),
        (
            "sk-test",
            json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            "sk-test",
            json!({"model": "gpt-ish", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                           "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            400,
            "invalid_request_error",
        ),
    ];
    for (key, body, status, kind) in cases {
        let r = messages(&gw, key, body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        let error = json(r).await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], kind, "{error}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    // The OpenAI routes keep OpenAI's shape.
    let r = gw.chat("nope", false).await;
    assert_eq!(json(r).await["error"]["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_answered_locally() {
    let (gw, claude, _) = start().await;
    let r = gw
        .client
        .post(gw.url("/v1/messages/count_tokens"))
        .header("x-api-key", "sk-test")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"model": "claude-sonnet", "system": "12345678", "messages": [{"role": "user", "content": "abcdefgh"}]})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await, json!({"input_tokens": 2 + 4 + 2}));
    assert_eq!(claude.count(), 0);
    let r = gw
        .client
        .post(gw.url("/v1/messages/count_tokens"))
        .header("x-api-key", "sk-narrow")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "x"}]}))
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json(r).await["error"]["type"], "permission_error");
}

#[test]
fn llm_backend_api_is_the_anthropic_api() {
    let env: HashMap<&str, &str> = [("LLM_BACKEND", "api"), ("ANTHROPIC_API_KEY", "sk-ant-x")].into_iter().collect();
    let config =
        llm_gateway::config::Config::from_yaml("keys: [{ key: k, team: t }]\nteams: { t: { models: ['*'] } }\n", &env)
            .unwrap();
    let backend = config.default_backend.unwrap();
    assert_eq!(backend.dialect, llm_gateway::config::Dialect::Anthropic);
    assert_eq!(backend.base_url, "https://api.anthropic.com");
    assert_eq!(backend.api_key.as_ref().unwrap().expose(), "sk-ant-x");
    assert!(backend.headers.iter().any(|(k, v)| k == "anthropic-version" && v == "2023-06-01"));
}
