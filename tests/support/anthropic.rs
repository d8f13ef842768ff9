//! A mock Anthropic Messages upstream on a real socket: `POST /v1/messages`, answers chosen by
//! the `model` the gateway sends (`overloaded` → 529, `overloaded-stream` → an `error` event
//! after the first text, `tools` → two parallel tool calls, anything else → text), with every
//! request's headers and body recorded.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Recorded {
    pub requests: Vec<(HeaderMap, Value)>,
}

pub struct MockAnthropic {
    pub addr: std::net::SocketAddr,
    pub recorded: Arc<Mutex<Recorded>>,
    _server: tokio::task::JoinHandle<()>,
}

impl MockAnthropic {
    pub async fn start() -> Self {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let app = axum::Router::new().route("/v1/messages", axum::routing::post(messages)).with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, recorded, _server: server }
    }

    /// Anthropic's base URL has no `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last(&self) -> (HeaderMap, Value) {
        self.recorded.lock().unwrap().requests.last().cloned().expect("the upstream was called")
    }

    pub fn count(&self) -> usize {
        self.recorded.lock().unwrap().requests.len()
    }
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

async fn messages(State(recorded): State<Arc<Mutex<Recorded>>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    recorded.lock().unwrap().requests.push((headers, request.clone()));
    let model = request["model"].as_str().unwrap_or("").to_owned();
    if model == "overloaded" {
        return (
            StatusCode::from_u16(529).unwrap(),
            axum::Json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        )
            .into_response();
    }
    let tools = model == "tools";
    // As Anthropic reports it: the cache writes also split by the cache's lifetime.
    let usage = json!({"input_tokens": 20, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 9,
        "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3}});
    if request["stream"] != json!(true) {
        let content = if tools {
            json!([{"type": "text", "text": "Checking."},
                   {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
                   {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}}])
        } else {
            json!([{"type": "text", "text": "Hello from Claude"}])
        };
        return axum::Json(json!({
            "id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let mut out = event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_mock2", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 1,
                "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3}}}}),
    );
    out += &event("ping", json!({"type": "ping"}));
    out += &event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for piece in ["Hello", " from", " Claude"] {
        out += &event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
        if model == "overloaded-stream" {
            out += &event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            );
            return sse(out);
        }
    }
    out += &event("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    let mut stop = "end_turn";
    if tools {
        stop = "tool_use";
        for (index, id, name, args) in
            [(1, "toolu_A", "get_weather", "{\"city\": \"Paris\"}"), (2, "toolu_B", "get_time", "")]
        {
            out += &event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            );
            if !args.is_empty() {
                out += &event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
            out += &event("content_block_stop", json!({"type": "content_block_stop", "index": index}));
        }
    }
    out += &event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 9}}),
    );
    out += &event("message_stop", json!({"type": "message_stop"}));
    sse(out)
}

fn sse(text: String) -> Response {
    // Odd-sized writes, so the gateway sees events split across reads.
    let bytes = text.into_bytes();
    let pieces: Vec<Result<Bytes, std::io::Error>> = bytes.chunks(37).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(pieces)))
        .unwrap()
}
