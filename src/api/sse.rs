//! An incremental Server-Sent Events decoder: feed it bytes as they arrive, split anywhere
//! (inside a line, between `\r` and `\n`, inside a UTF-8 sequence), and take whole events out.
//! Follows the WHATWG rules the SDKs implement: `\n`, `\r\n` or `\r` end a line, a blank line
//! ends an event, `data:` lines join with `\n`, `:` lines are comments, one space after the
//! colon is dropped. Writing them (`frame`) is here too: this is the wire framing the adapters
//! and the relay share.

mod frame;

use bytes::{Buf, Bytes, BytesMut};

pub use frame::{DONE_FRAME, data_frame, data_frame_with};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the stream names its events (Anthropic does; OpenAI does not).
    pub event: Option<String>,
    pub data: Bytes,
}

#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    /// `buf[..scanned]` holds no line end: the search for one goes on from there, so a long
    /// line arriving in many reads is searched once.
    scanned: usize,
    /// The event's first `data:` line, not copied (most events have one).
    first: Option<Bytes>,
    /// The event's data once a second `data:` line came: the lines joined.
    data: Vec<u8>,
    event: Option<String>,
    started: bool,
    /// What one event may hold: its data, its name and the line being read.
    max_event_bytes: usize,
}

/// What one event may hold unless configured (the provider's `max_event_bytes`): far more than
/// any answer's event needs (a chunk is a few hundred bytes; a whole answer in one event a few
/// hundred KiB), and little enough that a misbehaving upstream cannot make us buffer much.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Unread bytes up to this size are moved to a buffer of their own size when the decoder
/// waits for more (see `SseDecoder::trim`).
const WAITING_SPARE: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stream event exceeded {limit} bytes (the provider's max_event_bytes)")]
pub struct EventTooLarge {
    pub limit: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose events may hold `max_event_bytes` at most.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            first: None,
            data: Vec::new(),
            event: None,
            started: false,
            max_event_bytes,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the bytes pushed so far hold one. When they hold none, the
    /// buffer is first sized to what it still holds (`trim`): the stream now waits for its
    /// upstream, and a wait should not hold the memory of the last read.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        let next = self.take_event();
        if let Ok(None) = next {
            self.trim();
        }
        next
    }

    /// The buffer sized to what it holds. Emptied, it is let go (the events taken from it keep
    /// their own bytes alive, freed once relayed), so a stream between two events holds no read
    /// buffer; a small remainder (the start of the next event) moves to a buffer of its own
    /// size, since a view into a buffer does not tell how large the allocation behind it is (a
    /// burst's). A larger remainder, an event arriving in pieces, stays: it is in flight, and
    /// copying it at every read would cost more than it saves.
    fn trim(&mut self) {
        match self.buf.len() {
            0 => self.buf = BytesMut::new(),
            held if held <= WAITING_SPARE => self.buf = BytesMut::from(&self.buf[..]),
            _ => {}
        }
    }

    fn take_event(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        loop {
            if !self.started {
                // A UTF-8 byte-order mark may open the stream; wait until we can tell.
                const BOM: &[u8] = b"\xEF\xBB\xBF";
                if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                    return Ok(None);
                }
                if self.buf.starts_with(BOM) {
                    self.buf.advance(BOM.len());
                }
                self.started = true;
            }
            let Some(at) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                // All of `buf` is the line being read.
                if self.buf.len() + self.held() > self.max_event_bytes {
                    return Err(self.too_large());
                }
                return Ok(None);
            };
            let end = self.scanned + at;
            let terminator = if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A lone `\r` at the end of what we have: a `\n` may follow in the next read.
                    None => {
                        self.scanned = end;
                        return Ok(None);
                    }
                }
            } else {
                1
            };
            let line = self.buf.split_to(end).freeze();
            self.buf.advance(terminator);
            self.scanned = 0;
            if let Some(event) = self.take_line(line)? {
                return Ok(Some(event));
            }
        }
    }

    /// At end of input: a final event that lacked its blank line is still delivered.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        if let Some(event) = self.take_event()? {
            return Ok(Some(event));
        }
        if !self.buf.is_empty() {
            let mut line = std::mem::take(&mut self.buf).freeze();
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            // (A blank last line dispatches the event itself.)
            if let Some(event) = self.take_line(line)? {
                return Ok(Some(event));
            }
        }
        Ok(self.dispatch())
    }

    fn take_line(&mut self, line: Bytes) -> Result<Option<SseEvent>, EventTooLarge> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(colon) => {
                let skip = if line.get(colon + 1) == Some(&b' ') { 2 } else { 1 };
                (&line[..colon], line.slice(colon + skip..))
            }
            None => (&line[..], Bytes::new()),
        };
        if matches!(field, b"data" | b"event") && self.held() + value.len() > self.max_event_bytes {
            return Err(self.too_large());
        }
        match field {
            b"data" => match self.first.take() {
                None if self.data.is_empty() => self.first = Some(value),
                first => {
                    if let Some(first) = first {
                        self.data.extend_from_slice(&first);
                    }
                    self.data.push(b'\n');
                    self.data.extend_from_slice(&value);
                }
            },
            b"event" => self.event = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {}
        }
        Ok(None)
    }

    /// Bytes held for the event being read: its data and its name.
    fn held(&self) -> usize {
        self.first.as_ref().map_or(self.data.len(), Bytes::len) + self.event.as_ref().map_or(0, String::len)
    }

    fn too_large(&self) -> EventTooLarge {
        EventTooLarge { limit: self.max_event_bytes }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let data = match self.first.take() {
            Some(first) => first,
            None if self.data.is_empty() => return None,
            None => Bytes::from(std::mem::take(&mut self.data)),
        };
        Some(SseEvent { event, data })
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            decoder.push(&input[start..cut]);
            start = cut;
            while let Some(e) = decoder.next_event().unwrap() {
                events.push(e);
            }
        }
        events.extend(decoder.finish().unwrap());
        events
    }

    /// Every recorded stream decodes to the same events however its bytes are split: at every
    /// single offset, and at every pair of offsets (three reads).
    fn check_every_split(input: &[u8]) -> Vec<SseEvent> {
        let whole = decode_in_pieces(input, &[]);
        assert!(!whole.is_empty());
        for cut in 0..=input.len() {
            assert_eq!(decode_in_pieces(input, &[cut]), whole, "split at {cut}");
        }
        let step = (input.len() / 97).max(1);
        for a in (0..=input.len()).step_by(step) {
            for b in a..=input.len() {
                assert_eq!(decode_in_pieces(input, &[a, b]), whole, "split at {a} and {b}");
            }
        }
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(decode_in_pieces(input, &bytewise), whole, "one byte at a time");
        whole
    }

    #[test]
    fn openai_chat_stream_with_usage() {
        let events = check_every_split(include_bytes!("../../tests/fixtures/openai/chat_stream_usage.sse"));
        assert_eq!(events.last().unwrap().data, Bytes::from_static(b"[DONE]"));
        assert!(events.iter().all(|e| e.event.is_none()));
        for e in &events[..events.len() - 1] {
            serde_json::from_slice::<serde_json::Value>(&e.data).expect("every event is whole JSON");
        }
    }

    #[test]
    fn tool_call_stream() {
        let events = check_every_split(include_bytes!("../../tests/fixtures/openai/chat_stream_tools.sse"));
        assert_eq!(events.len(), 8);
    }

    #[test]
    fn crlf_comments_and_multiline_data() {
        let events = check_every_split(include_bytes!("../../tests/fixtures/openai/tgi_keepalive_crlf.sse"));
        assert_eq!(events[0].data, Bytes::from_static(b"{\"a\":\n1}"));
        assert_eq!(events.last().unwrap().data, Bytes::from_static(b"[DONE]"));
    }

    #[test]
    fn named_events_and_unicode() {
        let events = check_every_split(include_bytes!("../../tests/fixtures/anthropic/stream_text.sse"));
        assert_eq!(events[0].event.as_deref(), Some("message_start"));
        let text: Vec<u8> = events.iter().flat_map(|e| e.data.iter().copied()).collect();
        assert!(String::from_utf8(text).unwrap().contains("Grüße 🌍"));
    }

    #[test]
    fn bom_lone_cr_and_missing_final_blank_line() {
        let input = b"\xEF\xBB\xBFdata: a\r\rdata:b\r\ndata:  c";
        let events = check_every_split(input);
        let data: Vec<&[u8]> = events.iter().map(|e| &e.data[..]).collect();
        assert_eq!(data, [&b"a"[..], &b"b\n c"[..]]);
    }

    /// A stream whose last blank line ends with a lone CR at the very end (a server ending
    /// lines with CR alone) keeps its last event: the decoder waits to see whether an LF
    /// follows, and at the end the blank line dispatched the event that `finish` then dropped.
    /// Found by the property test against the WHATWG rules.
    #[test]
    fn a_final_blank_line_ended_by_a_lone_cr_keeps_its_event() {
        for input in [&b"data: x\r\r"[..], b"data:\n\r", b"event: e\rdata: y\r\r"] {
            let events = decode_in_pieces(input, &[]);
            assert_eq!(events.len(), 1, "{:?}", String::from_utf8_lossy(input));
        }
    }

    /// A long line that arrives in small reads is searched for its end once, not again from
    /// its start at every read (which made a 3 MiB line in 16-byte reads cost ~300 GB of
    /// scanning).
    #[test]
    fn a_long_line_in_small_reads_is_scanned_once() {
        let mut decoder = SseDecoder::new();
        decoder.push(b"data: ");
        let piece = [b'x'; 16];
        let started = std::time::Instant::now();
        for read in 0..(3 << 20) / piece.len() {
            decoder.push(&piece);
            assert_eq!(decoder.next_event(), Ok(None));
            // (Checked as it goes: the quadratic decoder fails in two seconds, not minutes.)
            assert!(started.elapsed() < std::time::Duration::from_secs(2), "still scanning at read {read}");
        }
        decoder.push(b"\n\n");
        assert_eq!(decoder.next_event().unwrap().map(|e| e.data.len()), Some(3 << 20));
    }

    /// What one event holds — its data, its name, the line being read — is bounded by a few
    /// MiB by default, whichever of them holds it.
    #[test]
    fn an_event_past_the_bound_is_an_error_whatever_holds_it() {
        let five = vec![b'x'; 5 << 20];
        let three = vec![b'x'; 3 << 20];
        let line = |field: &str, value: &[u8]| [field.as_bytes(), b": ", value, b"\n"].concat();
        let cases: [(&str, Vec<u8>); 4] = [
            ("one data line, incomplete", [b"data: ", &five[..]].concat()),
            ("many data lines", (0..5).flat_map(|_| line("data", &five[..1 << 20])).collect()),
            ("the event's name", [line("event", &five), line("data", b"x")].concat()),
            ("data and the line being read", [line("data", &three), b"data: ".to_vec(), three.clone()].concat()),
        ];
        for (what, input) in cases {
            let mut decoder = SseDecoder::new();
            decoder.push(&input);
            assert!(decoder.next_event().is_err(), "{what}: taken");
        }
    }

    /// Waiting for more, the decoder holds only what it has not decoded, in a buffer of that
    /// size: not the buffer a large event grew (the buffer's spare room after the event was 60
    /// KB, kept for as long as the stream ran), nor any hold on the bytes of the events taken.
    #[test]
    fn a_waiting_decoder_holds_only_what_it_has_not_decoded() {
        let mut decoder = SseDecoder::new();
        let big = format!("data: {}\n\n", "x".repeat(60_000));
        decoder.push(&big.as_bytes()[..30_000]);
        assert_eq!(decoder.next_event(), Ok(None));
        decoder.push(&big.as_bytes()[30_000..]);
        decoder.push(b"data: nex");
        let event = decoder.next_event().unwrap().unwrap();
        assert_eq!(event.data.len(), 60_000);
        assert_eq!(decoder.next_event(), Ok(None));
        assert!(decoder.buf.capacity() <= WAITING_SPARE, "{} bytes held for 9", decoder.buf.capacity());
        assert!(event.data.is_unique(), "the decoder still holds the event's buffer");
        decoder.push(b"t\n\n");
        assert_eq!(decoder.next_event().unwrap().map(|e| e.data), Some(Bytes::from_static(b"next")));
        assert_eq!(decoder.next_event(), Ok(None));
        assert_eq!(decoder.buf.capacity(), 0);
    }

    /// The buffer a relay's decoder holds while its stream waits (tests of the relay).
    impl SseDecoder {
        pub(crate) fn buffer_capacity(&self) -> usize {
            self.buf.capacity()
        }
    }

    #[test]
    fn oversized_event_is_an_error_not_unbounded_buffering() {
        let mut decoder = SseDecoder::new();
        decoder.push(b"data: ");
        let big = vec![b'x'; DEFAULT_MAX_EVENT_BYTES + 1];
        decoder.push(&big);
        assert_eq!(decoder.next_event(), Err(EventTooLarge { limit: DEFAULT_MAX_EVENT_BYTES }));
        // Configured: the bound is the one given, and the error names it.
        let mut decoder = SseDecoder::with_max_event_bytes(4);
        decoder.push(b"event: e\ndata: 123\n\nevent: e\ndata: 1234\n");
        assert_eq!(decoder.next_event().unwrap().map(|e| e.data), Some(Bytes::from_static(b"123")));
        let error = decoder.next_event().unwrap_err();
        assert!(error.to_string().contains("4 bytes"), "{error}");
    }
}
