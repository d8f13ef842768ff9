//! Delivery: batches from the outbox into PostgreSQL, in order. Each batch is one transaction:
//! `COPY` into a temporary staging table, then `INSERT … SELECT … ON CONFLICT DO NOTHING` into
//! `requests`, so a batch sent again inserts nothing twice. The cursor moves only after the
//! commit. PostgreSQL down or slow: the batch is retried (backoff up to 30s) on a new
//! connection, and the rows behind it wait in the outbox.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_postgres::Client;

use super::{Metrics, row, schema};
use crate::config::request_log::RequestLogSettings;
use crate::metering::outbox::{Batch, Reader, Shared};

/// The longest one batch may take before the connection is given up and the batch retried.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub struct Sender {
    settings: Arc<RequestLogSettings>,
    reader: Reader,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    stopping: tokio::sync::watch::Receiver<bool>,
    client: Option<Client>,
    /// Day partitions known to exist.
    days: BTreeSet<String>,
    next_retention: Instant,
}

/// Connects with the settings' URL (no TLS: see the chart's README), the connection driven by a
/// task of its own.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("llm-gateway");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "request log: PostgreSQL connection ended");
        }
    });
    Ok(client)
}

impl Sender {
    pub fn new(
        settings: Arc<RequestLogSettings>,
        reader: Reader,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let next_retention = Instant::now();
        Sender { settings, reader, shared, metrics, stopping, client: None, days: BTreeSet::new(), next_retention }
    }

    pub async fn run(mut self) {
        let mut batch = Batch::default();
        let mut first_seen: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            let stopping = *self.stopping.borrow();
            if let Err(e) = self.reader.read_more(&mut batch, self.settings.batch_max, 16 << 20) {
                tracing::error!(error = %e, "request log: cannot read the outbox");
                self.pause(Duration::from_secs(1)).await;
                continue;
            }
            if batch.is_empty() {
                if stopping && self.shared.writer_closed.load(Ordering::SeqCst) {
                    return;
                }
                self.wait().await;
                continue;
            }
            let first = *first_seen.get_or_insert_with(Instant::now);
            if batch.len() < self.settings.batch_max && !stopping && first.elapsed() < self.settings.flush_interval {
                let until = tokio::time::Instant::from_std(first + self.settings.flush_interval);
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    _ = self.stopping.changed() => {}
                }
                continue;
            }
            let mut outcome = tokio::time::timeout(BATCH_TIMEOUT, self.deliver(&batch)).await;
            if let Ok(Err(failure)) = &outcome
                && failure.refused
            {
                tracing::warn!(error = %failure.message, "request log: PostgreSQL refused a batch; inserting its rows one by one");
                outcome = tokio::time::timeout(BATCH_TIMEOUT, self.deliver_singly(&batch)).await;
            }
            match outcome {
                Ok(Ok(inserted)) => {
                    failures = 0;
                    if let Err(e) = self.reader.ack() {
                        tracing::error!(error = %e, "request log: cannot move the outbox cursor (rows will be sent again)");
                    }
                    let n = batch.len() as u64;
                    self.metrics.delivered.fetch_add(n, Ordering::Relaxed);
                    self.metrics.undelivered.fetch_sub(n as i64, Ordering::Relaxed);
                    tracing::debug!(rows = n, inserted, "request log: batch delivered");
                    batch.clear();
                    first_seen = None;
                }
                outcome => {
                    let reason = match outcome {
                        Ok(Err(failure)) => failure.message,
                        _ => format!("no answer within {}s", BATCH_TIMEOUT.as_secs()),
                    };
                    self.client = None;
                    failures += 1;
                    self.metrics.delivery_errors.fetch_add(1, Ordering::Relaxed);
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(error = %reason, rows = batch.len(), "request log: cannot deliver to PostgreSQL; the rows wait in the outbox");
                    }
                    let step = Duration::from_millis(200).saturating_mul(1 << failures.min(8)).min(MAX_BACKOFF);
                    // Stopping: what is not delivered stays on disk for the next start.
                    if stopping {
                        return;
                    }
                    self.pause(step.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
                }
            }
        }
    }

    /// Until the writer publishes something, a second passes, or the gateway stops.
    async fn wait(&mut self) {
        tokio::select! {
            () = self.shared.notify.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = self.stopping.changed() => {}
        }
    }

    async fn pause(&mut self, how_long: Duration) {
        tokio::select! {
            () = tokio::time::sleep(how_long) => {}
            _ = self.stopping.changed() => {}
        }
    }

    /// A connected client on a migrated schema.
    async fn connected(&mut self) -> Result<(), Failure> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut client = connect(self.settings.url.expose()).await.map_err(fail)?;
            let applied = schema::migrate(&mut client, &self.settings.schema).await.map_err(fail)?;
            if !applied.is_empty() {
                tracing::info!(versions = ?applied, schema = %self.settings.schema, "request log: schema migrated");
            }
            // A database made anew has none of the partitions this process knew.
            self.days.clear();
            self.client = Some(client);
        }
        Ok(())
    }

    /// One batch in one transaction; returns the rows inserted (fewer than sent: a replay).
    async fn deliver(&mut self, batch: &Batch) -> Result<u64, Failure> {
        self.connected().await?;
        let settings = self.settings.clone();
        let schema = settings.schema.as_str();
        let mut days: BTreeSet<String> =
            (0..batch.len()).filter_map(|i| row::day_of(batch.event(i))).map(str::to_owned).collect();
        let retention_due = Instant::now() >= self.next_retention;
        if retention_due {
            // Today and tomorrow exist before any row needs them.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let today = crate::metering::event::rfc3339_millis(now.as_millis() as u64);
            if let Some(today) = today.get(..10) {
                days.insert(schema::next_day(today));
                days.insert(today.to_owned());
            }
        }
        days.retain(|d| !self.days.contains(d));
        let Some(client) = self.client.as_mut() else {
            return Err(Failure { message: "not connected".into(), refused: false });
        };
        if !days.is_empty() {
            let list: Vec<String> = days.iter().cloned().collect();
            schema::ensure_partitions(client, schema, &list).await.map_err(fail)?;
        }
        let inserted = insert(client, schema, batch).await.map_err(fail)?;
        if retention_due {
            match schema::apply_retention(client, schema, settings.retention_days).await {
                Ok(dropped) if !dropped.is_empty() => {
                    tracing::info!(partitions = ?dropped, "request log: partitions past retention dropped");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %describe(&e), "request log: retention failed (tried again later)"),
            }
            self.next_retention = Instant::now() + RETENTION_EVERY;
        }
        self.days.extend(days);
        Ok(inserted)
    }

    /// A batch PostgreSQL refused as data: its rows one at a time, so that one row it cannot
    /// take (none is known: the writer strips NUL, which text refuses) is logged and dropped
    /// rather than stopping the log behind it.
    async fn deliver_singly(&mut self, batch: &Batch) -> Result<u64, Failure> {
        let mut inserted = 0;
        for i in 0..batch.len() {
            let line = batch.event(i);
            let one = Batch { bytes: line.to_vec(), events: std::iter::once(0..line.len()).collect() };
            match self.deliver(&one).await {
                Ok(n) => inserted += n,
                Err(failure) if failure.refused => {
                    self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    let row = String::from_utf8_lossy(&line[..line.len().min(300)]);
                    tracing::error!(error = %failure.message, %row, "request log: PostgreSQL refused a row; dropped");
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok(inserted)
    }
}

/// Why a batch did not go in, and whether PostgreSQL refused its data (which retrying the
/// same rows cannot cure) rather than being unreachable, slow or down.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub refused: bool,
}

fn fail(e: tokio_postgres::Error) -> Failure {
    // Class 22: data exceptions (a value a column cannot take).
    let refused = e.as_db_error().is_some_and(|d| d.code().code().starts_with("22"));
    Failure { message: describe(&e), refused }
}

/// A PostgreSQL error with the server's message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// COPY into a staging table, then insert what is not there yet, in one transaction.
async fn insert(client: &mut Client, schema: &str, batch: &Batch) -> Result<u64, tokio_postgres::Error> {
    let mut data = Vec::with_capacity(batch.bytes.len() + batch.len() * 8);
    row::copy_text((0..batch.len()).map(|i| batch.event(i)), &mut data);
    let tx = client.transaction().await?;
    tx.batch_execute("CREATE TEMP TABLE IF NOT EXISTS request_log_staging (line jsonb) ON COMMIT DELETE ROWS").await?;
    let sink = tx.copy_in("COPY request_log_staging (line) FROM STDIN").await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    sink.as_mut().finish().await?;
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO {schema}.requests
                 SELECT r.* FROM request_log_staging s,
                      jsonb_populate_record(NULL::{schema}.requests, s.line) r
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(inserted)
}
