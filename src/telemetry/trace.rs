//! Traces: head sampling, the per-request span recorder carried in the request context, and the
//! hand-off of each finished trace to the OTLP exporter (`export`; wire encoding in `proto`).
//!
//! A sampled request gets one boxed `Recorder` (an exported trace's, emptied, when the thread
//! has one spare): every span of the request (the server span and its children) with ids, timestamps
//! and names, and their attributes, encoded in OTLP's wire form as they are set into one byte
//! arena (a run of attributes set on one span in a row is one range of it, copied as is when the
//! trace is encoded). Attributes that depend only on the deployment are encoded once per deployment
//! (`AttributeBlock`) and copied in. An unsampled request's `Trace` is empty: recording into it is a
//! branch, with no allocation and no clock read. When the request context drops, the trace is
//! finished and encoded into the thread's batch for the exporter (`export`).
//!
//! Spans go through neither the `tracing` crate nor the OpenTelemetry SDK. Start and end times are
//! readings of `CLOCK_MONOTONIC`, taken directly rather than through `Instant`'s arithmetic, and
//! turned into Unix time with the wall clock's offset, which the exporter reads as it runs (not
//! every request). Attribute names are constants (`Key`) whose `KeyValue` framing is encoded ahead:
//! setting an attribute copies that framing in one piece, fills in its lengths and copies the
//! value. Once its trace is encoded, a recorder is emptied and kept for the thread's next traced
//! request (up to `SPARE_MAX`, 256, per thread): a traced request allocates nothing for its trace,
//! and neither the recorder nor its bytes cross to another thread. The server span's name and
//! attributes are written when the request has ended, from what the request got to.

// Spare recorders are kept boxed: a request's trace takes one and gives it back as a pointer.
#![allow(clippy::vec_box)]

pub mod export;
pub mod proto;
pub mod w3c;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use http::HeaderMap;

/// GenAI semantic-convention attribute names (our own constants: the semconv crate marks every
/// `gen_ai.*` name deprecated since they moved to their own repository).
pub mod genai {
    use super::Key;
    pub const OPERATION_NAME: Key = Key::new("gen_ai.operation.name");
    pub const PROVIDER_NAME: Key = Key::new("gen_ai.provider.name");
    pub const REQUEST_MODEL: Key = Key::new("gen_ai.request.model");
    pub const RESPONSE_MODEL: Key = Key::new("gen_ai.response.model");
    pub const REQUEST_STREAM: Key = Key::new("gen_ai.request.stream");
    pub const USAGE_INPUT_TOKENS: Key = Key::new("gen_ai.usage.input_tokens");
    pub const USAGE_OUTPUT_TOKENS: Key = Key::new("gen_ai.usage.output_tokens");
    pub const RESPONSE_FINISH_REASONS: Key = Key::new("gen_ai.response.finish_reasons");
}

/// The other attribute names: general semantic conventions, then the gateway's own.
pub mod keys {
    use super::Key;
    pub const ERROR_TYPE: Key = Key::new("error.type");
    pub const HTTP_STATUS: Key = Key::new("http.response.status_code");
    pub const SERVER_ADDRESS: Key = Key::new("server.address");
    pub const SERVER_PORT: Key = Key::new("server.port");
    pub const REQUEST_ID: Key = Key::new("llm_gateway.request_id");
    pub const TEAM: Key = Key::new("llm_gateway.team");
    pub const DEPLOYMENT: Key = Key::new("llm_gateway.deployment");
    /// The attempts a request made (on the server span).
    pub const ATTEMPTS: Key = Key::new("llm_gateway.attempts");
    /// Which attempt this is, from 1 (on an attempt's span).
    pub const ATTEMPT: Key = Key::new("llm_gateway.attempt");
    pub const CHUNKS: Key = Key::new("llm_gateway.chunks");
}

/// An attribute's name, with its `KeyValue` framing encoded ahead (`proto::key_head`): setting
/// an attribute copies the framing in one piece, fills in its lengths, then copies the value.
/// Made once, as a constant.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    name: &'static str,
    head: proto::KeyHead,
}

impl Key {
    pub const fn new(name: &'static str) -> Self {
        Self { name, head: proto::key_head(name) }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Spans beyond this many in one trace (a request failing over through dozens of deployments)
/// are not recorded.
const MAX_SPANS: usize = 64;

thread_local! {
    /// Recorders whose traces were encoded on this thread, emptied, for its next requests to
    /// fill: a traced request then allocates nothing for its trace. At most `SPARE_MAX` kept.
    static SPARE: RefCell<Vec<Box<Recorder>>> = const { RefCell::new(Vec::new()) };
}
const SPARE_MAX: usize = 256;
/// A recorder whose arena grew beyond this (a client's very long model name) is not kept.
const SPARE_ARENA_MAX: usize = 4096;

/// Empties an encoded recorder into this thread's spares (or frees it, beyond the bound).
fn recycle(mut r: Box<Recorder>) {
    if r.arena.capacity() > SPARE_ARENA_MAX {
        return;
    }
    r.spans.clear();
    r.runs.clear();
    r.arena.clear();
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_MAX {
            spare.push(r);
        }
    });
}

/// Where finished traces go, and the share of requests traced; set once the exporter runs.
struct Pipeline {
    exporter: std::sync::Arc<export::Exporter>,
    ratio: f64,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
/// Cleared on shutdown: requests still arriving are no longer traced.
static SAMPLING: AtomicBool = AtomicBool::new(false);

/// Starts the exporter and, from then on, samples requests (call once, inside the runtime).
pub fn install(settings: &crate::config::OtlpSettings) -> Result<export::Running, String> {
    let (exporter, running) = export::start(settings)?;
    let pipeline = Pipeline { exporter, ratio: settings.sample_ratio.clamp(0.0, 1.0) };
    PIPELINE.set(pipeline).map_err(|_| "the trace exporter is already installed".to_owned())?;
    SAMPLING.store(true, Ordering::Relaxed);
    Ok(running)
}

/// Stops tracing new requests (at shutdown, before the last export).
pub fn stop_sampling() {
    SAMPLING.store(false, Ordering::Relaxed);
}

/// The head-sampling decision for a request: `None` when it is not traced, else the client's
/// trace to continue (if any). Parent first: a client's valid `traceparent` decides by its
/// sampled flag; otherwise the configured ratio does. No request is traced while no exporter is
/// installed.
pub fn sampled(headers: &HeaderMap) -> Option<Option<w3c::Parent>> {
    if !SAMPLING.load(Ordering::Relaxed) {
        return None;
    }
    let ratio = PIPELINE.get()?.ratio;
    match headers.get(w3c::TRACEPARENT).and_then(|v| w3c::parse_traceparent(v.as_bytes())) {
        Some(parent) => parent.sampled().then_some(Some(parent)),
        None => (ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)).then_some(None),
    }
}

/// A span of a trace, by position (the server span is `SERVER`); a span that was not recorded
/// (untraced request, too many spans) is `NONE`, and recording into it does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRef(u8);

impl SpanRef {
    pub const SERVER: Self = Self(0);
    pub const NONE: Self = Self(u8::MAX);
}

/// OTLP's span kinds (the numbers are the protocol's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// Attributes encoded once in OTLP's wire form (`Span.attributes` fields), for the values that
/// are the same on every request of a deployment: recording them is a copy.
#[derive(Debug, Clone)]
pub struct AttributeBlock(Box<[u8]>);

impl AttributeBlock {
    /// The string attributes `strings` then the integer attributes `ints` (key, value), encoded.
    pub fn new(strings: &[(Key, &str)], ints: &[(Key, i64)]) -> Self {
        let mut out = Vec::new();
        for (key, value) in strings {
            proto::str_attribute(&mut out, key, value);
        }
        for (key, value) in ints {
            proto::int_attribute(&mut out, key, *value);
        }
        Self(out.into_boxed_slice())
    }
}

/// A range of a recorder's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy)]
enum Name {
    Static(&'static str),
    Text(Range),
}

/// One span. Its parent is implied: the server span's is the client's span (if any), every
/// other span's is the server span.
#[derive(Debug)]
struct SpanRecord {
    id: [u8; 8],
    name: Name,
    kind: Kind,
    /// On the monotonic clock (`mono_nanos`).
    start: u64,
    end: Option<u64>,
    error: bool,
    /// Bytes of its encoded attributes (in `runs`), counted as they are set: the encoder writes a
    /// span's length before the span, without going through the runs twice.
    attributes_len: u32,
}

/// Attributes of one span, encoded (`Span.attributes` fields): a range of the arena.
#[derive(Debug, Clone, Copy)]
struct Run {
    span: u8,
    bytes: Range,
}

/// Every span of one request, as it is being recorded.
#[derive(Debug)]
pub struct Recorder {
    trace_id: [u8; 16],
    /// The client's span, when the trace continues the client's.
    remote_parent: Option<[u8; 8]>,
    /// The client's `tracestate`, passed on unchanged.
    trace_state: Option<Range>,
    spans: Vec<SpanRecord>,
    /// The spans' attributes, in the order they were set.
    runs: Vec<Run>,
    /// Span names, the trace state and encoded attributes.
    arena: Vec<u8>,
}

impl Recorder {
    /// A trace whose server span `name` starts now, in a spare recorder when there is one.
    fn start(parent: Option<w3c::Parent>, trace_state: Option<&str>, name: &'static str) -> Box<Self> {
        let spare = SPARE.try_with(|spare| spare.borrow_mut().pop()).ok().flatten();
        match spare {
            Some(mut recorder) => {
                recorder.begin(parent, trace_state, name);
                recorder
            }
            None => Box::new(Self::new(parent, trace_state, name)),
        }
    }

    /// A trace whose server span `name` starts now.
    fn new(parent: Option<w3c::Parent>, trace_state: Option<&str>, name: &'static str) -> Self {
        let mut recorder = Self {
            trace_id: [0; 16],
            remote_parent: None,
            trace_state: None,
            spans: Vec::with_capacity(8),
            runs: Vec::with_capacity(8),
            arena: Vec::with_capacity(1024),
        };
        recorder.begin(parent, trace_state, name);
        recorder
    }

    /// Starts recording a trace into this empty recorder.
    fn begin(&mut self, parent: Option<w3c::Parent>, trace_state: Option<&str>, name: &'static str) {
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => loop {
                let id = fastrand::u128(..);
                if id != 0 {
                    break id.to_be_bytes();
                }
            },
        };
        self.trace_id = trace_id;
        self.remote_parent = parent.map(|p| p.span_id);
        self.trace_state = trace_state.filter(|_| parent.is_some()).map(|state| self.concat(&[state]));
        self.spans.push(SpanRecord {
            id: new_span_id(),
            name: Name::Static(name),
            kind: Kind::Server,
            start: mono_nanos(),
            end: None,
            error: false,
            attributes_len: 0,
        });
    }

    /// Starts a child of the server span.
    pub fn child(&mut self, name: &'static str, kind: Kind) -> SpanRef {
        self.push_span(Name::Static(name), kind)
    }

    /// Starts a child of the server span named by `name` (its parts copied into the text arena).
    pub fn child_named(&mut self, name: &[&str], kind: Kind) -> SpanRef {
        let name = self.concat(name);
        self.push_span(Name::Text(name), kind)
    }

    fn push_span(&mut self, name: Name, kind: Kind) -> SpanRef {
        if self.spans.len() >= MAX_SPANS {
            return SpanRef::NONE;
        }
        let start = mono_nanos();
        self.spans.push(SpanRecord {
            id: new_span_id(),
            name,
            kind,
            start,
            end: None,
            error: false,
            attributes_len: 0,
        });
        SpanRef((self.spans.len() - 1) as u8)
    }

    /// Ends a span (again: keeps the first end).
    pub fn end(&mut self, span: SpanRef) {
        let now = mono_nanos();
        if let Some(s) = self.spans.get_mut(usize::from(span.0)) {
            s.end.get_or_insert(now);
        }
    }

    /// Renames a span (the server span once the model is known).
    pub fn rename(&mut self, span: SpanRef, name: &[&str]) {
        if usize::from(span.0) < self.spans.len() {
            let name = self.concat(name);
            self.spans[usize::from(span.0)].name = Name::Text(name);
        }
    }

    /// Marks a span failed (OTLP status `ERROR`).
    pub fn set_error(&mut self, span: SpanRef) {
        if let Some(s) = self.spans.get_mut(usize::from(span.0)) {
            s.error = true;
        }
    }

    /// Sets attributes of `span`, encoded as they are set; they are one run of the arena, recorded
    /// when the `Attributes` drop. Each key once per span: attributes are appended, not replaced.
    pub fn attributes(&mut self, span: SpanRef) -> Attributes<'_> {
        let start = self.arena.len();
        let recorder = (usize::from(span.0) < self.spans.len()).then_some(self);
        Attributes { recorder, span, start }
    }

    /// Records `span`'s attributes encoded from `start` to the arena's end: the last run grows
    /// when it is the same span's and ends there.
    fn add_run(&mut self, span: SpanRef, start: usize) {
        let bytes = self.arena_range(start);
        if let Some(s) = self.spans.get_mut(usize::from(span.0)) {
            s.attributes_len += bytes.end - bytes.start;
        }
        match self.runs.last_mut() {
            Some(last) if last.span == span.0 && last.bytes.end == bytes.start => last.bytes.end = bytes.end,
            _ => self.runs.push(Run { span: span.0, bytes }),
        }
    }

    /// The `traceparent` naming `span` as the parent, for an upstream request.
    pub fn traceparent(&self, span: SpanRef) -> Option<w3c::TraceParent> {
        let span = self.spans.get(usize::from(span.0))?;
        Some(w3c::TraceParent::new(&self.trace_id, &span.id))
    }

    /// The client's `tracestate`, when this trace continues the client's.
    pub fn trace_state(&self) -> Option<&str> {
        self.trace_state.and_then(|t| std::str::from_utf8(self.bytes(t)).ok())
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> TraceIdHex {
        let mut out = [0u8; 32];
        w3c::encode_hex(&self.trace_id, &mut out);
        TraceIdHex(out)
    }

    /// Ends the server span and any span left open (a request cancelled mid-stage).
    fn finish(&mut self) {
        let now = mono_nanos();
        for span in &mut self.spans {
            span.end.get_or_insert(now);
        }
    }

    fn concat(&mut self, parts: &[&str]) -> Range {
        let start = self.arena.len();
        for part in parts {
            self.arena.extend_from_slice(part.as_bytes());
        }
        self.arena_range(start)
    }

    fn arena_range(&self, start: usize) -> Range {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Range { start: clamp(start), end: clamp(self.arena.len()) }
    }

    /// The bytes of an arena range (UTF-8 for a name or the trace state).
    fn bytes(&self, t: Range) -> &[u8] {
        self.arena.get(t.start as usize..t.end as usize).unwrap_or_default()
    }
}

/// Nanoseconds on the monotonic clock: `CLOCK_MONOTONIC`, read directly (a request's spans read
/// it six times or more; `Instant`'s arithmetic on each reading cost more than the reading).
#[cfg(target_os = "linux")]
fn mono_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes the time into the timespec it is given, which lives on
    // this stack frame for the call; CLOCK_MONOTONIC is always supported on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    (now.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(now.tv_nsec as u64)
}

/// Nanoseconds on the monotonic clock (since the first reading, where it is not read directly).
#[cfg(not(target_os = "linux"))]
fn mono_nanos() -> u64 {
    static BASE: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);
    u64::try_from(BASE.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// Attributes being set on one span (`Recorder::attributes`); on a span that was not recorded,
/// setting them does nothing. Keys are ours (`Key` constants), never a client's text.
pub struct Attributes<'r> {
    recorder: Option<&'r mut Recorder>,
    span: SpanRef,
    start: usize,
}

impl Attributes<'_> {
    fn arena(&mut self) -> Option<&mut Vec<u8>> {
        self.recorder.as_deref_mut().map(|r| &mut r.arena)
    }

    pub fn str(&mut self, key: &Key, value: &str) -> &mut Self {
        if let Some(arena) = self.arena() {
            proto::str_attribute(arena, key, value);
        }
        self
    }

    pub fn int(&mut self, key: &Key, value: i64) -> &mut Self {
        if let Some(arena) = self.arena() {
            proto::int_attribute(arena, key, value);
        }
        self
    }

    pub fn bool(&mut self, key: &Key, value: bool) -> &mut Self {
        if let Some(arena) = self.arena() {
            proto::bool_attribute(arena, key, value);
        }
        self
    }

    /// A string-array attribute.
    pub fn strs(&mut self, key: &Key, values: &[&str]) -> &mut Self {
        if let Some(arena) = self.arena() {
            proto::str_array_attribute(arena, key, values);
        }
        self
    }

    /// The attributes of `block`.
    pub fn block(&mut self, block: &AttributeBlock) -> &mut Self {
        if let Some(arena) = self.arena() {
            arena.extend_from_slice(&block.0);
        }
        self
    }
}

impl Drop for Attributes<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.recorder.take()
            && r.arena.len() > self.start
        {
            r.add_run(self.span, self.start);
        }
    }
}

/// A trace id as text, without allocating (for the request log line).
#[derive(Clone, Copy)]
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// A request's trace: a recorder when the request is sampled, nothing otherwise. Dropping it
/// (with the request context) finishes the trace and hands it to the exporter.
#[derive(Debug, Default)]
pub struct Trace(Option<Mutex<Box<Recorder>>>);

impl Trace {
    /// No trace: nothing is recorded.
    pub fn none() -> Self {
        Self(None)
    }

    /// The trace of a request that arrived with `headers`, when it is sampled (its server span,
    /// of kind server, starts now and is called `name` until renamed).
    pub fn start(headers: &HeaderMap, name: &'static str) -> Self {
        let Some(parent) = sampled(headers) else { return Self(None) };
        let trace_state = match parent {
            Some(_) => headers.get(w3c::TRACESTATE).and_then(|v| w3c::valid_trace_state(v.as_bytes())),
            None => None,
        };
        Self(Some(Mutex::new(Recorder::start(parent, trace_state, name))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The recorder, without locking (the context is not shared yet).
    pub fn get_mut(&mut self) -> Option<&mut Recorder> {
        self.0.as_mut().map(|m| &mut **m.get_mut().unwrap_or_else(|p| p.into_inner()))
    }

    /// The recorder of a shared context (a stream's end, the end-of-request observers).
    pub fn lock(&self) -> Option<MutexGuard<'_, Box<Recorder>>> {
        self.0.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts an internal child of the server span.
    pub fn child(&mut self, name: &'static str) -> SpanRef {
        self.get_mut().map_or(SpanRef::NONE, |r| r.child(name, Kind::Internal))
    }

    pub fn end(&mut self, span: SpanRef) {
        if let Some(r) = self.get_mut() {
            r.end(span);
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let Some(recorder) = self.0.take() else { return };
        let mut recorder = recorder.into_inner().unwrap_or_else(|p| p.into_inner());
        recorder.finish();
        match PIPELINE.get() {
            Some(pipeline) => pipeline.exporter.add(recorder),
            None => recycle(recorder),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_a_tree_under_the_server_span_continuing_the_client() {
        let parent = w3c::parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut r = Recorder::new(parent, Some("k=v"), "chat");
        let auth = r.child("auth", Kind::Internal);
        r.end(auth);
        let attempt = r.child_named(&["chat ", "gpt-4o"], Kind::Client);
        r.attributes(attempt).str(&genai::REQUEST_MODEL, "gpt-4o").int(&Key::new("llm_gateway.attempt"), 1);
        r.rename(SpanRef::SERVER, &["chat ", "my-model"]);
        r.set_error(SpanRef::SERVER);
        r.attributes(SpanRef::NONE).bool(&Key::new("ignored"), true);
        r.finish();

        assert_eq!(r.trace_id_hex().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(r.remote_parent, Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
        assert_eq!(r.trace_state(), Some("k=v"));
        assert_eq!(r.spans.len(), 3);
        assert!(r.spans.iter().all(|s| s.end.is_some_and(|end| end >= s.start)));
        assert!(matches!(r.spans[0].name, Name::Text(t) if r.bytes(t) == b"chat my-model"));
        assert!(matches!(r.spans[2].name, Name::Text(t) if r.bytes(t) == b"chat gpt-4o"));
        assert!(r.spans[0].error && !r.spans[1].error);
        assert_eq!(r.runs.len(), 1, "the attempt's two attributes, set together, are one run");
        assert_eq!(r.runs[0].span, attempt.0);
        let up = r.traceparent(attempt).unwrap();
        let sent = w3c::parse_traceparent(up.as_bytes()).unwrap();
        assert_eq!((sent.trace_id, sent.span_id), (r.trace_id, r.spans[2].id));
    }

    #[test]
    fn a_reused_recorder_holds_only_the_new_trace() {
        let parent = w3c::parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut old = Recorder::start(parent, Some("k=v"), "chat");
        let attempt = old.child_named(&["chat ", "gpt-4o"], Kind::Client);
        old.attributes(attempt).str(&genai::REQUEST_MODEL, "gpt-4o");
        old.set_error(SpanRef::SERVER);
        old.finish();
        let (old_id, old_at) = (old.trace_id, &*old as *const Recorder);
        recycle(old);

        // (The spares are this thread's: no other test takes them.)
        let r = Recorder::start(None, Some("k=v"), "embeddings");
        assert!(std::ptr::eq(&*r, old_at), "the spare is reused");
        assert_ne!(r.trace_id, old_id);
        assert_eq!((r.remote_parent, r.trace_state()), (None, None));
        assert_eq!(r.spans.len(), 1);
        assert!(matches!(r.spans[0].name, Name::Static("embeddings")));
        assert!(!r.spans[0].error && r.spans[0].end.is_none());
        assert!(r.runs.is_empty() && r.arena.is_empty());
    }

    #[test]
    fn a_new_trace_has_fresh_ids_and_no_trace_state() {
        let r = Recorder::new(None, Some("k=v"), "chat");
        assert_ne!(r.trace_id, [0; 16]);
        assert_eq!(r.remote_parent, None);
        assert_eq!(r.trace_state(), None);
    }

    #[test]
    fn an_untraced_request_records_nothing() {
        let mut t = Trace::none();
        assert_eq!(t.child("auth"), SpanRef::NONE);
        t.end(SpanRef::NONE);
        assert!(t.lock().is_none() && !t.is_on());
        // Nothing is installed in unit tests: no request is sampled.
        assert!(Trace::start(&HeaderMap::new(), "chat").0.is_none());
    }
}
