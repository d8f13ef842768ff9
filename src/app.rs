//! Composition: the one place that builds the stack from a validated `Config`, top to bottom.
//!
//! | stage      | reads                                   | writes                              |
//! |------------|-----------------------------------------|-------------------------------------|
//! | server     | socket, `x-request-id`                  | `RequestId`, response `x-request-id`|
//! | ingress    | body (bounded), endpoint                | `RequestCtx`, `ParsedRequest`       |
//! | auth       | `Authorization` / `x-api-key`           | `Principal`                         |
//! | cache      | principal, resolved model, body, headers| `CacheStatus`; a hit answers here   |
//! | router     | client model, principal's team policy   | `Route` (ordered deployments)       |
//! | adapter    | parsed request, deployment              | upstream body; rewritten chunks     |
//! | upstream   | provider (URL, key, timeouts)           | `UpstreamResponse`                  |
//! | stream     | upstream body                           | client frames; one `StreamEnd`      |
//! | observers  | `RequestCtx` + `Outcome`                | the request log line                |
//! | cache fill | the answer (whole, or frames + end)     | exact key, semantic entry, log      |

use std::sync::Arc;

use axum::routing::{get, post};

use crate::auth::Authenticator;
use crate::cache::Cache;
use crate::config::Config;
use crate::error::GatewayError;
use crate::ingress::{self, Gateway};
use crate::router::Router;
use crate::server;
use crate::telemetry::RequestLog;
use crate::telemetry::metrics::{Metrics, RequestMetrics};
use crate::upstream::Upstreams;

/// Background work (active health checks), stopped when dropped.
pub struct Background {
    tasks: tokio::task::JoinSet<()>,
}

impl Background {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Builds the HTTP application for `config` and starts its background tasks (call inside the
/// runtime).
pub fn build(config: &Config) -> Result<(axum::Router, Background), GatewayError> {
    let known_models = config.models.keys().chain(config.aliases.keys()).cloned().collect();
    let metrics = Arc::new(Metrics::new(known_models, config.telemetry.team_label));
    let cache = match &config.cache {
        Some(settings) => {
            Some(Arc::new(Cache::new(settings, config).map_err(|e| GatewayError::Internal(e.to_string()))?))
        }
        None => None,
    };
    let gateway = Arc::new(Gateway {
        auth: Authenticator::new(config),
        router: Router::new(config),
        upstreams: Upstreams::new(config)?,
        cache: cache.clone(),
        observers: vec![Arc::new(RequestLog), Arc::new(RequestMetrics(metrics.clone()))],
        max_body_bytes: config.server.max_body_bytes,
        started_unix: ingress::unix_now(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(cache) = &cache {
        cache.spawn_background(&mut tasks);
    }
    for provider in config.providers.values() {
        if let Some(check) = provider.health_check.clone() {
            let gateway = gateway.clone();
            let provider = provider.clone();
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval(check.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let result = gateway.upstreams.probe(&provider, &check.path, check.timeout).await;
                    if let Err(e) = &result {
                        tracing::warn!(provider = %provider.name, error = %e, "health check failed");
                    }
                    let detail = result.as_ref().err().map(String::as_str).unwrap_or("");
                    for health in gateway.router.deployments_of(&provider.name) {
                        health.health_check(result.is_ok(), std::time::Instant::now(), detail);
                    }
                }
            });
        }
    }
    let api = axum::Router::new()
        .route("/v1/chat/completions", post(ingress::chat_completions))
        .route("/v1/completions", post(ingress::completions))
        .route("/v1/embeddings", post(ingress::embeddings))
        .route("/v1/models", get(ingress::list_models))
        .route("/v1/models/{*model}", get(ingress::get_model))
        .route("/v1/{*rest}", axum::routing::any(ingress::unknown_route))
        .route("/health", get(health))
        .with_state(gateway.clone());
    let scrape = axum::Router::new().route("/metrics", get(prometheus)).with_state((gateway, metrics));
    let probes = axum::Router::new().route("/ready", get(ready));
    let app = api
        .merge(probes)
        .merge(scrape)
        // Bodies are bounded by the handlers themselves (413 in OpenAI's shape).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(server::request_id));
    Ok((app, Background { tasks }))
}

/// Liveness, with each deployment's breaker state and last trip reason as detail.
async fn health(axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>) -> axum::Json<serde_json::Value> {
    let now = std::time::Instant::now();
    let mut deployments: Vec<serde_json::Value> = gateway.router.deployments().map(|d| d.report(now)).collect();
    deployments.sort_by(|a, b| a["deployment"].as_str().cmp(&b["deployment"].as_str()));
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "deployments": deployments,
    }))
}

/// `GET /metrics`: the Prometheus text exposition, breaker states read at scrape time.
async fn prometheus(
    axum::extract::State((gateway, metrics)): axum::extract::State<(Arc<Gateway>, Arc<Metrics>)>,
) -> impl axum::response::IntoResponse {
    let now = std::time::Instant::now();
    for deployment in gateway.router.deployments() {
        metrics.breaker_state.with(&[&deployment.id]).set(i64::from(deployment.breaker_state(now).code()));
    }
    let mut text = metrics.render();
    if let Some(cache) = &gateway.cache {
        cache.render_metrics(&mut text);
    }
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// Ready once the configuration is loaded and the upstream clients are built, which is true for
/// as long as this router exists (later: and Valkey is reachable).
async fn ready() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ready"}))
}
