//! Ingress: the HTTP side of the endpoints. A proxied endpoint (OpenAI's chat, completions,
//! embeddings; Anthropic's `/v1/messages`) hands its request to the pipeline, with its body
//! unread: the pipeline reads it here (`read_body`) once the caller is known. The other
//! handlers answer locally (models, token counts, quota, the admin API). Errors take the shape
//! of the client's dialect.

pub mod admin;
pub mod quota;
pub mod responses;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::api::ErrorBody;
use crate::api::openai::{ModelEntry, ModelList};
use crate::ctx::{Endpoint, Principal};
use crate::error::GatewayError;
use crate::pipeline::{self, Gateway, UnreadBody};

// The request parser is the pipeline's; its old path stays for the tests that use it.
pub use crate::pipeline::request;

/// What the handlers need, built once by `app`: the pipeline's stages and how bodies are read.
pub struct Ingress {
    pub gateway: Arc<Gateway>,
    pub max_body_bytes: usize,
    pub body_read_timeout: std::time::Duration,
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

/// A proxied request, through the pipeline; its body is read when the pipeline asks for it.
pub(crate) async fn handle(
    ingress: Arc<Ingress>,
    id: Arc<str>,
    endpoint: Endpoint,
    query: Option<Box<str>>,
    peer: Option<std::net::IpAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = Unread { ingress: &ingress, body };
    let client = crate::ctx::Client::of(peer, &headers);
    pipeline::handle(&ingress.gateway, id, endpoint, query, client, headers, body).await
}

/// A proxied request's body, read through `read_body` when the pipeline asks.
struct Unread<'a> {
    ingress: &'a Ingress,
    body: Body,
}

impl UnreadBody for Unread<'_> {
    async fn read(self, principal: &Principal, headers: &HeaderMap) -> Result<Bytes, GatewayError> {
        read_body(self.ingress, principal, self.body, headers).await
    }
}

/// Anthropic's `POST /v1/messages/count_tokens`, answered locally with an estimate (about
/// four characters a token) for a model the caller may use.
pub async fn count_tokens(State(ingress): State<Arc<Ingress>>, headers: HeaderMap, body: Body) -> Response {
    let gw = &ingress.gateway;
    let counted = async {
        let principal = gw.auth.authenticate(&headers).await?;
        let bytes = read_body(&ingress, &principal, body, &headers).await?;
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

pub async fn list_models(State(ingress): State<Arc<Ingress>>, headers: HeaderMap) -> Response {
    let gw = &ingress.gateway;
    let principal = match gw.auth.authenticate(&headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let data = gw
        .router
        .visible_models(&principal)
        .map(|id| ModelEntry { id, object: "model", created: ingress.started_unix, owned_by: "llm-gateway" })
        .collect();
    let mut response = axum::Json(ModelList { object: "list", data }).into_response();
    // The caller's limits as they stand; a listing takes nothing from them (see `peek_headers`).
    gw.limits.peek_headers(&principal, None).await.apply(response.headers_mut());
    response
}

pub async fn get_model(State(ingress): State<Arc<Ingress>>, Path(model): Path<String>, headers: HeaderMap) -> Response {
    let gw = &ingress.gateway;
    let principal = match gw.auth.authenticate(&headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !(gw.router.knows(&model) && principal.allows(&model)) {
        return GatewayError::ModelNotFound(format!("The model `{model}` does not exist.")).into_response();
    }
    let mut response =
        axum::Json(ModelEntry { id: &model, object: "model", created: ingress.started_unix, owned_by: "llm-gateway" })
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

/// The request body of an authenticated caller: read within the body read timeout, in one of
/// the caller's places at the body gate, and bounded in size.
pub(crate) async fn read_body(
    ingress: &Ingress,
    principal: &Principal,
    body: Body,
    headers: &HeaderMap,
) -> Result<Bytes, GatewayError> {
    let _reading = ingress.body_gate.enter(principal)?;
    tokio::time::timeout(ingress.body_read_timeout, read_limited(body, headers, ingress.max_body_bytes))
        .await
        .map_err(|_| GatewayError::RequestTimeout { after_ms: ingress.body_read_timeout.as_millis() })?
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
