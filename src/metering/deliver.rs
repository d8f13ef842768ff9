//! Delivery: batches from the outbox (by size, or after `max_wait`) POSTed to OpenMeter as
//! `application/cloudevents-batch+json`. 2xx moves the cursor; 429, 5xx, other statuses that a
//! fix of configuration can cure, and network errors are retried with exponential backoff and
//! jitter (never sooner than `Retry-After`); a 400 is narrowed down by halving the batch until the
//! refused events are alone, and those go to the dead-letter file with the reason. That file is
//! bounded (`dead_letter_max_bytes`): rotated to `.1` at half of it, the previous `.1` and its
//! entries dropped — counted, and logged.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;

use super::event::{parse_rfc3339_millis, rfc3339_millis};
use super::outbox::{Batch, Reader, Shared, sync_dir};
use crate::config::metering::MeteringSettings;
use crate::telemetry::metrics::MeteringMetrics;

pub const CONTENT_TYPE: &str = "application/cloudevents-batch+json";
pub const DEAD_LETTER_FILE: &str = "dead-letter.ndjson";
/// The longest `Retry-After` we honour as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How one POST ended.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Accepted,
    /// OpenMeter refused the content (400): retrying the same bytes cannot help.
    Refused {
        status: u16,
        reason: String,
    },
    /// Try again later (429, 5xx, auth or routing trouble, network).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// Classifies an HTTP answer from OpenMeter.
pub fn verdict(status: u16, retry_after: Option<&str>, body: &str) -> Verdict {
    match status {
        200..=299 => Verdict::Accepted,
        400 | 413 | 415 | 422 => Verdict::Refused { status, reason: body.chars().take(2000).collect() },
        _ => Verdict::Retry {
            reason: format!("HTTP {status}: {}", body.chars().take(300).collect::<String>()),
            retry_after: retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs),
        },
    }
}

/// Exponential backoff with jitter in [½, 1) of the step, never below `retry_after`.
pub fn backoff(initial: Duration, max: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let step = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let jittered = step.mul_f64(0.5 + fastrand::f64() * 0.5);
    jittered.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
}

pub struct Sender {
    pub settings: Arc<MeteringSettings>,
    pub client: reqwest::Client,
    pub reader: Reader,
    pub shared: Arc<Shared>,
    pub metrics: Arc<MeteringMetrics>,
    /// `true` once the gateway is stopping: send what there is at once, then end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub dead_letters: DeadLetters,
}

/// The dead-letter file: refused events with the reason, one JSON line each, for someone to
/// look at. Rotated to `<file>.1` when it reaches half of `max_bytes`, so that the two together
/// stay within it; the entries of the `.1` it replaces are dropped (the caller counts them).
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    rotate_at: u64,
    size: u64,
}

impl DeadLetters {
    pub fn new(path: PathBuf, max_bytes: u64) -> Self {
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        DeadLetters { path, rotate_at: max_bytes / 2, size }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry (a whole line), synced. Returns how many old entries were dropped to
    /// make room for it.
    pub fn append(&mut self, line: &[u8]) -> io::Result<u64> {
        let mut dropped = 0;
        if self.size > 0 && self.size + line.len() as u64 > self.rotate_at {
            let mut older = self.path.clone().into_os_string();
            older.push(".1");
            let older = PathBuf::from(older);
            dropped = match fs::read(&older) {
                Ok(bytes) => bytes.iter().filter(|&&b| b == b'\n').count() as u64,
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            };
            fs::rename(&self.path, &older)?;
            if let Some(dir) = self.path.parent() {
                sync_dir(dir)?;
            }
            self.size = 0;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let created = self.size == 0;
        file.write_all(line)?;
        file.sync_data()?;
        if created && let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.size += line.len() as u64;
        Ok(dropped)
    }
}

impl Sender {
    pub async fn run(mut self) {
        let settings = self.settings.clone();
        let mut batch = Batch::default();
        let mut first_seen: Option<Instant> = None;
        loop {
            let stopping = *self.stopping.borrow();
            // Read what the writer has published so far; then decide whether to send now.
            let before = batch.len();
            if let Err(e) = self.reader.read_more(&mut batch, settings.batch_max_events, settings.batch_max_bytes) {
                tracing::error!(error = %e, dir = %settings.replica_dir().display(), "metering: cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if before == 0 && !batch.is_empty() {
                self.note_oldest(&batch);
            }
            if batch.is_empty() {
                self.metrics.oldest_undelivered_unix_ms.set(0);
                if stopping && self.shared.writer_closed.load(Ordering::SeqCst) {
                    return;
                }
                self.wait().await;
                continue;
            }
            let first = *first_seen.get_or_insert_with(Instant::now);
            let full = batch.len() >= settings.batch_max_events || batch.bytes.len() >= settings.batch_max_bytes;
            if !full && !stopping && first.elapsed() < settings.batch_max_wait {
                // Fill the batch for the rest of its window without waking on every write.
                let until = tokio::time::Instant::from_std(first + settings.batch_max_wait);
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    _ = self.stopping.changed() => {}
                }
                continue;
            }
            self.deliver(&batch).await;
            let delivered = batch.len() as i64;
            if let Err(e) = self.reader.ack() {
                tracing::error!(error = %e, "metering: cannot record delivery in the outbox cursor (events will be re-sent)");
            }
            self.metrics.undelivered.inc_by(-delivered);
            batch.clear();
            first_seen = None;
        }
    }

    /// Until the writer publishes something, a second passes, or the gateway stops.
    async fn wait(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        tokio::select! {
            () = self.shared.notify.notified() => {}
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            _ = self.stopping.changed() => {}
        }
    }

    fn note_oldest(&self, batch: &Batch) {
        let first = batch.event(0);
        let time = first
            .windows(8)
            .position(|w| w == b"\"time\":\"")
            .and_then(|at| first.get(at + 8..at + 32))
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(parse_rfc3339_millis);
        if let Some(ms) = time {
            self.metrics.oldest_undelivered_unix_ms.set(ms as i64);
        }
    }

    /// Delivers every event of `batch`: accepted, or dead-lettered when refused. Retries for as
    /// long as it takes (the caller's shutdown deadline is the only limit).
    async fn deliver(&mut self, batch: &Batch) {
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(8);
        pending.push(0..batch.len());
        let mut attempt = 0u32;
        let mut last_warning: Option<Instant> = None;
        while let Some(range) = pending.pop() {
            loop {
                match self.post(batch.body(range.clone())).await {
                    Verdict::Accepted => {
                        self.metrics.sent.inc_by(range.len() as u64);
                        attempt = 0;
                        break;
                    }
                    Verdict::Refused { status, reason } if range.len() > 1 => {
                        tracing::warn!(
                            status,
                            events = range.len(),
                            "metering: OpenMeter refused a batch; narrowing it down"
                        );
                        let mid = range.start + range.len() / 2;
                        pending.push(mid..range.end);
                        pending.push(range.start..mid);
                        let _ = reason;
                        break;
                    }
                    Verdict::Refused { status, reason } => {
                        self.dead_letter(batch.event(range.start), status, &reason);
                        break;
                    }
                    Verdict::Retry { reason, retry_after } => {
                        self.metrics.retried.inc_by(range.len() as u64);
                        let delay = backoff(self.settings.retry_initial, self.settings.retry_max, attempt, retry_after);
                        attempt += 1;
                        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_warning = Some(Instant::now());
                            tracing::warn!(
                                reason = %reason,
                                attempt,
                                retry_in_ms = delay.as_millis() as u64,
                                events = range.len(),
                                "metering: OpenMeter did not accept a batch; it stays in the outbox and is retried"
                            );
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Verdict {
        let mut request = self
            .client
            .post(&self.settings.openmeter.endpoint)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body);
        if let Some(token) = &self.settings.openmeter.token {
            request = request.bearer_auth(token.expose());
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after =
                    response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let text = if (200..300).contains(&status) {
                    String::new()
                } else {
                    response.text().await.unwrap_or_default()
                };
                verdict(status, retry_after.as_deref(), &text)
            }
            Err(e) => Verdict::Retry { reason: format!("network: {e}"), retry_after: None },
        }
    }

    fn dead_letter(&mut self, event: &[u8], status: u16, reason: &str) {
        #[derive(Serialize)]
        struct Entry<'a> {
            at: String,
            status: u16,
            reason: &'a str,
            event: Box<RawValue>,
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let raw = std::str::from_utf8(event)
            .ok()
            .and_then(|s| RawValue::from_string(s.to_owned()).ok())
            .or_else(|| serde_json::value::to_raw_value(&String::from_utf8_lossy(event)).ok());
        let Some(raw) = raw else { return };
        let entry = Entry { at: rfc3339_millis(now), status, reason, event: raw };
        let written = serde_json::to_vec(&entry).map_err(std::io::Error::other).and_then(|mut line| {
            line.push(b'\n');
            self.dead_letters.append(&line)
        });
        self.metrics.dead_lettered.inc();
        match written {
            Ok(dropped) => {
                tracing::error!(
                    status,
                    reason = %reason.chars().take(300).collect::<String>(),
                    file = %self.dead_letters.path().display(),
                    "metering: OpenMeter refused an event; it is in the dead-letter file"
                );
                if dropped > 0 {
                    self.metrics.dead_letters_dropped.inc_by(dropped);
                    tracing::error!(
                        dropped,
                        max_bytes = self.settings.dead_letter_max_bytes,
                        file = %self.dead_letters.path().display(),
                        "metering: the dead-letter files reached dead_letter_max_bytes; their oldest entries were deleted"
                    );
                }
            }
            Err(e) => tracing::error!(
                status,
                error = %e,
                event = %String::from_utf8_lossy(event),
                "metering: OpenMeter refused an event and the dead-letter file cannot be written"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_openmeter_documents_them() {
        assert_eq!(verdict(204, None, ""), Verdict::Accepted);
        assert_eq!(verdict(202, None, ""), Verdict::Accepted);
        assert!(
            matches!(verdict(400, None, "bad subject"), Verdict::Refused { status: 400, reason } if reason == "bad subject")
        );
        assert!(
            matches!(verdict(429, Some("7"), ""), Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert!(matches!(verdict(503, None, ""), Verdict::Retry { retry_after: None, .. }));
        // A wrong token or path is fixed by configuration, not by dropping the events.
        assert!(matches!(verdict(401, None, ""), Verdict::Retry { .. }));
        assert!(matches!(verdict(404, None, ""), Verdict::Retry { .. }));
    }

    #[test]
    fn backoff_grows_is_capped_jittered_and_respects_retry_after() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for attempt in 0..30 {
            let d = backoff(initial, max, attempt, None);
            let step = initial.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?} not in [{:?}, {step:?}]", step / 2);
        }
        assert!(backoff(initial, max, 0, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert_eq!(backoff(initial, max, 0, Some(Duration::from_secs(86_400))), MAX_RETRY_AFTER);
    }

    #[test]
    fn the_dead_letter_files_stay_within_their_cap_dropping_the_oldest_and_counting_them() {
        let dir = std::env::temp_dir().join(format!("dead-letters-{}-{:x}", std::process::id(), fastrand::u64(..)));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(DEAD_LETTER_FILE);
        let mut letters = DeadLetters::new(path.clone(), 8192);
        let entry = |i: usize| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(300)).into_bytes();
        let mut dropped = 0;
        for i in 0..200 {
            dropped += letters.append(&entry(i)).unwrap();
        }
        let older = dir.join(format!("{DEAD_LETTER_FILE}.1"));
        let (now, before) = (fs::read_to_string(&path).unwrap(), fs::read_to_string(&older).unwrap());
        assert!(now.len() + before.len() <= 8192, "{} + {} bytes", now.len(), before.len());
        let kept: Vec<u64> = before
            .lines()
            .chain(now.lines())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_u64().unwrap())
            .collect();
        assert_eq!(kept.len() as u64 + dropped, 200, "every entry is kept or counted");
        assert!(
            kept.windows(2).all(|w| w[1] == w[0] + 1) && kept.last() == Some(&199),
            "the newest are kept, in order"
        );
        // A restart carries on from the file's size.
        let mut again = DeadLetters::new(path.clone(), 8192);
        let mut more = 0;
        for i in 200..220 {
            more += again.append(&entry(i)).unwrap();
        }
        assert!(more > 0);
        assert!(fs::metadata(&path).unwrap().len() + fs::metadata(&older).unwrap().len() <= 8192);
        fs::remove_dir_all(&dir).unwrap();
    }
}
