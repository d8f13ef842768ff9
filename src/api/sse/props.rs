//! Property tests of the SSE decoder against a plain reference decoder written from the WHATWG
//! rules ("Interpreting an event stream"), on generated streams — every kind of line, every
//! line end, a byte-order mark, bytes that are not UTF-8 — cut into reads at random offsets.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{SseDecoder, SseEvent};

/// The WHATWG algorithm over the whole stream at once, with the one documented difference of
/// `SseDecoder::finish`: at the end of the stream, an event that lacked its blank line is
/// still dispatched (the spec discards it; upstreams that end without one are common).
fn reference(stream: &[u8]) -> Vec<SseEvent> {
    let stream = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    // Lines: ended by CRLF, LF or CR.
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < stream.len() {
        match stream[i] {
            b'\r' => {
                lines.push(&stream[start..i]);
                i += if stream.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            b'\n' => {
                lines.push(&stream[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    let last = &stream[start..];
    let mut events = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut event_type: Option<String> = None;
    let mut dispatch = |data: &mut Vec<u8>, event_type: &mut Option<String>| {
        let name = event_type.take();
        if data.is_empty() {
            return;
        }
        // The buffer ends with the LF of its last line: removed.
        data.pop();
        events.push(SseEvent { event: name, data: Bytes::from(std::mem::take(data)) });
    };
    let field = |line: &[u8], data: &mut Vec<u8>, event_type: &mut Option<String>| {
        if line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"event" => *event_type = Some(String::from_utf8_lossy(value).into_owned()),
            // `id`, `retry` and unknown fields change no event here.
            _ => {}
        }
    };
    for line in lines {
        if line.is_empty() {
            dispatch(&mut data, &mut event_type);
        } else {
            field(line, &mut data, &mut event_type);
        }
    }
    if !last.is_empty() {
        field(last, &mut data, &mut event_type);
    }
    dispatch(&mut data, &mut event_type);
    events
}

fn decode(stream: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(stream.len());
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    let mut start = 0;
    for cut in cuts {
        decoder.push(&stream[start..cut]);
        start = cut;
        while let Some(event) = decoder.next_event().unwrap_or_else(|e| panic!("{e}")) {
            events.push(event);
        }
    }
    events.extend(decoder.finish().unwrap_or_else(|e| panic!("{e}")));
    events
}

fn streams() -> impl Strategy<Value = Vec<u8>> {
    let value = prop::collection::vec(prop::sample::select(b"ab :{}\"\xC3\xA9\xFF".to_vec()), 0..8);
    let fields =
        vec!["data:", "data: ", "data", "event:", "event: ", "id: ", "retry: ", ":", ": ", "dat", "", "x: ", " data: "];
    let line = (prop::sample::select(fields), value).prop_map(|(field, value)| [field.as_bytes(), &value[..]].concat());
    let end = prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\r"]);
    let bom = prop::sample::select(vec![&b""[..], b"", b"\xEF\xBB\xBF", b"\xEF\xBB"]);
    (bom, prop::collection::vec((line, end), 0..16), any::<bool>()).prop_map(|(bom, lines, ended)| {
        let mut stream = bom.to_vec();
        let count = lines.len();
        for (i, (line, end)) in lines.into_iter().enumerate() {
            stream.extend_from_slice(&line);
            // The last line may lack its end (a stream cut short).
            if ended || i + 1 < count {
                stream.extend_from_slice(end);
            }
        }
        stream
    })
}

#[test]
fn the_decoder_matches_the_whatwg_rules_however_the_stream_is_cut() {
    let mut runner = TestRunner::new(Config { cases: 2000, failure_persistence: None, ..Config::default() });
    runner
        .run(&(streams(), prop::collection::vec(any::<usize>(), 0..6)), |(stream, cuts)| {
            prop_assert_eq!(decode(&stream, &cuts), reference(&stream), "{:?}", String::from_utf8_lossy(&stream));
            Ok(())
        })
        .unwrap();
}
