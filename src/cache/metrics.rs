//! The cache's Prometheus metrics, encoded after the gateway's own. `llm_cache_hits_total` and
//! `llm_cache_misses_total` keep the original service's names.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::telemetry::metrics::labels::{self, Kind, Op, Outcome, Reason};
use crate::telemetry::metrics::series::once;
use crate::telemetry::metrics::{encode_into, latency_histogram, register};

/// Lookup latency buckets (seconds): the cache works in microseconds to milliseconds.
pub const LOOKUP_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Cosine similarity of the best candidate, finest near the usual thresholds.
pub const SIMILARITY_BUCKETS: &[f64] =
    &[0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0];

fn lookup_histogram() -> Histogram {
    Histogram::new(LOOKUP_BUCKETS.iter().copied())
}

fn similarity_histogram() -> Histogram {
    Histogram::new(SIMILARITY_BUCKETS.iter().copied())
}

/// The cache's two tiers, as labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Exact,
    Semantic,
}

impl Tier {
    fn label(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Semantic => "semantic",
        }
    }
}

#[derive(Debug)]
pub struct CacheMetrics {
    pub hits: Family<Kind, Counter>,
    pub misses: Counter,
    pub bypass: Family<Reason, Counter>,
    pub lookup: Family<labels::Tier, Histogram>,
    pub embed: Histogram,
    pub similarity: Family<Outcome, Histogram>,
    pub errors: Family<Op, Counter>,
    pub embed_errors: Family<Reason, Counter>,
    pub stores: Family<Outcome, Counter>,
    pub index_rejects: Counter,
    pub guarded: Family<Reason, Counter>,
    /// The series every looked-up request meets, by `Tier`: taken from their family once.
    hits_by_tier: [OnceLock<Counter>; 2],
    lookup_by_tier: [OnceLock<Histogram>; 2],
    registry: Registry,
    /// The semantic index's size: vectors, partitions, bytes (set and encoded at scrape time,
    /// when there is an index).
    index: [Gauge; 3],
    index_registry: Registry,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheMetrics {
    /// Every cache metric, registered. Long, but a flat list: one registration per metric and
    /// nothing else, read best whole.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let hits = Family::default();
        register(
            r,
            "llm_cache_hits_total",
            "Requests answered from the cache, by kind (exact, semantic).",
            hits.clone(),
        );
        let misses = Counter::default();
        register(r, "llm_cache_misses_total", "Cacheable requests the cache could not answer.", misses.clone());
        let bypass = Family::default();
        register(
            r,
            "llm_gateway_cache_bypass_total",
            "Requests that did not look in the cache, by reason.",
            bypass.clone(),
        );
        let lookup = Family::new_with_constructor(lookup_histogram as fn() -> Histogram);
        register(
            r,
            "llm_gateway_cache_lookup_seconds",
            "Cache lookup latency by tier (semantic excludes the embedding).",
            lookup.clone(),
        );
        let embed = latency_histogram();
        register(
            r,
            "llm_gateway_cache_embed_seconds",
            "Time to embed the last user message (memoised embeddings included).",
            embed.clone(),
        );
        let similarity = Family::new_with_constructor(similarity_histogram as fn() -> Histogram);
        register(
            r,
            "llm_gateway_cache_similarity",
            "Cosine similarity of the best semantic candidate, by outcome (hit, miss).",
            similarity.clone(),
        );
        let errors = Family::default();
        register(
            r,
            "llm_gateway_cache_errors_total",
            "Valkey errors seen by the cache (each one a miss or a skipped store), by operation.",
            errors.clone(),
        );
        let embed_errors = Family::default();
        register(
            r,
            "llm_gateway_cache_embed_skipped_total",
            "Semantic lookups that did not embed or compare, by reason (empty_partition, overloaded, too_long, error, ineligible rules).",
            embed_errors.clone(),
        );
        let stores = Family::default();
        register(
            r,
            "llm_gateway_cache_stores_total",
            "Answers offered to the cache, by outcome (stored, or why not).",
            stores.clone(),
        );
        let index_rejects = Counter::default();
        register(
            r,
            "llm_gateway_cache_index_rejects_total",
            "Vectors the in-memory index refused (full, or of the wrong width).",
            index_rejects.clone(),
        );
        let guarded = Family::default();
        register(
            r,
            "llm_gateway_cache_guard_rejects_total",
            "Semantic candidates above the threshold refused by the lexical guard, by reason.",
            guarded.clone(),
        );
        let mut index_registry = Registry::default();
        let index: [Gauge; 3] = Default::default();
        for ((name, help), gauge) in [
            ("llm_gateway_cache_index_vectors", "Vectors in this replica's semantic index."),
            ("llm_gateway_cache_index_partitions", "Partitions in this replica's semantic index."),
            ("llm_gateway_cache_index_bytes", "Approximate memory held by the semantic index."),
        ]
        .into_iter()
        .zip(&index)
        {
            register(&mut index_registry, name, help, gauge.clone());
        }
        Self {
            hits,
            misses,
            bypass,
            lookup,
            embed,
            similarity,
            errors,
            embed_errors,
            stores,
            index_rejects,
            guarded,
            hits_by_tier: Default::default(),
            lookup_by_tier: Default::default(),
            registry,
            index,
            index_registry,
        }
    }

    /// `llm_cache_hits_total{kind}` of a tier.
    pub fn hit(&self, tier: Tier) -> &Counter {
        once(&self.hits_by_tier[tier as usize], &self.hits, || tier.label().into())
    }

    /// `llm_gateway_cache_lookup_seconds{tier}`.
    pub fn looked_up(&self, tier: Tier) -> &Histogram {
        once(&self.lookup_by_tier[tier as usize], &self.lookup, || tier.label().into())
    }

    /// Appends the cache's metrics to a text exposition; `index` is the semantic index's
    /// (vectors, partitions, bytes) when there is one.
    pub fn render(&self, out: &mut String, index: Option<(usize, usize, usize)>) {
        encode_into(out, &self.registry);
        if let Some((vectors, partitions, bytes)) = index {
            for (gauge, value) in self.index.iter().zip([vectors, partitions, bytes]) {
                gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            }
            encode_into(out, &self.index_registry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_original_names_and_the_index_only_when_there_is_one() {
        let m = CacheMetrics::new();
        m.hit(Tier::Exact).inc();
        m.misses.inc();
        m.looked_up(Tier::Semantic).observe(0.0002);
        let mut out = String::new();
        m.render(&mut out, None);
        assert!(out.contains("# TYPE llm_cache_hits_total counter\nllm_cache_hits_total{kind=\"exact\"} 1\n"), "{out}");
        assert!(out.contains("llm_cache_misses_total 1\n"), "{out}");
        assert!(out.contains("llm_gateway_cache_lookup_seconds_bucket{tier=\"semantic\",le=\"0.00025\"} 1\n"), "{out}");
        assert!(out.contains("# TYPE llm_gateway_cache_guard_rejects_total counter\n"), "{out}");
        assert!(!out.contains("llm_gateway_cache_index_vectors"), "{out}");
        out.clear();
        m.render(&mut out, Some((3, 2, 100)));
        assert!(out.contains("llm_gateway_cache_index_vectors 3\n"), "{out}");
        assert!(out.contains("llm_gateway_cache_index_bytes 100\n"), "{out}");
    }
}
