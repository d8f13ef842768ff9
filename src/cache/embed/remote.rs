//! The remote embedder: `POST /v1/embeddings` with `{"model", "input"}` on any OpenAI-compatible
//! server — a URL (TEI, BGE behind TEI, OpenAI) or a model this gateway itself routes (then its
//! deployments are tried in the router's order, with their own credentials and timeouts).

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{EmbedError, Embedder, normalize};
use crate::config::{Config, Dialect, Secret, TeamPolicy};
use crate::ctx::Endpoint;
use crate::ctx::Principal;
use crate::router::{RequestShape, Router};
use crate::upstream::{self, Outgoing, Upstreams};

/// Responses larger than this are refused (a 4096-d vector in JSON is ~90 KB).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

enum Transport {
    Url {
        client: reqwest::Client,
        endpoint: String,
        api_key: Option<Secret>,
    },
    /// Its own router and clients over the same configuration: breaker state is separate from
    /// the request path's, so a sick embedding deployment never trips chat traffic.
    Routed {
        router: Box<Router>,
        upstreams: Box<Upstreams>,
        principal: Principal,
    },
}

pub struct RemoteEmbedder {
    id: String,
    model: String,
    timeout: Duration,
    transport: Transport,
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
}

impl RemoteEmbedder {
    pub fn url(base_url: &str, model: &str, api_key: Option<Secret>, timeout: Duration) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| EmbedError::Failed(format!("building the embeddings client: {e}")))?;
        Ok(Self {
            id: format!("remote:{base_url}:{model}"),
            model: model.to_owned(),
            timeout,
            transport: Transport::Url { client, endpoint: format!("{base_url}/embeddings"), api_key },
        })
    }

    pub fn routed(config: &Config, model: &str, timeout: Duration) -> Result<Self, EmbedError> {
        let upstreams = Upstreams::new(config).map_err(|e| EmbedError::Failed(e.to_string()))?;
        let policy = TeamPolicy {
            models: vec![model.to_owned()],
            model_overrides: Default::default(),
            tier: None,
            limits: Default::default(),
            model_limits: Default::default(),
        };
        let principal = Principal {
            team: "llm-gateway-cache".into(),
            key_id: "cache-embedder".into(),
            policy: policy.into(),
            grant: Default::default(),
        };
        Ok(Self {
            id: format!("routed:{model}"),
            model: model.to_owned(),
            timeout,
            transport: Transport::Routed {
                router: Box::new(Router::new(config)),
                upstreams: Box::new(upstreams),
                principal,
            },
        })
    }

    async fn call(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let failed = |e: &dyn std::fmt::Display| EmbedError::Failed(e.to_string());
        let deadline = tokio::time::Instant::now() + self.timeout;
        let raw = match &self.transport {
            Transport::Url { client, endpoint, api_key } => {
                let body = serde_json::to_vec(&serde_json::json!({"model": self.model, "input": text}))
                    .map_err(|e| failed(&e))?;
                let mut request = client
                    .post(endpoint)
                    .timeout(self.timeout)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body);
                if let Some(key) = api_key {
                    request = request.bearer_auth(key.expose());
                }
                let response = request.send().await.map_err(|e| failed(&e.without_url()))?;
                if !response.status().is_success() {
                    return Err(EmbedError::Failed(format!("HTTP {}", response.status())));
                }
                let bytes = response.bytes().await.map_err(|e| failed(&e.without_url()))?;
                if bytes.len() > MAX_RESPONSE_BYTES {
                    return Err(EmbedError::Failed("the response is too large".into()));
                }
                bytes
            }
            Transport::Routed { router, upstreams, principal } => {
                let plan = router.plan(principal, &self.model, RequestShape::default()).map_err(|e| failed(&e))?;
                let mut last = EmbedError::Failed("no deployment to try".into());
                let mut answer = None;
                for candidate in plan.candidates.iter().take(2) {
                    let d = &candidate.deployment;
                    let body = serde_json::json!({"model": d.model, "input": text});
                    let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| failed(&e))?);
                    let response = match d.provider.dialect {
                        Dialect::Mock | Dialect::OpenAi => {
                            match upstreams.send(d, Outgoing::new(Endpoint::Embeddings, body), deadline).await {
                                Ok(r) => r,
                                Err(e) => {
                                    last = failed(&e);
                                    continue;
                                }
                            }
                        }
                        // None speaks `/v1/embeddings`.
                        Dialect::Anthropic | Dialect::Cli | Dialect::Gemini | Dialect::Bedrock | Dialect::Vertex => {
                            last = EmbedError::Failed(format!("{} cannot embed (no embeddings endpoint)", d.id));
                            continue;
                        }
                    };
                    if !response.status.is_success() {
                        last = EmbedError::Failed(format!("{} answered HTTP {}", d.id, response.status));
                        continue;
                    }
                    match upstream::read_body(response.body, &d.id, self.timeout, deadline).await {
                        Ok(bytes) if bytes.len() <= MAX_RESPONSE_BYTES => {
                            answer = Some(bytes);
                            break;
                        }
                        Ok(_) => last = EmbedError::Failed("the response is too large".into()),
                        Err(e) => last = failed(&e),
                    }
                }
                answer.ok_or(last)?
            }
        };
        let list: EmbeddingList = serde_json::from_slice(&raw).map_err(|e| failed(&e))?;
        let mut vector = list.data.into_iter().next().map(|d| d.embedding).unwrap_or_default();
        if vector.is_empty() || vector.iter().any(|x| !x.is_finite()) {
            return Err(EmbedError::Failed("the response holds no usable embedding".into()));
        }
        normalize(&mut vector);
        Ok(vector)
    }
}

impl Embedder for RemoteEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.call(text)).await {
                Ok(result) => result,
                Err(_) => Err(EmbedError::Failed(format!("no answer within {:?}", self.timeout))),
            }
        })
    }
}
