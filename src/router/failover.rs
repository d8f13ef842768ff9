//! Failover policy: what a failed attempt leads to (cool the deployment down, switch to a
//! fallback list, count a breaker failure and try the next, or answer with the error), and how
//! long to wait before the next attempt. Pure decisions, no I/O: the pipeline's attempt loop
//! applies them to the deployment's health and to its queue of candidates.

use std::time::Duration;

use crate::api::ErrorBody;
use crate::config::RetryPolicy;
use crate::error::GatewayError;

/// What one failed attempt leads to (`C`: a candidate deployment).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<C> {
    /// Rate limited upstream (429), not sick: no breaker failure; the deployment cools down this
    /// long and the next candidate is tried.
    CoolDown(Duration),
    /// The upstream refused the request itself (a 4xx) and a fallback list is configured for
    /// exactly this refusal: the deployment is healthy, and these candidates replace the rest
    /// of the plan.
    Fallback(Vec<C>),
    /// The upstream refused the request itself: the deployment is healthy, the error is the
    /// answer.
    Refused,
    /// A failure another deployment may not have (5xx, unreachable, timeout, unreadable answer):
    /// a breaker failure, and the next candidate is tried.
    Retry,
    /// Nothing another deployment would do differently: the error is the answer.
    Stop,
}

/// A plan's fallback lists for refused requests, each used at most once per request.
#[derive(Debug)]
pub struct Fallbacks<C> {
    content_policy: Option<Vec<C>>,
    context_window: Option<Vec<C>>,
}

impl<C> Fallbacks<C> {
    pub fn new(content_policy: Vec<C>, context_window: Vec<C>) -> Self {
        Self { content_policy: Some(content_policy), context_window: Some(context_window) }
    }
}

/// The decision for an attempt that failed with `error`; takes the fallback list it switches to.
pub fn decide<C>(error: &GatewayError, fallbacks: &mut Fallbacks<C>) -> Decision<C> {
    if let GatewayError::UpstreamStatus { status, body, retry_after } = error {
        if status.as_u16() == 429 {
            return Decision::CoolDown(retry_after_duration(retry_after.as_deref()));
        }
        if status.is_client_error() {
            // The upstream is alive; the request is the problem — unless a fallback is
            // configured for exactly this refusal.
            let switch_to = if is_content_policy(body) {
                fallbacks.content_policy.take()
            } else if is_context_length(body) {
                fallbacks.context_window.take()
            } else {
                None
            };
            return match switch_to {
                Some(list) if !list.is_empty() => Decision::Fallback(list),
                _ => Decision::Refused,
            };
        }
    }
    if error.retryable() { Decision::Retry } else { Decision::Stop }
}

/// Exponential backoff before attempt `attempts + 1` (`attempts` ≥ 1 made so far), with
/// `jitter` in [0, 1) spreading it over its upper half.
pub fn backoff(policy: &RetryPolicy, attempts: u32, jitter: f64) -> Duration {
    let exp = policy.backoff.saturating_mul(1u32 << attempts.saturating_sub(1).min(16)).min(policy.max_backoff);
    exp.mul_f64(0.5 + jitter * 0.5)
}

/// `Retry-After` in seconds (or an HTTP date we do not parse): default one second, capped.
pub fn retry_after_duration(value: Option<&str>) -> Duration {
    let seconds =
        value.and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(1.0);
    Duration::from_secs_f64(seconds.min(300.0))
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

#[cfg(test)]
mod tests;
