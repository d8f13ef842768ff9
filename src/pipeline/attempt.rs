//! One try on one deployment, up to the first byte of its answer: the request translated for
//! the deployment's dialect, sent over its transport, and the answer read whole or its stream's
//! first frame awaited. Also the attempt span's per-deployment attributes.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::request::ParsedRequest;
use super::{Gateway, routing_headers, unix_now};
use crate::adapter::Exchange;
use crate::api::ErrorBody;
use crate::cache::{Fill, StreamFill};
use crate::config::DeploymentSpec;
use crate::ctx::{Endpoint, RequestCtx};
use crate::error::GatewayError;
use crate::responses_store::Previous;
use crate::router::health::AttemptGuard;
use crate::stream::Relay;
use crate::telemetry::trace::w3c::{TRACEPARENT, TRACESTATE, TraceParent};
use crate::telemetry::trace::{AttributeBlock, genai, keys};
use crate::upstream::{self, Forward, Outgoing, UpstreamResponse};

/// Error bodies read from a failing upstream are cut here.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub(super) enum Served {
    /// The answer, and what the observers need from it (usage, finish reason, text).
    Whole(Response, Box<crate::adapter::openai::WholeResponse>),
    /// The relay, its first frame, and the cache's assembly of it (a miss to store).
    Stream(Box<Relay>, Bytes, Option<StreamFill>),
}

/// Lets the cache see the answer of a miss: a whole body now, a stream frame by frame.
pub(super) async fn fill_from(served: Served, fill: Fill) -> Served {
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

/// One try on one deployment, up to the first byte of the answer.
pub(super) async fn attempt(
    gw: &Gateway,
    ctx: &RequestCtx,
    request: &ParsedRequest,
    client_headers: &HeaderMap,
    deployment: &DeploymentSpec,
    guard: &AttemptGuard,
    traceparent: Option<(TraceParent, Option<String>)>,
) -> Result<Served, GatewayError> {
    let provider = &deployment.provider;
    let replayed;
    let mut echo = None;
    let body = match &request.previous {
        // A native upstream continues its own chain under the id; any other deployment gets
        // the history (a native one without the id, which it would not know).
        Some(Previous::Found { deployment: made_by, .. })
            if provider.responses_api && made_by.as_deref() == Some(deployment.id.as_str()) =>
        {
            &request.body
        }
        Some(Previous::Found { resolved, .. }) if provider.responses_api => {
            replayed = crate::responses_store::replayable(resolved);
            echo = request.body.parse::<String>("previous_response_id").ok().flatten();
            &replayed
        }
        Some(Previous::Found { resolved, .. }) => resolved,
        Some(Previous::Unknown(id)) if !provider.responses_api => {
            return Err(GatewayError::PreviousResponseNotFound(id.clone()));
        }
        _ => &request.body,
    };
    let mut exchange =
        Exchange::prepare(ctx.endpoint, body, deployment, ctx.stream, ctx.client_wants_usage, unix_now())
            .map_err(|e| GatewayError::BadRequest { message: e.message, param: e.param })?;
    exchange.echo_previous(echo);
    if let Some(principal) = ctx.principal.as_ref().filter(|_| ctx.endpoint == Endpoint::Responses) {
        let body = match &request.previous {
            Some(Previous::Found { resolved, .. }) => resolved,
            _ => &request.body,
        };
        let made_by = provider.responses_api.then_some(deployment.id.as_str());
        exchange.keep_responses(|| gw.responses.keeper(&principal.team, body, made_by));
    }
    let deadline = tokio::time::Instant::from_std(ctx.started) + provider.timeouts.total;
    let forward = forward_headers(ctx, client_headers, traceparent.as_ref(), &exchange);
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
    if ctx.stream {
        return first_frame(ctx, deployment, exchange, response, guard, deadline).await;
    }
    guard.first_byte();
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

/// The headers that travel upstream besides the body's own: the request id, the trace context
/// (ours when traced, else the client's unchanged), and the Anthropic flags a client opted into.
fn forward_headers<'a>(
    ctx: &'a RequestCtx,
    client_headers: &HeaderMap,
    traceparent: Option<&'a (TraceParent, Option<String>)>,
    exchange: &Exchange,
) -> Forward<'a> {
    // Traced: the attempt's span is the upstream's parent, in the client's trace (and its
    // `tracestate`) when the client sent one.
    let mut forward = Forward {
        request_id: Some(&ctx.request_id),
        trace: traceparent.map(|(parent, state)| (*parent, state.as_deref())),
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
    forward
}

/// A stream's relay, once its first frame has come within the first-byte timeout.
async fn first_frame(
    ctx: &RequestCtx,
    deployment: &DeploymentSpec,
    mut exchange: Exchange,
    response: UpstreamResponse,
    guard: &AttemptGuard,
    deadline: tokio::time::Instant,
) -> Result<Served, GatewayError> {
    let provider = &deployment.provider;
    let rewriter = exchange.rewriter(&ctx.client_model);
    let mut relay =
        Relay::new(response.body, rewriter, deployment.id.clone(), provider.timeouts.idle, deadline, ctx.started)
            .max_event_bytes(provider.max_event_bytes);
    let first_by = (tokio::time::Instant::now() + provider.timeouts.first_byte).min(deadline);
    let first =
        tokio::time::timeout_at(first_by, relay.next_frame()).await.map_err(|_| GatewayError::UpstreamTimeout {
            deployment: deployment.id.clone(),
            phase: "first chunk",
            after_ms: ctx.started.elapsed().as_millis(),
        })??;
    let first = first.ok_or_else(|| GatewayError::UpstreamProtocol {
        deployment: deployment.id.clone(),
        detail: "the stream ended before any event".into(),
    })?;
    guard.first_byte();
    Ok(Served::Stream(Box::new(relay), first, None))
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

/// An attempt span's attributes that depend only on the deployment.
pub(super) fn attempt_attributes(deployment: &DeploymentSpec) -> AttributeBlock {
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
