//! Composition: the one place that builds the stack from a validated `Config`, top to bottom.
//!
//! | stage      | reads                                   | writes                              |
//! |------------|-----------------------------------------|-------------------------------------|
//! | server     | socket, `x-request-id`                  | `RequestId`, response `x-request-id`|
//! | ingress    | body (bounded), endpoint                | `RequestCtx`, `ParsedRequest`       |
//! | auth       | `Authorization` / `x-api-key`           | `Principal`                         |
//! | router     | client model, principal's team policy   | `Route` (ordered deployments)       |
//! | adapter    | parsed request, deployment              | upstream body; rewritten chunks     |
//! | upstream   | provider (URL, key, timeouts)           | `UpstreamResponse`                  |
//! | stream     | upstream body                           | client frames; one `StreamEnd`      |
//! | observers  | `RequestCtx` + `Outcome`                | the request log line                |

use std::sync::Arc;

use axum::routing::{get, post};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::GatewayError;
use crate::ingress::{self, Gateway};
use crate::router::Router;
use crate::server;
use crate::telemetry::RequestLog;
use crate::upstream::Upstreams;

/// Builds the HTTP application for `config`.
pub fn build(config: &Config) -> Result<axum::Router, GatewayError> {
    let gateway = Arc::new(Gateway {
        auth: Authenticator::new(config),
        router: Router::new(config),
        upstreams: Upstreams::new(config)?,
        observers: vec![Arc::new(RequestLog)],
        max_body_bytes: config.server.max_body_bytes,
        started_unix: ingress::unix_now(),
    });
    let api = axum::Router::new()
        .route("/v1/chat/completions", post(ingress::chat_completions))
        .route("/v1/completions", post(ingress::completions))
        .route("/v1/embeddings", post(ingress::embeddings))
        .route("/v1/models", get(ingress::list_models))
        .route("/v1/models/{*model}", get(ingress::get_model))
        .route("/v1/{*rest}", axum::routing::any(ingress::unknown_route))
        .with_state(gateway);
    let probes = axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    Ok(api
        .merge(probes)
        // Bodies are bounded by the handlers themselves (413 in OpenAI's shape).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(server::request_id)))
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Ready once the configuration is loaded and the upstream clients are built, which is true for
/// as long as this router exists (later: and Valkey is reachable).
async fn ready() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ready"}))
}
