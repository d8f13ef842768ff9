//! `GET /quota` (the original service's endpoint): the caller's limits, what it has used and
//! what remains, per scope (its key or token subject, its team, the team's per-model limits).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::Ingress;

pub async fn quota(State(ingress): State<Arc<Ingress>>, headers: HeaderMap) -> Response {
    let gw = &ingress.gateway;
    match gw.auth.authenticate(&headers).await {
        Ok(principal) => axum::Json(gw.limits.quota(&principal).await).into_response(),
        Err(e) => e.into_response(),
    }
}
