//! Google OAuth2 access tokens for Vertex AI, from application default credentials: the
//! service account JSON named by `GOOGLE_APPLICATION_CREDENTIALS` (an RS256-signed JWT
//! assertion exchanged at its `token_uri`), else the metadata server (GKE Workload Identity;
//! `GCE_METADATA_HOST` honoured). A token is cached and fetched again before it expires: when
//! less than five minutes (or half its lifetime, for short ones) remain.
//!
//! The assertion is signed with `aws-lc-rs` (already the TLS and JWT backend of the tree). Why
//! not `google-cloud-auth`: resolved against this tree (`cargo tree`, 1.19), it adds 14 crates
//! (`google-cloud-gax`, `-rpc`, `-wkt`, `jiff`, `serde_with`, `futures`, `tokio-stream`, …) and
//! fetches tokens with its own client, outside the gateway's timeouts and credential health;
//! the two exchanges (token URI, metadata server) are a JSON answer each, read by serde.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::super::HttpClient;
use super::aws::credentials_error;
use super::health::CredentialHealth;
use crate::error::GatewayError;

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

enum Source {
    Key(ServiceAccount, RsaKeyPair),
    Metadata(String),
    Broken(String),
}

pub(in crate::upstream) struct TokenSource {
    http: HttpClient,
    source: Source,
    /// The current token (`Bearer …`), when to fetch the next, and when it expires.
    cached: Mutex<Option<(HeaderValue, Instant, Instant)>>,
    pub(super) health: CredentialHealth,
}

impl TokenSource {
    pub(in crate::upstream) fn from_env(http: HttpClient) -> Self {
        let source = match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            Ok(path) if !path.is_empty() => service_account(&path).unwrap_or_else(Source::Broken),
            _ => {
                let host = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
                Source::Metadata(format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={SCOPE}"
                ))
            }
        };
        let health = match &source {
            Source::Key(..) => CredentialHealth::new("service account"),
            Source::Metadata(_) => CredentialHealth::new("metadata server"),
            Source::Broken(e) => CredentialHealth::broken("service account", e),
        };
        Self { http, source, cached: Mutex::new(None), health }
    }

    /// `Bearer <access token>`, fetched when none is cached or it is about to expire. When a
    /// refresh fails while the current token has not expired, it serves on (the failure is
    /// reported, `health`).
    pub(in crate::upstream) async fn token(&self, deployment: &str) -> Result<HeaderValue, GatewayError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some((token, refresh_at, _)) = cached.as_ref()
            && now < *refresh_at
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = match self.fetch().await {
            Ok(fetched) => fetched,
            Err(e) => {
                self.health.failed(&e);
                return match cached.as_ref() {
                    Some((token, _, expires)) if now + Duration::from_secs(5) < *expires => Ok(token.clone()),
                    _ => Err(credentials_error(deployment, &e)),
                };
            }
        };
        self.health.refreshed();
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| credentials_error(deployment, "the access token is not a valid header"))?;
        value.set_sensitive(true);
        let margin = Duration::from_secs(300).min(lifetime / 2);
        *cached = Some((value.clone(), now + lifetime.saturating_sub(margin), now + lifetime));
        Ok(value)
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let request = match &self.source {
            Source::Broken(e) => return Err(e.clone()),
            Source::Key(account, key) => {
                let token_uri = account.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
                let assertion = assertion(account, key, token_uri)?;
                let form =
                    format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}");
                http::Request::post(token_uri)
                    .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
            }
            Source::Metadata(url) => {
                http::Request::get(url.as_str()).header("metadata-flavor", "Google").body(Full::new(Bytes::new()))
            }
        }
        .map_err(|e| format!("the token request: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request))
            .await
            .map_err(|_| "the token endpoint did not answer within 30s".to_owned())?
            .map_err(|e| format!("the token endpoint: {}", super::super::chain(&e)))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("the token answer: {e}"))?.to_bytes();
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).chars().take(500).collect();
            return Err(format!("the token endpoint answered HTTP {}: {text}", status.as_u16()));
        }
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| format!("the token answer: {e}"))?;
        Ok((token.access_token, Duration::from_secs(token.expires_in.unwrap_or(3600).max(1))))
    }
}

fn service_account(path: &str) -> Result<Source, String> {
    let text = std::fs::read(path).map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS={path}: {e}"))?;
    let account: ServiceAccount =
        serde_json::from_slice(&text).map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS={path}: {e}"))?;
    let pem: String = account.private_key.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().concat();
    let der = STANDARD.decode(pem.trim()).map_err(|e| format!("{path}: private_key: {e}"))?;
    let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("{path}: private_key: {e}"))?;
    Ok(Source::Key(account, key))
}

/// The signed JWT a service account exchanges for an access token.
fn assertion(account: &ServiceAccount, key: &RsaKeyPair, audience: &str) -> Result<String, String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = &account.private_key_id {
        header["kid"] = kid.as_str().into();
    }
    let claims = serde_json::json!({
        "iss": account.client_email, "scope": SCOPE, "aud": audience, "iat": now, "exp": now + 3600,
    });
    let encode = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let signing_input = format!("{}.{}", encode(&header), encode(&claims));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| "signing the token assertion failed".to_owned())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}
