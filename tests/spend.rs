//! What a request cost, through the real gateway on loopback: `x-llm-gateway-cost` on whole
//! answers (catalogue and overridden prices), none on a stream (its headers leave before its
//! usage), and both in `llm_gateway_spend_total` once the request has ended.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, MockUpstream};

fn config(upstream: &MockUpstream) -> String {
    format!(
        "
keys: [{{ key: sk-test, team: team-a }}]
teams: {{ team-a: {{ models: ['*'] }} }}
providers:
  up: {{ vendor: openai, base_url: '{url}' }}
models:
  gpt:
    deployments: [{{ provider: up, model: gpt-4o }}]
  cheap:
    deployments: [{{ provider: up, model: my-finetune, price: {{ input: '1', output: '3.5' }} }}]
",
        url = upstream.base_url()
    )
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn spend_line(gw: &Gateway, model: &str) -> Option<String> {
    let needle = format!("llm_gateway_spend_total{{team=\"team-a\",model=\"{model}\"}} ");
    gw.metrics().await.lines().find_map(|l| l.strip_prefix(&needle).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_answers_carry_their_cost_and_streams_count_theirs_at_the_end() {
    let upstream = MockUpstream::start().await;
    let gw = Gateway::start(&config(&upstream)).await;

    // The mock reports 5 prompt and 1 completion tokens. gpt-4o: $2.50 in, $10 out per Mtok:
    // 5 × 2.5 + 1 × 10 = 22.5 µ$ → 23.
    let response = gw.chat("gpt", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-llm-gateway-cost").as_deref(), Some("23"));
    assert_eq!(header(&response, "x-llm-gateway-cost-currency").as_deref(), Some("USD"));
    assert_eq!(header(&response, "x-llm-gateway-cost-saved"), None);

    // The deployment's own price: 5 × 1 + 1 × 3.5 = 8.5 → 9.
    let response = gw.chat("cheap", false).await;
    assert_eq!(header(&response, "x-llm-gateway-cost").as_deref(), Some("9"));

    // A stream (usage asked for: 5 + 2 tokens): no cost header, counted when it ends:
    // 5 × 2.5 + 2 × 10 = 32.5 → 33, on top of the 23 above.
    let response = gw
        .chat_with(serde_json::json!({
            "model": "gpt", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Hello"}],
        }))
        .await;
    assert_eq!(header(&response, "x-llm-gateway-cost"), None);
    let body = response.text().await.unwrap();
    assert!(body.contains("\"completion_tokens\":2"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let gpt = spend_line(&gw, "gpt").await;
        if gpt.as_deref() == Some("56") || Instant::now() > deadline {
            assert_eq!(gpt.as_deref(), Some("56"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(spend_line(&gw, "cheap").await.as_deref(), Some("9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_vendor_model_without_a_price_is_reported_in_the_metrics() {
    let upstream = MockUpstream::start().await;
    let yaml = config(&upstream).replace("model: gpt-4o", "model: gpt-unknown");
    let gw = Gateway::start(&yaml).await;
    let metrics = gw.metrics().await;
    assert!(metrics.contains("llm_gateway_unpriced_deployments{deployment=\"up/gpt-unknown\"} 1"), "{metrics}");
    assert!(!metrics.contains("unpriced_deployments{deployment=\"up/my-finetune\""), "a price is a price: {metrics}");
    // Counted at zero, said so in the header rather than left out.
    let response = gw.chat("gpt", false).await;
    assert_eq!(header(&response, "x-llm-gateway-cost").as_deref(), Some("0"));
}

/// A team's daily money budget: each request reserves its worst case (prompt + max_tokens at
/// the dearest candidate's price), settles to what it cost, and the one that would pass the
/// budget is refused with `budget_exceeded`, naming the budget, what was spent and the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_money_budget_admits_until_the_worst_case_would_pass_it() {
    let upstream = MockUpstream::start().await;
    let yaml = config(&upstream).replace(
        "teams: { team-a: { models: ['*'] } }",
        "teams: { team-a: { models: ['*'], limits: { daily_spend: '0.0003' } } }",
    );
    let gw = Gateway::start(&yaml).await;
    let body =
        serde_json::json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "Hello"}]});
    let mut admitted = 0u64;
    let refusal = loop {
        let response = gw.chat_with(body.clone()).await;
        if response.status() == 429 {
            break support::json(response).await;
        }
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit-spend").as_deref(), Some("300"));
        let remaining: u64 = header(&response, "x-ratelimit-remaining-spend").unwrap().parse().unwrap();
        assert!(remaining < 300 - 23 * admitted, "the reservation is counted: {remaining}");
        admitted += 1;
        assert!(admitted < 20, "never refused");
    };
    // Each answer cost 23 µ$ (5 × 2.5 + 1 × 10, rounded); the worst case of one more (its
    // prompt + 10 completion tokens at $10 / Mtok) no longer fits in 300.
    assert!(admitted >= 5, "{admitted} admitted");
    assert!(23 * admitted <= 300, "admitted spend within the budget");
    let error = &refusal["error"];
    assert_eq!(error["code"], "budget_exceeded");
    assert_eq!(error["type"], "insufficient_quota");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("daily spend budget of team team-a"), "{message}");
    assert!(message.contains("budget 0.000300 USD"), "{message}");
    assert!(message.contains(&format!("spent {} USD", format_args!("0.{:06}", 23 * admitted))), "{message}");
    assert!(message.contains("It resets at "), "{message}");
    let quota = gw.quota("sk-test").await;
    let spend = &quota["limits"]["team team-a"]["daily_spend"];
    assert_eq!(spend["limit"], 300);
    assert_eq!(spend["used"], 23 * admitted);
    assert_eq!(spend["remaining"], 300 - 23 * admitted);
    assert_eq!(spend["currency"], "USD");
    assert!(spend["resets_at"].as_str().unwrap().ends_with("T00:00:00Z"), "{quota}");
    // Past 80 % of the budget: reported once, however many requests came after.
    let metrics = gw.metrics().await;
    assert!(metrics.contains("llm_gateway_spend_budget_alerts_total{reason=\"daily_spend\"} 1\n"), "{metrics}");
}

/// `strategy: cheapest` sends every request to the lowest-priced healthy deployment, and to the
/// next one up when it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cheapest_strategy_prefers_the_lowest_price_and_fails_over_upwards() {
    let (dear, cheap, unpriced) =
        (MockUpstream::start().await, MockUpstream::start().await, MockUpstream::start().await);
    let yaml = format!(
        "
keys: [{{ key: sk-test, team: team-a }}]
teams: {{ team-a: {{ models: ['*'] }} }}
providers:
  dear: {{ vendor: openai, base_url: '{}' }}
  cheap: {{ vendor: openai, base_url: '{}' }}
  unpriced: {{ vendor: openai, base_url: '{}' }}
models:
  m:
    strategy: cheapest
    deployments:
      - {{ provider: unpriced, model: gpt-unknown }}
      - {{ provider: dear, model: gpt-4o }}
      - {{ provider: cheap, model: gpt-4o, price: {{ input: '0.5', output: '1' }} }}
",
        dear.base_url(),
        cheap.base_url(),
        unpriced.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..10 {
        let response = gw.chat("m", false).await;
        assert_eq!(support::deployment_of(&response), "cheap/gpt-4o");
    }
    cheap.control.status.store(500, std::sync::atomic::Ordering::Relaxed);
    let response = gw.chat("m", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(support::deployment_of(&response), "dear/gpt-4o", "the catalogue's $2.50 + $10 comes next");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(unpriced.control.requests.load(Relaxed), 0, "a deployment with no price is tried last");
    assert_eq!(dear.control.requests.load(Relaxed), 1);
}

/// A team's `max_price_per_mtok` keeps it off deployments dearer than that (input + output per
/// million tokens): it only ever reaches the cheap one, and a model with only dear deployments
/// is refused with a 403 naming the ceiling; a team without a ceiling reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_ceiling_keeps_a_team_off_the_dear_deployments() {
    use std::sync::atomic::Ordering::Relaxed;
    let (dear, cheap) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml = format!(
        "
keys: [{{ key: sk-test, team: team-a }}, {{ key: sk-free, team: team-b }}]
teams:
  team-a: {{ models: ['*'], limits: {{ max_price_per_mtok: '5' }} }}
  team-b: {{ models: ['*'] }}
providers:
  dear: {{ vendor: openai, base_url: '{}' }}
  cheap: {{ vendor: openai, base_url: '{}' }}
models:
  m:
    deployments:
      - {{ provider: dear, model: gpt-4o }}
      - {{ provider: cheap, model: gpt-4o, price: {{ input: '0.5', output: '4.5' }} }}
  dear-only:
    deployments: [{{ provider: dear, model: gpt-4o }}]
",
        dear.base_url(),
        cheap.base_url(),
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..12 {
        let response = gw.chat("m", false).await;
        assert_eq!(response.status(), 200);
        assert_eq!(support::deployment_of(&response), "cheap/gpt-4o", "0.5 + 4.5 = 5: at the ceiling is within it");
    }
    assert_eq!(dear.control.requests.load(Relaxed), 0, "$2.50 + $10 is over the ceiling");

    let refusal = gw.chat("dear-only", false).await;
    assert_eq!(refusal.status(), 403);
    let body = support::json(refusal).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_price_per_mtok is 5.000000 USD per million tokens"), "{message}");
    assert!(message.contains("the cheapest: 12.500000 USD"), "{message}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    // The same refusal in the Anthropic shape on `/v1/messages`.
    let anthropic =
        serde_json::json!({"model": "dear-only", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]});
    let refusal = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&anthropic).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refusal.status(), 403);
    let body = support::json(refusal).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("max_price_per_mtok"), "{body}");
    assert_eq!(dear.control.requests.load(Relaxed), 0);

    // No ceiling: both deployments of `m` take traffic, and `dear-only` answers.
    let other = serde_json::json!({"model": "dear-only", "messages": [{"role": "user", "content": "Hello"}]});
    assert_eq!(gw.chat_as("sk-free", other).await.status(), 200);
    assert_eq!(dear.control.requests.load(Relaxed), 1);
}

/// Anthropic's usage splits cache writes by lifetime: each kind costs its own price, on a whole
/// answer (the header) and on a stream (the metric, once it has ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_one_hour_cache_writes_cost_twice_the_input() {
    let claude = support::anthropic::MockAnthropic::start().await;
    let yaml = format!(
        "
keys: [{{ key: sk-test, team: team-a }}]
teams: {{ team-a: {{ models: ['*'] }} }}
providers:
  claude: {{ vendor: anthropic, base_url: '{}', api_key_env: TEST_ANTHROPIC_KEY }}
models:
  sonnet: {{ deployments: [{{ provider: claude, model: claude-sonnet-5-5 }}] }}
",
        claude.base_url()
    );
    let gw = Gateway::start_with_env(&yaml, &[("TEST_ANTHROPIC_KEY", "sk-ant-test")]).await;
    // The mock reports 20 input, 2 + 3 cache writes (5 minutes, 1 hour), 100 cache reads and 9
    // output tokens. claude-sonnet-5-5: $2 in, $2.50 and $4 writes, $0.10 read, $10 out:
    // 20 × 2 + 2 × 2.5 + 3 × 4 + 100 × 0.1 + 9 × 10 = 40 + 5 + 12 + 10 + 90 = 157 µ$.
    let response = gw.chat("sonnet", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-llm-gateway-cost").as_deref(), Some("157"));
    let response = gw
        .chat_with(serde_json::json!({
            "model": "sonnet", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Hello"}],
        }))
        .await;
    let body = response.text().await.unwrap();
    assert!(body.contains("[DONE]"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spent = spend_line(&gw, "sonnet").await;
        if spent.as_deref() == Some("314") || Instant::now() > deadline {
            assert_eq!(spent.as_deref(), Some("314"), "the stream costs the same 157");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
