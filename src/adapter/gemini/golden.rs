//! Test support for the Gemini and Bedrock dialects: golden files under `tests/fixtures/`
//! (`UPDATE_GOLDEN=1` rewrites them; review the diff), and a driver that feeds upstream bytes
//! through a decoder and a rewriter split at given offsets, as the relay does.

use std::path::{Path, PathBuf};

use crate::adapter::bedrock::eventstream::EventStreamDecoder;
use crate::stream::sse::{SseDecoder, SseEvent};
use crate::stream::{ChunkRewriter, Step};

pub const CREATED: u64 = 1_764_140_000;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn read_json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Compares JSON with a golden file, as values (the file is pretty-printed for review).
pub fn golden_json(path: &str, actual: &[u8]) -> serde_json::Value {
    let actual: serde_json::Value = serde_json::from_slice(actual).unwrap();
    if updating() {
        let mut text = serde_json::to_vec_pretty(&actual).unwrap();
        text.push(b'\n');
        std::fs::write(fixture(path), text).unwrap();
    } else {
        assert_eq!(read_json(path), actual, "{path} differs");
    }
    actual
}

/// Compares bytes with a golden file (or writes it when updating).
pub fn golden_bytes(path: &str, actual: &[u8]) {
    if updating() {
        std::fs::write(fixture(path), actual).unwrap();
        return;
    }
    let expected = read(path);
    assert!(
        expected == actual,
        "{path} differs:\n--- expected\n{}\n--- actual\n{}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual)
    );
}

/// The decoders a relay may put in front of a rewriter.
pub trait Decode {
    fn push(&mut self, bytes: &[u8]);
    fn next(&mut self) -> Result<Option<SseEvent>, String>;
    fn finish(&mut self) -> Result<Option<SseEvent>, String>;
}

impl Decode for SseDecoder {
    fn push(&mut self, bytes: &[u8]) {
        SseDecoder::push(self, bytes);
    }
    fn next(&mut self) -> Result<Option<SseEvent>, String> {
        self.next_event().map_err(|e| e.to_string())
    }
    fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        SseDecoder::finish(self).map_err(|e| e.to_string())
    }
}

impl Decode for EventStreamDecoder {
    fn push(&mut self, bytes: &[u8]) {
        EventStreamDecoder::push(self, bytes);
    }
    fn next(&mut self) -> Result<Option<SseEvent>, String> {
        self.next_event().map_err(|e| e.to_string())
    }
    fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        EventStreamDecoder::finish(self).map_err(|e| e.to_string())
    }
}

/// What a client receives: the frames, in order, as one byte string. A decoding failure ends
/// it with `!decode error: …` (the relay's protocol error) instead of frames.
pub fn run(bytes: &[u8], splits: &[usize], decoder: &mut dyn Decode, rewriter: &mut dyn ChunkRewriter) -> Vec<u8> {
    let mut out = Vec::new();
    let mut frames = Vec::new();
    let mut start = 0;
    let mut pieces: Vec<&[u8]> = Vec::new();
    for &split in splits.iter().chain(std::iter::once(&bytes.len())) {
        pieces.push(&bytes[start..split]);
        start = split;
    }
    let flush = |frames: &mut Vec<bytes::Bytes>, out: &mut Vec<u8>| {
        for frame in frames.drain(..) {
            out.extend_from_slice(&frame);
        }
    };
    for (n, piece) in pieces.iter().enumerate() {
        decoder.push(piece);
        loop {
            let event = match decoder.next() {
                Ok(Some(event)) => event,
                Ok(None) if n + 1 == pieces.len() => match decoder.finish() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(e) => return [out, format!("!decode error: {e}").into_bytes()].concat(),
                },
                Ok(None) => break,
                Err(e) => return [out, format!("!decode error: {e}").into_bytes()].concat(),
            };
            match rewriter.on_event(&event, &mut frames) {
                Step::Continue => flush(&mut frames, &mut out),
                Step::Done => {
                    rewriter.on_end(&mut frames);
                    flush(&mut frames, &mut out);
                    return out;
                }
                Step::Failed(error) => {
                    rewriter.on_error(&error, &mut frames);
                    flush(&mut frames, &mut out);
                    return out;
                }
            }
        }
    }
    rewriter.on_end(&mut frames);
    flush(&mut frames, &mut out);
    out
}
