//! Upstreams: how an attempt's bytes reach a deployment and its answer comes back. Each provider
//! has one transport, chosen when the configuration is built: pooled HTTP, the in-process mock
//! (`mock`), or a pool of CLI sessions (`cli`). The request path calls `Upstreams::send` and
//! never asks which.
//!
//! The HTTP client is hyper-util's pooled client over rustls (the platform's trust roots, HTTP/2
//! by ALPN). Everything fixed per provider — the parsed URL of each path, the static headers and
//! the credential header — is built once, so a request costs a header-map clone and a pool
//! checkout. Upstream calls do not go through `HTTP(S)_PROXY`: the gateway is the proxy, and its
//! upstreams are addressed directly. Plain-HTTP upstreams get connections of their own, driven
//! by the task that reads the answer (`h1.rs`).

pub mod cli;
mod cloud;
pub(crate) mod h1;
pub mod mock;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyDataStream, Full};
use tokio::time::Instant;

use crate::api::RawObject;
use crate::config::{AuthStyle, Config, DeploymentSpec, Dialect, ProviderSpec};
use crate::ctx::{Endpoint, Principal, REQUEST_ID_HEADER};
use crate::error::GatewayError;
use crate::telemetry::trace::w3c::{TRACEPARENT, TRACESTATE, TraceParent};

pub use crate::stream::BodyStream;

/// What one request carries to its upstream besides the provider's own headers. The request id
/// and the trace context are kept as text and written straight into a plain-HTTP request: no
/// header map, no allocation.
#[derive(Default)]
pub struct Forward<'a> {
    /// `x-request-id` (visible ASCII, as the server admits it); none for the gateway's own calls.
    pub request_id: Option<&'a str>,
    /// Our `traceparent` (the attempt span as the upstream's parent) and the client's
    /// `tracestate` (printable ASCII), for a traced request.
    pub trace: Option<(TraceParent, Option<&'a str>)>,
    /// Client headers passed on unchanged (the trace context of an untraced request, Anthropic
    /// beta flags); empty, it has not allocated.
    pub client: HeaderMap,
}

impl Forward<'_> {
    /// The headers kept as text (the request id and our trace context), as name and value.
    fn each_text(&self, mut header: impl FnMut(&HeaderName, &[u8])) {
        if let Some(id) = self.request_id {
            header(&REQUEST_ID_HEADER, id.as_bytes());
        }
        if let Some((parent, state)) = &self.trace {
            header(&TRACEPARENT, parent.as_bytes());
            if let Some(state) = state {
                header(&TRACESTATE, state.as_bytes());
            }
        }
    }

    /// Each forwarded header, as name and value.
    fn each(&self, mut header: impl FnMut(&HeaderName, &[u8])) {
        self.each_text(&mut header);
        for (name, value) in &self.client {
            header(name, value.as_bytes());
        }
    }

    /// Sets the forwarded headers in `headers` (a provider's own, which they replace): the text
    /// ones become header values here; the client's already are, and are not checked again.
    fn onto(&self, headers: &mut HeaderMap) {
        self.each_text(|name, value| {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(name, value);
            }
        });
        for (name, value) in &self.client {
            headers.insert(name, value.clone());
        }
    }

    /// Whether a header of this name is forwarded (it replaces the provider's own).
    fn has(&self, name: &HeaderName) -> bool {
        let mut found = false;
        self.each(|forwarded, _| found |= forwarded == name);
        found
    }
}

/// One attempt's request as its adapter wrote it, for whichever transport serves the deployment.
pub struct Outgoing<'a> {
    /// The operation asked of the upstream (what the mock answers, what a CLI is prompted for).
    pub endpoint: Endpoint,
    /// The path below the provider's base URL.
    pub path: &'static str,
    /// The client's query string, for an upstream of the client's own dialect.
    pub query: Option<&'a str>,
    pub body: Bytes,
    pub forward: Forward<'a>,
    /// The caller: a CLI session serves one caller's partition and no other.
    pub principal: Option<&'a Principal>,
    pub stream: bool,
}

impl Outgoing<'_> {
    /// A non-stream request for `endpoint` at its usual path, forwarding nothing, for no caller
    /// (the gateway's own calls).
    pub fn new(endpoint: Endpoint, body: Bytes) -> Self {
        Self {
            endpoint,
            path: endpoint.upstream_path(),
            query: None,
            body,
            forward: Forward::default(),
            principal: None,
            stream: false,
        }
    }
}

/// An upstream's answer once its status and headers are in; the body is still on the wire.
pub struct UpstreamResponse {
    pub status: StatusCode,
    /// The upstream's headers; a plain-HTTP upstream's success keeps none (nothing reads
    /// them: the gateway frames its own answer).
    pub headers: HeaderMap,
    pub body: BodyStream,
}

/// Non-stream bodies larger than this are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub(crate) use crate::http::{HttpClient, chain, http_client};

/// One provider's pooled client and what every request to it carries.
struct ProviderClient {
    http: HttpClient,
    /// Content type, accept, the provider's configured headers and its credential.
    headers: HeaderMap,
    /// Parsed URLs by path (a handful per provider, filled on first use); origin-form for a
    /// plain-HTTP upstream.
    uris: RwLock<Vec<(&'static str, Uri)>>,
    /// A plain-HTTP upstream: our own connections to it.
    plain: Option<Plain>,
}

struct Plain {
    pool: Arc<h1::Pool>,
    /// `host:port` to connect to.
    addr: String,
    /// `host` and the provider's headers, each encoded as its `name: value\r\n` line.
    fixed: Vec<(HeaderName, Vec<u8>)>,
}

impl Plain {
    /// The whole HTTP/1.1 request to `uri` (origin form): the fixed headers (but those
    /// `forward` has its own value of), the forwarded ones, the body's length and the body.
    fn request(&self, uri: &Uri, forward: &Forward<'_>, body: &[u8]) -> Vec<u8> {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut out = Vec::with_capacity(512 + body.len());
        for part in ["POST ", target, " HTTP/1.1\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
        for (name, line) in &self.fixed {
            if !forward.has(name) {
                out.extend_from_slice(line);
            }
        }
        forward.each(|name, value| header_line(&mut out, name.as_str().as_bytes(), value));
        out.extend_from_slice(b"content-length: ");
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut length = body.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (length % 10) as u8;
            length /= 10;
            if length == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        out
    }
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for part in [name, b": ", value, b"\r\n"] {
        out.extend_from_slice(part);
    }
}

/// How one provider's requests travel.
enum Transport {
    /// Pooled HTTP: hyper, or our own plain-HTTP/1.1 connections.
    Http(Box<ProviderClient>),
    /// The built-in mock, answered in process.
    Mock,
    /// The provider's pool of CLI sessions.
    Cli(Arc<cli::pool::Pool>),
    /// A cloud platform's API: its paths, credentials and error answers (`cloud`).
    Cloud(Box<cloud::CloudClient>),
}

pub struct Upstreams {
    /// By provider name.
    transports: HashMap<String, Transport>,
    cli_pools: cli::Pools,
}

impl Upstreams {
    /// Every provider's transport. The CLI pools are built but not started (`Pool::supervise`).
    pub fn new(config: &Config) -> Result<Self, GatewayError> {
        let cli_pools = cli::Pools::new(config);
        let mut transports = HashMap::new();
        let providers = config.providers.values().chain(config.default_backend.iter());
        for provider in providers {
            if transports.contains_key(&provider.name) {
                continue;
            }
            // Validated for every provider, whatever its transport.
            let headers = provider_headers(provider)?;
            let transport = match provider.dialect {
                Dialect::OpenAi | Dialect::Anthropic => Transport::Http(Box::new(ProviderClient {
                    http: http_client(provider.timeouts.connect, false).map_err(|e| {
                        GatewayError::Internal(format!("building the HTTP client for {}: {e}", provider.name))
                    })?,
                    plain: plain(provider, &headers)?,
                    headers,
                    uris: RwLock::default(),
                })),
                Dialect::Gemini | Dialect::Bedrock | Dialect::Vertex => {
                    Transport::Cloud(Box::new(cloud::CloudClient::new(provider, headers)?))
                }
                Dialect::Mock => Transport::Mock,
                // A cli provider always has its spec, hence its pool.
                Dialect::Cli => match cli_pools.get(&provider.name) {
                    Some(pool) => Transport::Cli(pool.clone()),
                    None => continue,
                },
            };
            transports.insert(provider.name.clone(), transport);
        }
        Ok(Self { transports, cli_pools })
    }

    fn cloud_clients(&self) -> impl Iterator<Item = (&str, &cloud::CloudClient)> {
        self.transports.iter().filter_map(|(name, t)| match t {
            Transport::Cloud(client) => Some((name.as_str(), client.as_ref())),
            _ => None,
        })
    }

    /// Each cloud provider's credentials for `/health` (source, ok or failing and why), and
    /// whether any is failing.
    pub fn credential_reports(&self) -> (Vec<serde_json::Value>, bool) {
        cloud::credential_reports(self.cloud_clients())
    }

    /// The cloud credentials' metrics (`llm_gateway_credential_refresh_failures_total`).
    pub fn render_credential_metrics(&self, out: &mut String) {
        cloud::render_credential_metrics(out, self.cloud_clients());
    }

    /// The session pools of the `cli` providers, for their supervisors and `/sessions`.
    pub fn cli_pools(&self) -> &cli::Pools {
        &self.cli_pools
    }

    /// Sends one attempt's request by the deployment's transport and waits for the status and
    /// headers: at most the provider's first-byte timeout, and never past `deadline`.
    pub async fn send(
        &self,
        deployment: &DeploymentSpec,
        request: Outgoing<'_>,
        deadline: Instant,
    ) -> Result<UpstreamResponse, GatewayError> {
        match self.transport(&deployment.provider)? {
            Transport::Http(client) => {
                let Outgoing { path, query, body, forward, .. } = request;
                client.send(deployment, path, query, body, &forward, deadline).await
            }
            Transport::Cloud(client) => {
                client.send(&deployment.provider, &deployment.id, &deployment.model, request, deadline).await
            }
            Transport::Mock => {
                Ok(mock::respond(request.endpoint, &RawObject::from_slice(&request.body).unwrap_or_default()))
            }
            Transport::Cli(pool) => {
                let body = RawObject::from_slice(&request.body).unwrap_or_default();
                let first_byte_by = (Instant::now() + deployment.provider.timeouts.first_byte).min(deadline);
                let id = &deployment.id;
                cli::respond(pool, request.principal, request.endpoint, &body, id, request.stream, first_byte_by).await
            }
        }
    }

    /// An active health probe: `GET {base_url}{path}` with the provider's credentials. A
    /// transport in process is up while the gateway is.
    pub async fn probe(&self, provider: &ProviderSpec, path: &str, timeout: Duration) -> Result<(), String> {
        let client = match self.transport(provider).map_err(|e| e.to_string())? {
            Transport::Http(client) => client,
            Transport::Mock | Transport::Cli(_) | Transport::Cloud(_) => return Ok(()),
        };
        let uri: Uri = format!("{}{}", provider.base_url, path).parse().map_err(|e| format!("{e}"))?;
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        *request.headers_mut() = client.headers.clone();
        request.headers_mut().remove(http::header::CONTENT_TYPE);
        let response = tokio::time::timeout(timeout, client.http.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("{}: {}", kind(&e), chain(&e)))?;
        if response.status().is_server_error() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        Ok(())
    }

    fn transport(&self, provider: &ProviderSpec) -> Result<&Transport, GatewayError> {
        self.transports
            .get(&provider.name)
            .ok_or_else(|| GatewayError::Internal(format!("no transport for provider {}", provider.name)))
    }
}

impl ProviderClient {
    /// Sends `body` to the deployment over HTTP and waits for the status line and headers, at most
    /// the provider's first-byte timeout (and never past `deadline`).
    async fn send(
        &self,
        deployment: &DeploymentSpec,
        path: &'static str,
        query: Option<&str>,
        body: Bytes,
        forward: &Forward<'_>,
        deadline: Instant,
    ) -> Result<UpstreamResponse, GatewayError> {
        let provider: &Arc<ProviderSpec> = &deployment.provider;
        let client = self;
        let mut uri = client.uri(provider, path)?;
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            uri = with_client_query(&uri, query, provider)?;
        }
        let first_byte = (Instant::now() + provider.timeouts.first_byte).min(deadline);
        let started = Instant::now();
        let timed_out = || GatewayError::UpstreamTimeout {
            deployment: deployment.id.clone(),
            phase: "first byte",
            after_ms: started.elapsed().as_millis(),
        };
        if let Some(plain) = &client.plain {
            let request = plain.request(&uri, forward, &body);
            let sent = plain.pool.send(&plain.addr, provider.timeouts.connect, &request);
            let answer = tokio::time::timeout_at(first_byte, sent)
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| plain_error(&deployment.id, e))?;
            let id = deployment.id.clone();
            let body = answer.body.map(move |r| r.map_err(|e| read_failed(&id, &e))).boxed();
            return Ok(UpstreamResponse { status: answer.status, headers: answer.headers, body });
        }
        let mut headers = client.headers.clone();
        forward.onto(&mut headers);
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let response = tokio::time::timeout_at(first_byte, client.http.request(request))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| classify(&deployment.id, &e))?;
        let (parts, incoming) = response.into_parts();
        let id = deployment.id.clone();
        let body = BodyDataStream::new(incoming).map(move |r| r.map_err(|e| read_failed(&id, &e))).boxed();
        Ok(UpstreamResponse { status: parts.status, headers: parts.headers, body })
    }
}

impl ProviderClient {
    fn uri(&self, provider: &ProviderSpec, path: &'static str) -> Result<Uri, GatewayError> {
        let found = self.uris.read().unwrap_or_else(|p| p.into_inner()).iter().find(|(p, _)| *p == path).cloned();
        if let Some((_, uri)) = found {
            return Ok(uri);
        }
        let mut uri = upstream_uri(provider, path)?;
        if self.plain.is_some() {
            // Our own HTTP/1 connections send the origin form (`/v1/chat/completions?...`).
            uri = uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        }
        self.uris.write().unwrap_or_else(|p| p.into_inner()).push((path, uri.clone()));
        Ok(uri)
    }
}

/// The headers every request to `provider` carries.
fn provider_headers(provider: &ProviderSpec) -> Result<HeaderMap, GatewayError> {
    let invalid =
        |what: &str| GatewayError::Internal(format!("provider {}: {what} is not a valid header", provider.name));
    // Room to spare: each request's copy takes the request id, trace context and `host` without
    // growing its hash table.
    let mut headers = HeaderMap::with_capacity(16);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
    for (name, value) in &provider.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(name))?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid(name.as_str()))?;
        headers.insert(name, value);
    }
    if let Some(key) = &provider.api_key {
        let (name, text) = match &provider.auth {
            AuthStyle::Bearer => (http::header::AUTHORIZATION, format!("Bearer {}", key.expose())),
            AuthStyle::Header(name) => {
                (HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(name))?, key.expose().to_owned())
            }
            AuthStyle::None => return Ok(headers),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| invalid("the API key"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// `uri` with the client's query string appended; a parameter the provider sets itself (Azure's
/// `api-version`) keeps the provider's value.
fn with_client_query(uri: &Uri, query: &str, provider: &ProviderSpec) -> Result<Uri, GatewayError> {
    let own = |pair: &&str| {
        let key = pair.split('=').next().unwrap_or_default();
        !key.is_empty() && !provider.query.iter().any(|(k, _)| k == key)
    };
    let client: Vec<&str> = query.split('&').filter(own).collect();
    if client.is_empty() {
        return Ok(uri.clone());
    }
    let separator = if uri.query().is_some() { '&' } else { '?' };
    format!("{uri}{separator}{}", client.join("&"))
        .parse()
        .map_err(|_| GatewayError::bad_request("The request's query string is not valid.", None))
}

/// `{base_url}{path}`, with the provider's query parameters (Azure's `api-version`).
fn upstream_uri(provider: &ProviderSpec, path: &str) -> Result<Uri, GatewayError> {
    let text = format!("{}{}", provider.base_url, path);
    let bad =
        |e: &dyn std::fmt::Display| GatewayError::Internal(format!("provider {} URL {text:?}: {e}", provider.name));
    // Without query parameters, no bare `?` either.
    let url = if provider.query.is_empty() {
        reqwest::Url::parse(&text)
    } else {
        reqwest::Url::parse_with_params(&text, &provider.query)
    }
    .map_err(|e| bad(&e))?;
    url.as_str().parse::<Uri>().map_err(|e| bad(&e))
}

/// Our own connections for a plain-HTTP provider; `None` for TLS ones.
fn plain(provider: &ProviderSpec, headers: &HeaderMap) -> Result<Option<Plain>, GatewayError> {
    // Providers without a URL (the mock, the CLI) send nothing over HTTP.
    let Ok(uri) = provider.base_url.parse::<Uri>() else { return Ok(None) };
    if uri.scheme_str() != Some("http") {
        return Ok(None);
    }
    let Some(authority) = uri.authority() else { return Ok(None) };
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|e| GatewayError::Internal(format!("provider {} host: {e}", provider.name)))?;
    // `host:port`; an IPv6 host keeps its brackets (`[::1]:8000`).
    let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let mut fixed = vec![(http::header::HOST, host)];
    fixed.extend(headers.iter().map(|(name, value)| (name.clone(), value.clone())));
    let fixed = fixed
        .into_iter()
        .map(|(name, value)| {
            let mut line = Vec::new();
            header_line(&mut line, name.as_str().as_bytes(), value.as_bytes());
            (name, line)
        })
        .collect();
    Ok(Some(Plain { pool: Arc::default(), addr, fixed }))
}

/// A body that broke off after its status and headers.
fn read_failed(deployment: &str, e: &(dyn std::error::Error + 'static)) -> GatewayError {
    GatewayError::UpstreamProtocol {
        deployment: deployment.to_owned(),
        detail: format!("reading the response failed: {}", chain(e)),
    }
}

fn plain_error(deployment: &str, e: h1::SendError) -> GatewayError {
    match e {
        h1::SendError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            GatewayError::UpstreamTimeout { deployment: deployment.to_owned(), phase: "connect", after_ms: 0 }
        }
        h1::SendError::Connect(io) => GatewayError::UpstreamUnreachable {
            deployment: deployment.to_owned(),
            detail: format!("connection failed: {}", chain(&io)),
        },
        h1::SendError::Http(e) => GatewayError::UpstreamProtocol {
            deployment: deployment.to_owned(),
            detail: format!("request failed: {}", chain(&e)),
        },
    }
}

fn classify(deployment: &str, e: &hyper_util::client::legacy::Error) -> GatewayError {
    // The upstream URL is internal: clients see the deployment id, never the address.
    let detail = format!("{}: {}", kind(e), chain(e));
    if timed_out(e) {
        GatewayError::UpstreamTimeout { deployment: deployment.to_owned(), phase: "connect", after_ms: 0 }
    } else if e.is_connect() {
        GatewayError::UpstreamUnreachable { deployment: deployment.to_owned(), detail }
    } else {
        GatewayError::UpstreamProtocol { deployment: deployment.to_owned(), detail }
    }
}

fn kind(e: &hyper_util::client::legacy::Error) -> &'static str {
    if timed_out(e) {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = s.source();
    }
    false
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

#[cfg(test)]
mod tests;
