//! W3C trace context: the client's `traceparent` read, ours written for the upstream.

use http::HeaderName;

/// The trace-context headers, read from clients and sent to upstreams.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A well-formed version-00 `traceparent` from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl Parent {
    /// The client sampled its trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Reads `00-<32 hex>-<16 hex>-<2 hex>` (lowercase hex, ids not all zero, nothing after).
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let mut out = Parent { trace_id: [0; 16], span_id: [0; 8], flags: 0 };
    let mut flag = [0u8; 1];
    decode_hex(trace, &mut out.trace_id)?;
    decode_hex(parent, &mut out.span_id)?;
    decode_hex(flags, &mut flag)?;
    out.flags = flag[0];
    let nonzero = |b: &[u8]| b.iter().any(|&x| x != 0);
    (nonzero(&out.trace_id) && nonzero(&out.span_id)).then_some(out)
}

/// A `tracestate` worth passing on: printable ASCII within the specification's 512 bytes (its
/// members are the client's business; we neither parse nor edit them).
pub fn valid_trace_state(value: &[u8]) -> Option<&str> {
    let ok = !value.is_empty() && value.len() <= 512 && value.iter().all(|b| (0x20..0x7f).contains(b));
    if ok { std::str::from_utf8(value).ok() } else { None }
}

/// A `traceparent` value we send: `00-<trace id>-<span id>-01` (lowercase hex; we only
/// propagate what we trace, so always sampled). Kept as text on the stack until it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent([u8; 55]);

impl TraceParent {
    pub fn new(trace_id: &[u8; 16], span_id: &[u8; 8]) -> Self {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        encode_hex(trace_id, &mut text[3..35]);
        text[35] = b'-';
        encode_hex(span_id, &mut text[36..52]);
        text[52..].copy_from_slice(b"-01");
        Self(text)
    }

    /// The header's value: ASCII digits, letters and dashes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// The two lowercase hex digits of every byte (one lookup a byte).
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    pairs
};

fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (pair, byte) in text.as_bytes().chunks_exact(2).zip(out.iter_mut()) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn reads_valid_traceparents_only() {
        let p = parse_traceparent(format!("00-{ID}-00f067aa0ba902b7-01").as_bytes()).unwrap();
        assert!(p.sampled());
        assert_eq!(p.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        let unsampled = parse_traceparent(format!(" 00-{ID}-00f067aa0ba902b7-00 ").as_bytes()).unwrap();
        assert!(!unsampled.sampled());
        for bad in [
            format!("01-{ID}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{ID}-0000000000000000-01"),
            format!("00-{ID}-00F067AA0BA902B7-01"),
            format!("00-{ID}-00f067aa0ba902b7-01-extra"),
            format!("00-{ID}-00f067aa0ba902b-01"),
            format!("00-{ID}-00f067aa0ba902b7-1"),
            "garbage".to_owned(),
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn writes_a_sampled_traceparent_that_reads_back() {
        let p = parse_traceparent(format!("00-{ID}-00f067aa0ba902b7-00").as_bytes()).unwrap();
        let out = TraceParent::new(&p.trace_id, &[1, 2, 3, 4, 5, 6, 7, 0xff]);
        assert_eq!(out.as_bytes(), format!("00-{ID}-01020304050607ff-01").as_bytes());
        let back = parse_traceparent(out.as_bytes()).unwrap();
        assert_eq!((back.trace_id, back.span_id, back.flags), (p.trace_id, [1, 2, 3, 4, 5, 6, 7, 0xff], 1));
    }

    #[test]
    fn passes_on_printable_trace_state_only() {
        assert_eq!(
            valid_trace_state(b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(valid_trace_state(b""), None);
        assert_eq!(valid_trace_state(b"a=\x01"), None);
        assert_eq!(valid_trace_state(&[b'a'; 513]), None);
    }
}
