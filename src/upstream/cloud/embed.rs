//! `/v1/embeddings` on a cloud platform: the calls `adapter::cloud::embed` plans, sent (a few at
//! a time, in order), their vectors and counts put together into one OpenAI answer, which the
//! rest of the gateway reads as an OpenAI-compatible upstream's.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::{Call, CloudClient};
use crate::adapter::cloud::embed::{self, EmbedRequest, Platform};
use crate::config::ProviderSpec;
use crate::error::GatewayError;
use crate::upstream::{BodyStream, Outgoing, UpstreamResponse, read_body};

/// Calls in flight at once for one request (Titan takes one text a call).
const CONCURRENT_CALLS: usize = 4;

pub(super) async fn send(
    client: &CloudClient,
    provider: &ProviderSpec,
    deployment: &str,
    model: &str,
    request: &Outgoing<'_>,
    deadline: Instant,
) -> Result<UpstreamResponse, GatewayError> {
    let internal = |detail: String| GatewayError::Internal(format!("embeddings for {deployment}: {detail}"));
    let wanted: EmbedRequest = serde_json::from_slice(&request.body).map_err(|e| internal(e.to_string()))?;
    let platform = Platform::of(provider, model).ok_or_else(|| internal("not an embedding model".into()))?;
    let calls = embed::calls(platform, provider, &wanted);
    let idle = provider.timeouts.idle.min(Duration::from_secs(60));
    let inputs = &wanted.input;
    let answers: Vec<(Vec<Vec<f32>>, u64)> = futures_util::stream::iter(calls)
        .map(|planned| async move {
            let call = Call {
                provider,
                deployment,
                path: &planned.path,
                body: Bytes::from(planned.body),
                stream: false,
                deadline,
            };
            let (_, headers, body) = client.post(call, request).await?;
            let count = headers
                .get("x-amzn-bedrock-input-token-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = read_body(body, deployment, idle, deadline).await?;
            embed::read(platform, &body, &inputs[planned.inputs], count)
                .map_err(|detail| GatewayError::UpstreamProtocol { deployment: deployment.to_owned(), detail })
        })
        .buffered(CONCURRENT_CALLS)
        .try_collect()
        .await?;
    let tokens = answers.iter().map(|(_, t)| t).sum();
    let vectors: Vec<Vec<f32>> = answers.into_iter().flat_map(|(v, _)| v).collect();
    let base64 = wanted.encoding_format.as_deref() == Some("base64");
    let answer = embed::answer(model, &vectors, tokens, base64);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body: BodyStream = futures_util::stream::once(async move { Ok(Bytes::from(answer)) }).boxed();
    Ok(UpstreamResponse { status: StatusCode::OK, headers, body })
}
