//! The metering pipeline's health: how many usage events went where, and how far behind it is.
//! Exported only when metering is configured (its own registry, encoded after the gateway's).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::Reason;
use super::register;

/// Handles shared with the metering pipeline, which moves them; `render` writes them out.
#[derive(Debug)]
pub struct MeteringMetrics {
    /// Finished requests taken into the in-memory queue.
    pub queued: Counter,
    /// Events written to the on-disk outbox.
    pub persisted: Counter,
    /// Events OpenMeter accepted (2xx).
    pub sent: Counter,
    /// Events in batches that failed with a retryable error and will be sent again.
    pub retried: Counter,
    /// Events OpenMeter refused (400) and that went to the dead-letter file.
    pub dead_lettered: Counter,
    /// Events dropped because the queue or the outbox was full (`when_full: drop`).
    pub dropped_queue_full: Counter,
    pub dropped_outbox_full: Counter,
    /// Requests refused with 503 because the outbox was full (`when_full: reject`).
    pub rejected_requests: Counter,
    /// Events whose tokens were counted locally (no usage from the upstream).
    pub estimated: Counter,
    /// Events moved into this replica's outbox from that of a replica that is gone.
    pub adopted: Counter,
    /// Dead-letter entries deleted to keep the dead-letter files within their cap.
    pub dead_letters_dropped: Counter,
    /// Records waiting in memory for the outbox writer.
    pub queue_depth: Gauge,
    pub outbox_bytes: Gauge,
    /// Events in the outbox not yet accepted by OpenMeter (nor dead-lettered).
    pub undelivered: Gauge,
    /// Unix milliseconds of the oldest undelivered event (0: none).
    pub oldest_undelivered_unix_ms: Gauge,
    /// 1 while the outbox is at its disk cap.
    pub outbox_full: Gauge,
    /// `oldest_undelivered_unix_ms` as an age, worked out at scrape time.
    oldest_age_seconds: Gauge<f64, AtomicU64>,
    registry: Registry,
}

impl Default for MeteringMetrics {
    // Long, but one registration per metric and nothing else.
    fn default() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let counter = |r: &mut Registry, name: &'static str, help: &'static str| {
            let counter = Counter::default();
            register(r, name, help, counter.clone());
            counter
        };
        let gauge = |r: &mut Registry, name: &'static str, help: &'static str| {
            let gauge = Gauge::default();
            register(r, name, help, gauge.clone());
            gauge
        };
        let queued = counter(r, "llm_gateway_metering_records_queued_total", "Finished requests handed to metering.");
        let persisted =
            counter(r, "llm_gateway_metering_events_persisted_total", "Usage events written to the on-disk outbox.");
        let sent = counter(r, "llm_gateway_metering_events_sent_total", "Usage events accepted by OpenMeter.");
        let retried = counter(
            r,
            "llm_gateway_metering_events_retried_total",
            "Usage events in batches that failed with a retryable error.",
        );
        let dead_lettered = counter(
            r,
            "llm_gateway_metering_events_dead_lettered_total",
            "Usage events refused by OpenMeter (400), in the dead-letter file.",
        );
        let estimated = counter(
            r,
            "llm_gateway_metering_events_estimated_total",
            "Usage events whose tokens were counted locally.",
        );
        let adopted = counter(
            r,
            "llm_gateway_metering_events_adopted_total",
            "Usage events taken over from the outbox directory of a replica that is gone.",
        );
        let dead_letters_dropped = counter(
            r,
            "llm_gateway_metering_dead_letters_dropped_total",
            "Dead-letter entries deleted to keep the dead-letter files within dead_letter_max_bytes.",
        );
        let rejected_requests = counter(
            r,
            "llm_gateway_metering_rejected_requests_total",
            "Requests refused with 503 because the metering outbox was full.",
        );
        let dropped = Family::<Reason, Counter>::default();
        register(
            r,
            "llm_gateway_metering_events_dropped_total",
            "Usage events dropped (never silently: when_full: drop, or the queue overflowed).",
            dropped.clone(),
        );
        let queue_depth =
            gauge(r, "llm_gateway_metering_queue_depth", "Finished requests waiting in memory for the outbox writer.");
        let outbox_bytes = gauge(r, "llm_gateway_metering_outbox_bytes", "Bytes of the on-disk metering outbox.");
        let undelivered = gauge(
            r,
            "llm_gateway_metering_undelivered_events",
            "Usage events in the outbox not yet accepted by OpenMeter.",
        );
        let oldest_age_seconds = Gauge::<f64, AtomicU64>::default();
        register(
            r,
            "llm_gateway_metering_oldest_undelivered_age_seconds",
            "Age of the oldest usage event not yet accepted by OpenMeter.",
            oldest_age_seconds.clone(),
        );
        let outbox_full =
            gauge(r, "llm_gateway_metering_outbox_full", "1 while the metering outbox is at its disk cap.");
        Self {
            queued,
            persisted,
            sent,
            retried,
            dead_lettered,
            dropped_queue_full: dropped.get_or_create_owned(&Reason::from("queue_full")),
            dropped_outbox_full: dropped.get_or_create_owned(&Reason::from("outbox_full")),
            rejected_requests,
            estimated,
            adopted,
            dead_letters_dropped,
            queue_depth,
            outbox_bytes,
            undelivered,
            oldest_undelivered_unix_ms: Gauge::default(),
            outbox_full,
            oldest_age_seconds,
            registry,
        }
    }
}

impl MeteringMetrics {
    /// Appends these metrics to a Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let oldest = self.oldest_undelivered_unix_ms.get();
        let age = if oldest > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(oldest);
            (now - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        self.oldest_age_seconds.set(age);
        super::encode_into(out, &self.registry);
    }
}
