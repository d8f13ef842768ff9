//! The stages of one request in their order: auth → body → parse → limits → observers' admit →
//! cache → route, then the attempts over the route's deployments, failing over before the first
//! byte reached the client.

use std::collections::VecDeque;

use axum::http::HeaderMap;

use super::attempt::{Served, attempt, attempt_attributes, fill_from};
use super::request;
use super::{Gateway, UnreadBody};
use crate::api::ErrorBody;
use crate::cache::Lookup;
use crate::ctx::{Endpoint, Principal, RequestCtx};
use crate::error::GatewayError;
use crate::limits::Demand;
use crate::router::health::AttemptGuard;
use crate::router::{Candidate, RequestShape};
use crate::telemetry::trace::{Kind, SpanRef, genai, keys};

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
