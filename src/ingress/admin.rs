//! The admin API, behind the admin credential (`admin.key_env`): `POST /admin/keys` makes a key
//! and is the only answer that ever holds its plaintext; `GET /admin/keys`, `GET
//! /admin/keys/{id}` and `DELETE /admin/keys/{id}` list, show and revoke by the key's id.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::Ingress;
use crate::api::ErrorBody;
use crate::auth::keys::{KeyStore, KeyStoreError, NewKey, StoredKey};

const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("The admin API is not enabled (configure admin.key_env).")]
    Disabled,
    #[error("Missing or incorrect admin key.")]
    Unauthorized,
    #[error("No key has that id.")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("The key store cannot be reached right now: {0}")]
    Unavailable(String),
}

impl From<KeyStoreError> for AdminError {
    fn from(e: KeyStoreError) -> Self {
        match e {
            KeyStoreError::Invalid(m) => Self::BadRequest(m),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind, code) = match &self {
            Self::Disabled => (StatusCode::NOT_FOUND, "invalid_request_error", "admin_disabled"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid_admin_key"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "key_not_found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_key_request"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error", "store_unavailable"),
        };
        (status, axum::Json(ErrorBody::new(self.to_string(), kind, None, Some(code)))).into_response()
    }
}

fn store<'a>(ingress: &'a Ingress, headers: &HeaderMap) -> Result<&'a Arc<KeyStore>, AdminError> {
    let auth = &ingress.gateway.auth;
    match auth.is_admin(headers) {
        None => Err(AdminError::Disabled),
        Some(false) => Err(AdminError::Unauthorized),
        Some(true) => auth.keys().ok_or(AdminError::Disabled),
    }
}

/// A stored key as the admin API shows it: never the key, never its hash.
fn view(key: &StoredKey) -> serde_json::Value {
    let mut v = serde_json::to_value(key).unwrap_or_default();
    if let Some(at) = key.expires_at {
        v["expires"] = crate::clock::format_timestamp(at).into();
    }
    v["created"] = crate::clock::format_timestamp(key.created_at).into();
    v
}

pub async fn create_key(State(ingress): State<Arc<Ingress>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let store = store(&ingress, &headers)?;
        let bytes = http_body_util::Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| AdminError::BadRequest(format!("The body must be JSON of at most {MAX_BODY} bytes.")))?
            .to_bytes();
        let new: NewKey =
            serde_json::from_slice(&bytes).map_err(|e| AdminError::BadRequest(format!("Invalid key request: {e}")))?;
        let (plaintext, record) = store.create(new).await?;
        tracing::info!(target: "llm_gateway::admin", action = "create_key", key_id = %record.id, team = %record.team, "admin");
        let mut answer = view(&record);
        answer["key"] = plaintext.into();
        Ok::<_, AdminError>((StatusCode::CREATED, axum::Json(answer)))
    };
    result.await.into_response()
}

pub async fn list_keys(State(ingress): State<Arc<Ingress>>, headers: HeaderMap) -> Response {
    let result = async {
        let keys = store(&ingress, &headers)?.list().await?;
        let data: Vec<serde_json::Value> = keys.iter().map(view).collect();
        Ok::<_, AdminError>(axum::Json(serde_json::json!({"object": "list", "data": data})))
    };
    result.await.into_response()
}

pub async fn get_key(State(ingress): State<Arc<Ingress>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let result = async {
        let key = store(&ingress, &headers)?.get(&id).await?.ok_or_else(|| AdminError::NotFound(id.clone()))?;
        Ok::<_, AdminError>(axum::Json(view(&key)))
    };
    result.await.into_response()
}

pub async fn revoke_key(State(ingress): State<Arc<Ingress>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let result = async {
        if !store(&ingress, &headers)?.revoke(&id).await? {
            return Err(AdminError::NotFound(id.clone()));
        }
        tracing::info!(target: "llm_gateway::admin", action = "revoke_key", key_id = %id, "admin");
        Ok(axum::Json(serde_json::json!({"id": id, "revoked": true})))
    };
    result.await.into_response()
}
