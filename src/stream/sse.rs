//! An incremental Server-Sent Events decoder: feed it bytes as they arrive, split anywhere
//! (inside a line, between `\r` and `\n`, inside a UTF-8 sequence), and take whole events out.
//! Follows the WHATWG rules the SDKs implement: `\n`, `\r\n` or `\r` end a line, a blank line
//! ends an event, `data:` lines join with `\n`, `:` lines are comments, one space after the
//! colon is dropped.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the stream names its events (Anthropic does; OpenAI does not).
    pub event: Option<String>,
    pub data: Bytes,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    /// The event's first `data:` line, not copied (most events have one).
    first: Option<Bytes>,
    /// The event's data once a second `data:` line came: the lines joined.
    data: Vec<u8>,
    event: Option<String>,
    started: bool,
}

/// Bounds one event so a misbehaving upstream cannot make us buffer without end.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an SSE event exceeded {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the bytes pushed so far hold one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
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
            let Some(end) = memchr::memchr2(b'\n', b'\r', &self.buf) else {
                if self.buf.len() + self.data_len() > MAX_EVENT_BYTES {
                    return Err(EventTooLarge);
                }
                return Ok(None);
            };
            let terminator = if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A lone `\r` at the end of what we have: a `\n` may follow in the next read.
                    None => return Ok(None),
                }
            } else {
                1
            };
            let line = self.buf.split_to(end).freeze();
            self.buf.advance(terminator);
            if let Some(event) = self.take_line(line)? {
                return Ok(Some(event));
            }
        }
    }

    /// At end of input: a final event that lacked its blank line is still delivered.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        if let Some(event) = self.next_event()? {
            return Ok(Some(event));
        }
        if !self.buf.is_empty() {
            let mut line = std::mem::take(&mut self.buf).freeze();
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            self.take_line(line)?;
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
        match field {
            b"data" => {
                if self.data_len() + value.len() > MAX_EVENT_BYTES {
                    return Err(EventTooLarge);
                }
                match self.first.take() {
                    None if self.data.is_empty() => self.first = Some(value),
                    first => {
                        if let Some(first) = first {
                            self.data.extend_from_slice(&first);
                        }
                        self.data.push(b'\n');
                        self.data.extend_from_slice(&value);
                    }
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {}
        }
        Ok(None)
    }

    /// Bytes of data held for the event being read.
    fn data_len(&self) -> usize {
        self.first.as_ref().map_or(self.data.len(), Bytes::len)
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

    #[test]
    fn oversized_event_is_an_error_not_unbounded_buffering() {
        let mut decoder = SseDecoder::new();
        decoder.push(b"data: ");
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        decoder.push(&big);
        assert_eq!(decoder.next_event(), Err(EventTooLarge));
    }
}
