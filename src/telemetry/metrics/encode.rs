//! Metric types of our own that plug into prometheus-client's families and encoder: a histogram
//! that takes a stream's locally bucketed gaps whole, and a wrapper that keeps a family listed
//! (HELP and TYPE) before its first series, as the exposition always did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::ctx::{ChunkGaps, GAP_BOUNDS};

/// `llm_gateway_inter_chunk_gap_seconds`: buckets of `GAP_BOUNDS`, filled a whole stream at a
/// time (`merge`), which prometheus-client's `Histogram` (one observation at a time) cannot do.
#[derive(Clone, Debug, Default)]
pub struct GapHistogram(Arc<GapCounts>);

#[derive(Debug, Default)]
pub struct GapCounts {
    /// Per bucket, not cumulative; gaps above the last bound are in `count` only.
    buckets: [AtomicU64; GAP_BOUNDS.len()],
    count: AtomicU64,
    /// Sum in microseconds, to stay in integer atomics.
    sum_micros: AtomicU64,
}

impl GapHistogram {
    /// Adds a stream's gaps.
    pub fn merge(&self, gaps: &ChunkGaps) {
        for (bucket, n) in self.0.buckets.iter().zip(gaps.buckets) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.0.count.fetch_add(gaps.count, Ordering::Relaxed);
        self.0.sum_micros.fetch_add(gaps.sum.as_micros() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for GapHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for GapHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0); GAP_BOUNDS.len()];
        for ((bucket, bound), n) in buckets.iter_mut().zip(GAP_BOUNDS).zip(&self.0.buckets) {
            *bucket = (bound, n.load(Ordering::Relaxed));
        }
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let count = self.0.count.load(Ordering::Relaxed);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A metric (a family) whose HELP and TYPE lines are written even while it has no series:
/// prometheus-client leaves empty families out, the exposition never did.
#[derive(Debug)]
pub struct Listed<M>(pub M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}
