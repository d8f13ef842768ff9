//! The cache's Prometheus metrics, rendered after the gateway's own. `llm_cache_hits_total` and
//! `llm_cache_misses_total` keep the original service's names.

use std::fmt::Write as _;

use crate::telemetry::metrics::{Counter, Family, Histogram};

/// Lookup latency buckets (seconds): the cache works in microseconds to milliseconds.
pub const LOOKUP_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Cosine similarity of the best candidate, finest near the usual thresholds.
pub const SIMILARITY_BUCKETS: &[f64] =
    &[0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0];

pub struct CacheMetrics {
    pub hits: Family<Counter>,
    pub misses: Family<Counter>,
    pub bypass: Family<Counter>,
    pub lookup: Family<Histogram>,
    pub embed: Family<Histogram>,
    pub similarity: Family<Histogram>,
    pub errors: Family<Counter>,
    pub embed_errors: Family<Counter>,
    pub stores: Family<Counter>,
    pub index_rejects: Family<Counter>,
    pub guarded: Family<Counter>,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheMetrics {
    pub fn new() -> Self {
        Self {
            hits: Family::new(
                "llm_cache_hits_total",
                "Requests answered from the cache, by kind (exact, semantic).",
                "counter",
                &["kind"],
                Counter::default,
            ),
            misses: Family::new(
                "llm_cache_misses_total",
                "Cacheable requests the cache could not answer.",
                "counter",
                &[],
                Counter::default,
            ),
            bypass: Family::new(
                "llm_gateway_cache_bypass_total",
                "Requests that did not look in the cache, by reason.",
                "counter",
                &["reason"],
                Counter::default,
            ),
            lookup: Family::new(
                "llm_gateway_cache_lookup_seconds",
                "Cache lookup latency by tier (semantic excludes the embedding).",
                "histogram",
                &["tier"],
                || Histogram::new(LOOKUP_BUCKETS),
            ),
            embed: Family::new(
                "llm_gateway_cache_embed_seconds",
                "Time to embed the last user message (memoised embeddings included).",
                "histogram",
                &[],
                || Histogram::new(crate::telemetry::metrics::LATENCY_BUCKETS),
            ),
            similarity: Family::new(
                "llm_gateway_cache_similarity",
                "Cosine similarity of the best semantic candidate, by outcome (hit, miss).",
                "histogram",
                &["outcome"],
                || Histogram::new(SIMILARITY_BUCKETS),
            ),
            errors: Family::new(
                "llm_gateway_cache_errors_total",
                "Valkey errors seen by the cache (each one a miss or a skipped store), by operation.",
                "counter",
                &["op"],
                Counter::default,
            ),
            embed_errors: Family::new(
                "llm_gateway_cache_embed_skipped_total",
                "Semantic lookups that did not embed or compare, by reason (empty_partition, overloaded, too_long, error, ineligible rules).",
                "counter",
                &["reason"],
                Counter::default,
            ),
            stores: Family::new(
                "llm_gateway_cache_stores_total",
                "Answers offered to the cache, by outcome (stored, or why not).",
                "counter",
                &["outcome"],
                Counter::default,
            ),
            guarded: Family::new(
                "llm_gateway_cache_guard_rejects_total",
                "Semantic candidates above the threshold refused by the lexical guard, by reason.",
                "counter",
                &["reason"],
                Counter::default,
            ),
            index_rejects: Family::new(
                "llm_gateway_cache_index_rejects_total",
                "Vectors the in-memory index refused (full, or of the wrong width).",
                "counter",
                &[],
                Counter::default,
            ),
        }
    }

    pub fn render(&self, out: &mut String, index: Option<(usize, usize, usize)>) {
        self.hits.render(out);
        self.misses.render(out);
        self.bypass.render(out);
        self.lookup.render(out);
        self.embed.render(out);
        self.similarity.render(out);
        self.errors.render(out);
        self.embed_errors.render(out);
        self.stores.render(out);
        self.index_rejects.render(out);
        self.guarded.render(out);
        if let Some((vectors, partitions, bytes)) = index {
            for (name, help, value) in [
                ("llm_gateway_cache_index_vectors", "Vectors in this replica's semantic index.", vectors),
                ("llm_gateway_cache_index_partitions", "Partitions in this replica's semantic index.", partitions),
                ("llm_gateway_cache_index_bytes", "Approximate memory held by the semantic index.", bytes),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}
