//! The request log: one row per finished request in PostgreSQL, queryable by team, key, model
//! and cost, written off the request path and never lost.
//!
//! ```text
//! request path        │ background
//! finished() ────────►│ channel (bounded) ─► writer thread ─► outbox (disk) ─► sender ─► PostgreSQL
//!   (a few clones)    │                      JSON line per row,  segments +      COPY → staging,
//!                     │                      redaction           cursor          INSERT … ON CONFLICT
//! ```
//!
//! The outbox is metering's (`metering::outbox`), in a directory of its own. A row's line is
//! fixed when it is written, request id and time included, so a batch sent again (a crash
//! between the insert and the cursor's move, a lost answer) inserts nothing twice: the table's
//! key is (time, request id). When the outbox reaches its bound, new rows are dropped and
//! counted (`when_full: drop`), or new requests are refused with 503 (`when_full: reject`).

pub mod admin;
pub mod deliver;
pub mod row;
pub mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use crate::config::metering::WhenFull;
use crate::config::request_log::RequestLogSettings;
use crate::ctx::{LocalCount, Observer, Outcome, RequestCtx};
use crate::error::GatewayError;
use crate::metering::outbox;
use row::Finished;

/// The request log's counters, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub queued: AtomicU64,
    pub persisted: AtomicU64,
    pub delivered: AtomicU64,
    /// Rows lost: the in-memory channel or the outbox was full.
    pub dropped: AtomicU64,
    pub delivery_errors: AtomicU64,
    pub undelivered: AtomicI64,
    pub outbox_bytes: AtomicI64,
    pub outbox_full: AtomicBool,
}

impl Metrics {
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP llm_gateway_request_log_rows_total Request-log rows, by what happened to them.");
        let _ = writeln!(out, "# TYPE llm_gateway_request_log_rows_total counter");
        for (outcome, n) in [
            ("queued", get(&self.queued)),
            ("persisted", get(&self.persisted)),
            ("delivered", get(&self.delivered)),
            ("dropped", get(&self.dropped)),
        ] {
            let _ = writeln!(out, "llm_gateway_request_log_rows_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# TYPE llm_gateway_request_log_delivery_errors_total counter");
        let _ = writeln!(out, "llm_gateway_request_log_delivery_errors_total {}", get(&self.delivery_errors));
        for (name, help, value) in [
            ("undelivered_rows", "Rows in the outbox not yet in PostgreSQL.", self.undelivered.load(Ordering::Relaxed)),
            ("outbox_bytes", "Bytes of the request log's outbox on disk.", self.outbox_bytes.load(Ordering::Relaxed)),
            ("outbox_full", "1 while the outbox is at its bound.", i64::from(self.outbox_full.load(Ordering::Relaxed))),
        ] {
            let _ = writeln!(out, "# HELP llm_gateway_request_log_{name} {help}");
            let _ = writeln!(out, "# TYPE llm_gateway_request_log_{name} gauge");
            let _ = writeln!(out, "llm_gateway_request_log_{name} {value}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request log outbox {dir}: {source}")]
pub struct RequestLogError {
    dir: String,
    source: std::io::Error,
}

/// The observer: hands each finished request to the writer thread, never waiting.
pub struct RequestLog {
    settings: Arc<RequestLogSettings>,
    channel: SyncSender<Finished>,
    metrics: Arc<Metrics>,
}

impl Observer for RequestLog {
    fn admit(&self, _ctx: &RequestCtx) -> Result<(), GatewayError> {
        if self.settings.when_full == WhenFull::Reject && self.metrics.outbox_full.load(Ordering::Relaxed) {
            return Err(GatewayError::MeteringFull(
                "The gateway cannot record requests right now (its request log outbox is full); retry shortly.".into(),
            ));
        }
        Ok(())
    }

    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let mut finished = Finished::new(
            ctx,
            outcome,
            matches!(self.settings.capture, crate::config::request_log::Capture::Full { .. }),
        );
        finished.cost_nanos = crate::spend::request_nanos(ctx, outcome);
        match self.channel.try_send(finished) {
            Ok(()) => {
                self.metrics.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(request_id = %ctx.request_id, "request log: the in-memory queue is full; row dropped");
            }
        }
    }
}

/// The writer thread and the sender task, stopped by `shutdown` (or when dropped).
pub struct Running {
    closing: Arc<AtomicBool>,
    stopping: tokio::sync::watch::Sender<bool>,
    writer: Option<std::thread::JoinHandle<()>>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The writer puts what is queued on disk; the sender delivers what it can within `within`;
    /// the rest stays in the outbox for the next start.
    pub async fn shutdown(mut self, within: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.stopping.send(true);
        let deadline = tokio::time::Instant::now() + within;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || writer.join())).await;
        }
        if let Some(mut sender) = self.sender.take()
            && tokio::time::timeout_at(deadline, &mut sender).await.is_err()
        {
            sender.abort();
            tracing::warn!("request log: undelivered rows stay in the outbox for the next start");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.stopping.send(true);
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
    }
}

/// Opens the outbox and starts the writer thread and the sender task (inside the runtime).
/// PostgreSQL is not needed to start: the sender connects, migrates and delivers when it can.
/// `count` counts the tokens of a request whose upstream gave no usage (the same count limits
/// and metering use).
pub fn start(
    settings: &RequestLogSettings,
    metrics: Arc<Metrics>,
    count: Arc<dyn LocalCount>,
) -> Result<(Arc<RequestLog>, Running), RequestLogError> {
    let settings = Arc::new(settings.clone());
    let dir = settings.replica_dir();
    let error = |source| RequestLogError { dir: dir.display().to_string(), source };
    let shared = Arc::new(outbox::Shared::default());
    let (writer, reader, recovered) =
        outbox::open(&dir, settings.segment_bytes, settings.fsync, shared.clone()).map_err(error)?;
    metrics.undelivered.store(recovered.undelivered as i64, Ordering::Relaxed);
    metrics.outbox_bytes.store(shared.bytes.load(Ordering::Relaxed) as i64, Ordering::Relaxed);
    if recovered.undelivered > 0 {
        tracing::info!(rows = recovered.undelivered, dir = %dir.display(), "request log: replaying the outbox");
    }
    let (channel, receiver) = std::sync::mpsc::sync_channel(settings.queue_capacity);
    let closing = Arc::new(AtomicBool::new(false));
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let thread = {
        let (settings, metrics, shared, closing) = (settings.clone(), metrics.clone(), shared.clone(), closing.clone());
        std::thread::Builder::new()
            .name("request-log-outbox".into())
            .spawn(move || write_rows(&settings, receiver, writer, &shared, &metrics, &closing, &*count))
            .map_err(error)?
    };
    let sender = deliver::Sender::new(settings.clone(), reader, shared, metrics.clone(), stopping_rx);
    let sender = tokio::spawn(sender.run());
    let observer = Arc::new(RequestLog { settings, channel, metrics });
    Ok((observer, Running { closing, stopping, writer: Some(thread), sender: Some(sender) }))
}

/// A row without (complete) usage gets the local count and its cost, as its budget was charged
/// and its metering events counted.
fn count_tokens(finished: &mut Finished, count: &dyn LocalCount) {
    let (Some(local), Some(deployment)) = (finished.count_locally.take(), finished.deployment.as_deref()) else {
        return;
    };
    let usage =
        count.usage(deployment, finished.endpoint, &local.body, local.generated.as_ref(), finished.usage.as_ref());
    finished.cost_nanos = local.priced.map(|p| crate::spend::nanos_of(crate::spend::usage_picos(&p.price, &usage)));
    finished.usage = Some(usage);
}

/// The writer thread: rows → JSON lines (redacted) → the outbox, within its bound.
fn write_rows(
    settings: &RequestLogSettings,
    receiver: Receiver<Finished>,
    mut writer: outbox::Writer,
    shared: &outbox::Shared,
    metrics: &Metrics,
    closing: &AtomicBool,
    count: &dyn LocalCount,
) {
    let mut lines = Vec::with_capacity(256 * 1024);
    loop {
        let first = match receiver.recv_timeout(Duration::from_millis(20)) {
            Ok(row) => Some(row),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        lines.clear();
        let mut rows = 0u64;
        let mut dropped = 0u64;
        for mut finished in first.into_iter().chain(receiver.try_iter().take(4096)) {
            count_tokens(&mut finished, count);
            let start = lines.len();
            row::write_line(&finished, &settings.capture, &mut lines);
            if shared.bytes.load(Ordering::Relaxed) + lines.len() as u64 > settings.max_outbox_bytes {
                lines.truncate(start);
                dropped += 1;
            } else {
                rows += 1;
            }
        }
        // Full while rows were dropped, or while the next few would not fit (so that `reject`
        // keeps refusing until the sender has made room, not only in a round that dropped).
        let near_bound = shared.bytes.load(Ordering::Relaxed) + (64 << 10) > settings.max_outbox_bytes;
        metrics.outbox_full.store(dropped > 0 || near_bound, Ordering::Relaxed);
        if dropped > 0 {
            metrics.dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::error!(
                rows = dropped,
                max_outbox_bytes = settings.max_outbox_bytes,
                "request log: the outbox is full (PostgreSQL unreachable for long?); rows DROPPED"
            );
        }
        if !lines.is_empty() {
            match writer.append(&lines) {
                Ok(()) => {
                    metrics.persisted.fetch_add(rows, Ordering::Relaxed);
                    metrics.undelivered.fetch_add(rows as i64, Ordering::Relaxed);
                }
                Err(e) => {
                    metrics.dropped.fetch_add(rows, Ordering::Relaxed);
                    tracing::error!(error = %e, rows, "request log: cannot write the outbox; rows dropped");
                }
            }
        }
        if let Err(e) = writer.maybe_sync() {
            tracing::error!(error = %e, "request log: cannot sync the outbox");
        }
        metrics.outbox_bytes.store(shared.bytes.load(Ordering::Relaxed) as i64, Ordering::Relaxed);
        if closing.load(Ordering::SeqCst) && lines.is_empty() {
            break;
        }
    }
    if let Err(e) = writer.close() {
        tracing::error!(error = %e, "request log: cannot sync the outbox at shutdown");
    }
}

#[cfg(test)]
mod tests;
