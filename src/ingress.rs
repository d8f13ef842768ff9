//! Ingress: one handler per OpenAI endpoint. Each request goes auth → parse → limits → route → attempts
//! over the route's deployments (failing over before the first byte) → the answer, whole or
//! streamed; then one outcome report to the observers.

pub mod admin;
pub mod quota;
pub mod request;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::adapter::{mock, openai};
use crate::api::ErrorBody;
use crate::api::openai::{ModelEntry, ModelList};
use crate::auth::{Authenticator, Principal};
use crate::config::{DeploymentSpec, Dialect};
use crate::ctx::{Endpoint, Observer, Outcome, RequestCtx};
use crate::error::GatewayError;
use crate::limits::{Demand, Limiter};
use crate::router::health::AttemptGuard;
use crate::router::{Candidate, RequestShape, Router};
use crate::stream::{Relay, StreamEnd};
use crate::upstream::{self, UpstreamResponse, Upstreams};
use request::ParsedRequest;

/// Everything the handlers need, built once by `app`.
pub struct Gateway {
    pub auth: Authenticator,
    pub router: Router,
    pub upstreams: Upstreams,
    pub limits: Arc<Limiter>,
    pub observers: Vec<Arc<dyn Observer>>,
    pub max_body_bytes: usize,
    pub started_unix: u64,
}

/// The request id the server stage assigned (echoed in `x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

pub const DEPLOYMENT_HEADER: &str = "x-llm-gateway-deployment";
pub const ATTEMPTS_HEADER: &str = "x-llm-gateway-attempts";
/// Error bodies read from a failing upstream are cut here.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub async fn chat_completions(
    gw: State<Arc<Gateway>>,
    id: axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(gw.0, id.0, Endpoint::ChatCompletions, headers, body).await
}

pub async fn completions(
    gw: State<Arc<Gateway>>,
    id: axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(gw.0, id.0, Endpoint::Completions, headers, body).await
}

pub async fn embeddings(
    gw: State<Arc<Gateway>>,
    id: axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(gw.0, id.0, Endpoint::Embeddings, headers, body).await
}

pub async fn list_models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let principal = match gw.auth.authenticate(&headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let data = gw
        .router
        .visible_models(&principal)
        .map(|id| ModelEntry { id, object: "model", created: gw.started_unix, owned_by: "llm-gateway" })
        .collect();
    axum::Json(ModelList { object: "list", data }).into_response()
}

pub async fn get_model(State(gw): State<Arc<Gateway>>, Path(model): Path<String>, headers: HeaderMap) -> Response {
    let principal = match gw.auth.authenticate(&headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !(gw.router.knows(&model) && principal.allows(&model)) {
        return GatewayError::ModelNotFound(format!("The model `{model}` does not exist.")).into_response();
    }
    axum::Json(ModelEntry { id: &model, object: "model", created: gw.started_unix, owned_by: "llm-gateway" })
        .into_response()
}

/// Unknown `/v1/...` paths: OpenAI's 404 shape rather than an empty body.
pub async fn unknown_route(uri: axum::http::Uri) -> Response {
    let body = ErrorBody::new(
        format!("Unknown request URL: {}.", uri.path()),
        "invalid_request_error",
        None,
        Some("unknown_url"),
    );
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn handle(gw: Arc<Gateway>, id: RequestId, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let mut ctx = RequestCtx {
        request_id: id.0,
        started,
        endpoint,
        principal: None,
        client_model: String::new(),
        stream: false,
        client_wants_usage: false,
        deployment: None,
        attempts: 0,
        reservation: None,
    };
    for observer in &gw.observers {
        observer.started(&ctx);
    }
    match serve(&gw, &mut ctx, &headers, body).await {
        Ok((Served::Whole(mut response, usage), _)) => {
            let outcome = Outcome { usage, ..Outcome::failed(response.status().as_u16(), "") };
            finish(&gw, &ctx, &Outcome { error: None, ..outcome });
            rate_headers(response.headers_mut(), &ctx);
            response
        }
        Ok((Served::Stream(relay, first), guard)) => {
            let ctx = Arc::new(ctx);
            let hook_gw = gw.clone();
            let hook_ctx = ctx.clone();
            let on_end = Box::new(move |end: StreamEnd| {
                // A failure after the first byte cannot be retried, but the breaker counts it.
                if let Some(guard) = guard {
                    match end.error {
                        Some(label) => guard.failure(label),
                        None if end.client_gone => drop(guard),
                        None => guard.success(),
                    }
                }
                let outcome = Outcome {
                    status: 200,
                    error: end.error,
                    usage: end.usage,
                    time_to_first_chunk: end.time_to_first_chunk,
                    gaps: Some(end.gaps),
                    client_gone: end.client_gone,
                    chunks: end.chunks,
                };
                finish(&hook_gw, &hook_ctx, &outcome);
            });
            let mut response = Response::new(Body::from_stream((*relay).into_body(first, on_end)));
            let h = response.headers_mut();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            routing_headers(h, &ctx);
            rate_headers(h, &ctx);
            response
        }
        Err(e) => {
            finish(&gw, &ctx, &Outcome::failed(e.status().as_u16(), e.label()));
            let mut response = e.into_response();
            routing_headers(response.headers_mut(), &ctx);
            rate_headers(response.headers_mut(), &ctx);
            response
        }
    }
}

fn finish(gw: &Gateway, ctx: &RequestCtx, outcome: &Outcome) {
    for observer in &gw.observers {
        observer.finished(ctx, outcome);
    }
}

fn routing_headers(headers: &mut HeaderMap, ctx: &RequestCtx) {
    if let Some(value) = ctx.deployment.as_deref().and_then(|d| HeaderValue::from_str(d).ok()) {
        headers.insert(DEPLOYMENT_HEADER, value);
    }
    if ctx.attempts > 0 {
        headers.insert(ATTEMPTS_HEADER, HeaderValue::from(ctx.attempts));
    }
}

/// `x-ratelimit-*` of an admitted request (a refusal carries its own).
fn rate_headers(headers: &mut HeaderMap, ctx: &RequestCtx) {
    if let Some(reservation) = &ctx.reservation {
        reservation.headers.apply(headers);
    }
}

enum Served {
    Whole(Response, Option<crate::api::Usage>),
    Stream(Box<Relay>, Bytes),
}

async fn serve(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Served, Option<AttemptGuard>), GatewayError> {
    let principal: Principal = gw.auth.authenticate(headers).await?;
    ctx.principal = Some(principal.clone());
    let bytes = read_limited(body, headers, gw.max_body_bytes).await?;
    let request = request::parse(ctx.endpoint, &bytes)?;
    ctx.client_model = request.model.clone();
    ctx.stream = request.stream && ctx.endpoint != Endpoint::Embeddings;
    ctx.client_wants_usage = request.client_wants_usage;
    let demand = Demand {
        model: &request.model,
        prompt_tokens: request.prompt_tokens_estimate,
        max_tokens: request.max_tokens,
        completion: ctx.endpoint != Endpoint::Embeddings,
    };
    ctx.reservation = gw.limits.admit(&principal, &demand).await?;
    let shape = RequestShape { tokens_needed: request.prompt_tokens_estimate + request.max_tokens.unwrap_or(0) };
    let plan = gw.router.plan(&principal, &request.model, shape)?;

    let mut queue: VecDeque<Candidate> = plan.candidates.into();
    let mut content_policy = Some(plan.content_policy);
    let mut context_window = Some(plan.context_window);
    let mut last_error = None;
    while let Some(candidate) = queue.pop_front() {
        if ctx.attempts >= plan.retry.max_attempts {
            break;
        }
        // The breaker may have opened since the plan was made.
        let Some(guard) = candidate.health.try_acquire(std::time::Instant::now()) else { continue };
        if ctx.attempts > 0 {
            tokio::time::sleep(backoff(&plan.retry, ctx.attempts)).await;
        }
        ctx.attempts += 1;
        ctx.deployment = Some(candidate.deployment.id.clone());
        let result = attempt(gw, ctx, &request, &candidate.deployment, &guard).await;
        let label = result.as_ref().err().map(GatewayError::label).unwrap_or("ok");
        for observer in &gw.observers {
            observer.attempted(ctx, &candidate.deployment.id, label, guard.first_byte_after());
        }
        match result {
            Ok(served) => {
                if let Served::Whole(..) = served {
                    guard.success();
                    return Ok((served, None));
                }
                return Ok((served, Some(guard)));
            }
            Err(e) => {
                let deployment = &candidate.deployment.id;
                tracing::warn!(request_id = %ctx.request_id, deployment = %deployment, error = %e, "attempt failed");
                if let GatewayError::UpstreamStatus { status, body, retry_after } = &e {
                    if status.as_u16() == 429 {
                        // Rate limited, not sick: skip it for a while, no breaker failure.
                        guard.cool_down(retry_after_duration(retry_after.as_deref()));
                        last_error = Some(e);
                        continue;
                    }
                    if status.is_client_error() {
                        // The upstream is alive; the request is the problem — unless a fallback
                        // is configured for exactly this refusal.
                        guard.success();
                        let switch_to = if is_content_policy(body) {
                            content_policy.take()
                        } else if is_context_length(body) {
                            context_window.take()
                        } else {
                            None
                        };
                        match switch_to {
                            Some(list) if !list.is_empty() => {
                                queue = list.into();
                                last_error = Some(e);
                                continue;
                            }
                            _ => return Err(e),
                        }
                    }
                }
                if !e.retryable() {
                    return Err(e);
                }
                guard.failure(e.label());
                last_error = Some(e);
            }
        }
    }
    Err(last_error
        .unwrap_or_else(|| crate::router::unavailable(&request.model, std::iter::empty(), std::time::Instant::now())))
}

/// Exponential backoff with jitter before attempt `attempts + 1`.
fn backoff(policy: &crate::config::RetryPolicy, attempts: u32) -> std::time::Duration {
    let exp = policy.backoff.saturating_mul(1u32 << (attempts - 1).min(16)).min(policy.max_backoff);
    exp.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// `Retry-After` in seconds (or an HTTP date we do not parse): default one second, capped.
fn retry_after_duration(value: Option<&str>) -> std::time::Duration {
    let seconds =
        value.and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(1.0);
    std::time::Duration::from_secs_f64(seconds.min(300.0))
}

fn is_content_policy(body: &ErrorBody) -> bool {
    matches!(body.error.code.as_deref(), Some("content_filter" | "content_policy_violation"))
}

fn is_context_length(body: &ErrorBody) -> bool {
    body.error.code.as_deref() == Some("context_length_exceeded")
        || body.error.message.contains("maximum context length")
}

/// One try on one deployment, up to the first byte of the answer.
async fn attempt(
    gw: &Gateway,
    ctx: &RequestCtx,
    request: &ParsedRequest,
    deployment: &DeploymentSpec,
    guard: &AttemptGuard,
) -> Result<Served, GatewayError> {
    let provider = &deployment.provider;
    let (body, hide_usage) = openai::upstream_body(
        &request.body,
        &deployment.model,
        ctx.stream,
        ctx.client_wants_usage,
        provider.stream_usage,
    )
    .map_err(|e| GatewayError::Internal(format!("building the upstream request: {e}")))?;
    let deadline = tokio::time::Instant::from_std(ctx.started) + provider.timeouts.total;
    let response: UpstreamResponse = match provider.dialect {
        Dialect::Mock => mock::respond(ctx.endpoint, &crate::api::RawObject::from_slice(&body).unwrap_or_default()),
        Dialect::OpenAi => {
            let mut forward = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
                forward.insert("x-request-id", v);
            }
            gw.upstreams.send(deployment, ctx.endpoint.upstream_path(), Bytes::from(body), &forward, deadline).await?
        }
    };
    if !response.status.is_success() {
        return Err(upstream_error(response, &deployment.id, provider.timeouts.idle, deadline).await);
    }
    if !ctx.stream {
        guard.first_byte();
    }
    if ctx.stream {
        let rewriter = Box::new(openai::OpenAiChunks::new(&ctx.client_model, hide_usage));
        let mut relay =
            Relay::new(response.body, rewriter, deployment.id.clone(), provider.timeouts.idle, deadline, ctx.started);
        let first_by = (tokio::time::Instant::now() + provider.timeouts.first_byte).min(deadline);
        let first = tokio::time::timeout_at(first_by, relay.next_frame()).await.map_err(|_| {
            GatewayError::UpstreamTimeout {
                deployment: deployment.id.clone(),
                phase: "first chunk",
                after_ms: ctx.started.elapsed().as_millis(),
            }
        })??;
        let first = first.ok_or_else(|| GatewayError::UpstreamProtocol {
            deployment: deployment.id.clone(),
            detail: "the stream ended before any event".into(),
        })?;
        guard.first_byte();
        return Ok(Served::Stream(Box::new(relay), first));
    }
    let raw = upstream::read_body(response.body, &deployment.id, provider.timeouts.idle, deadline).await?;
    let (json, usage) =
        openai::rewrite_response(&raw, &ctx.client_model).map_err(|e| GatewayError::UpstreamProtocol {
            deployment: deployment.id.clone(),
            detail: format!("the response is not a JSON object: {e}"),
        })?;
    let mut response = Response::new(Body::from(json));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    routing_headers(response.headers_mut(), ctx);
    Ok(Served::Whole(response, usage))
}

async fn upstream_error(
    response: UpstreamResponse,
    deployment: &str,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
) -> GatewayError {
    let retry_after = response.headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let status = response.status;
    let body = match upstream::read_body(response.body, deployment, idle, deadline).await {
        Ok(b) => b.slice(..b.len().min(MAX_ERROR_BODY)),
        Err(_) => Bytes::new(),
    };
    let status = if status.is_client_error() || status.is_server_error() { status } else { StatusCode::BAD_GATEWAY };
    GatewayError::UpstreamStatus { status, body: ErrorBody::from_upstream(status.as_u16(), &body), retry_after }
}

async fn read_limited(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, GatewayError> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(e) => Err(GatewayError::bad_request(format!("Could not read the request body: {e}"), None)),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
