//! The cloud platforms' transport: the Gemini API (an `x-goog-api-key`), Vertex AI (an OAuth2
//! access token from a service account, `google`) and Bedrock (SigV4 by `aws-sigv4`, or a
//! Bedrock API key as a bearer token, `aws`). Each request's path is built here from the
//! deployment's model; each platform's error answer becomes the client's error with the status
//! that says whose fault it is (the gateway's own credentials refused: 502); Bedrock's
//! `application/vnd.amazon.eventstream` answer is decoded (CRCs checked) into the events the
//! stream translation reads. Embeddings take several calls on some platforms (`embed`); the
//! credentials' refresh outcomes are kept for `/health` and `/metrics` (`health`).

mod aws;
mod creds;
mod embed;
mod google;
mod health;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body_util::{BodyDataStream, Full};
use tokio::time::Instant;

use super::{BodyStream, HttpClient, Outgoing, UpstreamResponse, http_client, read_body};
use crate::adapter::bedrock::eventstream::EventStreamDecoder;
use crate::adapter::{bedrock, gemini};
use crate::config::{Dialect, ProviderSpec};
use crate::ctx::Endpoint;
use crate::error::GatewayError;

/// Error bodies read from a failing platform are cut here.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub(super) struct CloudClient {
    http: HttpClient,
    /// Content type, accept, the configured headers and a static key (Gemini's, Bedrock's).
    headers: HeaderMap,
    auth: Auth,
}

enum Auth {
    /// The key is among the headers (or there is none).
    Static,
    /// Bedrock without an API key: each request signed.
    SigV4(Box<aws::Signer>),
    /// Vertex AI: a cached OAuth2 access token.
    Google(Box<google::TokenSource>),
}

impl CloudClient {
    pub(super) fn new(provider: &ProviderSpec, headers: HeaderMap) -> Result<Self, GatewayError> {
        let http = http_client(provider.timeouts.connect, false)
            .map_err(|e| GatewayError::Internal(format!("building the HTTP client for {}: {e}", provider.name)))?;
        let auth = match provider.dialect {
            Dialect::Bedrock if provider.api_key.is_none() => Auth::SigV4(Box::new(aws::Signer::from_env(
                provider.cloud.region.clone().unwrap_or_default(),
                http.clone(),
            ))),
            Dialect::Vertex => Auth::Google(Box::new(google::TokenSource::from_env(http.clone()))),
            _ => Auth::Static,
        };
        Ok(Self { http, headers, auth })
    }

    /// Where the credentials come from and whether they can be fetched; none for a static key.
    fn credentials(&self) -> Option<&health::CredentialHealth> {
        match &self.auth {
            Auth::Static => None,
            Auth::SigV4(signer) => Some(&signer.credentials.health),
            Auth::Google(tokens) => Some(&tokens.health),
        }
    }

    /// Sends one attempt and waits for the status and headers; an error answer is read and
    /// classified here.
    pub(super) async fn send(
        &self,
        provider: &ProviderSpec,
        deployment: &str,
        model: &str,
        request: Outgoing<'_>,
        deadline: Instant,
    ) -> Result<UpstreamResponse, GatewayError> {
        if request.endpoint == Endpoint::Embeddings {
            return embed::send(self, provider, deployment, model, &request, deadline).await;
        }
        let stream = request.stream;
        let invoke = provider.dialect == Dialect::Bedrock && provider.cloud.bedrock_api.invokes(model);
        let path = match provider.dialect {
            Dialect::Bedrock => bedrock::path(model, stream, invoke),
            Dialect::Vertex => {
                let project = provider.cloud.project.as_deref().unwrap_or_default();
                let location = provider.cloud.location.as_deref().unwrap_or_default();
                if crate::adapter::cloud::is_vertex_claude(provider.dialect, model) {
                    let method = if stream { "streamRawPredict" } else { "rawPredict" };
                    format!("/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:{method}")
                } else {
                    gemini::vertex_path(project, location, model, stream)
                }
            }
            _ => gemini::gemini_api_path(model, stream),
        };
        let body = if invoke {
            let betas = request.forward.client.get_all("anthropic-beta").iter().filter_map(|v| v.to_str().ok());
            let body = crate::adapter::cloud::with_anthropic_beta(&request.body, betas)
                .map_err(|e| GatewayError::Internal(format!("the InvokeModel body for {deployment}: {e}")))?;
            Bytes::from(body)
        } else {
            request.body.clone()
        };
        let call = Call { provider, deployment, path: &path, body, stream, deadline };
        let (status, headers, body) = self.post(call, &request).await?;
        let body = if provider.dialect == Dialect::Bedrock && stream {
            event_stream(body, provider.max_event_bytes, deployment.to_owned(), invoke)
        } else {
            body
        };
        Ok(UpstreamResponse { status, headers, body })
    }

    /// One POST to the platform, signed or with its token: the status, headers and body of a
    /// success; an error answer read and classified.
    async fn post(
        &self,
        call: Call<'_>,
        request: &Outgoing<'_>,
    ) -> Result<(http::StatusCode, HeaderMap, BodyStream), GatewayError> {
        let Call { provider, deployment, path, body, stream, deadline } = call;
        let uri: Uri = format!("{}{path}", provider.base_url)
            .parse()
            .map_err(|e| GatewayError::Internal(format!("provider {} URL {path:?}: {e}", provider.name)))?;
        let mut headers = self.headers.clone();
        request.forward.onto(&mut headers);
        if provider.dialect == Dialect::Bedrock {
            // Bedrock reads Claude's betas from the body (`anthropic_beta`), its version too.
            headers.remove("anthropic-beta");
            headers.remove("anthropic-version");
            let accept = if stream { "application/vnd.amazon.eventstream" } else { "application/json" };
            headers.insert(http::header::ACCEPT, HeaderValue::from_static(accept));
        }
        let mut http_request = http::Request::new(Full::new(body.clone()));
        *http_request.method_mut() = Method::POST;
        *http_request.uri_mut() = uri;
        *http_request.headers_mut() = headers;
        match &self.auth {
            Auth::Static => {}
            Auth::SigV4(signer) => signer.sign(&mut http_request, &body, deployment).await?,
            Auth::Google(tokens) => {
                let token = tokens.token(deployment).await?;
                http_request.headers_mut().insert(http::header::AUTHORIZATION, token);
            }
        }
        let first_byte = (Instant::now() + provider.timeouts.first_byte).min(deadline);
        let started = Instant::now();
        let response = tokio::time::timeout_at(first_byte, self.http.request(http_request))
            .await
            .map_err(|_| GatewayError::UpstreamTimeout {
                deployment: deployment.to_owned(),
                phase: "first byte",
                after_ms: started.elapsed().as_millis(),
            })?
            .map_err(|e| super::classify(deployment, &e))?;
        let (parts, incoming) = response.into_parts();
        let id = deployment.to_owned();
        let body: BodyStream =
            BodyDataStream::new(incoming).map(move |r| r.map_err(|e| super::read_failed(&id, &e))).boxed();
        if !parts.status.is_success() {
            return Err(error_answer(provider, deployment, parts.status, &parts.headers, body, deadline).await);
        }
        Ok((parts.status, parts.headers, body))
    }
}

/// One request to a platform.
struct Call<'a> {
    provider: &'a ProviderSpec,
    deployment: &'a str,
    /// Below the provider's base URL.
    path: &'a str,
    body: Bytes,
    stream: bool,
    deadline: Instant,
}

/// `/health`'s view of each provider's credentials, by name; whether any is failing.
pub(super) fn credential_reports<'a>(
    clients: impl Iterator<Item = (&'a str, &'a CloudClient)>,
) -> (Vec<serde_json::Value>, bool) {
    let mut failing = false;
    let mut reports: Vec<serde_json::Value> = clients
        .filter_map(|(name, client)| client.credentials().map(|h| (name, h)))
        .map(|(name, health)| {
            failing |= health.is_failing();
            health.report(name)
        })
        .collect();
    reports.sort_by(|a, b| a["provider"].as_str().cmp(&b["provider"].as_str()));
    (reports, failing)
}

/// `llm_gateway_credential_refresh_failures_total{provider}`.
pub(super) fn render_credential_metrics<'a>(
    out: &mut String,
    clients: impl Iterator<Item = (&'a str, &'a CloudClient)>,
) {
    health::render(out, clients.filter_map(|(name, client)| client.credentials().map(|h| (name, h))));
}

/// A platform's error answer as the client's error.
async fn error_answer(
    provider: &ProviderSpec,
    deployment: &str,
    status: http::StatusCode,
    headers: &HeaderMap,
    body: BodyStream,
    deadline: Instant,
) -> GatewayError {
    let retry_after = headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = match read_body(body, deployment, provider.timeouts.idle.min(Duration::from_secs(30)), deadline).await {
        Ok(b) => b.slice(..b.len().min(MAX_ERROR_BODY)),
        Err(_) => Bytes::new(),
    };
    let (status, body) = if provider.dialect == Dialect::Bedrock {
        let kind = headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok());
        let classified = bedrock::error::classify(status.as_u16(), kind, &body);
        (classified.status, classified.body)
    } else {
        let mut error = gemini::upstream_error(status.as_u16(), &body);
        if error.error.kind == "authentication_error" || matches!(status.as_u16(), 401 | 403) {
            // The gateway's key or token was refused: not the client's to fix.
            let platform = if provider.dialect == Dialect::Vertex { "Vertex AI" } else { "The Gemini API" };
            error.error.message = format!("{platform} refused the gateway's credentials: {}", error.error.message);
            error.error.kind = "server_error".into();
            (502, error)
        } else {
            (status.as_u16(), error)
        }
    };
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    GatewayError::UpstreamStatus { status, body, retry_after }
}

/// Bedrock's event stream as SSE events (`event: <type>`, `data: <JSON payload>`), for the
/// stream translation; a corrupt frame (a CRC that does not match) ends it with an error, after
/// the whole messages before it. InvokeModel's (`invoke`) are the Messages events its chunks
/// carry (`bedrock::invoke`).
fn event_stream(body: BodyStream, max_event_bytes: usize, deployment: String, invoke: bool) -> BodyStream {
    struct State {
        body: BodyStream,
        decoder: EventStreamDecoder,
        deployment: String,
        /// The error to report once the events before it are out.
        failed: Option<GatewayError>,
    }
    let corrupt = |deployment: &str, e: &dyn std::fmt::Display| GatewayError::UpstreamProtocol {
        deployment: deployment.to_owned(),
        detail: format!("Bedrock's event stream is corrupt: {e}"),
    };
    let state = State { body, decoder: EventStreamDecoder::new(max_event_bytes), deployment, failed: None };
    futures_util::stream::unfold(Some(state), move |state| async move {
        let mut state = state?;
        if let Some(e) = state.failed.take() {
            return Some((Err(e), None));
        }
        let mut out = Vec::new();
        loop {
            match state.decoder.next_event() {
                Ok(Some(event)) => {
                    let name = event.event.as_deref().unwrap_or_default();
                    if !invoke {
                        sse_frame(&mut out, name, &event.data);
                        continue;
                    }
                    match bedrock::invoke::anthropic_event(name, &event.data) {
                        Ok(Some((name, data))) => sse_frame(&mut out, &name, &data),
                        Ok(None) => {}
                        Err(e) => state.failed = Some(corrupt(&state.deployment, &e)),
                    }
                    if state.failed.is_none() {
                        continue;
                    }
                }
                Ok(None) => {}
                Err(e) => state.failed = Some(corrupt(&state.deployment, &e)),
            }
            if state.failed.is_none() && out.is_empty() {
                match state.body.next().await {
                    Some(Ok(chunk)) => {
                        state.decoder.push(&chunk);
                        continue;
                    }
                    Some(Err(e)) => state.failed = Some(e),
                    None => match state.decoder.finish() {
                        Ok(_) => return None,
                        Err(e) => state.failed = Some(corrupt(&state.deployment, &e)),
                    },
                }
            }
            if out.is_empty() {
                return state.failed.take().map(|e| (Err(e), None));
            }
            return Some((Ok(Bytes::from(out)), Some(state)));
        }
    })
    .boxed()
}

/// One SSE event; a JSON payload's line breaks (whitespace only, outside its strings) become
/// spaces so that it stays one `data:` line.
fn sse_frame(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend(name.bytes().filter(|b| !matches!(b, b'\r' | b'\n')));
    out.extend_from_slice(b"\ndata: ");
    out.extend(data.iter().map(|&b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }));
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests;
