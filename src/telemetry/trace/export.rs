//! The OTLP exporter: one task takes finished traces from a bounded queue, batches them (for
//! `batch_delay`, at most `MAX_BATCH_SPANS` spans), encodes them (`proto`) and POSTs them to the
//! collector over HTTP/protobuf (`/v1/traces`) or gRPC (the TraceService's `Export` call, over
//! HTTP/2: prior knowledge for `http://`, ALPN for `https://`). On shutdown it exports what is
//! still queued. Lost spans are counted, never silently: a full queue, a failed export.

// (Recorders travel boxed: see `trace`.)
#![allow(clippy::vec_box)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::Recorder;
use crate::config::{OtlpProtocol, OtlpSettings};
use crate::upstream::{HttpClient, chain, http_client};

/// Finished traces waiting for the exporter (about 50,000 spans).
pub const QUEUE_TRACES: usize = 8192;
/// Spans per export request at most (the OpenTelemetry SDK's default batch size).
pub const MAX_BATCH_SPANS: usize = 512;
/// One export, from connecting to the collector's answer.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Spans that reached the collector, and those that did not.
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// Span counts for the metrics: (exported, dropped because the queue was full, dropped because
/// the export failed).
pub fn counts() -> (u64, u64, u64) {
    (
        EXPORTED.load(Ordering::Relaxed),
        DROPPED_QUEUE_FULL.load(Ordering::Relaxed),
        DROPPED_EXPORT_FAILED.load(Ordering::Relaxed),
    )
}

/// Finished traces on their way to the exporter. A sender wakes the exporter only when a batch
/// begins (to start its timer) and when a full batch is waiting — not for every trace, which
/// would cost a request on another thread a cross-thread wake-up.
pub struct Queue {
    queued: Mutex<Queued>,
    wake: Notify,
}

#[derive(Default)]
struct Queued {
    traces: Vec<Box<Recorder>>,
    spans: usize,
    closed: bool,
}

impl Queue {
    fn new() -> Self {
        Self { queued: Mutex::new(Queued::default()), wake: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a finished trace to the exporter, or drops (and counts) it when the queue is full
    /// or the exporter has stopped.
    pub(super) fn push(&self, trace: Box<Recorder>) {
        let spans = trace.spans.len();
        let wake = {
            let mut queued = self.lock();
            if queued.closed || queued.traces.len() >= QUEUE_TRACES {
                drop(queued);
                DROPPED_QUEUE_FULL.fetch_add(spans as u64, Ordering::Relaxed);
                return;
            }
            let before = queued.spans;
            queued.traces.push(trace);
            queued.spans += spans;
            before == 0 || (before < MAX_BATCH_SPANS && queued.spans >= MAX_BATCH_SPANS)
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// Spans waiting.
    fn spans(&self) -> usize {
        self.lock().spans
    }

    /// Everything waiting.
    fn take(&self) -> Vec<Box<Recorder>> {
        let mut queued = self.lock();
        queued.spans = 0;
        // The next batch is likely as long: room for it up front rather than regrowing.
        let room = queued.traces.len();
        std::mem::replace(&mut queued.traces, Vec::with_capacity(room))
    }

    /// Refuses traces from now on and returns those waiting.
    fn close(&self) -> Vec<Box<Recorder>> {
        self.lock().closed = true;
        self.take()
    }
}

/// The running exporter task; `shutdown` exports what is left, dropping it stops the task.
pub struct Running {
    task: tokio::task::JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Exports what is still queued, waiting at most `within`.
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
pub fn start(settings: &OtlpSettings) -> Result<(Arc<Queue>, Running), String> {
    let collector = Collector::new(settings)?;
    let queue = Arc::new(Queue::new());
    let (stop, stopped) = oneshot::channel();
    let batch = Batcher { collector, service_name: settings.service_name.clone(), delay: settings.batch_delay };
    let task = tokio::spawn(batch.run(queue.clone(), stopped));
    Ok((queue, Running { task, stop: Some(stop) }))
}

struct Batcher {
    collector: Collector,
    service_name: String,
    delay: Duration,
}

impl Batcher {
    async fn run(self, queue: Arc<Queue>, mut stopped: oneshot::Receiver<()>) {
        // A batch short of `MAX_BATCH_SPANS` waits here for more, at most until `due`.
        let (mut batch, mut spans) = (Vec::new(), 0);
        // Started when a batch begins: it fires once the batch's first trace has waited `delay`.
        let due = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(due);
        let mut armed = false;
        loop {
            let timer = tokio::select! {
                _ = &mut stopped => break,
                () = queue.wake.notified() => {
                    if spans + queue.spans() < MAX_BATCH_SPANS {
                        if !armed {
                            due.as_mut().reset(Instant::now() + self.delay);
                            armed = true;
                        }
                        continue;
                    }
                    false
                }
                () = &mut due, if armed => true,
            };
            self.add(&mut batch, &mut spans, queue.take()).await;
            if timer {
                self.export(&mut batch, &mut spans).await;
            }
            armed = !batch.is_empty();
            if armed {
                due.as_mut().reset(Instant::now() + self.delay);
            }
        }
        // Shutting down: no more traces come in; what is queued goes out.
        self.add(&mut batch, &mut spans, queue.close()).await;
        self.export(&mut batch, &mut spans).await;
    }

    /// Adds `traces` to the batch, exporting each time it reaches `MAX_BATCH_SPANS` spans.
    async fn add(&self, batch: &mut Vec<Box<Recorder>>, spans: &mut usize, traces: Vec<Box<Recorder>>) {
        for trace in traces {
            *spans += trace.spans.len();
            batch.push(trace);
            if *spans >= MAX_BATCH_SPANS {
                self.export(batch, spans).await;
            }
        }
    }

    async fn export(&self, batch: &mut Vec<Box<Recorder>>, spans: &mut usize) {
        if batch.is_empty() {
            return;
        }
        let count = std::mem::take(spans) as u64;
        // ~1.3 KB per trace: one allocation for the whole request body.
        let size = 1024 + batch.len() * 1536;
        let body = self.collector.frame(size, |out| super::proto::encode_request(out, &self.service_name, batch));
        super::recycle(batch);
        match tokio::time::timeout(EXPORT_TIMEOUT, self.collector.send(body)).await {
            Ok(Ok(())) => {
                EXPORTED.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                DROPPED_EXPORT_FAILED.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(spans = count, error = %e, "trace export failed");
            }
            Err(_) => {
                DROPPED_EXPORT_FAILED.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(spans = count, "trace export timed out after {EXPORT_TIMEOUT:?}");
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
        let http = http_client(EXPORT_TIMEOUT, settings.protocol == OtlpProtocol::Grpc)?;
        Ok(Self { http, uri, protocol: settings.protocol, headers })
    }

    /// The request body: the encoded message, behind gRPC's 5-byte frame header for gRPC
    /// (uncompressed flag, big-endian length).
    fn frame(&self, size: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Bytes {
        let mut out = Vec::with_capacity(size);
        let grpc = self.protocol == OtlpProtocol::Grpc;
        if grpc {
            out.extend_from_slice(&[0; 5]);
        }
        encode(&mut out);
        if grpc {
            let len = u32::try_from(out.len() - 5).unwrap_or(u32::MAX);
            out[1..5].copy_from_slice(&len.to_be_bytes());
        }
        Bytes::from(out)
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
        let mut r = Recorder::new(None, None, std::time::Instant::now(), "chat");
        for _ in 1..spans {
            r.child("auth", super::super::Kind::Internal);
        }
        Box::new(r)
    }

    /// Whether the exporter has been woken (a stored permit), consuming the wake-up.
    fn woken(queue: &Queue) -> bool {
        queue.wake.notified().now_or_never().is_some()
    }

    #[test]
    fn the_exporter_is_woken_when_a_batch_begins_and_when_it_is_full_not_per_trace() {
        let queue = Queue::new();
        queue.push(trace(6));
        assert!(woken(&queue), "a batch began: the exporter starts its timer");
        for _ in 0..10 {
            queue.push(trace(6));
        }
        assert!(!woken(&queue), "66 spans: no wake-up per trace");
        for _ in 0..80 {
            queue.push(trace(6));
        }
        assert!(woken(&queue), "a full batch is waiting");
        assert_eq!(queue.spans(), 91 * 6);
        assert_eq!(queue.take().len(), 91);
        queue.push(trace(6));
        assert!(woken(&queue), "the next batch begins");
    }

    #[test]
    fn traces_beyond_the_bound_or_after_close_are_dropped_and_counted() {
        let queue = Queue::new();
        let dropped = counts().1;
        for _ in 0..QUEUE_TRACES + 3 {
            queue.push(trace(1));
        }
        assert_eq!(queue.spans(), QUEUE_TRACES);
        assert_eq!(queue.close().len(), QUEUE_TRACES);
        queue.push(trace(2));
        assert!(counts().1 >= dropped + 5, "3 over the bound, 2 after close");
        assert!(queue.take().is_empty());
    }
}
