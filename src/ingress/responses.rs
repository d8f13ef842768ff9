//! The stored responses' routes: `GET` (also `?stream=true`, replayed as events) and
//! `DELETE /v1/responses/{id}`,
//! `GET /v1/responses/{id}/input_items`, and `POST /v1/responses/input_tokens` (a local
//! estimate, as `/v1/messages/count_tokens`). Errors in OpenAI's shape; a response of another
//! team is not found.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Ingress, read_body};
use crate::adapter::responses::replay;
use crate::api::{ErrorBody, RawObject};
use crate::ctx::Principal;
use crate::error::GatewayError;
use crate::pipeline::request::estimate_responses_request;
use crate::responses_store::{Stored, page};

fn not_found(id: &str) -> Response {
    let body = ErrorBody::new(format!("Response with id '{id}' not found."), "invalid_request_error", None, None);
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn bad_request(message: String, param: &str) -> Response {
    GatewayError::bad_request(message, Some(param)).into_response()
}

/// The caller and its stored response `id`, or the answer that ends the request.
async fn stored(ingress: &Ingress, headers: &HeaderMap, id: &str) -> Result<(Principal, Arc<Stored>), Response> {
    let gw = &ingress.gateway;
    let principal = gw.auth.authenticate(headers).await.map_err(IntoResponse::into_response)?;
    match gw.responses.get(&principal.team, id).await {
        Ok(Some(stored)) => Ok((principal, stored)),
        Ok(None) => Err(not_found(id)),
        Err(e) => Err(GatewayError::StoreUnavailable(e.to_string()).into_response()),
    }
}

/// The stored response: the object, or with `stream=true` the events that streamed it
/// (those numbered after `starting_after` only).
pub async fn get_response(
    State(ingress): State<Arc<Ingress>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = ListQuery::parse(query.as_deref());
    let starting_after = match query.starting_after.as_deref().map(str::parse::<u64>).transpose() {
        Ok(after) => after,
        Err(_) => return bad_request("'starting_after' must be a non-negative integer.".into(), "starting_after"),
    };
    let stream = match query.stream.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return bad_request("'stream' must be true or false.".into(), "stream"),
    };
    let stored = match stored(&ingress, &headers, &id).await {
        Ok((_, stored)) => stored,
        Err(response) => return response,
    };
    if !stream {
        return axum::Json(&stored.response).into_response();
    }
    let frames = replay::frames(&stored.response, starting_after);
    let body = Body::from_stream(futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>)));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub async fn delete_response(
    State(ingress): State<Arc<Ingress>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let gw = &ingress.gateway;
    let principal = match gw.auth.authenticate(&headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match gw.responses.delete(&principal.team, &id).await {
        Ok(true) => axum::Json(json!({"id": id, "object": "response", "deleted": true})).into_response(),
        Ok(false) => not_found(&id),
        Err(e) => GatewayError::StoreUnavailable(e.to_string()).into_response(),
    }
}

/// `limit`, `after`, `order`, `stream` and `starting_after` from the query string (ids, numbers and words: nothing to
/// percent-decode).
#[derive(Default)]
struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    order: Option<String>,
    stream: Option<String>,
    starting_after: Option<String>,
}

impl ListQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut list = Self::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = Some(value.to_owned());
            match key {
                "limit" => list.limit = value,
                "after" => list.after = value,
                "order" => list.order = value,
                "stream" => list.stream = value,
                "starting_after" => list.starting_after = value,
                _ => {}
            }
        }
        list
    }
}

pub async fn input_items(
    State(ingress): State<Arc<Ingress>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = ListQuery::parse(query.as_deref());
    let stored = match stored(&ingress, &headers, &id).await {
        Ok((_, stored)) => stored,
        Err(response) => return response,
    };
    let limit = match query.limit.as_deref().map(str::parse::<usize>).transpose() {
        Ok(limit) => limit,
        Err(_) => return bad_request("'limit' must be an integer between 1 and 100.".into(), "limit"),
    };
    match page(&stored.input, limit, query.after.as_deref(), query.order.as_deref()) {
        Ok(list) => axum::Json(list).into_response(),
        Err(message) => {
            let param = if message.contains("'limit'") {
                "limit"
            } else if message.contains("'order'") {
                "order"
            } else {
                "after"
            };
            bad_request(message, param)
        }
    }
}

pub async fn input_tokens(State(ingress): State<Arc<Ingress>>, headers: HeaderMap, body: Body) -> Response {
    let gw = &ingress.gateway;
    let counted = async {
        let principal = gw.auth.authenticate(&headers).await?;
        let bytes = read_body(&ingress, &principal, body, &headers).await?;
        let body = RawObject::from_slice(&bytes)
            .map_err(|e| GatewayError::bad_request(format!("The request body is not a JSON object: {e}"), None))?;
        if let Ok(Some(model)) = body.parse::<String>("model") {
            if !gw.router.knows(&model) {
                return Err(GatewayError::ModelNotFound(format!("The model `{model}` does not exist.")));
            }
            if !principal.allows(&model) {
                let team = &principal.team;
                return Err(GatewayError::ModelNotAllowed(format!(
                    "Team `{team}` is not allowed to use the model `{model}`."
                )));
            }
        }
        estimate_responses_request(&body)
    };
    match counted.await {
        Ok(n) => axum::Json(json!({"object": "response.input_tokens", "input_tokens": n})).into_response(),
        Err(e) => e.into_response(),
    }
}
