//! Sentence embeddings for the semantic tier, behind one trait: a local model in this process
//! (`local`, candle BERT on a bounded blocking pool) or any OpenAI-compatible `/v1/embeddings`
//! (`remote`: TEI, BGE, OpenAI, or a model this gateway routes). Vectors are L2-normalised, so
//! cosine similarity is a dot product, and remembered by text in a bounded in-memory cache.
//! Nothing is ever downloaded: a local model is read from a directory.

pub mod local;
pub mod remote;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::config::cache::{EmbedderKind, EmbedderSettings};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EmbedError {
    /// Every worker is busy and the queue is full: skip the semantic tier rather than wait.
    #[error("the embedder is overloaded")]
    Overloaded,
    /// Longer than the model embeds without truncating.
    #[error("the text is longer than {0} tokens")]
    TooLong(usize),
    #[error("the embedding call failed: {0}")]
    Failed(String),
}

impl EmbedError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::TooLong(_) => "too_long",
            Self::Failed(_) => "error",
        }
    }
}

/// Turns one text into one unit-length vector.
pub trait Embedder: Send + Sync {
    /// What produced the vectors (model and its weights' identity): part of every partition, so
    /// vectors of different models are never compared.
    fn id(&self) -> &str;
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>>;
}

/// An embedder with its results remembered by text.
pub struct Embeddings {
    inner: Box<dyn Embedder>,
    memo: moka::future::Cache<[u8; 32], Arc<[f32]>>,
}

impl Embeddings {
    pub fn new(inner: Box<dyn Embedder>, entries: u64) -> Self {
        Self { inner, memo: moka::future::Cache::builder().max_capacity(entries).build() }
    }

    /// Builds the configured embedder. A local model is loaded here, once: a missing or broken
    /// model directory is a start-up error, never a silent fallback.
    pub fn from_settings(settings: &EmbedderSettings, config: &Config) -> Result<Self, EmbedError> {
        let inner: Box<dyn Embedder> = match &settings.kind {
            EmbedderKind::Local { path, threads, queue } => {
                Box::new(local::LocalEmbedder::load(path, *threads, *queue, settings.max_tokens)?)
            }
            EmbedderKind::Routed { model, timeout } => {
                Box::new(remote::RemoteEmbedder::routed(config, model, *timeout)?)
            }
            EmbedderKind::Url { base_url, model, api_key, timeout } => {
                Box::new(remote::RemoteEmbedder::url(base_url, model, api_key.clone(), *timeout)?)
            }
        };
        Ok(Self::new(inner, settings.cache_entries))
    }

    pub fn id(&self) -> &str {
        self.inner.id()
    }

    pub async fn embed(&self, text: &str) -> Result<Arc<[f32]>, EmbedError> {
        let key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if let Some(v) = self.memo.get(&key).await {
            return Ok(v);
        }
        let vector: Arc<[f32]> = self.inner.embed(text).await?.into();
        self.memo.insert(key, vector.clone()).await;
        Ok(vector)
    }
}

/// Scales `v` to unit length (a zero vector stays zero and matches nothing).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}
