//! Config validation: path-precise errors and the original service's environment overlay.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
    pairs.iter().copied().collect()
}

fn error_of(yaml: &str) -> String {
    Config::from_yaml(yaml, &env(&[])).unwrap_err().0
}

const BASE: &str = "
keys:
  - { key: sk-a, team: team-a }
teams:
  team-a: { models: ['*'] }
providers:
  local-vllm: { dialect: openai, base_url: 'http://127.0.0.1:8000/v1/', api_key_env: VLLM_KEY }
  mock: { dialect: mock }
models:
  gpt-4o-mini:
    deployments:
      - { provider: local-vllm, model: qwen3-32b }
";

#[test]
fn the_issue_example_shape_is_accepted() {
    let config = Config::from_yaml(BASE, &env(&[("VLLM_KEY", "secret-1")])).unwrap();
    let model = &config.models["gpt-4o-mini"];
    assert_eq!(model.deployments[0].model, "qwen3-32b");
    assert_eq!(model.deployments[0].id, "local-vllm/qwen3-32b");
    let provider = &config.providers["local-vllm"];
    assert_eq!(provider.base_url, "http://127.0.0.1:8000/v1");
    assert_eq!(provider.api_key.as_ref().unwrap().expose(), "secret-1");
    assert_eq!(config.server.listen, "0.0.0.0:5005");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn errors_name_the_full_path() {
    let bad_provider = BASE.replace("provider: local-vllm, model", "provider: nope, model");
    assert_eq!(error_of(&bad_provider), r#"models.gpt-4o-mini.deployments[0].provider: unknown provider "nope""#);

    let unknown_field = BASE.replace("model: qwen3-32b }", "model: qwen3-32b, wieght: 3 }");
    let e = error_of(&unknown_field);
    assert!(e.starts_with("models.gpt-4o-mini.deployments[0]: unknown field `wieght`"), "{e}");

    let e = error_of(&format!("{BASE}\nservr: {{}}\n"));
    assert!(e.contains("unknown field `servr`"), "{e}");

    let e = error_of(&BASE.replace("base_url: 'http://127.0.0.1:8000/v1/'", "base_url: 'ftp://x'"));
    assert!(e.starts_with("providers.local-vllm.base_url: "), "{e}");

    let e = error_of(&BASE.replace("team: team-a }", "team: team-z }"));
    assert_eq!(e, r#"keys[0].team: unknown team "team-z""#);

    let e = error_of(&BASE.replace("      - { provider: local-vllm, model: qwen3-32b }", "      []"));
    assert!(e.starts_with("models.gpt-4o-mini.deployments"), "{e}");

    let e = error_of(&format!("{BASE}\nserver: {{ shutdown_grace: 5 parsecs }}\n"));
    assert!(e.starts_with("server.shutdown_grace: "), "{e}");

    let e = error_of(&format!("{BASE}\nserver: {{ threads: 0 }}\n"));
    assert_eq!(e, "server.threads: must be at least 1");

    let e = error_of(&format!("{BASE}\nserver: {{ header_read_timeout: 0s }}\n"));
    assert_eq!(e, "server.header_read_timeout: must be greater than 0");

    let e = error_of("providers:\n  x: { vendor: nobody }\n");
    assert!(e.starts_with("providers.x.vendor: unknown vendor \"nobody\""), "{e}");
}

#[test]
fn key_forms_hash_and_env() {
    let hex = "4a18aacd5162".to_owned() + &"0".repeat(52);
    let yaml = format!(
        "keys:\n  - {{ key_sha256: '{hex}', team: t, id: ci }}\n  - {{ key_env: TEAM_KEY, team: t }}\n  - {{ key_env: MISSING, team: t }}\nteams:\n  t: {{ models: ['*'] }}\n"
    );
    let config = Config::from_yaml(&yaml, &env(&[("TEAM_KEY", "sk-env")])).unwrap();
    assert_eq!(config.keys.len(), 2, "the key whose variable is unset is disabled");
    assert_eq!(config.keys[0].id, "ci");
    assert_eq!(config.keys[1].sha256, sha256(b"sk-env"));
    assert!(config.warnings.iter().any(|w| w.starts_with("keys[2].key_env")));

    let e = error_of("keys:\n  - { key: a, key_env: B, team: t }\nteams:\n  t: { models: [] }\n");
    assert!(e.starts_with("keys[0]: exactly one of"), "{e}");
    let e = error_of("keys:\n  - { key_sha256: xyz, team: t }\nteams:\n  t: { models: [] }\n");
    assert!(e.starts_with("keys[0].key_sha256"), "{e}");
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let config = Config::from_yaml(BASE, &env(&[("VLLM_KEY", "super-secret-value")])).unwrap();
    assert!(!format!("{config:?}").contains("super-secret-value"));
}

#[test]
fn original_service_environment_overlay() {
    let config = Config::from_yaml(
        "keys: [{ key: k, team: t }]\nteams: { t: { models: ['*'] } }\n",
        &env(&[("LLM_BACKEND", "mock"), ("PORT", "6006"), ("LLM_REQUEST_TIMEOUT", "42")]),
    )
    .unwrap();
    let backend = config.default_backend.as_ref().unwrap();
    assert_eq!(backend.dialect, Dialect::Mock);
    assert_eq!(config.server.listen, "0.0.0.0:6006");
    assert_eq!(backend.timeouts.total, Duration::from_secs(42));

    // With models listed, LLM_BACKEND does not add a catch-all.
    let config = Config::from_yaml(BASE, &env(&[("LLM_BACKEND", "mock")])).unwrap();
    assert!(config.default_backend.is_none());

    let e = Config::from_yaml("", &env(&[("LLM_BACKEND", "grpc")])).unwrap_err().0;
    assert!(e.starts_with("LLM_BACKEND: unknown backend"), "{e}");
}

#[test]
fn vendor_descriptors_fill_in_and_config_overrides() {
    let yaml = "providers:\n  oa: { vendor: openai, api_key_env: MY_KEY }\n  az: { vendor: azure-openai, base_url: 'https://r.openai.azure.com/openai/v1' }\n";
    let config = Config::from_yaml(yaml, &env(&[("MY_KEY", "k")])).unwrap();
    let oa = &config.providers["oa"];
    assert_eq!(oa.base_url, "https://api.openai.com/v1");
    assert_eq!(oa.auth, AuthStyle::Bearer);
    assert_eq!(oa.stream_usage, StreamUsage::StreamOptions);
    assert!(oa.known_models.contains_key("gpt-4o-mini"));
    let az = &config.providers["az"];
    assert_eq!(az.auth, AuthStyle::Header("api-key".into()));
    assert_eq!(az.base_url, "https://r.openai.azure.com/openai/v1");
}

#[test]
fn team_model_globs() {
    let policy =
        TeamPolicy { models: vec!["gpt-4o*".into(), "embed-*-small".into(), "exact".into()], ..Default::default() };
    assert!(policy.allows("gpt-4o"));
    assert!(policy.allows("gpt-4o-mini"));
    assert!(policy.allows("embed-3-small"));
    assert!(policy.allows("exact"));
    assert!(!policy.allows("exactly"));
    assert!(!policy.allows("gpt-4"));
    assert!(!policy.allows("embed-3-large"));
    assert!(TeamPolicy { models: vec!["*".into()], ..Default::default() }.allows("anything"));
    assert!(!TeamPolicy { models: vec![], ..Default::default() }.allows("anything"));
}

#[test]
fn type_errors_carry_path_and_line() {
    let e = error_of("server:\n  max_body_bytes: lots\n");
    assert!(e.starts_with("server.max_body_bytes: invalid type"), "{e}");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn routing_config_errors() {
    let group = |body: &str| format!("providers: {{ p: {{ dialect: mock }} }}\nmodels:\n{body}");
    let e = error_of(&group("  a: { deployments: [{ provider: p, weight: -1 }] }\n"));
    assert!(e.starts_with("models.a.deployments[0].weight: must be a number >= 0"), "{e}");
    let e = error_of(&group(
        "  a: { deployments: [{ provider: p }], fallbacks: [b] }\n  b: { deployments: [{ provider: p }], fallbacks: [c] }\n  c: { deployments: [{ provider: p }], context_window_fallbacks: [a] }\n",
    ));
    assert!(e.contains("fallback cycle: a -> b -> c -> a"), "{e}");
    let e = error_of(&group("  a: { deployments: [{ provider: p }], fallbacks: [a] }\n"));
    assert!(e.starts_with("models.a.fallbacks[0]: a model cannot fall back to itself"), "{e}");
    let e = error_of(&group("  a: { deployments: [{ provider: p }], fallbacks: [zzz] }\n"));
    assert_eq!(e, r#"models.a.fallbacks[0]: unknown model "zzz""#);
    let e = error_of(&group("  a: { deployments: [{ provider: p }], strategy: fastest }\n"));
    assert!(e.starts_with("models.a.strategy: unknown strategy"), "{e}");
    let e = error_of(&format!("{}aliases: {{ gpt-4: nowhere }}\n", group("  a: { deployments: [{ provider: p }] }\n")));
    assert_eq!(e, r#"aliases.gpt-4: unknown model "nowhere""#);
    let e = error_of(&format!(
        "{}circuit_breaker: {{ consecutive_failures: 0 }}\n",
        group("  a: { deployments: [{ provider: p }] }\n")
    ));
    assert!(e.starts_with("circuit_breaker.consecutive_failures"), "{e}");
    let e = error_of(&group(
        "  a: { deployments: [{ provider: p, circuit_breaker: { open_for: 10s, max_open_for: 1s } }] }\n",
    ));
    assert!(e.starts_with("models.a.deployments[0].circuit_breaker.max_open_for"), "{e}");
    let e = error_of(
        "providers: { p: { dialect: mock } }\nteams: { t: { models: ['*'], model_overrides: { gpt-4o: ghost } } }\nmodels:\n  a: { deployments: [{ provider: p }] }\n",
    );
    assert_eq!(e, r#"teams.t.model_overrides.gpt-4o: unknown model "ghost""#);
}

#[test]
fn cli_providers_take_the_issue_example_and_defaults() {
    let yaml = r#"
keys: [{ key: k, team: t }]
teams: { t: { models: ['*'] } }
providers:
  claude-cli: { dialect: cli, command: ["claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"], pool_size: 2 }
models:
  claude: { deployments: [{ provider: claude-cli, model: sonnet }] }
"#;
    let config = Config::from_yaml(yaml, &env(&[])).unwrap();
    let provider = &config.providers["claude-cli"];
    assert_eq!(provider.dialect, Dialect::Cli);
    assert_eq!(provider.stream_usage, StreamUsage::Always);
    let cli = provider.cli.as_ref().unwrap();
    assert_eq!(cli.command.len(), 7);
    assert_eq!(cli.protocol, CliProtocol::ClaudeStreamJson);
    assert_eq!((cli.pool_size, cli.max_overflow), (2, 2));
    assert_eq!(cli.keep_alive_interval, Some(Duration::from_secs(300)));
    assert_eq!(cli.max_requests_per_session, 20);
    assert!(cli.warm_up && !cli.inherit_env, "the gateway's environment is not the CLI's");
    assert_eq!(cli.partition_by, crate::config::cli::PartitionBy::Team);
    assert_eq!(cli.partition_idle_timeout, Duration::from_secs(300));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let plain = Config::from_yaml(
        "providers: { p: { dialect: cli, protocol: plain-text, command: [llm], env: { A: b }, cwd: /srv } }\n",
        &env(&[]),
    )
    .unwrap();
    let cli = plain.providers["p"].cli.as_ref().unwrap();
    assert_eq!((cli.max_requests_per_session, cli.warm_up), (1, false));
    assert_eq!(cli.env, vec![("A".to_owned(), "b".to_owned())]);
}

#[test]
fn llm_backend_cli_runs_the_claude_cli_with_the_original_pool_variables() {
    let keys_only = "keys: [{ key: k, team: t }]\nteams: { t: { models: ['*'] } }\n";
    let config = Config::from_yaml(keys_only, &env(&[("LLM_BACKEND", "cli")])).unwrap();
    let backend = config.default_backend.as_ref().unwrap();
    assert_eq!(backend.dialect, Dialect::Cli);
    let cli = backend.cli.as_ref().unwrap();
    assert_eq!(cli.command, cli::DEFAULT_COMMAND.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(cli.pool_size, 2);
    assert_eq!(cli.pass_env, ["ANTHROPIC_API_KEY"], "the CLI's own key, and nothing else of the gateway's");

    let overlay = [("LLM_BACKEND", "cli"), ("LLM_POOL_SIZE", "5"), ("LLM_KEEP_ALIVE_INTERVAL", "7")];
    let config = Config::from_yaml(keys_only, &env(&overlay)).unwrap();
    let cli = config.default_backend.as_ref().unwrap().cli.clone().unwrap();
    assert_eq!((cli.pool_size, cli.max_overflow), (5, 5));
    assert_eq!(cli.keep_alive_interval, Some(Duration::from_secs(7)));

    let off = [("LLM_BACKEND", "cli"), ("LLM_KEEP_ALIVE_INTERVAL", "0")];
    let config = Config::from_yaml(keys_only, &env(&off)).unwrap();
    assert_eq!(config.default_backend.unwrap().cli.as_ref().unwrap().keep_alive_interval, None);

    let e = Config::from_yaml(keys_only, &env(&[("LLM_BACKEND", "cli"), ("LLM_POOL_SIZE", "two")])).unwrap_err().0;
    assert!(e.starts_with("LLM_BACKEND=cli: LLM_POOL_SIZE: \"two\" is not a number"), "{e}");
}

#[test]
fn cli_config_errors_name_the_field() {
    let e = error_of("providers: { p: { dialect: openai, base_url: 'http://x', pool_size: 3 } }\n");
    assert_eq!(e, "providers.p.pool_size: only for dialect cli (this provider's dialect is openai)");
    let e = error_of("providers: { p: { dialect: cli, base_url: 'http://x' } }\n");
    assert!(e.starts_with("providers.p.base_url: not used by the cli dialect"), "{e}");
    let e = error_of("providers: { p: { dialect: cli, command: [] } }\n");
    assert!(e.starts_with("providers.p.command: must name a program"), "{e}");
    let e = error_of("providers: { p: { dialect: cli, protocol: plain-text } }\n");
    assert_eq!(e, "providers.p.command: required for the plain-text protocol");
    let e = error_of("providers: { p: { dialect: cli, protocol: xml } }\n");
    assert!(e.starts_with("providers.p.protocol: unknown protocol \"xml\""), "{e}");
    let e = error_of(
        "providers: { p: { dialect: cli, protocol: plain-text, command: [x], max_requests_per_session: 5 } }\n",
    );
    assert!(e.starts_with("providers.p.max_requests_per_session: plain-text sessions answer one request each"), "{e}");
    let e = error_of("providers: { p: { dialect: cli, pool_size: 0, max_overflow: 0 } }\n");
    assert!(e.starts_with("providers.p.max_overflow"), "{e}");
    let e = error_of("providers: { p: { dialect: cli, keep_alive_interval: soon } }\n");
    assert!(e.starts_with("providers.p.keep_alive_interval: invalid duration"), "{e}");
    let e = error_of("providers: { p: { dialect: cli, comand: [x] } }\n");
    assert!(e.contains("unknown field `comand`"), "{e}");
}

#[test]
fn trace_sampling_from_config_or_the_standard_variables() {
    let ratio = |yaml: &str, vars: &[(&'static str, &'static str)]| {
        Config::from_yaml(&format!("{BASE}{yaml}"), &env(vars)).map(|c| c.telemetry.otlp.map(|o| o.sample_ratio))
    };
    let otlp = "telemetry: { otlp: { endpoint: 'http://collector:4318' } }\n";
    assert_eq!(ratio(otlp, &[]).unwrap(), Some(1.0));
    assert_eq!(
        ratio("telemetry: { otlp: { endpoint: 'http://c:4318', sample_ratio: 0.25 } }\n", &[]).unwrap(),
        Some(0.25)
    );
    let vars = [("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")];
    assert_eq!(ratio(otlp, &vars).unwrap(), Some(0.1));
    assert_eq!(ratio(otlp, &[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap(), Some(0.0));
    let e = ratio("telemetry: { otlp: { endpoint: 'http://c:4318', sample_ratio: 1.5 } }\n", &[]).unwrap_err().0;
    assert!(e.contains("telemetry.otlp.sample_ratio"), "{e}");
    let e = ratio(otlp, &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "half")]).unwrap_err().0;
    assert!(e.contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
}

#[test]
fn trace_batching_from_config_or_the_standard_variables() {
    type Batching = (Duration, usize, usize, Duration);
    let batching = |yaml: &str, vars: &[(&'static str, &'static str)]| -> Result<Option<Batching>, String> {
        Config::from_yaml(&format!("{BASE}{yaml}"), &env(vars))
            .map(|c| c.telemetry.otlp.map(|o| (o.batch_delay, o.max_batch_spans, o.max_queue_spans, o.export_timeout)))
            .map_err(|e| e.0)
    };
    let otlp = "telemetry: { otlp: { endpoint: 'http://collector:4318' } }\n";
    let (s, ms) = (Duration::from_secs, Duration::from_millis);
    // The OpenTelemetry SDK's delay and timeout; batches of 2,048 spans, 16 of them queued.
    assert_eq!(batching(otlp, &[]).unwrap(), Some((s(5), 2048, 32_768, s(10))));
    let vars = [
        ("OTEL_BSP_SCHEDULE_DELAY", "250"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2048"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "8192"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "3000"),
    ];
    assert_eq!(batching(otlp, &vars).unwrap(), Some((ms(250), 2048, 8192, s(3))));
    // Only the batch size: the queue holds 32,768 spans, or 16 batches when they are larger.
    let only_batch = [("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")];
    assert_eq!(batching(otlp, &only_batch).unwrap(), Some((s(5), 512, 32_768, s(10))));
    let only_batch = [("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")];
    assert_eq!(batching(otlp, &only_batch).unwrap(), Some((s(5), 4096, 16 * 4096, s(10))));
    // The config's keys win over the variables.
    let yaml = "telemetry: { otlp: { endpoint: 'http://c:4318', batch_delay: 2s, max_export_batch_size: 100, \
                max_queue_size: 1000, export_timeout: 1s } }\n";
    assert_eq!(batching(yaml, &vars).unwrap(), Some((s(2), 100, 1000, s(1))));

    let e = batching(otlp, &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "lots")]).unwrap_err();
    assert_eq!(e, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE: \"lots\" is not a whole number");
    let e = batching(otlp, &[("OTEL_BSP_SCHEDULE_DELAY", "5s")]).unwrap_err();
    assert_eq!(e, "OTEL_BSP_SCHEDULE_DELAY: \"5s\" is not a whole number");
    let e =
        batching("telemetry: { otlp: { endpoint: 'http://c:4318', max_export_batch_size: 0 } }\n", &[]).unwrap_err();
    assert_eq!(e, "telemetry.otlp.max_export_batch_size: 0 is not between 1 and 16384");
    let e =
        batching(otlp, &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"), ("OTEL_BSP_MAX_QUEUE_SIZE", "100")]).unwrap_err();
    assert_eq!(e, "telemetry.otlp.max_queue_size: 100 spans cannot hold one batch of max_export_batch_size 512");
    let e = batching("telemetry: { otlp: { endpoint: 'http://c:4318', export_timeout: 0s } }\n", &[]).unwrap_err();
    assert_eq!(e, "telemetry.otlp.export_timeout: must be more than 0");
}

#[test]
fn trace_resource_attributes_from_the_standard_variable_and_the_config() {
    let resource = |yaml: &str, vars: &[(&'static str, &'static str)]| {
        Config::from_yaml(&format!("{BASE}{yaml}"), &env(vars))
            .map(|c| c.telemetry.otlp.map(|o| (o.service_name, o.resource_attributes)))
            .map_err(|e| e.0)
    };
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let otlp = "telemetry: { otlp: { endpoint: 'http://collector:4318' } }\n";
    assert_eq!(resource(otlp, &[]).unwrap(), Some(("llm-gateway".into(), vec![])));
    // What the Helm chart sets: the namespace, and the values' extra attributes (percent-encoded).
    let vars = [("OTEL_RESOURCE_ATTRIBUTES", "k8s.namespace.name=ai, deployment.environment.name = prod%2Ceu ,")];
    let (name, attributes) = resource(otlp, &vars).unwrap().unwrap();
    assert_eq!(name, "llm-gateway");
    assert_eq!(attributes, pairs(&[("deployment.environment.name", "prod,eu"), ("k8s.namespace.name", "ai")]));
    // service.name: OTEL_SERVICE_NAME over the attribute, the config's key over both; the
    // config's attributes over the variable's.
    let vars = [("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=a")];
    assert_eq!(resource(otlp, &vars).unwrap().unwrap().0, "from-attrs");
    let named = [vars[0], ("OTEL_SERVICE_NAME", "from-var")];
    assert_eq!(resource(otlp, &named).unwrap().unwrap().0, "from-var");
    let yaml = "telemetry: { otlp: { endpoint: 'http://c:4318', service_name: gw, resource_attributes: { team: b, tier: x } } }\n";
    let (name, attributes) = resource(yaml, &named).unwrap().unwrap();
    assert_eq!(name, "gw");
    assert_eq!(attributes, pairs(&[("team", "b"), ("tier", "x")]), "service.name never twice");

    let e = resource(otlp, &[("OTEL_RESOURCE_ATTRIBUTES", "a=1,oops")]).unwrap_err();
    assert_eq!(e, "OTEL_RESOURCE_ATTRIBUTES: \"oops\" is not key=value");
    let e = resource(otlp, &[("OTEL_RESOURCE_ATTRIBUTES", "=1")]).unwrap_err();
    assert_eq!(e, "OTEL_RESOURCE_ATTRIBUTES: \"=1\" has no key");
    let e = resource(otlp, &[("OTEL_RESOURCE_ATTRIBUTES", "a=%zz")]).unwrap_err();
    assert_eq!(e, "OTEL_RESOURCE_ATTRIBUTES: the value of \"a\" is not valid percent-encoded UTF-8");
}

#[test]
fn otlp_headers_from_the_standard_variable_are_percent_decoded_then_the_configs_follow() {
    let headers = |yaml: &str, vars: &[(&'static str, &'static str)]| {
        Config::from_yaml(&format!("{BASE}{yaml}"), &env(vars))
            .map(|c| c.telemetry.otlp.map(|o| o.headers))
            .map_err(|e| e.0)
    };
    let yaml = "telemetry: { otlp: { endpoint: 'http://c:4318', headers: { x-scope-orgid: tenant-1 } } }\n";
    // As hosted collectors document it: the space in the value percent-encoded.
    let vars = [("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20dXNlcjpwYXNz, x-team = a")];
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    assert_eq!(
        headers(yaml, &vars).unwrap(),
        Some(pairs(&[("Authorization", "Basic dXNlcjpwYXNz"), ("x-team", "a"), ("x-scope-orgid", "tenant-1")]))
    );
    let e = headers(yaml, &[("OTEL_EXPORTER_OTLP_HEADERS", "Authorization")]).unwrap_err();
    assert_eq!(e, "OTEL_EXPORTER_OTLP_HEADERS: \"Authorization\" is not key=value");
}

#[test]
fn valkey_key_prefix_is_a_plain_name_and_empty_by_default() {
    let load = |valkey: &str| Config::from_yaml(&format!("{BASE}valkey: {valkey}\n"), &env(&[]));
    let prefix = |valkey: &str| load(valkey).unwrap().valkey.unwrap().key_prefix;
    assert_eq!(prefix("{ url: 'redis://127.0.0.1:6379' }"), "", "existing deployments keep their keys");
    assert_eq!(prefix("{ url: 'redis://127.0.0.1:6379', key_prefix: platform/llm-gateway }"), "platform/llm-gateway");
    for bad in ["'a{b}'", "'a b'", "'lg:*'", "'a?'", "'a[1]'", &format!("'{}'", "x".repeat(129))] {
        let e = load(&format!("{{ url: 'redis://127.0.0.1:6379', key_prefix: {bad} }}")).unwrap_err().0;
        assert!(e.starts_with("valkey.key_prefix: "), "{bad}: {e}");
    }
    // The prefix comes with the config's valkey section even when VALKEY_URL names the server.
    let c =
        Config::from_yaml(&format!("{BASE}valkey: {{ key_prefix: r1 }}\n"), &env(&[("VALKEY_URL", "redis://v:6379")]));
    assert_eq!(c.unwrap().valkey.unwrap().key_prefix, "r1");
}

#[test]
fn cli_sessions_are_partitioned_and_get_only_what_the_config_passes() {
    let cli = |fields: &str| {
        Config::from_yaml(&format!("providers: {{ p: {{ dialect: cli, {fields} }} }}\n"), &env(&[]))
            .map(|c| c.providers["p"].cli.clone().unwrap())
    };
    let c = cli("partition_by: key, partition_idle_timeout: 30s, pass_env: [ANTHROPIC_API_KEY], inherit_env: true")
        .unwrap();
    assert_eq!(c.partition_by, crate::config::cli::PartitionBy::Key);
    assert_eq!(c.partition_idle_timeout, Duration::from_secs(30));
    assert_eq!(c.pass_env, ["ANTHROPIC_API_KEY"]);
    assert!(c.inherit_env);
    let e = cli("partition_by: nobody").unwrap_err().0;
    assert_eq!(e, "providers.p.partition_by: \"nobody\": expected team or key");
    assert!(cli("partition_idle_timeout: 0s").unwrap_err().0.starts_with("providers.p.partition_idle_timeout"));
    assert!(cli("pass_env: ['A=B']").unwrap_err().0.starts_with("providers.p.pass_env[0]"));
    let e = Config::from_yaml("providers: { p: { dialect: mock, partition_by: team } }\n", &env(&[])).unwrap_err().0;
    assert!(e.starts_with("providers.p.partition_by: only for dialect cli"), "{e}");

    // Even inherited, nothing named like a secret of the gateway's reaches a session.
    use crate::config::cli::is_secret_env;
    for name in [
        "ANTHROPIC_API_KEY",
        "LLM_GATEWAY_ADMIN_KEY",
        "VALKEY_URL",
        "REDIS_URL",
        "OPENMETER_TOKEN",
        "TEAM_A_CI_KEY",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "db_password",
        "GITHUB_TOKEN",
    ] {
        assert!(is_secret_env(name), "{name}");
    }
    for name in ["PATH", "HOME", "LANG", "TZ", "NODE_EXTRA_CA_CERTS"] {
        assert!(!is_secret_env(name), "{name}");
    }
}

#[test]
fn the_stream_event_bound_is_per_provider() {
    let config = Config::from_yaml(BASE, &env(&[("VLLM_KEY", "k")])).unwrap();
    assert_eq!(config.providers["local-vllm"].max_event_bytes, crate::stream::sse::DEFAULT_MAX_EVENT_BYTES);
    let set = BASE.replace("api_key_env: VLLM_KEY }", "api_key_env: VLLM_KEY, max_event_bytes: 65536 }");
    let config = Config::from_yaml(&set, &env(&[("VLLM_KEY", "k")])).unwrap();
    assert_eq!(config.providers["local-vllm"].max_event_bytes, 65536);
    let e = error_of(&BASE.replace("api_key_env: VLLM_KEY }", "api_key_env: VLLM_KEY, max_event_bytes: 10 }"));
    assert_eq!(e, "providers.local-vllm.max_event_bytes: must be at least 1024");
}
