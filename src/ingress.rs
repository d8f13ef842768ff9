//! Ingress: one handler per endpoint (OpenAI's, and Anthropic's `/v1/messages`). Each request
//! goes auth → parse → limits → cache → route → attempts over the route's deployments (failing over before the
//! first byte) → the answer, whole or streamed, in the client's dialect; then one outcome
//! report to the observers. Errors take the shape of the client's dialect.

pub mod admin;
pub mod quota;
pub mod request;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::adapter::Exchange;
use crate::api::ErrorBody;
use crate::api::openai::{ModelEntry, ModelList};
use crate::auth::Authenticator;
use crate::cache::{self, Cache, Fill, Lookup, StreamFill};
use crate::config::DeploymentSpec;
use crate::ctx::Principal;
use crate::ctx::{CacheStatus, Endpoint, Observer, Outcome, RequestCtx};
use crate::error::GatewayError;
use crate::limits::{Demand, Limiter};
use crate::router::health::AttemptGuard;
use crate::router::{Candidate, RequestShape, Router};
use crate::stream::{Relay, StreamEnd};
use crate::telemetry::trace::w3c::{TRACEPARENT, TRACESTATE, TraceParent};
use crate::telemetry::trace::{AttributeBlock, Kind, SpanRef, Trace, genai, keys};
use crate::upstream::{self, Forward, Outgoing, UpstreamResponse, Upstreams};
use request::ParsedRequest;

/// Everything the handlers need, built once by `app`.
pub struct Gateway {
    pub auth: Authenticator,
    pub router: Router,
    pub upstreams: Upstreams,
    /// Exact and semantic answers; `None` = no cache configured.
    pub cache: Option<Arc<Cache>>,
    pub limits: Arc<Limiter>,
    pub observers: Vec<Arc<dyn Observer>>,
    pub max_body_bytes: usize,
    pub body_read_timeout: std::time::Duration,
    /// Requests being handled now, against `max_in_flight`.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub max_in_flight: Option<usize>,
    /// Bodies being read now, per credential: see `BodyGate`.
    pub body_gate: BodyGate,
    pub started_unix: u64,
}

/// Bodies being read, per credential (its limits subject). A credential with a concurrency
/// limit reads at most that many bodies at once on this replica: its concurrency lease is
/// taken once the body is in (the lease's admission needs the body's token estimate), and
/// without this bound one key could hold any number of slow uploads, and their memory, before
/// the limit applies.
#[derive(Default)]
pub struct BodyGate {
    reading: std::sync::Mutex<std::collections::HashMap<Arc<str>, u64>>,
}

impl BodyGate {
    /// A place to read a body for `principal`, or the 429 of its concurrency limit.
    fn enter(&self, principal: &Principal) -> Result<BodyTicket<'_>, GatewayError> {
        let limit =
            [principal.grant.limits.max_concurrent, principal.policy.limits.max_concurrent].into_iter().flatten().min();
        let Some(limit) = limit else { return Ok(BodyTicket { gate: self, subject: None }) };
        let subject = principal.grant.subject.clone();
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let count = reading.entry(subject.clone()).or_default();
        if *count >= limit {
            return Err(GatewayError::RateLimited {
                message: format!(
                    "Too many concurrent requests on {subject}: limit {limit} (request bodies still arriving). Please try again shortly."
                ),
                reason: "max_concurrent",
                quota: false,
                retry_after_ms: Some(1000),
                headers: Box::default(),
            });
        }
        *count += 1;
        Ok(BodyTicket { gate: self, subject: Some(subject) })
    }
}

/// One body being read; the place is given back when it is dropped.
struct BodyTicket<'a> {
    gate: &'a BodyGate,
    subject: Option<Arc<str>>,
}

impl Drop for BodyTicket<'_> {
    fn drop(&mut self) {
        let Some(subject) = &self.subject else { return };
        let mut reading = self.gate.reading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = reading.get_mut(subject) {
            *count -= 1;
            if *count == 0 {
                reading.remove(subject);
            }
        }
    }
}

/// The request id the server stage assigned (echoed in `x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

// Header names are constants: inserting by `&str` parses the name on every response.
pub const DEPLOYMENT_HEADER: HeaderName = HeaderName::from_static("x-llm-gateway-deployment");
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-llm-gateway-attempts");
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
/// Error bodies read from a failing upstream are cut here.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The handler for one proxied endpoint (chat, completions, embeddings, Anthropic messages):
/// they differ only in the `Endpoint` they hand to `handle`.
pub async fn proxy(endpoint: Endpoint, gw: State<Arc<Gateway>>, request: axum::extract::Request) -> Response {
    // Taken apart rather than extracted: the headers are moved, not copied.
    let (mut parts, body) = request.into_parts();
    let id = parts.extensions.remove::<RequestId>().unwrap_or_else(|| RequestId(crate::ctx::new_request_id()));
    handle(gw.0, id, endpoint, parts.uri.query().map(Box::from), parts.headers, body).await
}

/// Anthropic's `POST /v1/messages/count_tokens`, answered locally with an estimate (about
/// four characters a token) for a model the caller may use.
pub async fn count_tokens(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    let counted = async {
        let principal = gw.auth.authenticate(&headers).await?;
        let bytes = read_body(&gw, &principal, body, &headers).await?;
        let (model, input_tokens) = request::count_tokens(&bytes)?;
        if !gw.router.knows(&model) {
            return Err(GatewayError::ModelNotFound(format!("The model `{model}` does not exist.")));
        }
        if !principal.allows(&model) {
            return Err(GatewayError::ModelNotAllowed(format!(
                "Team `{}` is not allowed to use the model `{model}`.",
                principal.team
            )));
        }
        Ok(input_tokens)
    };
    match counted.await {
        Ok(input_tokens) => axum::Json(serde_json::json!({ "input_tokens": input_tokens })).into_response(),
        Err(e) => e.into_anthropic_response(),
    }
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
    let mut response = axum::Json(ModelList { object: "list", data }).into_response();
    // The caller's limits as they stand; a listing takes nothing from them (see `peek_headers`).
    gw.limits.peek_headers(&principal, None).await.apply(response.headers_mut());
    response
}

pub async fn get_model(State(gw): State<Arc<Gateway>>, Path(model): Path<String>, headers: HeaderMap) -> Response {
    let principal = match gw.auth.authenticate(&headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !(gw.router.knows(&model) && principal.allows(&model)) {
        return GatewayError::ModelNotFound(format!("The model `{model}` does not exist.")).into_response();
    }
    let mut response =
        axum::Json(ModelEntry { id: &model, object: "model", created: gw.started_unix, owned_by: "llm-gateway" })
            .into_response();
    gw.limits.peek_headers(&principal, Some(&model)).await.apply(response.headers_mut());
    response
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

pub(crate) async fn handle(
    gw: Arc<Gateway>,
    id: RequestId,
    endpoint: Endpoint,
    query: Option<Box<str>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // (The server span's attributes and final name are set once the request has ended, from
    // the context: `telemetry::record_span`.)
    let trace = Trace::start(&headers, endpoint.operation());
    let ctx = RequestCtx {
        request_id: id.0,
        started,
        endpoint,
        principal: None,
        client_model: String::new(),
        stream: false,
        client_wants_usage: false,
        deployment: None,
        attempts: 0,
        trace,
        body: Bytes::new(),
        cache: CacheStatus::Off,
        reservation: None,
        query,
    };
    let load = gw.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for observer in &gw.observers {
        observer.started(&ctx);
    }
    if gw.max_in_flight.is_some_and(|cap| load >= cap) {
        // At the cap: refused at once, before the body is read, rather than taking memory
        // the pod does not have.
        let e = GatewayError::Overloaded(format!("The gateway is handling {load} requests, its limit; retry shortly."));
        let label = e.label();
        let response = if ctx.endpoint.is_anthropic() { e.into_anthropic_response() } else { e.into_response() };
        finish(&gw, &ctx, &Outcome::failed(response.status().as_u16(), label));
        return response;
    }
    // Whatever ends the request from here on reports it once. Hyper drops this future when the
    // client goes away at any await below (an SDK timeout on a slow upstream): the guard then
    // reports it as 499 — the lease released, the tokens settled, metered and logged.
    let mut pending = Pending { gw: gw.clone(), ctx: Some(ctx) };
    let served = serve(&gw, pending.ctx(), &headers, body).await;
    let Some(mut ctx) = pending.ctx.take() else { unreachable!("the pending request keeps its context") };
    match served {
        Ok((Served::Whole(mut response, whole), _)) => {
            let outcome = Outcome {
                status: response.status().as_u16(),
                error: None,
                usage: whole.usage,
                usage_partial: false,
                time_to_first_chunk: None,
                gaps: None,
                finish_reason: whole.finish_reason,
                client_gone: false,
                chunks: 0,
                generated: whole.generated,
                cached: ctx.cache.is_hit(),
            };
            finish(&gw, &ctx, &outcome);
            rate_headers(response.headers_mut(), &ctx);
            response
        }
        Ok((Served::Stream(relay, first, fill), guard)) => {
            let stream_span = ctx.trace.child("stream completion");
            let ctx = Arc::new(ctx);
            let hook_gw = gw.clone();
            let hook_ctx = ctx.clone();
            let on_end = Box::new(move |end: StreamEnd| {
                if let Some(fill) = fill {
                    fill.end(end.error.is_none() && !end.client_gone, end.usage);
                }
                // A failure after the first byte cannot be retried, but the breaker counts it.
                if let Some(guard) = guard {
                    match end.error {
                        Some(label) => guard.failure(label),
                        None if end.client_gone => drop(guard),
                        None => guard.success(),
                    }
                }
                if let Some(mut r) = hook_ctx.trace.lock() {
                    let mut a = r.attributes(stream_span);
                    a.int(&keys::CHUNKS, i64::from(end.chunks));
                    if let Some(label) = end.error.or(end.client_gone.then_some("client_gone")) {
                        a.str(&keys::ERROR_TYPE, label);
                    }
                    drop(a);
                    r.end(stream_span);
                }
                let outcome = Outcome {
                    status: 200,
                    error: end.error,
                    usage: end.usage,
                    usage_partial: end.usage_partial,
                    time_to_first_chunk: end.time_to_first_chunk,
                    gaps: Some(end.gaps),
                    finish_reason: end.finish_reason,
                    client_gone: end.client_gone,
                    chunks: end.chunks,
                    generated: end.generated,
                    cached: false,
                };
                finish(&hook_gw, &hook_ctx, &outcome);
            });
            let mut response = Response::new(Body::from_stream((*relay).into_body(first, on_end)));
            let h = response.headers_mut();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
            routing_headers(h, &ctx);
            rate_headers(h, &ctx);
            response
        }
        Err(e) => {
            let label = e.label();
            let mut response =
                if ctx.endpoint.is_anthropic() { e.into_anthropic_response() } else { e.into_response() };
            finish(&gw, &ctx, &Outcome::failed(response.status().as_u16(), label));
            routing_headers(response.headers_mut(), &ctx);
            rate_headers(response.headers_mut(), &ctx);
            response
        }
    }
}

/// A request whose handler has not returned yet. Dropped with its context still inside, it was
/// abandoned (the client went away before the answer or before a stream's first chunk): it is
/// reported as 499 `client_gone`. The upstream call is cancelled with the dropped future.
struct Pending {
    gw: Arc<Gateway>,
    ctx: Option<RequestCtx>,
}

impl Pending {
    fn ctx(&mut self) -> &mut RequestCtx {
        self.ctx.as_mut().unwrap_or_else(|| unreachable!("taken only once the handler is done"))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            let outcome = Outcome { client_gone: true, ..Outcome::failed(CLIENT_GONE, "client_gone") };
            finish(&self.gw, &ctx, &outcome);
        }
    }
}

/// The status a request abandoned by its client is logged and counted with (nginx's).
pub const CLIENT_GONE: u16 = 499;

fn finish(gw: &Gateway, ctx: &RequestCtx, outcome: &Outcome) {
    gw.in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
    cache::status_headers(headers, ctx.cache);
}

/// `x-ratelimit-*` of an admitted request (a refusal carries its own).
fn rate_headers(headers: &mut HeaderMap, ctx: &RequestCtx) {
    if let Some(reservation) = &ctx.reservation {
        reservation.headers.apply(headers);
    }
}

enum Served {
    /// The answer, and what the observers need from it (usage, finish reason, text).
    Whole(Response, Box<crate::adapter::openai::WholeResponse>),
    /// The relay, its first frame, and the cache's assembly of it (a miss to store).
    Stream(Box<Relay>, Bytes, Option<StreamFill>),
}

/// Lets the cache see the answer of a miss: a whole body now, a stream frame by frame.
async fn fill_from(served: Served, fill: Fill) -> Served {
    match served {
        Served::Whole(response, whole) => {
            let (parts, body) = response.into_parts();
            // The body is already in memory (built from the upstream's JSON).
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            fill.whole(&bytes);
            Served::Whole(Response::from_parts(parts, Body::from(bytes)), whole)
        }
        Served::Stream(mut relay, first, _) => {
            let (stream_fill, tap) = fill.stream(&first);
            relay.set_tap(tap);
            Served::Stream(relay, first, Some(stream_fill))
        }
    }
}

async fn serve(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Served, Option<AttemptGuard>), GatewayError> {
    let auth_span = ctx.trace.child("auth");
    let principal = gw.auth.authenticate(headers).await;
    ctx.trace.end(auth_span);
    let principal: Principal = principal?;
    ctx.principal = Some(principal.clone());
    let bytes = read_body(gw, &principal, body, headers).await?;
    let request = request::parse(ctx.endpoint, &bytes)?;
    ctx.body = bytes;
    ctx.client_model = request.model.clone();
    ctx.stream = request.stream && ctx.endpoint != Endpoint::Embeddings;
    ctx.client_wants_usage = request.client_wants_usage;
    // The model group the name resolves to (aliases, team overrides): per-model limits and the
    // cache apply to the group, whatever the client called it.
    let group = gw.router.model_group(&principal, &request.model);
    let demand = Demand {
        model: group.as_deref().unwrap_or(&request.model),
        prompt_tokens: request.prompt_tokens_estimate,
        max_tokens: request.max_tokens,
        completion: ctx.endpoint != Endpoint::Embeddings,
        choices: request.choices,
    };
    ctx.reservation = gw.limits.admit_traced(&principal, &demand, &mut ctx.trace).await?;
    for observer in &gw.observers {
        observer.admit(ctx)?;
    }
    // (Limits admit the request before this point: a cache hit still counts as a request.)
    let mut fill = None;
    if let Some(cache) = &gw.cache {
        let lookup_span = ctx.trace.child("cache lookup");
        let lookup = cache.lookup(ctx, group.as_deref(), &request.body, headers).await;
        ctx.trace.end(lookup_span);
        match lookup {
            Lookup::Hit(response, usage) => {
                let whole = crate::adapter::openai::WholeResponse {
                    body: Vec::new(),
                    usage,
                    generated: None,
                    finish_reason: None,
                };
                return Ok((Served::Whole(response, Box::new(whole)), None));
            }
            Lookup::Miss(f) => fill = f,
        }
    }
    let shape = RequestShape { tokens_needed: request.prompt_tokens_estimate + request.max_tokens.unwrap_or(0) };
    let operation = ctx.endpoint.operation();
    // (Planning is a few microseconds of work in memory, never a wait: no span of its own.)
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
        let deployment = &candidate.deployment;
        let (attempt_span, traceparent) = match ctx.trace.get_mut() {
            Some(r) => {
                let span = r.child_named(&[operation, " ", &deployment.model], Kind::Client);
                r.attributes(span)
                    .str(&genai::OPERATION_NAME, operation)
                    .block(deployment.trace_attributes.get_or_init(|| attempt_attributes(deployment)))
                    .int(&keys::ATTEMPT, i64::from(ctx.attempts));
                (span, r.traceparent(span).map(|parent| (parent, r.trace_state().map(str::to_owned))))
            }
            None => (SpanRef::NONE, None),
        };
        let result = attempt(gw, ctx, &request, headers, deployment, &guard, traceparent).await;
        let label = result.as_ref().err().map(GatewayError::label).unwrap_or("ok");
        if let Some(r) = ctx.trace.get_mut() {
            if let Err(e) = &result {
                r.attributes(attempt_span).str(&keys::ERROR_TYPE, e.label());
            }
            r.end(attempt_span);
        }
        for observer in &gw.observers {
            observer.attempted(ctx, &candidate.deployment.id, label, guard.first_byte_after());
        }
        match result {
            Ok(served) => {
                let served = match fill.take() {
                    Some(fill) => fill_from(served, fill).await,
                    None => served,
                };
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
        // Anthropic: "prompt is too long: 215000 tokens > 200000 maximum".
        || body.error.message.contains("prompt is too long")
}

/// One try on one deployment, up to the first byte of the answer.
async fn attempt(
    gw: &Gateway,
    ctx: &RequestCtx,
    request: &ParsedRequest,
    client_headers: &HeaderMap,
    deployment: &DeploymentSpec,
    guard: &AttemptGuard,
    traceparent: Option<(TraceParent, Option<String>)>,
) -> Result<Served, GatewayError> {
    let provider = &deployment.provider;
    let mut exchange =
        Exchange::prepare(ctx.endpoint, &request.body, deployment, ctx.stream, ctx.client_wants_usage, unix_now())
            .map_err(|e| GatewayError::BadRequest { message: e.message, param: e.param })?;
    let deadline = tokio::time::Instant::from_std(ctx.started) + provider.timeouts.total;
    // Traced: the attempt's span is the upstream's parent, in the client's trace (and its
    // `tracestate`) when the client sent one.
    let mut forward = Forward {
        request_id: Some(&ctx.request_id),
        trace: traceparent.as_ref().map(|(parent, state)| (*parent, state.as_deref())),
        client: HeaderMap::new(),
    };
    if forward.trace.is_none() {
        // Not traced here: the client's own trace context travels on unchanged.
        for name in [TRACEPARENT, TRACESTATE] {
            if let Some(value) = client_headers.get(&name) {
                forward.client.insert(name, value.clone());
            }
        }
    }
    if exchange.upstream_is_anthropic() {
        // Beta features the client opted into (Claude Code uses several), and the API
        // version its body is written in when it is Claude's own.
        let own = exchange.passes_through();
        for name in ["anthropic-beta", "anthropic-version"] {
            if (own || name == "anthropic-beta")
                && let Some(value) = client_headers.get(name)
            {
                forward.client.insert(name, value.clone());
            }
        }
    }
    let outgoing = Outgoing {
        endpoint: exchange.upstream_endpoint,
        path: exchange.path,
        // The client's query string goes to an upstream of its own dialect (`?beta=true`).
        query: if exchange.passes_through() { ctx.query.as_deref() } else { None },
        body: Bytes::from(std::mem::take(&mut exchange.body)),
        forward,
        principal: ctx.principal.as_ref(),
        stream: ctx.stream,
    };
    let response = gw.upstreams.send(deployment, outgoing, deadline).await?;
    if !response.status.is_success() {
        return Err(upstream_error(response, &deployment.id, provider.timeouts.idle, deadline).await);
    }
    if !ctx.stream {
        guard.first_byte();
    }
    if ctx.stream {
        let rewriter = exchange.rewriter(&ctx.client_model);
        let mut relay =
            Relay::new(response.body, rewriter, deployment.id.clone(), provider.timeouts.idle, deadline, ctx.started)
                .max_event_bytes(provider.max_event_bytes);
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
        return Ok(Served::Stream(Box::new(relay), first, None));
    }
    let raw = upstream::read_body(response.body, &deployment.id, provider.timeouts.idle, deadline).await?;
    let mut whole = exchange.response(&raw, &ctx.client_model).map_err(|e| GatewayError::UpstreamProtocol {
        deployment: deployment.id.clone(),
        detail: format!("the response could not be read: {e}"),
    })?;
    let mut response = Response::new(Body::from(std::mem::take(&mut whole.body)));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    routing_headers(response.headers_mut(), ctx);
    Ok(Served::Whole(response, Box::new(whole)))
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

/// The request body of an authenticated caller: read within the body read timeout, in one of
/// the caller's places at the body gate, and bounded in size.
async fn read_body(
    gw: &Gateway,
    principal: &Principal,
    body: Body,
    headers: &HeaderMap,
) -> Result<Bytes, GatewayError> {
    let _reading = gw.body_gate.enter(principal)?;
    tokio::time::timeout(gw.body_read_timeout, read_limited(body, headers, gw.max_body_bytes))
        .await
        .map_err(|_| GatewayError::RequestTimeout { after_ms: gw.body_read_timeout.as_millis() })?
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

/// An attempt span's attributes that depend only on the deployment.
fn attempt_attributes(deployment: &DeploymentSpec) -> AttributeBlock {
    let provider = deployment.provider.vendor.as_deref().unwrap_or(&deployment.provider.name);
    let (host, port) = server_address(&deployment.provider.base_url);
    let strings = [
        (genai::PROVIDER_NAME, provider),
        (genai::REQUEST_MODEL, deployment.model.as_str()),
        (keys::SERVER_ADDRESS, host),
        (keys::DEPLOYMENT, deployment.id.as_str()),
    ];
    let port = port.map(|port| (keys::SERVER_PORT, i64::from(port)));
    AttributeBlock::new(&strings, port.as_slice())
}

/// The host and port of a base URL, for the `server.address` and `server.port` span attributes:
/// an IPv6 address without its brackets, and the scheme's port when the URL names none. Read
/// once per deployment (`attempt_attributes` is cached); a base URL without a scheme is taken
/// as `host[:port][/path]`.
fn server_address(base_url: &str) -> (&str, Option<u16>) {
    let bytes = base_url.as_bytes();
    let scheme_end = bytes.windows(3).position(|w| w == b"://");
    let start = scheme_end.map_or(0, |i| i + 3);
    let end = bytes[start..].iter().position(|&b| b == b'/').map_or(bytes.len(), |i| start + i);
    let authority = &base_url[start..end];
    let (host, port) = match authority.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        Some((host, rest)) => (host, rest.strip_prefix(':')),
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok(),
        None => match scheme_end.map(|i| &bytes[..i]) {
            Some(b"https") => Some(443),
            Some(b"http") => Some(80),
            _ => None,
        },
    };
    (host, port)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::server_address;

    #[test]
    fn server_address_is_the_base_urls_host_and_port() {
        assert_eq!(server_address("https://api.openai.com/v1"), ("api.openai.com", Some(443)));
        assert_eq!(server_address("http://ollama/v1"), ("ollama", Some(80)));
        assert_eq!(server_address("http://127.0.0.1:8000/v1"), ("127.0.0.1", Some(8000)));
        assert_eq!(server_address("http://[::1]:8000"), ("::1", Some(8000)));
        assert_eq!(server_address("https://[2001:db8::1]/v1"), ("2001:db8::1", Some(443)));
        assert_eq!(server_address("vllm:8000/v1"), ("vllm", Some(8000)));
        assert_eq!(server_address("vllm/v1"), ("vllm", None));
    }
}
