//! Transports resolved at build, and the headers an upstream request carries.

use super::*;

/// Each provider's transport is resolved when `Upstreams` is built: a mock deployment is
/// answered in process through the same `send` (nothing listens), and a cli provider's
/// transport is the very pool its supervisor runs.
#[tokio::test]
async fn each_provider_gets_its_transport_when_built() {
    let yaml = "
providers:
  up: { dialect: openai, base_url: 'http://127.0.0.1:9/v1' }
  builtin: { dialect: mock }
  claude: { dialect: cli }
models:
  m: { deployments: [{ provider: builtin, model: mock-chat }] }
";
    let config = Config::from_yaml(yaml, &HashMap::<&str, &str>::new()).unwrap();
    let upstreams = Upstreams::new(&config).unwrap();
    assert!(matches!(upstreams.transports["up"], Transport::Http(_)));
    assert!(matches!(upstreams.transports["builtin"], Transport::Mock));
    let Transport::Cli(pool) = &upstreams.transports["claude"] else { panic!("not the session pool") };
    assert!(Arc::ptr_eq(pool, upstreams.cli_pools().get("claude").unwrap()));

    let deployment = &config.models["m"].deployments[0];
    let body = Bytes::from_static(br#"{"model":"mock-chat","messages":[{"role":"user","content":"hi"}]}"#);
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = upstreams.send(deployment, Outgoing::new(Endpoint::ChatCompletions, body), deadline).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let answer = read_body(response.body, &deployment.id, Duration::from_secs(5), deadline).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("chat.completion"), "{answer:?}");
    assert_eq!(upstreams.probe(&deployment.provider, "/health", Duration::from_secs(1)).await, Ok(()));
}

#[test]
fn forwarded_headers_replace_the_providers_own_on_the_hyper_path() {
    let parent = TraceParent::new(&[0xab; 16], &[0xcd; 8]);
    let mut forward = Forward { request_id: Some("req-1"), trace: Some((parent, Some("k=v"))), ..Default::default() };
    forward.client.insert("anthropic-beta", HeaderValue::from_static("tools-2024"));
    let mut headers = HeaderMap::new();
    headers.insert("anthropic-beta", HeaderValue::from_static("provider-default"));
    headers.insert("x-api-key", HeaderValue::from_static("secret"));
    forward.onto(&mut headers);

    assert_eq!(headers[REQUEST_ID_HEADER], "req-1");
    assert_eq!(headers[TRACEPARENT].as_bytes(), parent.as_bytes());
    assert_eq!(headers[TRACESTATE], "k=v");
    assert_eq!(headers.get_all("anthropic-beta").iter().collect::<Vec<_>>(), ["tools-2024"]);
    assert_eq!(headers["x-api-key"], "secret", "the provider's other headers stay");
    assert!(forward.has(&TRACEPARENT) && forward.has(&HeaderName::from_static("anthropic-beta")));
    assert!(!forward.has(&HeaderName::from_static("x-api-key")));
}
