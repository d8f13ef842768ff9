//! OTLP protobuf, written by hand: an `ExportTraceServiceRequest` holding one `ResourceSpans`
//! (resource attribute `service.name`), one `ScopeSpans` (scope `llm-gateway`) and the spans of
//! a batch of finished traces. Field numbers are those of opentelemetry-proto's
//! `collector/trace/v1/trace_service.proto`, `trace/v1/trace.proto` and `common/v1/common.proto`.
//!
//! Nested messages are length-delimited. An attribute's length is computed before it is
//! written, and so is a span's (its attributes' bytes are counted as they are set; a failed
//! span's status is four constant bytes); the resource and scope, built once, get a one-byte
//! length placeholder and shift their body when they need a wider one. The spans of a
//! batch are encoded first (`encode_spans`, trace by trace, as requests end); the
//! request's framing around them (`request_framing`) once the batch is complete and its length
//! known.

use super::{Key, Name, Recorder, SpanRef};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// OTLP `Status.code` of a failed span (`STATUS_CODE_ERROR`).
const STATUS_ERROR: u8 = 2;
/// `Span.status` (15) → `Status.code` (3) = ERROR, whole.
const ERROR_STATUS: [u8; 4] = [15 << 3 | LEN, 2, 3 << 3 | VARINT, STATUS_ERROR];

/// The constant parts of an export request: `ResourceSpans.resource` (attribute `service.name`,
/// then `attributes`) and `ScopeSpans.scope` (`llm-gateway` and its version), each a whole field.
pub fn request_head(service_name: &str, attributes: &[(String, String)]) -> (Vec<u8>, Vec<u8>) {
    let mut resource = Vec::new();
    // ResourceSpans.resource → Resource.attributes
    message(&mut resource, 1, |out| {
        let named = std::iter::once(("service.name", service_name));
        for (key, value) in named.chain(attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            text_attribute(out, 1, key.as_bytes(), value.len(), |out| out.extend_from_slice(value.as_bytes()));
        }
    });
    let mut scope = Vec::new();
    // ScopeSpans.scope → InstrumentationScope { name, version }
    message(&mut scope, 1, |out| {
        string(out, 1, "llm-gateway");
        string(out, 2, env!("CARGO_PKG_VERSION"));
    });
    (resource, scope)
}

/// Appends what comes before a batch's `spans_len` bytes of spans (`encode_spans`) in an
/// `ExportTraceServiceRequest`: one `ResourceSpans` (`resource`, from `request_head`) holding one
/// `ScopeSpans` (`scope`) whose spans they are.
pub fn request_framing(out: &mut Vec<u8>, resource: &[u8], scope: &[u8], spans_len: usize) {
    let scope_spans = scope.len() + spans_len;
    let resource_spans = resource.len() + 1 + varint_len(scope_spans as u64) + scope_spans;
    // ExportTraceServiceRequest.resource_spans
    tag(out, 1, LEN);
    varint(out, resource_spans as u64);
    out.extend_from_slice(resource);
    // ResourceSpans.scope_spans
    tag(out, 2, LEN);
    varint(out, scope_spans as u64);
    out.extend_from_slice(scope);
}

/// Appends `trace`'s spans, as `ScopeSpans.spans` fields; `unix_offset` turns the monotonic
/// clock's readings into Unix time (added, wrapping).
pub fn encode_spans(out: &mut Vec<u8>, trace: &Recorder, unix_offset: u64) {
    let state = trace.trace_state.map(|t| trace.bytes(t));
    for (index, s) in trace.spans.iter().enumerate() {
        let parent =
            if index == usize::from(SpanRef::SERVER.0) { trace.remote_parent } else { Some(trace.spans[0].id) };
        let name = match s.name {
            Name::Static(name) => name.as_bytes(),
            Name::Text(text) => trace.bytes(text),
        };
        // Every field's length is known before it is written: the span's length goes first.
        // trace_id and span_id (28), kind, start and end (20), the name; then what varies.
        let mut len = 48 + field_len(name.len()) + s.attributes_len as usize;
        if let Some(state) = state {
            len += field_len(state.len());
        }
        if parent.is_some() {
            len += 10;
        }
        if s.error {
            len += ERROR_STATUS.len();
        }
        out.reserve(1 + varint_len(len as u64) + len);
        let at = out.len();
        // The fixed-size fields are composed on the stack and appended in few copies: the span's
        // tag and length, then trace_id and span_id (ScopeSpans.spans → Span 1, 2).
        let mut head = [0u8; 1 + 10 + 28];
        head[0] = 2 << 3 | LEN;
        let n = 1 + put_varint(&mut head[1..], len as u64);
        head[n..n + 2].copy_from_slice(&[1 << 3 | LEN, 16]);
        head[n + 2..n + 18].copy_from_slice(&trace.trace_id);
        head[n + 18..n + 20].copy_from_slice(&[2 << 3 | LEN, 8]);
        head[n + 20..n + 28].copy_from_slice(&s.id);
        // (Whole arrays, then cut: copies of a fixed size are a few moves, no call.)
        out.extend_from_slice(&head);
        out.truncate(at + n + 28);
        if let Some(state) = state {
            bytes(out, 3, state);
        }
        // 4 parent_span_id, then 5 name's tag and length.
        let mut mid = [0u8; 10 + 1 + 10];
        let mut m = 0;
        if let Some(parent) = parent {
            mid[..2].copy_from_slice(&[4 << 3 | LEN, 8]);
            mid[2..10].copy_from_slice(&parent);
            m = 10;
        }
        mid[m] = 5 << 3 | LEN;
        m += 1 + put_varint(&mut mid[m + 1..], name.len() as u64);
        let mid_at = out.len();
        out.extend_from_slice(&mid);
        out.truncate(mid_at + m);
        out.extend_from_slice(name);
        // 6 kind, 7 start and 8 end (fixed64)
        let mut times = [0u8; 20];
        times[..3].copy_from_slice(&[6 << 3 | VARINT, s.kind as u8, 7 << 3 | FIXED64]);
        times[3..11].copy_from_slice(&s.start.wrapping_add(unix_offset).to_le_bytes());
        times[11] = 8 << 3 | FIXED64;
        times[12..].copy_from_slice(&s.end.unwrap_or(s.start).wrapping_add(unix_offset).to_le_bytes());
        out.extend_from_slice(&times);
        // Span.attributes, encoded as they were set.
        for run in trace.runs.iter().filter(|r| usize::from(r.span) == index) {
            out.extend_from_slice(trace.bytes(run.bytes));
        }
        if s.error {
            // Span.status → Status.code
            out.extend_from_slice(&ERROR_STATUS);
        }
        debug_assert_eq!(out.len() - at, 1 + varint_len(len as u64) + len, "span {index}'s length was computed wrong");
    }
}

/// A length-delimited field's bytes for a payload of `len`: tag, length, payload.
#[inline(always)]
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Writes `value` as a varint at the start of `out` (which has room for it); its length.
#[inline(always)]
fn put_varint(out: &mut [u8], mut value: u64) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = value as u8 | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
}

/// The longest framing of a key encoded ahead (`key_head`): keys up to 48 bytes.
const KEY_HEAD_MAX: usize = 56;

/// A `KeyValue`'s framing for one key, up to its value's first byte: `[9 << 3 | LEN, length,
/// 1 << 3 | LEN, key length, key..., 2 << 3 | LEN, AnyValue length, AnyValue's field tag, its
/// first byte]`, the key's `len` bytes of `bytes`. The lengths (one byte each: attributes under
/// 128 bytes) and the value's two bytes are filled in as an attribute is set. `len` is 0 for a
/// key too long to have one.
#[derive(Debug, Clone, Copy)]
pub struct KeyHead {
    bytes: [u8; KEY_HEAD_MAX],
    len: u8,
}

/// The framing of key `name` (evaluated once, for a `Key` constant).
pub(super) const fn key_head(name: &str) -> KeyHead {
    let mut bytes = [0u8; KEY_HEAD_MAX];
    let k = name.len();
    if k + 8 > KEY_HEAD_MAX {
        return KeyHead { bytes, len: 0 };
    }
    bytes[0] = 9 << 3 | LEN;
    bytes[2] = 1 << 3 | LEN;
    bytes[3] = k as u8;
    let name = name.as_bytes();
    let mut i = 0;
    while i < k {
        bytes[4 + i] = name[i];
        i += 1;
    }
    bytes[4 + k] = 2 << 3 | LEN;
    KeyHead { bytes, len: (k + 8) as u8 }
}

/// `Span.attributes`: a string attribute.
pub(super) fn str_attribute(out: &mut Vec<u8>, key: &Key, value: &str) {
    let v = value.len();
    if key.head.len != 0 && key.name.len() + v <= SHORT {
        // AnyValue { 1 string }
        short_attribute(out, &key.head, [1 << 3 | LEN, v as u8], value.as_bytes());
        return;
    }
    long_str_attribute(out, key, value);
}

/// A string attribute with multi-byte lengths, or a key without its framing ahead (rare: kept
/// out of line, so the common path stays short).
#[cold]
#[inline(never)]
fn long_str_attribute(out: &mut Vec<u8>, key: &Key, value: &str) {
    text_attribute(out, 9, key.name.as_bytes(), value.len(), |out| out.extend_from_slice(value.as_bytes()));
}

/// Key and value lengths (together) up to which an attribute's lengths are all one byte.
const SHORT: usize = 0x7f - 8;

/// A `Span.attributes` `KeyValue` whose `AnyValue` is `value` (a field's tag and a byte: a
/// one-byte varint, or a string's one-byte length) followed by `tail`, with every length one
/// byte (the key and `tail` together at most `SHORT`): the key's framing copied in one piece,
/// its lengths and value bytes filled in, then the tail.
#[inline(always)]
fn short_attribute(out: &mut Vec<u8>, key: &KeyHead, value: [u8; 2], tail: &[u8]) {
    let (h, t) = (usize::from(key.len), tail.len());
    out.reserve(KEY_HEAD_MAX + t);
    let at = out.len();
    // The whole array in one copy of a fixed size (a few moves, no call), cut to this key's.
    out.extend_from_slice(&key.bytes);
    out.truncate(at + h);
    let head = &mut out[at..at + h];
    // KeyValue's length: the key's field (2 + key), the value's (2 + 2 + tail).
    head[1] = (h - 2 + t) as u8;
    head[h - 3] = (2 + t) as u8;
    head[h - 2] = value[0];
    head[h - 1] = value[1];
    out.extend_from_slice(tail);
}

/// `Span.attributes`: a string-array attribute (`AnyValue.array_value`, each element an
/// `AnyValue.string_value`).
pub(super) fn str_array_attribute(out: &mut Vec<u8>, key: &Key, values: &[&str]) {
    let element = |v: &str| 1 + varint_len(v.len() as u64) + v.len();
    let array: usize = values.iter().map(|v| 1 + varint_len(element(v) as u64) + element(v)).sum();
    key_value_header(out, 9, key.name.as_bytes(), 1 + varint_len(array as u64) + array);
    // AnyValue.array_value → ArrayValue.values → AnyValue.string_value
    tag(out, 5, LEN);
    varint(out, array as u64);
    for value in values {
        tag(out, 1, LEN);
        varint(out, element(value) as u64);
        string(out, 1, value);
    }
}

/// `Span.attributes`: an integer attribute (int64: two's complement, as a varint — ten bytes
/// when negative).
pub(super) fn int_attribute(out: &mut Vec<u8>, key: &Key, value: i64) {
    // One or two varint bytes (0 to 16,383: status codes, most token counts), framing ahead.
    if key.head.len != 0 && (0..0x4000).contains(&value) {
        let v = value as u16;
        if v < 0x80 {
            short_attribute(out, &key.head, [3 << 3 | VARINT, v as u8], &[]);
        } else {
            short_attribute(out, &key.head, [3 << 3 | VARINT, v as u8 | 0x80], &[(v >> 7) as u8]);
        }
        return;
    }
    long_int_attribute(out, key, value);
}

/// An integer attribute of three varint bytes or more, or a key without its framing ahead.
#[inline(never)]
fn long_int_attribute(out: &mut Vec<u8>, key: &Key, value: i64) {
    key_value_header(out, 9, key.name.as_bytes(), 1 + varint_len(value as u64));
    varint_field(out, 3, value as u64);
}

/// `Span.attributes`: a boolean attribute.
pub(super) fn bool_attribute(out: &mut Vec<u8>, key: &Key, value: bool) {
    // AnyValue { 2 bool }
    let value = [2 << 3 | VARINT, u8::from(value)];
    if key.head.len != 0 {
        short_attribute(out, &key.head, value, &[]);
        return;
    }
    key_value_header(out, 9, key.name.as_bytes(), 2);
    out.extend_from_slice(&value);
}

/// A text `KeyValue` (field `field`) whose value, `len` bytes, `write` appends.
#[inline(always)]
fn text_attribute(out: &mut Vec<u8>, field: u32, key: &[u8], len: usize, write: impl FnOnce(&mut Vec<u8>)) {
    if len < 0x80 {
        key_value_header(out, field, key, 2 + len);
        out.extend_from_slice(&[1 << 3 | LEN, len as u8]);
    } else {
        key_value_header(out, field, key, 1 + varint_len(len as u64) + len);
        tag(out, 1, LEN);
        varint(out, len as u64);
    }
    write(out);
}

/// A `KeyValue`'s framing, up to its `AnyValue`'s fields (`value_len` bytes, which follow).
/// Attributes shorter than 128 bytes (nearly all) have one-byte lengths throughout: their
/// framing is two short copies and the key.
#[inline(always)]
fn key_value_header(out: &mut Vec<u8>, field: u32, key: &[u8], value_len: usize) {
    // KeyValue { 1 key, 2 AnyValue { 1 string | 2 bool | 3 int } }
    if key.len() + value_len <= 0x7f - 4 && field < 16 {
        let len = 2 + key.len() + 2 + value_len;
        out.reserve(2 + len);
        out.extend_from_slice(&[(field as u8) << 3 | LEN, len as u8, 1 << 3 | LEN, key.len() as u8]);
        out.extend_from_slice(key);
        out.extend_from_slice(&[2 << 3 | LEN, value_len as u8]);
        return;
    }
    let len = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(value_len as u64) + value_len;
    out.reserve(2 + varint_len(len as u64) + len);
    tag(out, field, LEN);
    varint(out, len as u64);
    bytes(out, 1, key);
    tag(out, 2, LEN);
    varint(out, value_len as u64);
}

#[inline(always)]
fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire_type));
}

#[inline(always)]
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[inline(always)]
fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, VARINT);
    varint(out, value);
}

#[inline(always)]
fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    tag(out, field, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[inline(always)]
fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

/// A length-delimited message field whose body `write` appends: one byte is kept for its
/// length, and a body of 128 bytes or more moves up to fit a longer one.
fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    let needed = varint_len(len as u64);
    if needed > 1 {
        out.resize(out.len() + needed - 1, 0);
        out.copy_within(at + 1..at + 1 + len, at + needed);
    }
    let mut prefix = &mut out[at..at + needed];
    let mut value = len as u64;
    while value >= 0x80 {
        prefix[0] = value as u8 | 0x80;
        prefix = &mut prefix[1..];
        value >>= 7;
    }
    prefix[0] = value as u8;
}

/// Bytes of `value` as a varint.
#[inline(always)]
fn varint_len(value: u64) -> usize {
    // (Nearly every length is under 128, and the rest under 16,384.)
    match value {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        _ => (64 - value.leading_zeros() as usize).div_ceil(7),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{Kind, SpanRecord};
    use super::*;

    fn one_span(name: Name) -> Recorder {
        Recorder {
            trace_id: std::array::from_fn(|i| i as u8 + 1),
            remote_parent: None,
            trace_state: None,
            spans: vec![SpanRecord {
                id: [0xaa; 8],
                name,
                kind: Kind::Server,
                start: 0,
                end: Some(5),
                error: true,
                attributes_len: 0,
            }],
            runs: Vec::new(),
            arena: Vec::new(),
        }
    }

    #[test]
    fn encodes_a_span_as_computed_by_hand() {
        let mut trace = one_span(Name::Static("chat"));
        trace
            .attributes(SpanRef::SERVER)
            .int(&Key::new("k"), 150)
            .bool(&Key::new("b"), true)
            .str(&Key::new("s"), "v")
            .int(&Key::new("n"), -1)
            .int(&Key::new("z"), 7);
        let mut out = Vec::new();
        span(&mut out, &trace, 0, 1000);

        let mut expected = vec![0x0a, 0x10]; // 1 trace_id, 16 bytes
        expected.extend(1..=16u8);
        expected.extend([0x12, 0x08]); // 2 span_id, 8 bytes
        expected.extend([0xaa; 8]);
        expected.extend([0x2a, 0x04, b'c', b'h', b'a', b't']); // 5 name
        expected.extend([0x30, 0x02]); // 6 kind = SERVER
        expected.extend([0x39, 0xe8, 0x03, 0, 0, 0, 0, 0, 0]); // 7 start = 1000 (fixed64)
        expected.extend([0x41, 0xed, 0x03, 0, 0, 0, 0, 0, 0]); // 8 end = 1005
        // 9 attributes: KeyValue { 1 key, 2 AnyValue { 3 int | 2 bool | 1 string } }
        expected.extend([0x4a, 0x08, 0x0a, 0x01, b'k', 0x12, 0x03, 0x18, 0x96, 0x01]);
        expected.extend([0x4a, 0x07, 0x0a, 0x01, b'b', 0x12, 0x02, 0x10, 0x01]);
        expected.extend([0x4a, 0x08, 0x0a, 0x01, b's', 0x12, 0x03, 0x0a, 0x01, b'v']);
        expected.extend([0x4a, 0x10, 0x0a, 0x01, b'n', 0x12, 0x0b, 0x18]);
        expected.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        expected.extend([0x4a, 0x07, 0x0a, 0x01, b'z', 0x12, 0x02, 0x18, 0x07]);
        expected.extend([0x7a, 0x02, 0x18, 0x02]); // 15 status { 3 code = ERROR }
        assert_eq!(out, expected);
    }

    #[test]
    fn long_messages_get_multi_byte_lengths() {
        let mut out = Vec::new();
        message(&mut out, 1, |out| string(out, 2, &"x".repeat(200)));
        // 1 + (tag, 2-byte length 200) + 200 = 203 = 0xcb 0x01
        assert_eq!(out[..6], [0x0a, 0xcb, 0x01, 0x12, 0xc8, 0x01]);
        assert_eq!(out.len(), 3 + 203);
        assert!(out[6..].iter().all(|&b| b == b'x'), "the body moved up intact");
        let mut nested = Vec::new();
        message(&mut nested, 1, |out| message(out, 2, |out| string(out, 3, &"y".repeat(20_000))));
        // 20,000 = 0xa0 0x9c 0x01; the inner message is 1 + 3 + 20,000 = 20,004 = 0xa4 0x9c 0x01,
        // the outer 1 + 3 + 20,004 = 20,008 = 0xa8 0x9c 0x01.
        assert_eq!(nested[..12], [0x0a, 0xa8, 0x9c, 0x01, 0x12, 0xa4, 0x9c, 0x01, 0x1a, 0xa0, 0x9c, 0x01]);
        assert_eq!(nested.len(), 4 + 20_008);
        assert!(nested[12..].iter().all(|&b| b == b'y'), "the body moved up intact");
        // A body that fits stays, longer ones move up.
        for (body, prefix) in [(5, vec![0x05]), (200, vec![0xc8, 0x01]), (20_000, vec![0xa0, 0x9c, 0x01])] {
            let mut out = vec![0xee];
            message(&mut out, 1, |out| out.extend(std::iter::repeat_n(b'z', body)));
            assert_eq!(out[..2], [0xee, 0x0a]);
            assert_eq!(out[2..2 + prefix.len()], prefix[..], "{body}");
            assert_eq!(out.len(), 2 + prefix.len() + body, "{body}");
            assert!(out[2 + prefix.len()..].iter().all(|&b| b == b'z'), "{body}: the body intact");
        }
        for (value, len) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (u64::MAX, 10)] {
            assert_eq!(varint_len(value), len, "{value}");
        }
    }

    /// Span `index` of `trace` as `encode_spans` writes it, without the field's tag and length.
    fn span(out: &mut Vec<u8>, trace: &Recorder, index: usize, unix_offset: u64) {
        let mut all = Vec::new();
        encode_spans(&mut all, trace, unix_offset);
        let spans = fields(&all);
        assert_eq!(spans.len(), trace.spans.len());
        assert!(spans.iter().all(|f| (f.0, f.1) == (2, LEN)), "ScopeSpans.spans fields only");
        out.extend_from_slice(&spans[index].2);
    }

    /// A decoded field: (field, wire type, payload, varint value).
    pub(in crate::telemetry::trace) type Field = (u64, u8, Vec<u8>, u64);

    /// Reads the fields of one message.
    pub(in crate::telemetry::trace) fn fields(mut buf: &[u8]) -> Vec<Field> {
        fn read_varint(buf: &mut &[u8]) -> u64 {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let b = buf[0];
                *buf = &buf[1..];
                value |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b < 0x80 {
                    return value;
                }
            }
        }
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = read_varint(&mut buf);
            let (field, wire) = (key >> 3, (key & 7) as u8);
            match wire {
                VARINT => out.push((field, wire, Vec::new(), read_varint(&mut buf))),
                FIXED64 => {
                    out.push((field, wire, buf[..8].to_vec(), 0));
                    buf = &buf[8..];
                }
                LEN => {
                    let len = read_varint(&mut buf) as usize;
                    out.push((field, wire, buf[..len].to_vec(), 0));
                    buf = &buf[len..];
                }
                other => panic!("wire type {other}"),
            }
        }
        out
    }

    #[test]
    fn long_attributes_blocks_and_other_spans_attributes_encode_alike() {
        // One span's attributes among another's, one of them a block encoded ahead, one long
        // enough for two-byte lengths: each decodes to its key and value, in order.
        let long = "m".repeat(300);
        let mut r = one_span(Name::Static("chat"));
        let child = r.child("attempt", Kind::Client);
        r.attributes(SpanRef::SERVER).int(&Key::new("a"), 7);
        r.attributes(child).str(&Key::new("x"), "other span");
        let block = super::super::AttributeBlock::new(&[(Key::new("b"), "block one"), (Key::new("c"), &long)], &[]);
        r.attributes(SpanRef::SERVER).block(&block).str(&Key::new("d"), &long);
        r.attributes(child).bool(&Key::new("y"), false);
        r.attributes(SpanRef::SERVER)
            .bool(&Key::new("e"), true)
            .strs(&Key::new("f"), &["stop", &long])
            .int(&Key::new("g"), 300);
        // A key too long for its framing to be kept ahead: encoded as it is set, alike.
        const LONG_KEY: &str = "llm_gateway.a_key_longer_than_any_framing_encoded_ahead";
        assert_eq!(key_head(LONG_KEY).len, 0);
        r.attributes(SpanRef::SERVER).str(&Key::new(LONG_KEY), "v").bool(&Key::new(LONG_KEY), true);
        let mut out = Vec::new();
        span(&mut out, &r, 0, 1000);

        let attributes: Vec<(Vec<u8>, Vec<Field>)> = fields(&out)
            .into_iter()
            .filter(|f| f.0 == 9)
            .map(|f| {
                let kv = fields(&f.2);
                (kv[0].2.clone(), fields(&kv[1].2))
            })
            .collect();
        let keys: Vec<&[u8]> = attributes.iter().map(|(k, _)| k.as_slice()).collect();
        let long_key = LONG_KEY.as_bytes();
        assert_eq!(
            keys,
            [&b"a"[..], b"b", b"c", b"d", b"e", b"f", b"g", long_key, long_key],
            "the server span's own, in order"
        );
        assert_eq!(attributes[0].1, [(3, VARINT, vec![], 7)]);
        assert_eq!(attributes[1].1[0].2, b"block one");
        assert_eq!(attributes[2].1[0].2, long.as_bytes(), "a long value from a block");
        assert_eq!(attributes[3].1[0].2, long.as_bytes(), "a long value recorded per request");
        assert_eq!(attributes[4].1, [(2, VARINT, vec![], 1)]);
        let array = fields(&attributes[5].1[0].2);
        assert_eq!(attributes[5].1[0].0, 5, "an array value");
        let elements: Vec<Vec<u8>> = array.iter().map(|e| fields(&e.2)[0].2.clone()).collect();
        assert_eq!(elements, [b"stop".to_vec(), long.clone().into_bytes()], "string elements, in order");
        assert_eq!(attributes[6].1, [(3, VARINT, vec![], 300)], "a two-byte integer");
        assert_eq!(attributes[7].1, [(1, LEN, b"v".to_vec(), 0)]);
        assert_eq!(attributes[8].1, [(2, VARINT, vec![], 1)]);

        let mut child_out = Vec::new();
        span(&mut child_out, &r, usize::from(child.0), 1000);
        let child_keys: Vec<Vec<u8>> =
            fields(&child_out).into_iter().filter(|f| f.0 == 9).map(|f| fields(&f.2)[0].2.clone()).collect();
        assert_eq!(child_keys, [b"x".to_vec(), b"y".to_vec()]);
    }

    #[test]
    fn the_request_nests_resource_scope_and_spans() {
        let mut a = one_span(Name::Static("chat"));
        let server_id = a.spans[0].id;
        a.spans.push(SpanRecord {
            id: [0xbb; 8],
            name: Name::Static("auth"),
            kind: Kind::Internal,
            start: 1,
            end: Some(2),
            error: false,
            attributes_len: 0,
        });
        a.attributes(SpanRef(1)).str(&Key::new("k"), &"v".repeat(200)).int(&Key::new("n"), 3);
        a.attributes(SpanRef::SERVER).bool(&Key::new("b"), true);
        let b = one_span(Name::Static("embeddings"));
        let mut spans = Vec::new();
        encode_spans(&mut spans, &a, 1000);
        encode_spans(&mut spans, &b, 1000);
        let attributes = [("k8s.namespace.name".to_owned(), "ai".to_owned()), ("long".to_owned(), "x".repeat(300))];
        let (resource, scope) = request_head("svc", &attributes);
        let mut out = Vec::new();
        request_framing(&mut out, &resource, &scope, spans.len());
        out.extend_from_slice(&spans);

        let request = fields(&out);
        assert_eq!(request.len(), 1);
        let resource_spans = fields(&request[0].2);
        let (resource, scope_spans) = (fields(&resource_spans[0].2), fields(&resource_spans[1].2));
        let resource: Vec<(Vec<u8>, Vec<u8>)> = resource
            .iter()
            .map(|kv| fields(&kv.2))
            .map(|kv| (kv[0].2.clone(), fields(&kv[1].2)[0].2.clone()))
            .collect();
        let expected =
            [("service.name", "svc".to_owned()), ("k8s.namespace.name", "ai".to_owned()), ("long", "x".repeat(300))];
        let expected: Vec<_> = expected.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        assert_eq!(resource, expected, "service.name, then the configured resource attributes");
        let scope = fields(&scope_spans[0].2);
        assert_eq!(scope[0].2, b"llm-gateway");
        let spans: Vec<_> = scope_spans[1..].iter().map(|s| fields(&s.2)).collect();
        assert_eq!(spans.len(), 3);
        let name = |s: &Vec<Field>| s.iter().find(|f| f.0 == 5).unwrap().2.clone();
        let parent = |s: &Vec<Field>| s.iter().find(|f| f.0 == 4).map(|f| f.2.clone());
        assert_eq!(name(&spans[1]), b"auth");
        let keys =
            |s: &Vec<Field>| s.iter().filter(|f| f.0 == 9).map(|f| fields(&f.2)[0].2.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&spans[0]), [b"b".to_vec()]);
        assert_eq!(keys(&spans[1]), [b"k".to_vec(), b"n".to_vec()], "each span's length, written first, was right");
        assert_eq!(parent(&spans[1]), Some(server_id.to_vec()), "children name the server span");
        assert_eq!(parent(&spans[0]), None, "a root without a remote parent has none");
        assert_eq!(name(&spans[2]), b"embeddings");
    }
}
