//! The OTLP exporter. A finished trace is encoded where its request ended, on that serving
//! thread, into the thread's own batch (the spans of an `ExportTraceServiceRequest`, in OTLP's
//! wire form): the recorder never crosses to another thread, and its bytes are read while they
//! are still in that core's cache. One exporter task POSTs the batches to the collector over
//! HTTP/protobuf (`/v1/traces`) or gRPC (the TraceService's `Export` call, over HTTP/2: prior
//! knowledge for `http://`, ALPN for `https://`): a batch as soon as it holds `max_batch_spans`
//! spans, the others once `batch_delay` has passed since the first of them began. On shutdown it
//! exports every batch. Lost spans are counted, never silently: too many batches waiting (or a
//! trace ending after shutdown), a failed export.
//!
//! A request does not wake the exporter (that would be a cross-thread wake-up per request): only
//! the first trace of a thread's batch does, to start the timer, and the one that completes it.
//! At most `max_queue_spans` spans wait in complete batches; beyond that a batch is dropped.
//! Every batch keeps room in front of its spans, where the request's framing is written once the
//! batch is complete (`Head`), so the export's body is the batch's own buffer, not a copy. An
//! export that fails or times out is logged and not retried.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::Recorder;
use super::proto;
use crate::config::{OtlpProtocol, OtlpSettings};
use crate::http::{HttpClient, chain, http_client};

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Spans that reached the collector, and those that did not.
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// Span counts for the metrics: (exported, dropped because too many batches were waiting or the
/// exporter had stopped, dropped because the export failed).
pub fn counts() -> (u64, u64, u64) {
    (
        EXPORTED.load(Ordering::Relaxed),
        DROPPED_QUEUE_FULL.load(Ordering::Relaxed),
        DROPPED_EXPORT_FAILED.load(Ordering::Relaxed),
    )
}

/// Unix time for the monotonic clock's readings (`mono_nanos`): the offset between the two
/// clocks, read once and again by the exporter as it runs (so a corrected wall clock is
/// followed), rather than by every request.
struct WallClock {
    /// Unix nanoseconds minus monotonic nanoseconds, as two's complement.
    offset: AtomicU64,
}

static WALL_CLOCK: LazyLock<WallClock> = LazyLock::new(|| {
    let clock = WallClock { offset: AtomicU64::new(0) };
    clock.refresh();
    clock
});

impl WallClock {
    fn refresh(&self) {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let unix = u64::try_from(unix.as_nanos()).unwrap_or(u64::MAX);
        self.offset.store(unix.wrapping_sub(super::mono_nanos()), Ordering::Relaxed);
    }
}

/// What turns a monotonic reading into Unix nanoseconds (added, wrapping).
pub(super) fn unix_offset() -> u64 {
    WALL_CLOCK.offset.load(Ordering::Relaxed)
}

/// The framing around a batch's spans: `ExportTraceServiceRequest { ResourceSpans { Resource,
/// ScopeSpans { InstrumentationScope, spans } } }`, behind gRPC's 5-byte frame header for gRPC.
/// Every batch keeps `room` bytes in front of its spans, where the framing is written once the
/// batch is complete: the request body is the batch's own buffer, not a copy of it.
struct Head {
    grpc: bool,
    /// `ResourceSpans.resource`, whole.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, whole.
    scope: Vec<u8>,
    room: usize,
}

impl Head {
    fn new(service_name: &str, attributes: &[(String, String)], grpc: bool) -> Self {
        let (resource, scope) = proto::request_head(service_name, attributes);
        // gRPC's frame, and two tags and two lengths of at most ten bytes each.
        let room = 5 + 2 * (1 + 10) + resource.len() + scope.len();
        Self { grpc, resource, scope, room }
    }

    /// Writes the framing in front of `batch`'s spans; the body.
    fn frame(&self, batch: Batch) -> Bytes {
        let spans = batch.buf.len() - self.room;
        let mut head = Vec::with_capacity(self.room);
        if self.grpc {
            head.extend_from_slice(&[0; 5]);
        }
        proto::request_framing(&mut head, &self.resource, &self.scope, spans);
        if self.grpc {
            let len = u32::try_from(head.len() - 5 + spans).unwrap_or(u32::MAX);
            head[1..5].copy_from_slice(&len.to_be_bytes());
        }
        let start = self.room - head.len();
        let mut buf = batch.buf;
        buf[start..self.room].copy_from_slice(&head);
        Bytes::from(buf).slice(start..)
    }
}

/// Encoded spans, behind the room kept for their framing.
struct Batch {
    buf: Vec<u8>,
    spans: usize,
}

impl Batch {
    fn new(room: usize, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(room + capacity);
        buf.resize(room, 0);
        Self { buf, spans: 0 }
    }
}

/// One thread's batch. Only that thread adds to it; the exporter takes it when its time is up.
pub(super) struct Local(Mutex<Batch>);

impl Local {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

thread_local! {
    /// This thread's batch, and the exporter it belongs to.
    static LOCAL: RefCell<Option<(usize, Arc<Local>)>> = const { RefCell::new(None) };
}

/// What the serving threads share with the exporter task.
pub struct Exporter {
    head: Head,
    /// Every thread's batch (a thread that has ended is forgotten once its batch is empty).
    locals: Mutex<Vec<Arc<Local>>>,
    /// Batches complete and waiting to be sent, and the spans they hold.
    ready: Mutex<(VecDeque<Batch>, usize)>,
    closed: AtomicBool,
    /// Spans per export request: a batch is sent once it holds this many (one trace more at most).
    max_batch_spans: usize,
    /// Spans at most in batches waiting for the exporter: beyond it a batch is dropped and counted.
    max_queue_spans: usize,
    /// Woken when a thread's batch begins (to start the timer) and when one is complete — not
    /// for every trace, which would cost a request a cross-thread wake-up.
    wake: Notify,
}

impl Exporter {
    fn new(head: Head, max_batch_spans: usize, max_queue_spans: usize) -> Self {
        Self {
            head,
            locals: Mutex::new(Vec::new()),
            ready: Mutex::new((VecDeque::new(), 0)),
            closed: AtomicBool::new(false),
            max_batch_spans,
            max_queue_spans,
            wake: Notify::new(),
        }
    }

    fn new_batch(&self) -> Batch {
        // ~1.2 KB per trace of four spans: a full batch without regrowing (up to 1 MiB ahead;
        // a larger configured batch grows as it fills).
        Batch::new(self.head.room, (self.max_batch_spans * 320).min(1 << 20))
    }

    /// A finished trace: encoded into this thread's batch, or dropped (and counted) once the
    /// exporter has stopped.
    pub(super) fn add(&self, trace: Box<Recorder>) {
        let id = self as *const Self as usize;
        let spans = trace.spans.len();
        let added = LOCAL.try_with(|cell| {
            let mut cell = cell.borrow_mut();
            match &*cell {
                Some((owner, local)) if *owner == id => self.add_to(local, trace),
                _ => {
                    let local = self.new_local();
                    self.add_to(&local, trace);
                    *cell = Some((id, local));
                }
            }
        });
        if added.is_err() {
            // (A thread past its thread-locals, ending.)
            DROPPED_QUEUE_FULL.fetch_add(spans as u64, Ordering::Relaxed);
        }
    }

    /// A new thread's batch, which the exporter sweeps from now on.
    fn new_local(&self) -> Arc<Local> {
        let local = Arc::new(Local(Mutex::new(self.new_batch())));
        self.locked_locals().push(local.clone());
        local
    }

    fn add_to(&self, local: &Local, trace: Box<Recorder>) {
        let unix_offset = unix_offset();
        let spans = trace.spans.len();
        let (began, complete) = {
            let mut batch = local.lock();
            // (Read under the batch's lock: the last sweep at shutdown takes the same lock.)
            if self.closed.load(Ordering::SeqCst) {
                drop(batch);
                DROPPED_QUEUE_FULL.fetch_add(spans as u64, Ordering::Relaxed);
                super::recycle(trace);
                return;
            }
            let began = batch.spans == 0;
            proto::encode_spans(&mut batch.buf, &trace, unix_offset);
            batch.spans += spans;
            let complete =
                (batch.spans >= self.max_batch_spans).then(|| std::mem::replace(&mut *batch, self.new_batch()));
            (began, complete)
        };
        super::recycle(trace);
        if let Some(batch) = complete {
            self.queue(batch);
            self.wake.notify_one();
        } else if began {
            self.wake.notify_one();
        }
    }

    fn locked_locals(&self) -> MutexGuard<'_, Vec<Arc<Local>>> {
        self.locals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn locked_ready(&self) -> MutexGuard<'_, (VecDeque<Batch>, usize)> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a complete batch for sending, or drops (and counts) it when too many wait.
    fn queue(&self, batch: Batch) {
        let mut ready = self.locked_ready();
        if ready.1 + batch.spans > self.max_queue_spans {
            drop(ready);
            DROPPED_QUEUE_FULL.fetch_add(batch.spans as u64, Ordering::Relaxed);
            return;
        }
        ready.1 += batch.spans;
        ready.0.push_back(batch);
    }

    /// The next batch to send.
    fn next(&self) -> Option<Batch> {
        let mut ready = self.locked_ready();
        let batch = ready.0.pop_front()?;
        ready.1 -= batch.spans;
        Some(batch)
    }

    /// Queues every thread's batch that holds spans, complete or not.
    fn sweep(&self) {
        let mut locals = self.locked_locals();
        // A thread that has ended holds no reference to its batch any more.
        locals.retain(|local| {
            let mut batch = local.lock();
            if batch.spans > 0 {
                let taken = std::mem::replace(&mut *batch, self.new_batch());
                drop(batch);
                self.queue(taken);
                true
            } else {
                drop(batch);
                Arc::strong_count(local) > 1
            }
        });
    }

    /// Whether a thread's batch holds spans.
    fn pending(&self) -> bool {
        self.locked_locals().iter().any(|local| local.lock().spans > 0)
    }

    /// Refuses traces from now on, and queues every batch.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.sweep();
    }
}

/// The running exporter task; `shutdown` exports what is left, dropping it stops the task.
pub struct Running {
    task: tokio::task::JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Exports every batch, waiting at most `within`.
    pub async fn shutdown(mut self, within: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            tracing::warn!("trace export did not finish within {within:?} at shutdown");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the exporter task for `settings` (call inside the runtime).
pub fn start(settings: &OtlpSettings) -> Result<(Arc<Exporter>, Running), String> {
    let collector = Collector::new(settings)?;
    let head =
        Head::new(&settings.service_name, &settings.resource_attributes, settings.protocol == OtlpProtocol::Grpc);
    let exporter = Arc::new(Exporter::new(head, settings.max_batch_spans, settings.max_queue_spans));
    let (stop, stopped) = oneshot::channel();
    let sender = Sender { collector, delay: settings.batch_delay, timeout: settings.export_timeout };
    let task = tokio::spawn(sender.run(exporter.clone(), stopped));
    Ok((exporter, Running { task, stop: Some(stop) }))
}

struct Sender {
    collector: Collector,
    delay: Duration,
    /// One export, from connecting to the collector's answer.
    timeout: Duration,
}

impl Sender {
    async fn run(self, exporter: Arc<Exporter>, mut stopped: oneshot::Receiver<()>) {
        // Started when a batch begins and none was pending: once it fires, every batch goes.
        let due = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(due);
        let mut armed = false;
        loop {
            let timer = tokio::select! {
                _ = &mut stopped => break,
                () = exporter.wake.notified() => false,
                () = &mut due, if armed => true,
            };
            WALL_CLOCK.refresh();
            if timer {
                exporter.sweep();
                armed = false;
            }
            while let Some(batch) = exporter.next() {
                self.export(&exporter, batch).await;
            }
            if !armed && exporter.pending() {
                due.as_mut().reset(Instant::now() + self.delay);
                armed = true;
            }
        }
        // Shutting down: no more traces come in; every batch goes out.
        exporter.close();
        while let Some(batch) = exporter.next() {
            self.export(&exporter, batch).await;
        }
    }

    async fn export(&self, exporter: &Exporter, batch: Batch) {
        let count = batch.spans as u64;
        let body = exporter.head.frame(batch);
        match tokio::time::timeout(self.timeout, self.collector.send(body)).await {
            Ok(Ok(())) => {
                EXPORTED.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                DROPPED_EXPORT_FAILED.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(spans = count, error = %e, "trace export failed");
            }
            Err(_) => {
                DROPPED_EXPORT_FAILED.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(spans = count, "trace export timed out after {:?}", self.timeout);
            }
        }
    }
}

/// Where and how export requests go.
struct Collector {
    http: HttpClient,
    uri: Uri,
    protocol: OtlpProtocol,
    /// Content type, the configured headers (gRPC metadata), and gRPC's `te: trailers`.
    headers: HeaderMap,
}

impl Collector {
    fn new(settings: &OtlpSettings) -> Result<Self, String> {
        let endpoint = settings.endpoint.trim_end_matches('/');
        let uri = match settings.protocol {
            OtlpProtocol::Http if endpoint.ends_with("/v1/traces") => endpoint.to_owned(),
            OtlpProtocol::Http => format!("{endpoint}/v1/traces"),
            // gRPC addresses the service on the endpoint's origin.
            OtlpProtocol::Grpc => {
                let origin: Uri = endpoint.parse().map_err(|e| format!("OTLP endpoint {endpoint:?}: {e}"))?;
                let (scheme, authority) = (origin.scheme_str().unwrap_or("http"), origin.authority());
                let authority = authority.ok_or_else(|| format!("OTLP endpoint {endpoint:?} has no host"))?;
                format!("{scheme}://{authority}{GRPC_PATH}")
            }
        };
        let uri: Uri = uri.parse().map_err(|e| format!("OTLP endpoint {uri:?}: {e}"))?;
        let mut headers = HeaderMap::new();
        let content_type = match settings.protocol {
            OtlpProtocol::Http => "application/x-protobuf",
            OtlpProtocol::Grpc => {
                headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
                "application/grpc"
            }
        };
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("llm-gateway/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &settings.headers {
            let invalid = || format!("telemetry.otlp.headers.{name}: not a valid header");
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let mut value = HeaderValue::from_str(value).map_err(|_| invalid())?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = http_client(settings.export_timeout, settings.protocol == OtlpProtocol::Grpc)?;
        Ok(Self { http, uri, protocol: settings.protocol, headers })
    }

    async fn send(&self, body: Bytes) -> Result<(), String> {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let response = self.http.request(request).await.map_err(|e| chain(&e))?;
        let (parts, body) = response.into_parts();
        // Read the answer whole (it is small): the connection is then reused, and gRPC's
        // status is in the trailers.
        let answer = body.collect().await.map_err(|e| format!("reading the answer: {e}"))?;
        if !parts.status.is_success() {
            let text = answer.to_bytes();
            let text = String::from_utf8_lossy(&text[..text.len().min(512)]).into_owned();
            return Err(format!("HTTP {}: {text}", parts.status.as_u16()));
        }
        if self.protocol == OtlpProtocol::Grpc {
            // A trailers-only answer carries the status in its headers.
            let trailers = answer.trailers().cloned().unwrap_or_default();
            let field = |name: &str| {
                trailers.get(name).or_else(|| parts.headers.get(name)).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            match field("grpc-status").as_deref() {
                Some("0") => {}
                Some(code) => {
                    return Err(format!("gRPC status {code}: {}", field("grpc-message").unwrap_or_default()));
                }
                None => return Err("gRPC answer without grpc-status".into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn trace(spans: usize) -> Box<Recorder> {
        let mut r = Recorder::new(None, None, "chat");
        for _ in 1..spans {
            r.child("auth", super::super::Kind::Internal);
        }
        Box::new(r)
    }

    fn exporter() -> Exporter {
        Exporter::new(Head::new("svc", &[], false), 512, 64 * 512)
    }

    /// Whether the exporter has been woken (a stored permit), consuming the wake-up.
    fn woken(exporter: &Exporter) -> bool {
        exporter.wake.notified().now_or_never().is_some()
    }

    /// The length-delimited fields of one protobuf message: (field, payload).
    fn fields(buf: &[u8]) -> Vec<(u64, Vec<u8>)> {
        proto::tests::fields(buf).into_iter().filter(|f| f.1 == 2).map(|f| (f.0, f.2)).collect()
    }

    /// The trace ids of the spans in an export request's body, checking its framing.
    fn span_trace_ids(body: &[u8]) -> Vec<Vec<u8>> {
        let request = fields(body);
        assert_eq!(request.len(), 1, "one ResourceSpans");
        let resource_spans = fields(&request[0].1);
        let scope_spans = fields(&resource_spans[1].1);
        assert_eq!(fields(&scope_spans[0].1)[0].1, b"llm-gateway", "the scope, then the spans");
        scope_spans[1..].iter().map(|(_, span)| fields(span)[0].1.clone()).collect()
    }

    #[test]
    fn a_thread_batch_wakes_the_exporter_when_it_begins_and_when_complete_not_per_trace() {
        let exporter = exporter();
        let local = exporter.new_local();
        exporter.add_to(&local, trace(6));
        assert!(woken(&exporter), "a batch began: the exporter starts its timer");
        assert!(exporter.pending() && exporter.next().is_none(), "begun, not complete");
        for _ in 0..10 {
            exporter.add_to(&local, trace(6));
        }
        assert!(!woken(&exporter), "66 spans: no wake-up per trace");
        for _ in 0..75 {
            exporter.add_to(&local, trace(6));
        }
        assert!(woken(&exporter), "86 traces, 516 spans: a complete batch is waiting");
        let batch = exporter.next().expect("the complete batch");
        assert_eq!(batch.spans, 516);
        assert_eq!(local.lock().spans, 0, "the thread starts a new batch");
        exporter.add_to(&local, trace(6));
        assert!(woken(&exporter), "the next batch begins");
    }

    #[test]
    fn batches_beyond_the_bound_or_traces_after_close_are_dropped_and_counted() {
        let exporter = exporter();
        let local = exporter.new_local();
        let dropped = counts().1;
        // 64 batches of 512 spans fill the queue; the 65th is dropped whole.
        for _ in 0..65 * 64 {
            exporter.add_to(&local, trace(8));
        }
        assert!(counts().1 >= dropped + 512, "the 65th batch");
        let mut queued = 0;
        while let Some(batch) = exporter.next() {
            queued += batch.spans;
        }
        assert_eq!(queued, 64 * 512);
        exporter.add_to(&local, trace(3));
        exporter.close();
        assert_eq!(exporter.next().map(|b| b.spans), Some(3), "close queues what was batched");
        exporter.add_to(&local, trace(2));
        assert!(counts().1 >= dropped + 512 + 2, "2 after close");
        exporter.sweep();
        assert!(exporter.next().is_none());
    }

    #[test]
    fn the_configured_batch_size_and_queue_bound_are_kept() {
        // max_export_batch_size 10, max_queue_size 25: two complete batches wait, the third is
        // dropped whole.
        let exporter = Exporter::new(Head::new("svc", &[], false), 10, 25);
        let local = exporter.new_local();
        let dropped = counts().1;
        for _ in 0..3 * 3 {
            exporter.add_to(&local, trace(4));
        }
        assert!(counts().1 >= dropped + 12, "the third batch of 12 spans");
        let sizes: Vec<usize> = std::iter::from_fn(|| exporter.next()).map(|b| b.spans).collect();
        assert_eq!(sizes, [12, 12], "a batch goes once it holds 10 spans (one trace more at most)");
    }

    #[test]
    fn every_threads_traces_are_exported_once_in_requests_framed_whole() {
        let exporter = Arc::new(exporter());
        let mut sent = Vec::new();
        // (Joined, not scoped: a joined thread has run its thread-locals' destructors.)
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let exporter = exporter.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        exporter.add(trace(4));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // Three threads of 400 spans: none complete, each its own batch.
        assert_eq!(exporter.locked_locals().len(), 3);
        assert!(exporter.next().is_none());
        exporter.sweep();
        while let Some(batch) = exporter.next() {
            let body = exporter.head.frame(batch);
            sent.extend(span_trace_ids(&body));
        }
        assert_eq!(sent.len(), 1200);
        sent.sort();
        sent.dedup();
        assert_eq!(sent.len(), 300, "each trace's four spans, and no trace twice");
        exporter.sweep();
        assert!(exporter.locked_locals().is_empty(), "the ended threads' empty batches are forgotten");
    }

    #[test]
    fn grpc_bodies_carry_the_frame_header_and_long_batches_multi_byte_lengths() {
        let exporter = Exporter::new(Head::new(&"s".repeat(300), &[], true), 512, 64 * 512);
        let local = exporter.new_local();
        for _ in 0..3 {
            exporter.add_to(&local, trace(4));
        }
        exporter.sweep();
        let body = exporter.head.frame(exporter.next().unwrap());
        assert_eq!(body[0], 0, "uncompressed");
        assert_eq!(u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize, body.len() - 5);
        assert_eq!(span_trace_ids(&body[5..]).len(), 12);
    }

    #[test]
    fn unix_time_follows_the_monotonic_clock() {
        let mono = super::super::mono_nanos();
        let unix = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap();
        let mapped = mono.wrapping_add(unix_offset());
        assert!(mapped.abs_diff(unix) < 50_000_000, "{mapped} vs {unix}");
    }

    #[test]
    fn the_monotonic_readings_keep_pace_with_instant() {
        // Each reading between two `Instant`s: however the thread is preempted, the monotonic
        // interval lies within the outer `Instant` interval and covers the inner one.
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap();
        let (before, mono, after) = (std::time::Instant::now(), super::super::mono_nanos(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        let (before_2, mono_2, after_2) =
            (std::time::Instant::now(), super::super::mono_nanos(), std::time::Instant::now());
        let measured = mono_2 - mono;
        assert!(measured <= nanos(after_2 - before), "{measured} ns read, more than the outer interval");
        assert!(measured >= nanos(before_2 - after), "{measured} ns read, less than the inner interval");
    }
}
