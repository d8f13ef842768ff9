//! The pipeline: the order of the stages one proxied request goes through. `handle` admits it
//! (the in-flight cap) and reports it exactly once however it ends; `serve` runs auth → body
//! read (ingress's, through `UnreadBody`) → parse → limits → cache → route → the attempts over
//! the route's deployments, failing over before the first byte; `attempt` is one try on one
//! deployment. The answer goes back whole or streamed, in the client's dialect.

mod attempt;
pub mod request;
mod serve;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::adapter::openai::WholeResponse;
use crate::auth::Authenticator;
use crate::cache::{self, Cache, StreamFill};
use crate::ctx::{CacheStatus, Endpoint, Observer, Outcome, Principal, RequestCtx};
use crate::error::GatewayError;
use crate::limits::Limiter;
use crate::router::Router;
use crate::router::health::AttemptGuard;
use crate::stream::{Relay, StreamEnd};
use crate::telemetry::trace::{Trace, keys};
use crate::upstream::Upstreams;
use attempt::Served;

/// The stages a request goes through, built once by `app`.
pub struct Gateway {
    pub auth: Authenticator,
    pub router: Router,
    pub upstreams: Upstreams,
    /// Exact and semantic answers; `None` = no cache configured.
    pub cache: Option<Arc<Cache>>,
    pub limits: Arc<Limiter>,
    /// Stored Responses API responses.
    pub responses: Arc<crate::responses_store::ResponsesStore>,
    pub observers: Vec<Arc<dyn Observer>>,
    /// Every deployment's price (`x-llm-gateway-cost`).
    pub prices: Arc<crate::spend::Prices>,
    /// Requests being handled now, against `max_in_flight`.
    pub in_flight: AtomicUsize,
    pub max_in_flight: Option<usize>,
}

/// A request's body, not read yet. The pipeline reads it once the caller is authenticated:
/// how many bodies a caller may be sending at once is bounded per credential (ingress's body
/// gate), and so is what one may cost before its limits apply.
pub trait UnreadBody: Send {
    /// The whole body of `principal`'s request (whose headers are `headers`), or the error
    /// that ends the request (too large, too slow, too many bodies in flight).
    fn read(
        self,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> impl Future<Output = Result<Bytes, GatewayError>> + Send;
}

// Header names are constants: inserting by `&str` parses the name on every response.
pub const DEPLOYMENT_HEADER: HeaderName = HeaderName::from_static("x-llm-gateway-deployment");
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-llm-gateway-attempts");
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The status a request abandoned by its client is logged and counted with (nginx's).
pub const CLIENT_GONE: u16 = 499;

/// Runs one proxied request (`id` from the server stage) through the stages and reports how it
/// ended to the observers, exactly once.
pub async fn handle(
    gw: &Arc<Gateway>,
    id: Arc<str>,
    endpoint: Endpoint,
    query: Option<Box<str>>,
    client: crate::ctx::Client,
    headers: HeaderMap,
    body: impl UnreadBody,
) -> Response {
    let started = Instant::now();
    // (The server span's attributes and final name are set once the request has ended, from
    // the context: `telemetry::record_span`.)
    let trace = Trace::start(&headers, endpoint.operation());
    let ctx = RequestCtx {
        request_id: id,
        started,
        endpoint,
        principal: None,
        client_model: String::new(),
        stream: false,
        client_wants_usage: false,
        deployment: None,
        priced: None,
        attempts: 0,
        trace,
        body: Bytes::new(),
        cache: CacheStatus::Off,
        reservation: None,
        query,
        client,
    };
    let load = gw.in_flight.fetch_add(1, Ordering::Relaxed);
    for observer in &gw.observers {
        observer.started(&ctx);
    }
    if gw.max_in_flight.is_some_and(|cap| load >= cap) {
        // At the cap: refused at once, before the body is read, rather than taking memory
        // the pod does not have.
        let e = GatewayError::Overloaded(format!("The gateway is handling {load} requests, its limit; retry shortly."));
        let label = e.label();
        let response = if ctx.endpoint.is_anthropic() { e.into_anthropic_response() } else { e.into_response() };
        finish(gw, &ctx, &Outcome::failed(response.status().as_u16(), label));
        return response;
    }
    // Whatever ends the request from here on reports it once. Hyper drops this future when the
    // client goes away at any await below (an SDK timeout on a slow upstream): the guard then
    // reports it as 499 — the lease released, the tokens settled, metered and logged.
    let mut pending = Pending { gw: gw.clone(), ctx: Some(ctx) };
    let served = serve::serve(gw, pending.ctx(), &headers, body).await;
    let Some(ctx) = pending.ctx.take() else { unreachable!("the pending request keeps its context") };
    match served {
        Ok((Served::Whole(mut response, whole), _)) => {
            let outcome = whole_outcome(&response, *whole, ctx.cache.is_hit());
            finish(gw, &ctx, &outcome);
            rate_headers(response.headers_mut(), &ctx);
            crate::spend::cost_headers(response.headers_mut(), &gw.prices, &ctx, &outcome);
            response
        }
        Ok((Served::Stream(relay, first, fill), guard)) => streamed(gw, ctx, relay, first, fill, guard),
        Err(e) => {
            let label = e.label();
            let mut response =
                if ctx.endpoint.is_anthropic() { e.into_anthropic_response() } else { e.into_response() };
            finish(gw, &ctx, &Outcome::failed(response.status().as_u16(), label));
            routing_headers(response.headers_mut(), &ctx);
            rate_headers(response.headers_mut(), &ctx);
            response
        }
    }
}

/// The outcome of a request answered whole (from the upstream or the cache).
fn whole_outcome(response: &Response, whole: WholeResponse, cached: bool) -> Outcome {
    Outcome {
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
        cached,
    }
}

/// The streamed answer: the relay's frames, its first one already in, and at its end (done,
/// error or client gone) the cache fill, the breaker and the one report to the observers.
fn streamed(
    gw: &Arc<Gateway>,
    mut ctx: RequestCtx,
    relay: Box<Relay>,
    first: Bytes,
    fill: Option<StreamFill>,
    guard: Option<AttemptGuard>,
) -> Response {
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

fn finish(gw: &Gateway, ctx: &RequestCtx, outcome: &Outcome) {
    gw.in_flight.fetch_sub(1, Ordering::Relaxed);
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

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
