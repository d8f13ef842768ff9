//! Spend unit tests: each cost equal to the integer worked out by hand from the catalogue's
//! (or the config's) price per million tokens; prices resolved and overridden; amounts parsed
//! without floating point; rounding that never overflows nor loses a micro-unit.

use std::collections::HashMap;

use proptest::prelude::*;

use super::price::{format_micros, parse_micros};
use super::*;
use crate::api::anthropic::UsageReport;
use crate::api::openai::{CompletionTokensDetails, PromptTokensDetails};

const CONFIG: &str = "
keys: [{ key: sk-a, team: team-a, id: key-a }]
teams: { team-a: { models: ['*'] } }
providers:
  openai: { vendor: openai }
  anthropic: { vendor: anthropic }
  vllm: { vendor: vllm, base_url: 'http://127.0.0.1:9/v1' }
  mine: { dialect: openai, base_url: 'http://127.0.0.1:9/v1' }
models:
  gpt-4o: { deployments: [{ provider: openai }] }
  sol: { deployments: [{ provider: openai, model: gpt-6.1-sol }] }
  sonnet: { deployments: [{ provider: anthropic, model: claude-sonnet-5-5 }] }
  embed: { deployments: [{ provider: openai, model: text-embedding-3-small }] }
  local: { deployments: [{ provider: vllm, model: qwen3 }] }
  own: { deployments: [{ provider: mine, model: qwen3 }] }
  mystery: { deployments: [{ provider: openai, model: gpt-98 }] }
  priced:
    deployments:
      - { provider: openai, model: gpt-99, price: { input: '0.0375', output: 2.5, cached_input: 1 } }
      - { provider: anthropic, model: claude-haiku-4-5, free: true }
aliases: { sonnet-latest: sonnet }
";

fn prices(yaml: &str) -> Prices {
    Prices::new(&Config::from_yaml(yaml, &HashMap::<&str, &str>::new()).unwrap())
}

fn openai(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: cached, cache_write_tokens: 0 }),
        completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: reasoning }),
        ..Usage::default()
    }
}

#[test]
fn openai_cached_tokens_cost_the_cached_price() {
    let p = prices(CONFIG);
    let gpt4o = p.of("openai/gpt-4o");
    assert_eq!(gpt4o.source, Source::Catalogue);
    // $2.50 / $1.25 cached / $10 per Mtok: 600 × 2.5 + 400 × 1.25 + 200 × 10 = 1500 + 500 + 2000 µ$.
    assert_eq!(cost(&gpt4o.price, &openai(1000, 400, 200, 0)), 4000);
    // One token: $0.0000025 = 2.5 µ$, rounded half up.
    assert_eq!(cost(&gpt4o.price, &openai(1, 0, 0, 0)), 3);
}

#[test]
fn reasoning_tokens_bill_as_output() {
    let p = prices(CONFIG);
    // gpt-6.1-sol $2 in / $10 out: 50 × 2 + (200 + 800 reasoning) × 10 = 100 + 10000 µ$.
    assert_eq!(cost(&p.of("openai/gpt-6.1-sol").price, &openai(50, 0, 1000, 800)), 10_100);
}

#[test]
fn anthropic_cache_reads_and_writes_have_their_own_prices() {
    let p = prices(CONFIG);
    let report = UsageReport {
        input_tokens: Some(100),
        output_tokens: Some(300),
        cache_creation_input_tokens: Some(1000),
        cache_read_input_tokens: Some(5000),
        cache_creation: None,
        server_tool_use: None,
    };
    // claude-sonnet-5-5: $2 in, $2.50 5-minute write, $0.10 read, $10 out:
    // 100 × 2 + 1000 × 2.5 + 5000 × 0.1 + 300 × 10 = 200 + 2500 + 500 + 3000 µ$.
    assert_eq!(cost(&p.of("anthropic/claude-sonnet-5-5").price, &report.to_openai()), 6200);
}

#[test]
fn embeddings_bill_their_input() {
    let p = prices(CONFIG);
    let price = p.of("openai/text-embedding-3-small").price;
    // $0.02 per Mtok: 5000 tokens = 100 µ$; 1234 tokens = 24.68 µ$ → 25.
    assert_eq!(cost(&price, &Usage { prompt_tokens: 5000, total_tokens: 5000, ..Usage::default() }), 100);
    assert_eq!(cost(&price, &Usage { prompt_tokens: 1234, total_tokens: 1234, ..Usage::default() }), 25);
}

#[test]
fn overrides_self_hosted_and_unknown_prices() {
    let p = prices(CONFIG);
    let priced = p.of("openai/gpt-99");
    assert_eq!(priced.source, Source::Config);
    // '0.0375' (a string) and 2.5 (a YAML number) per Mtok, read exactly; cache write = input.
    assert_eq!(
        priced.price,
        Price {
            input: 37_500,
            output: 2_500_000,
            cached_input: 1_000_000,
            cache_write: 37_500,
            cache_write_long: 37_500
        }
    );
    // 1000 × 0.0375 + 100 × 2.5 = 37.5 + 250 = 287.5 µ → 288.
    assert_eq!(cost(&priced.price, &openai(1000, 0, 100, 0)), 288);
    assert_eq!(p.of("vllm/qwen3").source, Source::SelfHosted);
    assert_eq!(p.of("mine/qwen3").source, Source::SelfHosted);
    assert_eq!(p.of("vllm/qwen3").price, Price::FREE);
    assert_eq!(p.of("openai/gpt-98").source, Source::Unknown);
    assert_eq!(p.of("openai/never-configured").source, Source::Unknown);
    // A cache hit on an alias saves what its group's first deployment costs.
    assert_eq!(p.of_model("sonnet-latest").unwrap().source, Source::Catalogue);
}

#[test]
fn a_paid_deployment_without_a_price_is_reported_and_free_is_explicit() {
    let p = prices(CONFIG);
    assert_eq!(p.unpriced(), vec!["openai/gpt-98"]);
    let free = prices(&CONFIG.replace(
        "      - { provider: openai, model: gpt-99, price: { input: '0.0375', output: 2.5, cached_input: 1 } }\n",
        "",
    ));
    assert_eq!(free.of("anthropic/claude-haiku-4-5").source, Source::Free);
    let metrics = metrics::SpendMetrics::new();
    warn_unpriced(&p, &metrics);
    let mut out = String::new();
    metrics.render(&mut out);
    assert!(out.contains("llm_gateway_unpriced_deployments{deployment=\"openai/gpt-98\"} 1"), "{out}");
}

#[test]
fn another_currency_needs_prices_of_its_own() {
    let p = prices(&format!("{CONFIG}spend: {{ currency: EUR }}\n"));
    assert_eq!(p.currency(), "EUR");
    assert_eq!(p.of("openai/gpt-4o").source, Source::Unknown, "the catalogue is in USD");
    let env = HashMap::<&str, &str>::new();
    let e = Config::from_yaml(&format!("{CONFIG}spend: {{ currency: euro }}\n"), &env).unwrap_err();
    assert!(e.0.contains("spend.currency"), "{e}");
    let both = CONFIG.replace("free: true", "free: true, price: { input: 1 }");
    let e = Config::from_yaml(&both, &env).unwrap_err();
    assert!(e.0.contains("deployments[1].free"), "{e}");
    let e = Config::from_yaml(&CONFIG.replace("'0.0375'", "'-1'"), &env).unwrap_err();
    assert!(e.0.contains("not an amount"), "{e}");
}

#[test]
fn amounts_are_parsed_and_printed_exactly() {
    assert_eq!(parse_micros("2.50"), Ok(2_500_000));
    assert_eq!(parse_micros("0.000001"), Ok(1));
    assert_eq!(parse_micros(".5"), Ok(500_000));
    assert_eq!(parse_micros("15"), Ok(15_000_000));
    for bad in ["", ".", "1.0000001", "-1", "1e3", "1,5", "18446744073709.551616"] {
        assert!(parse_micros(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_micros(4125), "0.004125");
    assert_eq!(format_micros(12_000_000), "12.000000");
}

#[test]
fn event_costs_add_up_to_the_request_cost() {
    let price =
        Price { input: 37_500, output: 2_500_000, cached_input: 3_750, cache_write: 46_875, cache_write_long: 75_000 };
    let parts =
        [(TokenType::Input, 13), (TokenType::Output, 7), (TokenType::CacheRead, 11), (TokenType::CacheWrite, 3)];
    // 0.4875 + 17.5 + 0.04125 + 0.140625 = 18.169375 µ → 18, split as 0 + 18 + 0 + 0.
    let shares = apportion(&price, &parts, 0);
    assert_eq!(shares, vec![0, 18, 0, 0]);
    assert_eq!(micros_of(picos(&price, &parts)), 18);
}

fn any_price() -> impl Strategy<Value = Price> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(input, output, cached_input, cache_write)| {
        Price { input, output, cached_input, cache_write, cache_write_long: cache_write }
    })
}

proptest! {
    /// Amounts are read by our own decimal parser (no float anywhere): any decimal with up to
    /// six places is its exact micro-units, formatting reads back to the same value, and no
    /// text makes it panic.
    #[test]
    fn amounts_parse_exactly_and_round_trip(
        whole in 0u64..=18_446_744_073_708,
        frac in "[0-9]{0,6}",
        micros in any::<u64>(),
        junk in "\\PC{0,24}",
    ) {
        let text = if frac.is_empty() { whole.to_string() } else { format!("{whole}.{frac}") };
        let expected = whole * 1_000_000 + if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse::<u64>().unwrap() };
        prop_assert_eq!(parse_micros(&text), Ok(expected));
        prop_assert_eq!(parse_micros(&format!(" {text} ")), Ok(expected));
        prop_assert_eq!(parse_micros(&format_micros(micros)), Ok(micros));
        if let Ok(value) = parse_micros(&junk) {
            // Whatever it accepted is a plain decimal that formats back to the same amount.
            let t = junk.trim();
            prop_assert!(t.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "{junk:?} → {value}");
            prop_assert_eq!(parse_micros(&format_micros(value)), Ok(value));
        }
    }

    /// Whatever the counts and prices: no panic, no overflow, the total within half a
    /// micro-unit of the exact sum, and the events' shares adding up to it exactly.
    #[test]
    fn cost_never_overflows_nor_loses_a_micro_unit(
        price in any_price(),
        counts in proptest::collection::vec(0u64..=u64::MAX, 5),
        small in proptest::collection::vec(0u64..1_000_000, 5),
        big in any::<bool>(),
    ) {
        let counts = if big { counts } else { small };
        let parts: Vec<(TokenType, u64)> = TokenType::ALL.iter().copied().zip(counts).collect();
        let exact = picos(&price, &parts);
        let total = micros_of(exact);
        let shares = apportion(&price, &parts, 0);
        if exact < u128::from(u64::MAX) * 1_000_000 {
            let back = u128::from(total) * 1_000_000;
            prop_assert!(back.abs_diff(exact) <= 500_000, "{total} µ for {exact} p");
            prop_assert_eq!(shares.iter().map(|s| u128::from(*s)).sum::<u128>(), u128::from(total));
        } else {
            prop_assert_eq!(total, u64::MAX);
        }
    }
}

#[test]
fn a_money_budget_reserves_the_worst_case_of_every_candidate() {
    let yaml = CONFIG.replace(
        "  sol: { deployments: [{ provider: openai, model: gpt-6.1-sol }] }",
        "  sol:\n    deployments: [{ provider: openai, model: gpt-6.1-sol }]\n    fallbacks: [sonnet]",
    );
    let p = prices(&yaml);
    // gpt-6.1-sol: in 2, cache write 2.5, out 10; claude-sonnet-5-5: in 2, cache write 2.5, out 10.
    let worst = p.of("openai/gpt-6.1-sol").price.max(p.of("anthropic/claude-sonnet-5-5").price);
    assert_eq!(p.worst_of("sol"), Some(worst));
    // The prompt at the dearer of input and cache write (2.5), the completion at output (10):
    // 100 × 2.5 + 1000 × 10 = 10250 µ$; a fraction rounds up.
    assert_eq!(price::worst_case(&worst, 100, 1000), 10_250);
    assert_eq!(price::worst_case(&worst, 1, 0), 3);
    assert_eq!(p.worst_of("local"), None, "a free group reserves nothing");
    let settings = crate::config::limits::LimitSettings::default();
    let demand = crate::limits::Demand {
        model: "sol",
        prompt_tokens: 100,
        max_tokens: Some(500),
        completion: true,
        choices: 2,
        worst_price: p.worst_of("sol"),
    };
    assert_eq!(demand.worst_cost(&settings), 250 + 2 * 500 * 10);
}

/// A principal of team `team-a` whose key carries `key_ceiling`, the team's limits from `config`.
fn principal(config: &Config, key_ceiling: Option<u64>) -> crate::ctx::Principal {
    let limits = crate::config::limits::Limits { max_price_per_mtok: key_ceiling, ..Default::default() };
    crate::ctx::Principal {
        team: "team-a".into(),
        key_id: "key-a".into(),
        policy: std::sync::Arc::new(config.teams["team-a"].clone()),
        grant: std::sync::Arc::new(crate::ctx::Grant { subject: "k:key-a".into(), limits, ..Default::default() }),
    }
}

#[test]
fn a_price_ceiling_leaves_out_the_dearer_deployments() {
    let yaml = CONFIG
        .replace("teams: { team-a: { models: ['*'] } }", "teams: { team-a: { models: ['*'], limits: { max_price_per_mtok: '12.5' } } }")
        .replace(
            "  gpt-4o: { deployments: [{ provider: openai }] }",
            "  gpt-4o:\n    deployments: [{ provider: openai }, { provider: openai, model: gpt-99, price: { input: 1, output: 2 } }]",
        );
    let config = Config::from_yaml(&yaml, &HashMap::<&str, &str>::new()).unwrap();
    assert_eq!(config.teams["team-a"].limits.max_price_per_mtok, Some(12_500_000));
    let router = crate::router::Router::new(&config);
    let ids = |p: &crate::ctx::Principal| {
        let plan = router.plan(p, "gpt-4o", crate::router::RequestShape::default()).unwrap();
        let mut ids: Vec<String> = plan.candidates.iter().map(|c| c.deployment.id.clone()).collect();
        ids.sort();
        ids
    };
    // The team's 12.5 admits gpt-4o's $2.50 + $10 exactly; the key's own 3 (the lower) does not.
    assert_eq!(ids(&principal(&config, None)), ["openai/gpt-4o", "openai/gpt-99"]);
    assert_eq!(ids(&principal(&config, Some(3_000_000))), ["openai/gpt-99"]);
    // Nothing under the ceiling: a 403 naming it; an unpriced paying model is never under one.
    for (model, cheapest) in [("sol", "the cheapest: 12.000000 USD"), ("mystery", "the cheapest: unknown")] {
        let err = router.plan(&principal(&config, Some(3_000_000)), model, Default::default()).unwrap_err();
        assert_eq!(err.status(), 403);
        let message = err.to_string();
        assert!(message.contains("max_price_per_mtok is 3.000000 USD per million tokens"), "{message}");
        assert!(message.contains(cheapest), "{message}");
    }
    // Zero admits only free deployments.
    assert!(router.plan(&principal(&config, Some(0)), "local", Default::default()).is_ok());
}

#[test]
fn one_hour_cache_writes_cost_their_own_price() {
    let p = prices(CONFIG);
    let sonnet = p.of("anthropic/claude-sonnet-5-5").price;
    assert_eq!((sonnet.cache_write, sonnet.cache_write_long), (2_500_000, 4_000_000));
    // Anthropic's usage as it arrives: 1000 cache writes, 399 to the 5-minute cache, 601 to the
    // 1-hour one.
    let report: UsageReport = serde_json::from_str(
        r#"{"input_tokens": 100, "output_tokens": 300, "cache_read_input_tokens": 5000,
            "cache_creation_input_tokens": 1000,
            "cache_creation": {"ephemeral_5m_input_tokens": 399, "ephemeral_1h_input_tokens": 601}}"#,
    )
    .unwrap();
    let usage = report.to_openai();
    // $2 in, $2.50 5-minute write, $4 1-hour write, $0.10 read, $10 out:
    // 100 × 2 + 399 × 2.5 + 601 × 4 + 5000 × 0.1 + 300 × 10 = 200 + 997.5 + 2404 + 500 + 3000
    // = 7101.5 µ$ → 7102 (all at the 5-minute price it would be 6200).
    assert_eq!(cost(&sonnet, &usage), 7102);
    let parts = crate::api::split_usage(&usage);
    let shares = apportion(&sonnet, &parts, long_writes(&usage));
    assert_eq!(shares.iter().sum::<u64>(), 7102, "the events add up to the request");
    let write = parts.iter().position(|(t, _)| *t == TokenType::CacheWrite).unwrap();
    assert!((3401..=3402).contains(&shares[write]), "{shares:?}");
    // The split survives the Anthropic view and back.
    assert_eq!(UsageReport::from_openai(&usage).to_openai(), usage);

    // A config price: `cache_write_1h` (or `cache_write_long`); missing, the 5-minute price.
    let yaml = CONFIG.replace(
        "{ provider: anthropic, model: claude-haiku-4-5, free: true }",
        "{ provider: anthropic, model: claude-haiku-4-5, price: { input: 1, output: 5, cache_write: '1.25', cache_write_1h: 2 } }",
    );
    let haiku = prices(&yaml).of("anthropic/claude-haiku-4-5").price;
    assert_eq!((haiku.cache_write, haiku.cache_write_long), (1_250_000, 2_000_000));
    // 100 × 1 + 399 × 1.25 + 601 × 2 + 5000 × 1 (cached_input = input) + 300 × 5
    // = 100 + 498.75 + 1202 + 5000 + 1500 = 8300.75 → 8301.
    assert_eq!(cost(&haiku, &usage), 8301);
    assert_eq!(prices(CONFIG).of("openai/gpt-99").price.cache_write_long, 37_500, "defaults to cache_write");
}

#[test]
fn prices_are_resolved_into_the_deployments_when_the_config_is_built() {
    // The same `provider/model` in two groups: the `price:` one group gives it holds in both.
    let yaml = CONFIG.replace(
        "  mystery: { deployments: [{ provider: openai, model: gpt-98 }] }",
        "  mystery: { deployments: [{ provider: openai, model: gpt-98 }] }\n  \
         mystery-priced: { deployments: [{ provider: openai, model: gpt-98, price: { input: 3, output: 4 } }] }",
    );
    let config = Config::from_yaml(&yaml, &HashMap::<&str, &str>::new()).unwrap();
    let priced = |group: &str| config.models[group].deployments[0].priced;
    assert_eq!(priced("gpt-4o").source, Source::Catalogue);
    assert_eq!(priced("gpt-4o").price.input, 2_500_000);
    assert_eq!(priced("local").source, Source::SelfHosted);
    assert_eq!(priced("mystery").source, Source::Config);
    assert_eq!(priced("mystery").price, priced("mystery-priced").price);
    assert_eq!(priced("mystery").price.output, 4_000_000);
    // What `Prices` reports is what the deployments carry.
    let p = Prices::new(&config);
    for group in ["gpt-4o", "local", "mystery", "priced", "sonnet"] {
        let d = &config.models[group].deployments[0];
        assert_eq!(p.of(&d.id), d.priced, "{group}");
    }
}

/// Counts how often the local count is asked for (a tokenizer pass and, the first time, tens of
/// MB of tokenizer tables).
struct CountingCount(std::sync::atomic::AtomicUsize);

impl crate::ctx::LocalCount for CountingCount {
    fn usage(
        &self,
        _deployment: &str,
        _endpoint: crate::ctx::Endpoint,
        _body: &bytes::Bytes,
        _generated: Option<&crate::ctx::Generated>,
        _reported: Option<&Usage>,
    ) -> Usage {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Usage { prompt_tokens: 1_000, completion_tokens: 2_000, total_tokens: 3_000, ..Default::default() }
    }
}

/// A stream cut before its usage (client gone) on `deployment` at `priced`.
fn cut_stream(deployment: &str, priced: Priced) -> (crate::ctx::RequestCtx, crate::ctx::Outcome) {
    let ctx = crate::ctx::RequestCtx {
        request_id: "r".into(),
        started: std::time::Instant::now(),
        endpoint: crate::ctx::Endpoint::ChatCompletions,
        principal: None,
        client_model: "own".into(),
        client: Default::default(),
        stream: true,
        client_wants_usage: false,
        deployment: Some(deployment.into()),
        priced: Some(priced),
        attempts: 1,
        trace: Default::default(),
        body: bytes::Bytes::from_static(b"{}"),
        cache: Default::default(),
        reservation: None,
        query: None,
    };
    let outcome = crate::ctx::Outcome { client_gone: true, ..crate::ctx::Outcome::failed(200, "client_gone") };
    (ctx, outcome)
}

#[test]
fn a_cut_stream_is_counted_for_its_cost_only_when_its_deployment_has_a_price() {
    use crate::ctx::Observer;
    let config = Config::from_yaml(CONFIG, &HashMap::<&str, &str>::new()).unwrap();
    let count = Arc::new(CountingCount(Default::default()));
    let metrics = Arc::new(crate::telemetry::metrics::spend::SpendMetrics::new());
    let observer = SpendObserver {
        prices: Arc::new(Prices::new(&config)),
        metrics: metrics.clone(),
        labels: Arc::new(crate::telemetry::metrics::Metrics::new(["own".to_owned()].into(), false)),
        count: count.clone(),
    };
    // A self-hosted deployment costs nothing whatever it used: nothing to count (no tokenizer).
    let (ctx, outcome) = cut_stream("mine/qwen3", Priced { price: Price::FREE, source: Source::SelfHosted });
    assert!(outcome.counted_locally(&ctx));
    observer.finished(&ctx, &outcome);
    assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 0);
    // A priced one is counted (outside a runtime, at once) and its cost is in the metric:
    // 1,000 tokens at $1 and 2,000 at $3 per million = 7,000 µ$.
    let price = Price { input: 1_000_000, output: 3_000_000, ..Price::FREE };
    let (ctx, outcome) = cut_stream("openai/gpt-99", Priced { price, source: Source::Config });
    observer.finished(&ctx, &outcome);
    assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(text.contains("llm_gateway_spend_total{team=\"\",model=\"own\"} 7000"), "{text}");
}
