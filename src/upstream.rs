//! Upstream HTTP: one pooled client per provider (its connect timeout, its credentials), the
//! request with the first-byte timeout, and the body as a stream of `Bytes`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::config::{AuthStyle, Config, DeploymentSpec, ProviderSpec};
use crate::error::GatewayError;

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, GatewayError>> + Send>>;

/// An upstream's answer once its status and headers are in; the body is still on the wire.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

/// Non-stream bodies larger than this are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub struct Upstreams {
    clients: HashMap<String, reqwest::Client>,
    /// Parsed upstream URLs by (provider, path): parsing (with IDNA) on every request showed up
    /// at ~2% of the gateway's CPU under load.
    /// Keyed by the provider's address (providers live in `Arc`s for the config's lifetime).
    urls: std::sync::RwLock<HashMap<(usize, &'static str), reqwest::Url>>,
}

impl Upstreams {
    pub fn new(config: &Config) -> Result<Self, GatewayError> {
        let mut clients = HashMap::new();
        let providers = config.providers.values().chain(config.default_backend.iter());
        for provider in providers {
            if clients.contains_key(&provider.name) {
                continue;
            }
            let client = reqwest::Client::builder()
                .connect_timeout(provider.timeouts.connect)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| GatewayError::Internal(format!("building the HTTP client for {}: {e}", provider.name)))?;
            clients.insert(provider.name.clone(), client);
        }
        Ok(Self { clients, urls: Default::default() })
    }

    /// Sends `body` to the deployment and waits for the status line and headers, at most the
    /// provider's first-byte timeout (and never past `deadline`).
    pub async fn send(
        &self,
        deployment: &DeploymentSpec,
        path: &'static str,
        body: Bytes,
        forward_headers: &HeaderMap,
        deadline: Instant,
    ) -> Result<UpstreamResponse, GatewayError> {
        let provider: &Arc<ProviderSpec> = &deployment.provider;
        let client = self
            .clients
            .get(&provider.name)
            .ok_or_else(|| GatewayError::Internal(format!("no HTTP client for provider {}", provider.name)))?;
        let url = self.url(provider, path)?;
        let mut request = client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream");
        for (name, value) in &provider.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        for (name, value) in forward_headers {
            request = request.header(name, value);
        }
        if let Some(key) = &provider.api_key {
            match &provider.auth {
                AuthStyle::Bearer => request = request.bearer_auth(key.expose()),
                AuthStyle::Header(name) => {
                    let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
                        GatewayError::Internal(format!("provider {} key is not a valid header value", provider.name))
                    })?;
                    value.set_sensitive(true);
                    request = request.header(name.as_str(), value);
                }
                AuthStyle::None => {}
            }
        }
        let first_byte = (Instant::now() + provider.timeouts.first_byte).min(deadline);
        let started = Instant::now();
        let response = tokio::time::timeout_at(first_byte, request.body(body).send())
            .await
            .map_err(|_| GatewayError::UpstreamTimeout {
                deployment: deployment.id.clone(),
                phase: "first byte",
                after_ms: started.elapsed().as_millis(),
            })?
            .map_err(|e| classify(&deployment.id, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let id = deployment.id.clone();
        let body = response.bytes_stream().map(move |r| r.map_err(|e| classify(&id, &e))).boxed();
        Ok(UpstreamResponse { status, headers, body })
    }
}

impl Upstreams {
    fn url(&self, provider: &ProviderSpec, path: &'static str) -> Result<reqwest::Url, GatewayError> {
        let key = (std::ptr::from_ref(provider) as usize, path);
        if let Some(url) = self.urls.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(url.clone());
        }
        let text = format!("{}{}", provider.base_url, path);
        // Without query parameters, no bare `?` either.
        let parsed = if provider.query.is_empty() {
            reqwest::Url::parse(&text)
        } else {
            reqwest::Url::parse_with_params(&text, &provider.query)
        };
        let url =
            parsed.map_err(|e| GatewayError::Internal(format!("provider {} URL {text:?}: {e}", provider.name)))?;
        self.urls.write().unwrap_or_else(|p| p.into_inner()).insert(key, url.clone());
        Ok(url)
    }

    /// An active health probe: `GET {base_url}{path}` with the provider's credentials.
    pub async fn probe(&self, provider: &ProviderSpec, path: &str, timeout: Duration) -> Result<(), String> {
        let client = self.clients.get(&provider.name).ok_or("no client")?;
        let mut request = client.get(format!("{}{}", provider.base_url, path)).timeout(timeout);
        if let Some(key) = &provider.api_key {
            request = match &provider.auth {
                AuthStyle::Bearer => request.bearer_auth(key.expose()),
                AuthStyle::Header(name) => request.header(name.as_str(), key.expose()),
                AuthStyle::None => request,
            };
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status().is_server_error() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        Ok(())
    }
}

fn classify(deployment: &str, e: &reqwest::Error) -> GatewayError {
    // The upstream URL is internal: clients see the deployment id, never the address.
    let mut detail = reqwest_kind(e).to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.contains("://") {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    if e.is_timeout() {
        GatewayError::UpstreamTimeout { deployment: deployment.to_owned(), phase: "connect", after_ms: 0 }
    } else if e.is_connect() || e.is_request() {
        GatewayError::UpstreamUnreachable { deployment: deployment.to_owned(), detail }
    } else {
        GatewayError::UpstreamProtocol { deployment: deployment.to_owned(), detail }
    }
}

fn reqwest_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    }
}

/// Reads a whole (non-stream) body, bounded in size and by the deadline and the idle timeout.
pub async fn read_body(
    mut body: BodyStream,
    deployment: &str,
    idle: Duration,
    deadline: Instant,
) -> Result<Bytes, GatewayError> {
    let mut out = bytes::BytesMut::new();
    let started = Instant::now();
    loop {
        let next = (Instant::now() + idle).min(deadline);
        match tokio::time::timeout_at(next, body.next()).await {
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    deployment: deployment.to_owned(),
                    phase: if Instant::now() >= deadline { "total" } else { "idle" },
                    after_ms: started.elapsed().as_millis(),
                });
            }
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(chunk)) => {
                let chunk = chunk?;
                if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(GatewayError::UpstreamProtocol {
                        deployment: deployment.to_owned(),
                        detail: format!("response body exceeds {MAX_RESPONSE_BYTES} bytes"),
                    });
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}
