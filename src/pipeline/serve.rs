//! The stages of one request in their order: auth → body → parse → limits → observers' admit →
//! cache → route, then the attempts over the route's deployments, failing over before the first
//! byte reached the client.

use std::collections::VecDeque;
use std::time::Instant;

use axum::http::HeaderMap;

use super::attempt::{Served, attempt, attempt_attributes, fill_from};
use super::request::{self, ParsedRequest};
use super::{Gateway, UnreadBody};
use crate::cache::{Fill, Lookup};
use crate::ctx::{Endpoint, Principal, RequestCtx};
use crate::error::GatewayError;
use crate::limits::Demand;
use crate::responses_store::Previous;
use crate::router::failover::{self, Decision, Fallbacks};
use crate::router::health::AttemptGuard;
use crate::router::{Candidate, Plan, RequestShape};
use crate::telemetry::trace::w3c::TraceParent;
use crate::telemetry::trace::{Kind, SpanRef, genai, keys};

/// The request served, up to the first byte of its answer (and the attempt's breaker permit,
/// for a stream to settle at its end), or the error that ends it.
pub(super) async fn serve(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: impl UnreadBody,
) -> Result<(Served, Option<AttemptGuard>), GatewayError> {
    let auth_span = ctx.trace.child("auth");
    let principal = gw.auth.authenticate(headers).await;
    ctx.trace.end(auth_span);
    let principal: Principal = principal?;
    ctx.principal = Some(principal.clone());
    let bytes = body.read(&principal, headers).await?;
    let mut request = request::parse(ctx.endpoint, &bytes)?;
    if ctx.endpoint == Endpoint::Responses {
        request.previous = gw.responses.resolve_previous(&principal.team, &request.body).await?;
    }
    ctx.body = bytes;
    ctx.client_model = request.model.clone();
    ctx.stream = request.stream && ctx.endpoint != Endpoint::Embeddings;
    ctx.client_wants_usage = request.client_wants_usage;
    // The model group the name resolves to (aliases, team overrides): per-model limits and the
    // cache apply to the group, whatever the client called it. (A name the caller may not use
    // is refused when the plan is made, below.)
    let resolved = gw.router.resolve(&principal, &request.model);
    let group = resolved.as_ref().ok().map(|r| r.group);
    let demand = Demand {
        model: group.unwrap_or(&request.model),
        prompt_tokens: request.prompt_tokens_estimate,
        max_tokens: request.max_tokens,
        completion: ctx.endpoint != Endpoint::Embeddings,
        choices: request.choices,
        worst_price: group.and_then(|g| gw.prices.worst_of(g)),
    };
    ctx.reservation = gw.limits.admit_traced(&principal, &demand, &mut ctx.trace).await?;
    for observer in &gw.observers {
        observer.admit(ctx)?;
    }
    // (Limits admit the request before this point: a cache hit still counts as a request.)
    let mut fill = None;
    if let Some(cache) = &gw.cache {
        let lookup_span = ctx.trace.child("cache lookup");
        let lookup = cache.lookup(ctx, group, &request.body, headers).await;
        ctx.trace.end(lookup_span);
        match lookup {
            Lookup::Hit(response, usage, object) => {
                // A response served from the cache is a new one: kept like any other.
                if let Some(object) = &object
                    && let Some(keep) = gw.responses.keeper(&principal.team, &request.body, None)
                {
                    keep(object);
                }
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
    // (Planning is a few microseconds of work in memory, never a wait: no span of its own.)
    let plan = gw.router.plan_for(&resolved?, shape)?;
    try_plan(gw, ctx, &request, headers, plan, fill).await
}

/// The plan's candidates, tried in turn until one answers: each failure decided by the router's
/// failover policy (cool down, fallback list, breaker failure, or the error as the answer).
async fn try_plan(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    request: &ParsedRequest,
    headers: &HeaderMap,
    plan: Plan,
    mut fill: Option<Fill>,
) -> Result<(Served, Option<AttemptGuard>), GatewayError> {
    let mut queue: VecDeque<Candidate> = plan.candidates.into();
    order_for_chain(&mut queue, request.previous.as_ref())?;
    let mut fallbacks = Fallbacks::new(plan.content_policy, plan.context_window);
    let mut last_error = None;
    while let Some(candidate) = queue.pop_front() {
        if ctx.attempts >= plan.retry.max_attempts {
            break;
        }
        // The breaker may have opened since the plan was made.
        let Some(guard) = candidate.health.try_acquire(Instant::now()) else { continue };
        if ctx.attempts > 0 {
            tokio::time::sleep(failover::backoff(&plan.retry, ctx.attempts, fastrand::f64())).await;
        }
        ctx.attempts += 1;
        ctx.deployment = Some(candidate.deployment.id.clone());
        ctx.priced = Some(candidate.deployment.priced);
        let deployment = &candidate.deployment;
        let (attempt_span, traceparent) = start_attempt_span(ctx, &candidate);
        let result = attempt(gw, ctx, request, headers, deployment, &guard, traceparent).await;
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
        let e = match result {
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
            Err(e) => e,
        };
        let deployment = &candidate.deployment.id;
        tracing::warn!(request_id = %ctx.request_id, deployment = %deployment, error = %e, "attempt failed");
        if matches!(request.previous, Some(Previous::Unknown(_))) && not_its_response(&e) {
            // An id the gateway never stored belongs to one native deployment at most: ask the next.
            guard.success();
            last_error = Some(e);
            continue;
        }
        match failover::decide(&e, &mut fallbacks) {
            Decision::CoolDown(wait) => guard.cool_down(wait),
            Decision::Fallback(list) => {
                guard.success();
                queue = list.into();
            }
            Decision::Refused => {
                guard.success();
                return Err(e);
            }
            Decision::Retry => guard.failure(e.label()),
            Decision::Stop => return Err(e),
        }
        last_error = Some(e);
    }
    Err(last_error.unwrap_or_else(|| crate::router::unavailable(&request.model, std::iter::empty(), Instant::now())))
}

/// A Responses chain goes first to the deployment that made its previous response (while that
/// one is healthy: a breaker open skips it), since that upstream's own state (its ids, the
/// encrypted reasoning) is valid only there. An id the gateway never stored may still be an
/// upstream's own: only deployments serving `/responses` themselves get it, each in turn until
/// one knows it (see `not_its_response`), and with none the request is OpenAI's 400
/// `previous_response_not_found`.
fn order_for_chain(queue: &mut VecDeque<Candidate>, previous: Option<&Previous>) -> Result<(), GatewayError> {
    match previous {
        Some(Previous::Found { deployment: Some(made_by), .. }) => {
            if let Some(at) = queue.iter().position(|c| &c.deployment.id == made_by)
                && let Some(pinned) = queue.remove(at)
            {
                queue.push_front(pinned);
            }
        }
        Some(Previous::Unknown(id)) => {
            queue.retain(|c| c.deployment.provider.responses_api);
            if queue.is_empty() {
                return Err(GatewayError::PreviousResponseNotFound(id.clone()));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A native upstream's refusal of a `previous_response_id` it does not know.
fn not_its_response(e: &GatewayError) -> bool {
    let GatewayError::UpstreamStatus { status, body, .. } = e else { return false };
    let detail = &body.error;
    status.is_client_error()
        && (detail.code.as_deref() == Some("previous_response_not_found")
            || detail.param.as_deref() == Some("previous_response_id"))
}

/// The attempt's span (when the request is traced), and the `traceparent` (with the client's
/// `tracestate`) that makes it the upstream's parent.
fn start_attempt_span(ctx: &mut RequestCtx, candidate: &Candidate) -> (SpanRef, Option<(TraceParent, Option<String>)>) {
    let deployment = &candidate.deployment;
    let operation = ctx.endpoint.operation();
    let attempts = ctx.attempts;
    let Some(r) = ctx.trace.get_mut() else { return (SpanRef::NONE, None) };
    let span = r.child_named(&[operation, " ", &deployment.model], Kind::Client);
    r.attributes(span)
        .str(&genai::OPERATION_NAME, operation)
        .block(candidate.health.span_attributes.get_or_init(|| attempt_attributes(deployment)))
        .int(&keys::ATTEMPT, i64::from(attempts));
    (span, r.traceparent(span).map(|parent| (parent, r.trace_state().map(str::to_owned))))
}
