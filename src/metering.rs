//! Metering: every finished request's tokens → CloudEvents → OpenMeter, none lost, none twice.
//!
//! ```text
//! request path           │ background (never on the request path)
//! observer.finished() ──►│ queue (bounded, memory) ─► writer thread ─► outbox (disk) ─► sender ─► OpenMeter
//!   (a few clones)       │                            tokens per type,     segments +     batches, retries,
//!                        │                            local counts, cost   cursor         dead letters
//! ```
//!
//! The observer only enqueues. The writer thread turns each request into one event per non-zero
//! token type (counting locally, flagged `estimated`, when the upstream gave no usage, or only
//! the output when a stream ended before its final count: see `Pipeline::lines_of`), prices
//! it and appends it to the outbox; the sender delivers from the outbox. Event ids are fixed when
//! the event is written, so every re-send (retry, replay after a crash) is de-duplicated by
//! OpenMeter on (source, id). When the outbox reaches its disk cap the configured policy applies:
//! refuse new requests with 503, or drop events with a metric and an error log.

pub mod adopt;
pub mod count;
pub mod deliver;
pub mod event;
pub mod local;
pub mod lock;
pub mod outbox;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::api::Usage;
use crate::config::metering::{MeteringSettings, SubjectFrom, WhenFull};
use crate::config::{Config, ProviderSpec};
use crate::ctx::{Endpoint, Generated, Observer, Outcome, RequestCtx};
use crate::error::GatewayError;
use crate::providers::ModelInfo;
use crate::telemetry::metrics::MeteringMetrics;
use count::{Tokenizer, Tokenizers};
use event::{Envelope, TokenType};

#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    #[error("metering outbox {dir}: {source}")]
    Outbox { dir: String, source: std::io::Error },
    #[error("metering tokenizer: {0}")]
    Tokenizer(String),
    #[error("metering: building the OpenMeter client: {0}")]
    Client(String),
}

/// One finished request, as the observer hands it over.
#[derive(Debug)]
pub struct Record {
    pub request_id: Arc<str>,
    pub unix_ms: u64,
    pub subject: Arc<str>,
    pub team: Arc<str>,
    pub key_id: Arc<str>,
    pub model: String,
    pub deployment: String,
    pub usage: Option<Usage>,
    pub cached: bool,
    /// What a local count needs. Present when there is no usage (everything is counted), or
    /// with partial usage (`Outcome::usage_partial`: only the output is counted).
    pub estimate: Option<EstimateInput>,
}

#[derive(Debug)]
pub struct EstimateInput {
    pub endpoint: Endpoint,
    pub body: Bytes,
    pub generated: Option<Generated>,
}

/// What the catalogue and the config say about one deployment.
#[derive(Debug, Clone)]
pub struct DeploymentFacts {
    /// The vendor (`openai`, `anthropic`, ...) or, for a custom provider, its name.
    pub provider: String,
    pub info: ModelInfo,
    pub tokenizer: String,
}

/// Deployment id (`provider/model`) → facts, for every configured deployment; ids made up at
/// run time (a default backend serving any name) are resolved on the fly.
#[derive(Debug, Default)]
pub struct Deployments {
    known: HashMap<String, Arc<DeploymentFacts>>,
    providers: HashMap<String, Arc<ProviderSpec>>,
    tokenizers: std::collections::BTreeMap<String, String>,
    default_tokenizer: String,
    /// Every deployment's price (the events' cost).
    pub prices: crate::spend::Prices,
}

impl Deployments {
    pub fn new(config: &Config, settings: &MeteringSettings) -> Self {
        Self::with_tokenizers(config, settings.tokenizers.clone(), settings.default_tokenizer.clone())
    }

    /// The deployments of `config`, with tokenizers named per model (`tokenizers`) or by default.
    pub fn with_tokenizers(
        config: &Config,
        tokenizers: std::collections::BTreeMap<String, String>,
        default_tokenizer: String,
    ) -> Self {
        let mut this = Self {
            known: HashMap::new(),
            providers: config
                .providers
                .values()
                .chain(config.default_backend.iter())
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
            tokenizers,
            default_tokenizer,
            prices: crate::spend::Prices::new(config),
        };
        for model in config.models.values() {
            for d in &model.deployments {
                let facts = this.resolve(&d.provider, &d.model, &d.id);
                this.known.insert(d.id.clone(), Arc::new(facts));
            }
        }
        this
    }

    fn resolve(&self, provider: &ProviderSpec, model: &str, id: &str) -> DeploymentFacts {
        let info = provider.known_models.get(model).cloned().unwrap_or_default();
        let tokenizer = self
            .tokenizers
            .get(id)
            .or_else(|| self.tokenizers.get(model))
            .cloned()
            .or_else(|| info.tokenizer.clone())
            .or_else(|| count::encoding_for_model(model).map(str::to_owned))
            .unwrap_or_else(|| self.default_tokenizer.clone());
        DeploymentFacts { provider: provider.vendor.clone().unwrap_or_else(|| provider.name.clone()), info, tokenizer }
    }

    pub fn facts(&self, id: &str) -> Arc<DeploymentFacts> {
        if let Some(facts) = self.known.get(id) {
            return facts.clone();
        }
        let (provider, model) = id.split_once('/').unwrap_or((id, ""));
        Arc::new(match self.providers.get(provider) {
            Some(p) => self.resolve(p, model, id),
            None => DeploymentFacts {
                provider: provider.to_owned(),
                info: ModelInfo::default(),
                tokenizer: self.tokenizers.get(model).cloned().unwrap_or_else(|| self.default_tokenizer.clone()),
            },
        })
    }

    /// Every tokenizer spec a request could need (loaded and checked at start).
    pub fn tokenizer_specs(&self) -> impl Iterator<Item = &str> {
        self.known
            .values()
            .map(|f| f.tokenizer.as_str())
            .chain(self.tokenizers.values().map(String::as_str))
            .chain(std::iter::once(self.default_tokenizer.as_str()))
    }
}

/// How often the writer takes what the request path queued (the longest a finished request's
/// events wait in memory before they are on disk, when no burst wakes the writer sooner).
pub const WRITER_TICK: Duration = Duration::from_millis(2);
/// Queued records that wake the writer at once.
pub const WAKE_AT: usize = 256;

/// The bounded hand-over between the request path and the writer thread.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    len: AtomicUsize,
    capacity: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    records: VecDeque<Record>,
    closed: bool,
    /// The writer is asleep on the condition variable: only then does a push pay for a wake-up.
    writer_waiting: bool,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Self { state: Mutex::default(), ready: Condvar::new(), len: AtomicUsize::new(0), capacity }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Never blocks beyond the lock; `false` (and the record dropped) when full or closed.
    /// The writer is woken only for a burst (`WAKE_AT` records): otherwise it comes by every
    /// `WRITER_TICK`, so a steady trickle of requests costs no thread wake-up each.
    pub fn push(&self, record: Record) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed || state.records.len() >= self.capacity {
            return false;
        }
        state.records.push_back(record);
        self.len.store(state.records.len(), Ordering::Relaxed);
        let wake = state.writer_waiting && state.records.len() >= WAKE_AT;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Everything queued, waiting at most `timeout` for something; and whether it is closed.
    /// The queue is swapped out whole, so the lock is held for O(1) however long the backlog.
    pub fn take(&self, timeout: Duration) -> (VecDeque<Record>, bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.records.is_empty() && !state.closed {
            state.writer_waiting = true;
            state = match self.ready.wait_timeout(state, timeout) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
            state.writer_waiting = false;
        }
        let records = std::mem::replace(&mut state.records, VecDeque::with_capacity(256));
        self.len.store(0, Ordering::Relaxed);
        (records, state.closed)
    }

    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// The metering stage as the rest of the gateway sees it: an observer.
pub struct Metering {
    settings: Arc<MeteringSettings>,
    queue: Arc<Queue>,
    metrics: Arc<MeteringMetrics>,
    /// Set by the writer while the outbox is at its cap.
    full: Arc<AtomicBool>,
}

impl Observer for Metering {
    fn admit(&self, _ctx: &RequestCtx) -> Result<(), GatewayError> {
        if self.settings.when_full == WhenFull::Reject
            && (self.full.load(Ordering::Relaxed) || self.queue.len() >= self.settings.queue_capacity * 3 / 4)
        {
            self.metrics.rejected_requests.inc();
            return Err(GatewayError::MeteringFull(
                "The gateway cannot record usage right now (its metering outbox is full); retry shortly.".into(),
            ));
        }
        Ok(())
    }

    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let Some(principal) = &ctx.principal else { return };
        let Some(deployment) = &ctx.deployment else { return };
        // Without usage, only a request that reached an upstream used anything to count.
        if outcome.usage.is_none() && !outcome.counted_locally(ctx) {
            return;
        }
        let estimate = (outcome.usage.is_none() || outcome.usage_partial).then(|| EstimateInput {
            endpoint: ctx.endpoint,
            body: ctx.body.clone(),
            generated: outcome.generated.clone(),
        });
        let record = Record {
            request_id: ctx.request_id.clone(),
            unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default(),
            subject: match self.settings.subject {
                SubjectFrom::Team => principal.team.clone(),
                SubjectFrom::KeyId => principal.key_id.clone(),
            },
            team: principal.team.clone(),
            key_id: principal.key_id.clone(),
            model: ctx.client_model.clone(),
            deployment: deployment.clone(),
            usage: outcome.usage,
            cached: outcome.cached,
            estimate,
        };
        let usage = record.usage;
        if !self.queue.push(record) {
            let events = usage.map(|u| event::split(&u).len()).unwrap_or(2) as u64;
            self.metrics.dropped_queue_full.inc_by(events);
            tracing::error!(
                request_id = %ctx.request_id,
                events,
                "metering: the in-memory queue is full; this request's usage events are dropped"
            );
        } else {
            self.metrics.queued.inc();
            self.metrics.queue_depth.set(self.queue.len() as i64);
        }
    }
}

/// The running pipeline (writer thread + sender task), owned by `app::Background`.
pub struct Running {
    queue: Arc<Queue>,
    stopping: tokio::sync::watch::Sender<bool>,
    writer: Option<std::thread::JoinHandle<()>>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Flushes on shutdown: the writer drains the queue into the outbox (synced), the sender
    /// delivers what it can within `within`; the rest stays on disk for the next start.
    pub async fn shutdown(mut self, within: Duration) {
        self.queue.close();
        let _ = self.stopping.send(true);
        let deadline = tokio::time::Instant::now() + within;
        if let Some(writer) = self.writer.take() {
            let joined = tokio::task::spawn_blocking(move || writer.join());
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                tracing::error!("metering: the outbox writer did not finish in time");
            }
        }
        if let Some(mut sender) = self.sender.take() {
            match tokio::time::timeout_at(deadline, &mut sender).await {
                Ok(_) => tracing::info!("metering: flushed"),
                Err(_) => {
                    sender.abort();
                    tracing::warn!("metering: undelivered events stay in the outbox for the next start");
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.queue.close();
        let _ = self.stopping.send(true);
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
        // The writer ends by itself once the queue is closed and drained.
    }
}

/// Opens the outbox, loads tokenizers, and starts the writer thread and the sender task (call
/// inside the runtime). Returns the observer and the handle that stops them.
pub fn start(
    config: &Config,
    settings: &MeteringSettings,
    metrics: Arc<MeteringMetrics>,
) -> Result<(Arc<Metering>, Running), MeteringError> {
    let settings = Arc::new(settings.clone());
    let deployments = Deployments::new(config, &settings);
    let tokenizers = Tokenizers::load(deployments.tokenizer_specs()).map_err(MeteringError::Tokenizer)?;
    let shared = Arc::new(outbox::Shared::default());
    // This replica's own directory inside `outbox_dir`, locked for the life of the process.
    let dir = settings.replica_dir();
    let (writer, reader, recovered) = outbox::open(&dir, settings.segment_bytes, settings.fsync, shared.clone())
        .map_err(|source| MeteringError::Outbox { dir: dir.display().to_string(), source })?;
    metrics.undelivered.set(recovered.undelivered as i64);
    metrics.outbox_bytes.set(shared.bytes.load(Ordering::Relaxed) as i64);
    if recovered.undelivered > 0 || recovered.truncated_bytes > 0 {
        tracing::info!(
            undelivered = recovered.undelivered,
            torn_bytes_cut = recovered.truncated_bytes,
            dir = %dir.display(),
            "metering: replaying the outbox"
        );
    }
    let client = reqwest::Client::builder()
        .timeout(settings.openmeter.timeout)
        .connect_timeout(settings.openmeter.timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("llm-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| MeteringError::Client(e.to_string()))?;
    let queue = Arc::new(Queue::new(settings.queue_capacity));
    let full = Arc::new(AtomicBool::new(false));
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let sender = deliver::Sender {
        settings: settings.clone(),
        client,
        reader,
        shared: shared.clone(),
        metrics: metrics.clone(),
        stopping: stopping_rx,
        dead_letters: deliver::DeadLetters::new(dir.join(deliver::DEAD_LETTER_FILE), settings.dead_letter_max_bytes),
    };
    let pipeline = Pipeline {
        settings: settings.clone(),
        deployments,
        tokenizers,
        queue: queue.clone(),
        metrics: metrics.clone(),
        full: full.clone(),
        shared,
    };
    // Backlogs of replicas that are gone, moved into this outbox by the writer thread.
    let adopter = adopt::Adopter::new(&settings.outbox_dir, &dir, settings.adopt_interval);
    let writer = std::thread::Builder::new()
        .name("metering-outbox".into())
        .spawn(move || pipeline.run(writer, Some(adopter)))
        .map_err(|source| MeteringError::Outbox { dir: dir.display().to_string(), source })?;
    let sender = tokio::spawn(sender.run());
    let observer = Arc::new(Metering { settings, queue: queue.clone(), metrics, full });
    Ok((observer, Running { queue, stopping: stopping_tx, writer: Some(writer), sender: Some(sender) }))
}

/// The writer thread: records → event lines → outbox; between them, the backlogs of replicas
/// that are gone (`adopt`).
pub struct Pipeline {
    pub settings: Arc<MeteringSettings>,
    pub deployments: Deployments,
    pub tokenizers: Tokenizers,
    pub queue: Arc<Queue>,
    pub metrics: Arc<MeteringMetrics>,
    pub full: Arc<AtomicBool>,
    pub shared: Arc<outbox::Shared>,
}

impl Pipeline {
    pub fn run(self, mut writer: outbox::Writer, mut adopter: Option<adopt::Adopter>) {
        let mut held: VecDeque<Record> = VecDeque::new();
        let mut lines: Vec<u8> = Vec::with_capacity(256 * 1024);
        let mut record_lines: Vec<u8> = Vec::with_capacity(4096);
        let mut closed_since: Option<std::time::Instant> = None;
        let mut last_full_log: Option<std::time::Instant> = None;
        loop {
            let wait = if held.is_empty() { writer.sync_due_in().min(WRITER_TICK) } else { Duration::from_millis(50) };
            let (records, closed) = self.queue.take(wait.max(Duration::from_millis(1)));
            self.metrics.queue_depth.set(self.queue.len() as i64);
            held.extend(records);
            lines.clear();
            let (events, blocked) = self.batch(&mut held, &mut lines, &mut record_lines, &mut last_full_log);
            if !lines.is_empty() {
                self.append(&mut writer, &lines, events, closed);
            }
            if let Err(e) = writer.maybe_sync() {
                tracing::error!(error = %e, "metering: cannot sync the outbox");
            }
            // Not while stopping, and only with room this replica's own events do not need (the
            // step still runs when full, to hand a directory back to an owner that returns).
            if !closed && let Some(adopter) = adopter.as_mut() {
                let room = match blocked {
                    true => 0,
                    false => self.settings.max_outbox_bytes.saturating_sub(self.shared.bytes.load(Ordering::Relaxed)),
                };
                let moved = adopter.step(&mut writer, room);
                if moved > 0 {
                    self.metrics.adopted.inc_by(moved);
                    self.metrics.undelivered.inc_by(moved as i64);
                }
            }
            self.metrics.outbox_bytes.set(self.shared.bytes.load(Ordering::Relaxed) as i64);
            if blocked && let Err(e) = writer.seal() {
                tracing::error!(error = %e, "metering: cannot start a new outbox segment");
            }
            self.report_full(blocked);
            if closed {
                let since = *closed_since.get_or_insert_with(std::time::Instant::now);
                let give_up = blocked && since.elapsed() > Duration::from_secs(5);
                if held.is_empty() || give_up {
                    self.stop(writer, &held, give_up);
                    return;
                }
                // A closed queue no longer makes `take` wait: without this the thread would
                // spin until `give_up` while the outbox stays full.
                if blocked {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Moves the held records' event lines into `lines` while the outbox has room; returns the
    /// events moved and whether the outbox is full (records stay held under `when_full:
    /// reject`, and are dropped, counted and logged under `drop`).
    fn batch(
        &self,
        held: &mut VecDeque<Record>,
        lines: &mut Vec<u8>,
        record_lines: &mut Vec<u8>,
        last_full_log: &mut Option<std::time::Instant>,
    ) -> (u64, bool) {
        let mut events = 0u64;
        while let Some(record) = held.front() {
            record_lines.clear();
            let n = self.lines_of(record, record_lines);
            let on_disk = self.shared.bytes.load(Ordering::Relaxed);
            if on_disk + (lines.len() + record_lines.len()) as u64 > self.settings.max_outbox_bytes {
                if self.settings.when_full != WhenFull::Drop {
                    return (events, true);
                }
                self.metrics.dropped_outbox_full.inc_by(n);
                if last_full_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    *last_full_log = Some(std::time::Instant::now());
                    tracing::error!(
                        max_outbox_bytes = self.settings.max_outbox_bytes,
                        "metering: the outbox is full; usage events are being DROPPED (when_full: drop)"
                    );
                }
                held.pop_front();
                continue;
            }
            lines.extend_from_slice(record_lines);
            events += n;
            held.pop_front();
        }
        (events, false)
    }

    /// Writes a batch of event lines to the outbox. The events exist only here: keep trying
    /// (the queue fills meanwhile, and under `when_full: reject` admission refuses new
    /// requests) rather than drop them — unless stopping, after ten failures.
    fn append(&self, writer: &mut outbox::Writer, lines: &[u8], mut events: u64, closed: bool) {
        let mut failures = 0u32;
        while let Err(e) = writer.append(lines) {
            failures += 1;
            if failures == 1 || failures.is_multiple_of(20) {
                tracing::error!(error = %e, events, "metering: cannot write the outbox; retrying");
            }
            if closed && failures >= 10 {
                self.metrics.dropped_outbox_full.inc_by(events);
                tracing::error!(events, "metering: stopping without being able to write the outbox; usage events lost");
                events = 0;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.metrics.persisted.inc_by(events);
        self.metrics.undelivered.inc_by(events as i64);
    }

    /// Sets the full flag admission reads, and logs when it changes.
    fn report_full(&self, blocked: bool) {
        let was_full = self.full.swap(blocked, Ordering::Relaxed);
        self.metrics.outbox_full.set(i64::from(blocked));
        if blocked && !was_full {
            tracing::error!(
                max_outbox_bytes = self.settings.max_outbox_bytes,
                "metering: the outbox is full; new requests are refused with 503 until it drains (when_full: reject)"
            );
        } else if was_full && !blocked {
            tracing::info!("metering: the outbox has room again");
        }
    }

    /// The last step when stopping: what is still held is counted as lost when the outbox
    /// stayed full (`give_up`), and the outbox is synced.
    fn stop(&self, writer: outbox::Writer, held: &VecDeque<Record>, give_up: bool) {
        if give_up {
            let lost: u64 = held.iter().map(|r| r.usage.map(|u| event::split(&u).len()).unwrap_or(2) as u64).sum();
            self.metrics.dropped_outbox_full.inc_by(lost);
            tracing::error!(events = lost, "metering: stopping with a full outbox; usage events lost");
        }
        if let Err(e) = writer.close() {
            tracing::error!(error = %e, "metering: cannot sync the outbox at shutdown");
        }
    }

    /// Appends a record's event lines; returns how many. Each event says whether its count is
    /// the gateway's own (`estimated`): all of them without usage; only the output with partial
    /// usage, whose input and cache counts are the upstream's.
    pub fn lines_of(&self, record: &Record, out: &mut Vec<u8>) -> u64 {
        let facts = self.deployments.facts(&record.deployment);
        let tokenizer = || self.tokenizers.get(&facts.tokenizer).or_else(|| self.tokenizers.get(count::ENCODINGS[0]));
        let parts: Vec<(TokenType, u64, bool)> = match (&record.usage, &record.estimate) {
            (Some(usage), None) => event::split(usage).into_iter().map(|(t, n)| (t, n, false)).collect(),
            (Some(usage), Some(input)) => {
                // The upstream's output count never came: count what it generated, but never
                // below what it had reported (Anthropic's `message_start` says 1).
                let counted = tokenizer().map(|t| output_tokens(input, &t)).unwrap_or(0);
                let output = counted.max(usage.completion_tokens);
                let mut parts: Vec<_> = event::split(usage)
                    .into_iter()
                    .filter(|(t, _)| !matches!(t, TokenType::Output | TokenType::Reasoning))
                    .map(|(t, n)| (t, n, false))
                    .collect();
                if output > 0 {
                    parts.push((TokenType::Output, output, true));
                }
                parts
            }
            (None, Some(input)) => match tokenizer() {
                Some(t) => estimate(input, &t).into_iter().map(|(t, n)| (t, n, true)).collect(),
                None => return 0,
            },
            (None, None) => return 0,
        };
        let tools = record.usage.as_ref().map(event::tool_uses).unwrap_or_default();
        if parts.is_empty() && tools.is_empty() {
            return 0;
        }
        let uid = format!("{:032x}", fastrand::u128(..));
        let time = event::rfc3339_millis(record.unix_ms);
        let mut envelope = Envelope {
            uid: &uid,
            source: &self.settings.source,
            event_type: &self.settings.event_type,
            subject: &record.subject,
            time: &time,
            model: &record.model,
            deployment: &record.deployment,
            provider: &facts.provider,
            key_id: &record.key_id,
            team: &record.team,
            request_id: &record.request_id,
            cached: record.cached,
            estimated: false,
            currency: self.deployments.prices.currency(),
        };
        // A gateway cache hit costs the gateway nothing upstream.
        let price = if record.cached {
            crate::spend::Price::FREE
        } else {
            self.deployments.prices.of(&record.deployment).price
        };
        let counts: Vec<(TokenType, u64)> = parts.iter().map(|(t, n, _)| (*t, *n)).collect();
        let long = record.usage.as_ref().map(crate::spend::long_writes).unwrap_or(0);
        let micros = crate::spend::apportion(&price, &counts, long);
        let mut estimated = 0;
        for ((token_type, tokens, counted_here), micros) in parts.iter().zip(micros) {
            let nanos = crate::spend::nanos_of(crate::spend::part_picos(&price, *token_type, *tokens, long));
            envelope.estimated = *counted_here;
            estimated += u64::from(*counted_here);
            event::write_line(out, &envelope, *token_type, *tokens, event::EventCost { nanos, micros });
        }
        for (tool, requests) in &tools {
            event::write_tool_line(out, &envelope, *tool, *requests);
        }
        if estimated > 0 {
            self.metrics.estimated.inc_by(estimated);
        }
        (parts.len() + tools.len()) as u64
    }
}

/// Counts a request locally: the prompt from its body, the output from what was generated.
pub fn estimate(input: &EstimateInput, tokenizer: &Tokenizer) -> Vec<(TokenType, u64)> {
    let prompt = count::prompt_tokens(&input.body, tokenizer);
    let output = output_tokens(input, tokenizer);
    [(TokenType::Input, prompt), (TokenType::Output, output)].into_iter().filter(|(_, n)| *n > 0).collect()
}

/// Counts what was generated locally (nothing for embeddings, or when nothing was captured).
pub fn output_tokens(input: &EstimateInput, tokenizer: &Tokenizer) -> u64 {
    match &input.generated {
        Some(g) if input.endpoint != Endpoint::Embeddings => {
            let text = (g.text)(&g.fragments);
            let counted = tokenizer.count(&text, false);
            if g.overflow_bytes > 0 && !g.fragments.is_empty() {
                // Past the capture cap: extrapolate at the rate of what was kept.
                let total = g.fragments.len() as u64 + g.overflow_bytes;
                counted.saturating_mul(total) / g.fragments.len() as u64
            } else {
                counted
            }
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
