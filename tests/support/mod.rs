//! Test harness: the real gateway served in-process on 127.0.0.1:0, and controllable
//! OpenAI-compatible mock upstreams on real sockets.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use llm_gateway::app;
use llm_gateway::config::Config;

/// A running gateway; stopped when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
    _background: app::Background,
}

impl Gateway {
    pub async fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&'static str, &'static str)]) -> Self {
        Self::start_with_clock(yaml, env, Arc::new(llm_gateway::clock::SystemClock)).await
    }

    /// A gateway whose budget windows and key expiry follow `clock`.
    pub async fn start_with_clock(
        yaml: &str,
        env: &[(&'static str, &'static str)],
        clock: Arc<dyn llm_gateway::clock::Clock>,
    ) -> Self {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let config = Config::from_yaml(yaml, &env).unwrap_or_else(|e| panic!("config: {e}\n{yaml}"));
        let (router, background) = app::build_with(&config, clock).expect("build");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = llm_gateway::server::ServeOptions::from(&config.server);
        let server = tokio::spawn(async move {
            // The binary's own serving loop (HTTP/1.1 and HTTP/2 by preface).
            let never = std::future::pending::<()>();
            llm_gateway::server::serve(listener, router, never, options).await.unwrap();
        });
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        Self { addr, client, _server: server, _background: background }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn chat(&self, model: &str, stream: bool) -> reqwest::Response {
        self.chat_with(serde_json::json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "Hello"}],
        }))
        .await
    }

    pub async fn chat_with(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth("sk-test")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .expect("the gateway answers")
    }

    /// A chat request with `key`, as the given body.
    pub async fn chat_as(&self, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .expect("the gateway answers")
    }

    /// `GET /quota` with `key`.
    pub async fn quota(&self, key: &str) -> serde_json::Value {
        json(self.client.get(self.url("/quota")).bearer_auth(key).send().await.unwrap()).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub async fn health(&self) -> serde_json::Value {
        json(self.client.get(self.url("/health")).send().await.unwrap()).await
    }

    /// The breaker state `/health` reports for a deployment id.
    pub async fn breaker(&self, deployment: &str) -> String {
        let health = self.health().await;
        health["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["deployment"] == deployment)
            .unwrap_or_else(|| panic!("{deployment} not in /health: {health}"))["breaker"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

pub async fn json(response: reqwest::Response) -> serde_json::Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

pub fn deployment_of(response: &reqwest::Response) -> String {
    response.headers().get("x-llm-gateway-deployment").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// How a mock upstream behaves; change it while tests run.
#[derive(Default)]
pub struct Control {
    /// 0 = answer normally; else answer with this status.
    pub status: AtomicU32,
    pub retry_after: AtomicU32,
    pub first_byte_delay_ms: AtomicU64,
    /// Send two content chunks, then cut the connection.
    pub drop_midstream: AtomicBool,
    pub requests: AtomicU32,
    pub in_flight: AtomicU32,
    /// Stream this many extra content chunks, each after `chunk_delay_ms`.
    pub extra_chunks: AtomicU32,
    pub chunk_delay_ms: AtomicU64,
    /// An error `code` for error answers (e.g. context_length_exceeded).
    pub error_code: std::sync::Mutex<Option<String>>,
    /// The finish reason of answers (default `stop`).
    pub finish_reason: std::sync::Mutex<Option<String>>,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub control: Arc<Control>,
    _server: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let control = Arc::new(Control::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .route("/v1/models", axum::routing::get(models))
            .with_state(control.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, control, _server: server }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> u32 {
        self.control.requests.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u32) {
        self.control.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, ms: u64) {
        self.control.first_byte_delay_ms.store(ms, Ordering::SeqCst);
    }
}

/// A base URL nothing listens on (connection refused).
pub async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

async fn models(State(control): State<Arc<Control>>) -> Response {
    let status = control.status.load(Ordering::SeqCst);
    if status >= 500 {
        return StatusCode::from_u16(status as u16).unwrap().into_response();
    }
    axum::Json(serde_json::json!({"object": "list", "data": []})).into_response()
}

struct InFlight(Arc<Control>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(State(control): State<Arc<Control>>, _headers: HeaderMap, body: Bytes) -> Response {
    control.requests.fetch_add(1, Ordering::SeqCst);
    control.in_flight.fetch_add(1, Ordering::SeqCst);
    let in_flight = InFlight(control.clone());
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let delay = control.first_byte_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = control.status.load(Ordering::SeqCst);
    if status != 0 {
        let code = control.error_code.lock().unwrap().clone();
        let mut response = (
            StatusCode::from_u16(status as u16).unwrap(),
            axum::Json(serde_json::json!({"error": {"message": format!("mock upstream says {status}"), "type": "server_error", "param": null, "code": code}})),
        )
            .into_response();
        let retry_after = control.retry_after.load(Ordering::SeqCst);
        if retry_after > 0 {
            response.headers_mut().insert("retry-after", retry_after.into());
        }
        return response;
    }
    let model = request["model"].as_str().unwrap_or("").to_owned();
    // The answer names the question, so a test can tell whose answer it got.
    let last_user = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let finish = control.finish_reason.lock().unwrap().clone().unwrap_or_else(|| "stop".into());
    if request["stream"].as_bool() != Some(true) {
        return axum::Json(serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("ok: {last_user}")}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }))
        .into_response();
    }
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let drop_midstream = control.drop_midstream.load(Ordering::SeqCst);
    let mut frames: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(chunk(serde_json::json!({"role": "assistant", "content": "Hel"}), None)),
        Ok(chunk(serde_json::json!({"content": format!("lo: {last_user}")}), None)),
    ];
    for _ in 0..control.extra_chunks.load(Ordering::SeqCst) {
        frames.push(Ok(chunk(serde_json::json!({"content": " more"}), None)));
    }
    if drop_midstream {
        frames.push(Err(std::io::Error::other("connection cut")));
    } else {
        frames.push(Ok(chunk(serde_json::json!({}), Some(&finish))));
        if request["stream_options"]["include_usage"] == true {
            frames.push(Ok(Bytes::from(format!(
                "data: {}\n\n",
                serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
            ))));
        }
        frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    }
    let delay = Duration::from_millis(control.chunk_delay_ms.load(Ordering::SeqCst).max(5));
    let stream = async_stream(frames, in_flight, delay);
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

fn async_stream(
    frames: Vec<Result<Bytes, std::io::Error>>,
    guard: InFlight,
    delay: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((frames.into_iter(), Some(guard)), move |(mut it, guard)| async move {
        let next = it.next()?;
        tokio::time::sleep(delay).await;
        Some((next, (it, guard)))
    })
}

pub mod anthropic;
pub mod valkey;
