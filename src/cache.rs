//! Cache: answers repeated and near-repeated chat completions without calling an upstream (and
//! repeated `/v1/responses` requests, exact tier only: `responses`).
//!
//! ```text
//! request ─► key ─► exact tier: L1 (moka, this replica) ─► L2 (Valkey, shared) ─► hit
//!                      │ miss
//!                      ▼
//!            semantic tier (eligible requests only): embed the last user message ─►
//!            search its hard partition (in-process index, or valkey-search KNN) ─►
//!            confirm the candidate in Valkey ─► semantic-hit
//!                      │ miss
//!                      ▼
//!            upstream ─► clean answer (whole, or assembled from the stream) ─► store
//! ```
//!
//! Everything that can change an answer is either hashed into the exact key or is a hard
//! partition of the semantic tier (team, resolved model, generation parameters, tools, system
//! prompt, earlier turns, embedder): only the last user message's text is compared fuzzily.
//! Any Valkey or embedder failure is a miss plus a metric, never a failed request.

pub mod assemble;
pub mod embed;
pub mod entry;
pub mod fill;
pub mod guard;
pub mod index;
pub mod key;
pub mod metrics;
pub mod replay;
pub mod responses;
pub mod shared;
pub mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::response::Response;
use http::{HeaderMap, HeaderValue};

use crate::api::{RawObject, Usage};
use crate::config::cache::{CacheSettings, IndexMode, SemanticSettings};
use crate::config::{Config, ValkeySettings};
use crate::ctx::{CacheStatus, Endpoint, RequestCtx};
use crate::kv::{Kv, KvError};
use embed::{EmbedError, Embeddings};
use entry::Stored;
use index::Index;
use key::{PartitionId, SemanticKey, SemanticRules, Skip};
use metrics::{CacheMetrics, Tier};
use shared::Shared;

pub use fill::{Fill, StreamFill, entry_id};

/// Response header: `hit`, `semantic-hit`, `miss` or `bypass`.
pub const CACHE_HEADER: &str = "x-llm-gateway-cache";
/// Response header on semantic hits: the cosine similarity of the served entry.
pub const SIMILARITY_HEADER: &str = "x-llm-gateway-cache-similarity";
/// Request header: `no-store` (bypass), `no-cache` (refresh: skip the lookup, store the
/// answer), `no-semantic` (exact tier only). `Cache-Control: no-store / no-cache` work too.
pub const CONTROL_HEADER: &str = "x-llm-gateway-cache-control";

/// Semantic candidates confirmed in Valkey per lookup, at most.
const MAX_CONFIRMS: usize = 3;
/// Store tasks in flight, at most; beyond that answers are not stored (a metric counts them).
const MAX_STORES_IN_FLIGHT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache embedder: {0}")]
    Embedder(#[from] EmbedError),
    #[error("cache store: {0}")]
    Valkey(#[from] KvError),
}

pub struct Cache {
    settings: CacheSettings,
    /// Exact tier in this replica: absolute expiry, bounded by bytes.
    l1: moka::future::Cache<[u8; 32], Arc<Stored>>,
    shared: Option<Shared>,
    /// For the index sync's dedicated connection.
    valkey: Option<ValkeySettings>,
    semantic: Option<Semantic>,
    pub metrics: Arc<CacheMetrics>,
    store_slots: Arc<tokio::sync::Semaphore>,
}

struct Semantic {
    settings: SemanticSettings,
    embeddings: Embeddings,
    index: Arc<Index>,
    /// Without Valkey, semantic entries' answers live here (id → answer).
    local: Option<moka::future::Cache<u64, Arc<Stored>>>,
    /// The valkey-search module answers KNN queries (decided at start-up).
    module: AtomicBool,
    /// The embedder's vector width, once seen (0 before): lets a lookup find out that its
    /// partition is empty without embedding anything.
    dims: AtomicUsize,
    /// The vector width the valkey-search index was created for (0: not yet).
    module_index_dims: AtomicUsize,
}

/// The outcome of a lookup.
pub enum Lookup {
    /// The answer, ready to send, with the stored usage (for metering), and for `/v1/responses`
    /// the response object served (a new one, to be kept like any other).
    Hit(Response, Option<Usage>, Option<serde_json::Value>),
    /// Go upstream; store the answer through the `Fill` when there is one.
    Miss(Option<Fill>),
}

/// What the client asked of the cache in its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Normal,
    NoStore,
    NoCache,
    NoSemantic,
}

fn directive(headers: &HeaderMap) -> Directive {
    let mut out = Directive::Normal;
    let values = headers.get_all(http::header::CACHE_CONTROL).iter().chain(headers.get_all(CONTROL_HEADER).iter());
    for value in values {
        for token in value.to_str().unwrap_or_default().split(',') {
            match token.trim().to_ascii_lowercase().as_str() {
                "no-store" => return Directive::NoStore,
                "no-cache" => out = Directive::NoCache,
                "no-semantic" if out == Directive::Normal => out = Directive::NoSemantic,
                _ => {}
            }
        }
    }
    out
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// Expires each entry at its own absolute deadline (capped, with Valkey, by how long a replica
/// may trust its copy).
struct Deadline {
    cap: Option<Duration>,
}

impl<K> moka::Expiry<K, Arc<Stored>> for Deadline {
    fn expire_after_create(&self, _key: &K, value: &Arc<Stored>, _now: std::time::Instant) -> Option<Duration> {
        let left = Duration::from_millis(value.expires_ms.saturating_sub(now_ms()));
        Some(self.cap.map_or(left, |cap| cap.min(left)))
    }
}

fn answers_cache<K: std::hash::Hash + Eq + Send + Sync + 'static>(
    max_bytes: u64,
    cap: Option<Duration>,
) -> moka::future::Cache<K, Arc<Stored>> {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_k, v: &Arc<Stored>| v.weight())
        .expire_after(Deadline { cap })
        .build()
}

impl Cache {
    /// Builds the cache; loads a local embedding model now (a broken model directory is a
    /// start-up error). Does not contact Valkey.
    pub fn new(settings: &CacheSettings, config: &Config) -> Result<Self, CacheError> {
        let shared = match &config.valkey {
            Some(v) => {
                let kv = Kv::new(v)?;
                // The cache's own prefix goes under the installation's (`valkey.key_prefix`).
                Some(Shared { prefix: kv.key(&settings.key_prefix), kv })
            }
            None => None,
        };
        let l1_cap = shared.as_ref().map(|_| settings.exact.l1_ttl);
        let semantic = match &settings.semantic {
            Some(s) => Some(Semantic {
                embeddings: Embeddings::from_settings(&s.embedder, config)?,
                index: Arc::new(Index::new(s.max_vectors, s.hnsw_min_vectors)),
                local: shared.is_none().then(|| answers_cache(settings.exact.l1_max_bytes, None)),
                module: AtomicBool::new(false),
                dims: AtomicUsize::new(0),
                module_index_dims: AtomicUsize::new(0),
                settings: s.clone(),
            }),
            None => None,
        };
        Ok(Self {
            settings: settings.clone(),
            l1: answers_cache(settings.exact.l1_max_bytes, l1_cap),
            shared,
            valkey: config.valkey.clone(),
            semantic,
            metrics: Arc::new(CacheMetrics::new()),
            store_slots: Arc::new(tokio::sync::Semaphore::new(MAX_STORES_IN_FLIGHT)),
        })
    }

    /// The embedder's identity, when the semantic tier is on.
    pub fn embedder_id(&self) -> Option<&str> {
        self.semantic.as_ref().map(|s| s.embeddings.id())
    }

    /// Starts the background work: the index sync with Valkey (or the valkey-search probe) and
    /// the sweep of expired vectors. The tasks stop when `tasks` is dropped.
    pub fn spawn_background(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) {
        let Some(semantic) = &self.semantic else { return };
        let index = semantic.index.clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                index.sweep(now_ms());
            }
        });
        let (Some(shared), Some(valkey)) = (&self.shared, &self.valkey) else { return };
        let cache = self.clone();
        let shared = shared.clone();
        let mut dedicated = valkey.clone();
        dedicated.timeout = dedicated.timeout.max(Duration::from_millis(1500));
        tasks.spawn(async move {
            let Some(semantic) = &cache.semantic else { return };
            let mode = semantic.settings.index;
            if mode != IndexMode::Memory {
                // Valkey may not be up yet: ask until it answers.
                loop {
                    if shared.kv.ping().await {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                if shared::module::present(&shared).await {
                    semantic.module.store(true, Ordering::Relaxed);
                    tracing::info!("cache: valkey-search is loaded; semantic lookups use FT.SEARCH");
                    return;
                }
                if mode == IndexMode::ValkeySearch {
                    tracing::warn!(
                        "cache: semantic.index is valkey-search but the module is absent; using the in-process index"
                    );
                }
            }
            let kv = match Kv::new(&dedicated) {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!(error = %e, "cache: cannot open the index sync connection");
                    return;
                }
            };
            sync::Sync {
                shared: Shared { kv, prefix: shared.prefix.clone() },
                index: semantic.index.clone(),
                max_vectors: semantic.settings.max_vectors,
                hnsw_min: semantic.settings.hnsw_min_vectors,
                metrics: cache.metrics.clone(),
            }
            .run()
            .await;
        });
    }

    /// Appends the cache's metrics to a Prometheus exposition.
    pub fn render_metrics(&self, out: &mut String) {
        let index = self.semantic.as_ref().map(|s| (s.index.len(), s.index.partition_count(), s.index.memory_bytes()));
        self.metrics.render(out, index);
    }

    /// Looks the request up. Sets `ctx.cache` to what happened. `model_group` is the model the
    /// request resolves to for this team (`None`: unknown or not allowed — the router answers).
    pub async fn lookup(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        model_group: Option<&str>,
        body: &RawObject,
        headers: &HeaderMap,
    ) -> Lookup {
        let bypass = |ctx: &mut RequestCtx, reason: &'static str| {
            ctx.cache = CacheStatus::Bypass;
            self.metrics.bypass.get_or_create(&reason.into()).inc();
            Lookup::Miss(None)
        };
        let responses = ctx.endpoint == Endpoint::Responses;
        let directive = directive(headers);
        let (key, group) = match self.key_of(ctx, model_group, body, directive) {
            Ok(keyed) => keyed,
            Err(reason) => return bypass(ctx, reason),
        };
        if directive == Directive::NoCache {
            ctx.cache = CacheStatus::Bypass;
            self.metrics.bypass.get_or_create(&"no_cache".into()).inc();
            return Lookup::Miss(Some(Fill { cache: self.clone(), key, vector: None, responses }));
        }

        if self.settings.exact.enabled {
            let started = Instant::now();
            let found = self.exact_get(&key.exact).await;
            self.metrics.looked_up(Tier::Exact).observe(started.elapsed().as_secs_f64());
            if let Some(stored) = found
                && let Some(hit) = self.respond(ctx, &stored, CacheStatus::Hit)
            {
                self.metrics.hit(Tier::Exact).inc();
                return hit;
            }
        }

        let mut vector = None;
        if let (Some(semantic), Ok(sem)) = (&self.semantic, &key.semantic) {
            let (found, v) = self.semantic_get(semantic, sem, group).await;
            vector = v;
            if let Some((stored, similarity)) = found
                && let Some(hit) = self.respond(ctx, &stored, CacheStatus::SemanticHit { similarity })
            {
                self.metrics.hit(Tier::Semantic).inc();
                return hit;
            }
        } else if let Err(skip) = &key.semantic
            && self.semantic.is_some()
            && *skip != Skip::Unreadable
        {
            self.metrics.embed_errors.get_or_create(&skip.label().into()).inc();
        }
        ctx.cache = CacheStatus::Miss;
        self.metrics.misses.inc();
        Lookup::Miss(Some(Fill { cache: self.clone(), key, vector, responses }))
    }

    /// The request's cache key and model group, or why the cache is bypassed.
    fn key_of<'a>(
        &self,
        ctx: &RequestCtx,
        model_group: Option<&'a str>,
        body: &RawObject,
        directive: Directive,
    ) -> Result<(key::RequestKey, &'a str), &'static str> {
        let responses = ctx.endpoint == Endpoint::Responses;
        if ctx.endpoint != Endpoint::ChatCompletions && !responses {
            return Err("endpoint");
        }
        if responses && body.contains("previous_response_id") {
            // Its answer depends on state the key does not see.
            return Err("previous_response");
        }
        let team = ctx.principal.as_ref().map(|p| p.team.as_ref()).unwrap_or_default();
        let team_policy = self.settings.teams.get(team).copied();
        if team_policy.is_some_and(|t| !t.enabled) {
            return Err("team");
        }
        if directive == Directive::NoStore {
            return Err("no_store");
        }
        let group = model_group.ok_or("model")?;
        let rules = self
            .semantic
            .as_ref()
            .filter(|_| directive != Directive::NoSemantic && team_policy.is_none_or(|t| t.semantic))
            .map(|s| SemanticRules {
                max_temperature: s.settings.max_temperature,
                max_messages: s.settings.max_messages,
                max_chars: s.settings.embedder.max_chars,
            });
        let key =
            if responses { key::responses_key(team, group, body) } else { key::request_key(team, group, body, rules) };
        key.map(|key| (key, group)).map_err(|skip| skip.label())
    }

    async fn exact_get(&self, hash: &[u8; 32]) -> Option<Arc<Stored>> {
        let now = now_ms();
        if let Some(stored) = self.l1.get(hash).await
            && stored.expires_ms > now
        {
            return Some(stored);
        }
        let shared = self.shared.as_ref()?;
        match shared.get_exact(hash, self.settings.max_entry_bytes).await {
            Ok(Some(stored)) if stored.expires_ms > now => {
                let stored = Arc::new(stored);
                self.l1.insert(*hash, stored.clone()).await;
                Some(stored)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cache: exact lookup failed (a miss)");
                self.metrics.errors.get_or_create(&"get".into()).inc();
                None
            }
        }
    }

    /// The best confirmed semantic entry (with its similarity), and the query's vector for
    /// storing the answer on a miss.
    async fn semantic_get(
        &self,
        semantic: &Semantic,
        sem: &SemanticKey,
        group: &str,
    ) -> (Option<(Arc<Stored>, f32)>, Option<(PartitionId, Arc<[f32]>)>) {
        let module = semantic.module.load(Ordering::Relaxed);
        let dims = semantic.dims.load(Ordering::Relaxed);
        if !module && dims > 0 {
            let partition = key::partition(&sem.scope, semantic.embeddings.id(), dims);
            if !semantic.index.has_partition(&partition) {
                // Nothing to compare with: skip the embedding (the store embeds off the path).
                self.metrics.embed_errors.get_or_create(&"empty_partition".into()).inc();
                return (None, None);
            }
        }
        let started = Instant::now();
        let vector = match semantic.embeddings.embed(&sem.text).await {
            Ok(v) => v,
            Err(e) => {
                self.metrics.embed_errors.get_or_create(&e.label().into()).inc();
                if let EmbedError::Failed(detail) = &e {
                    tracing::debug!(error = %detail, "cache: embedding failed (a miss)");
                }
                return (None, None);
            }
        };
        self.metrics.embed.observe(started.elapsed().as_secs_f64());
        semantic.dims.store(vector.len(), Ordering::Relaxed);
        let partition = key::partition(&sem.scope, semantic.embeddings.id(), vector.len());
        let threshold = semantic.settings.threshold_for(group);
        let started = Instant::now();
        let now = now_ms();
        let candidates = self.semantic_candidates(semantic, module, &partition, &vector, now, threshold).await;
        let hit = self.first_confirmed(semantic, &sem.text, &partition, candidates, threshold, now).await;
        self.metrics.looked_up(Tier::Semantic).observe(started.elapsed().as_secs_f64());
        if let Some((_, similarity)) = &hit {
            self.metrics.similarity.get_or_create(&"hit".into()).observe(f64::from(*similarity));
        }
        (hit, Some((partition, vector)))
    }

    /// Candidates near `vector`: from Valkey's search module when it holds the vectors, else from
    /// this replica's index (recording the best similarity of a miss).
    async fn semantic_candidates(
        &self,
        semantic: &Semantic,
        module: bool,
        partition: &PartitionId,
        vector: &Arc<[f32]>,
        now: u64,
        threshold: f32,
    ) -> Vec<(u64, f32)> {
        if module && let Some(shared) = &self.shared {
            match shared::module::search(shared, partition, vector, MAX_CONFIRMS).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(error = %e, "cache: FT.SEARCH failed (a miss)");
                    self.metrics.errors.get_or_create(&"search".into()).inc();
                    Vec::new()
                }
            }
        } else {
            let (found, best) = semantic.index.search(partition, vector, now, threshold, MAX_CONFIRMS);
            if found.is_empty()
                && let Some(best) = best
            {
                self.metrics.similarity.get_or_create(&"miss".into()).observe(f64::from(best));
            }
            found.into_iter().map(|c| (c.id, c.similarity)).collect()
        }
    }

    /// The first candidate at or above `threshold` that is still stored and passes the lexical
    /// guard; candidates gone from the store are dropped from the index.
    async fn first_confirmed(
        &self,
        semantic: &Semantic,
        text: &str,
        partition: &PartitionId,
        candidates: Vec<(u64, f32)>,
        threshold: f32,
        now: u64,
    ) -> Option<(Arc<Stored>, f32)> {
        for (id, similarity) in candidates.into_iter().filter(|(_, s)| *s >= threshold) {
            let confirmed = match (&self.shared, &semantic.local) {
                (_, Some(local)) => local.get(&id).await.filter(|s| s.expires_ms > now),
                (Some(shared), None) => match shared.confirm(partition, id, now, self.settings.max_entry_bytes).await {
                    Ok(found) => found.map(Arc::new),
                    Err(e) => {
                        tracing::debug!(error = %e, "cache: confirming a candidate failed (a miss)");
                        self.metrics.errors.get_or_create(&"confirm".into()).inc();
                        return None;
                    }
                },
                (None, None) => None,
            };
            match confirmed {
                Some(stored) => {
                    // Close in embedding space is not enough: negations, numbers and word order
                    // must agree too (see `guard`).
                    if let Some(reason) = guard::mismatch(text, &stored.question) {
                        self.metrics.guarded.get_or_create(&reason.into()).inc();
                        continue;
                    }
                    return Some((stored, similarity));
                }
                // Deleted, evicted or expired behind our back: forget it here too.
                None => semantic.index.remove(partition, id),
            }
        }
        None
    }

    /// The client's response for a stored answer, or `None` if it cannot be read (then a miss).
    fn respond(&self, ctx: &mut RequestCtx, stored: &Stored, status: CacheStatus) -> Option<Lookup> {
        let (mut response, usage, object) = if ctx.endpoint == Endpoint::Responses {
            let now = now_ms() / 1000;
            let (response, object, usage) = responses::hit(&stored.body, &ctx.client_model, ctx.stream, now)?;
            (response, usage, Some(object))
        } else {
            (
                self.chat_hit(ctx, stored)?,
                serde_json::from_slice::<UsageOnly>(&stored.body).ok().and_then(|u| u.usage),
                None,
            )
        };
        ctx.cache = status;
        let h = response.headers_mut();
        let age = now_ms().saturating_sub(stored.created_ms) / 1000;
        h.insert(http::header::AGE, HeaderValue::from(age));
        status_headers(h, status);
        Some(Lookup::Hit(response, usage, object))
    }

    fn chat_hit(&self, ctx: &RequestCtx, stored: &Stored) -> Option<Response> {
        Some(if ctx.stream {
            replay::sse_response(replay::stream_frames(&stored.body, &ctx.client_model, ctx.client_wants_usage).ok()?)
        } else {
            replay::json_response(replay::whole(&stored.body, &ctx.client_model).ok()?)
        })
    }
}

#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
}

/// `x-llm-gateway-cache` (and the similarity on semantic hits).
pub fn status_headers(headers: &mut HeaderMap, status: CacheStatus) {
    if let Some(value) = status.header_value() {
        headers.insert(CACHE_HEADER, HeaderValue::from_static(value));
    }
    if let CacheStatus::SemanticHit { similarity } = status
        && let Ok(v) = HeaderValue::from_str(&format!("{similarity:.4}"))
    {
        headers.insert(SIMILARITY_HEADER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        let mut h = HeaderMap::new();
        assert_eq!(directive(&h), Directive::Normal);
        h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=0, No-Cache"));
        assert_eq!(directive(&h), Directive::NoCache);
        h.insert(CONTROL_HEADER, HeaderValue::from_static("no-store"));
        assert_eq!(directive(&h), Directive::NoStore);
        let mut h = HeaderMap::new();
        h.insert(CONTROL_HEADER, HeaderValue::from_static("no-semantic"));
        assert_eq!(directive(&h), Directive::NoSemantic);
    }
}
