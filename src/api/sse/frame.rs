//! Writing Server-Sent Events: the `data:` frames the gateway hands its clients.

use bytes::{BufMut, Bytes, BytesMut};

/// How an OpenAI-shaped stream ends.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// `data: <payload>\n\n` with the payload written by `write` straight into the frame (no copy),
/// framed like `data_frame` when it holds line breaks.
pub fn data_frame_with(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    const PREFIX: &[u8] = b"data: ";
    let mut frame = Vec::with_capacity(PREFIX.len() + capacity + 2);
    frame.extend_from_slice(PREFIX);
    write(&mut frame);
    if memchr::memchr2(b'\n', b'\r', &frame[PREFIX.len()..]).is_some() {
        return data_frame(&frame[PREFIX.len()..]);
    }
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// `data: <json>\n\n` (one `data:` line per line of `json`).
pub fn data_frame(json: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(json.len() + 8);
    // A line break inside the payload (whitespace of pretty-printed JSON) starts another `data:`
    // line: the client joins them back with `\n`.
    let mut lines = json.split(|&b| b == b'\n' || b == b'\r').peekable();
    while let Some(line) = lines.next() {
        frame.put_slice(b"data: ");
        frame.put_slice(line);
        frame.put_slice(b"\n");
        if lines.peek().is_none() {
            frame.put_slice(b"\n");
        }
    }
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::sse::SseDecoder;

    #[test]
    fn a_payload_with_line_breaks_is_framed_as_several_data_lines() {
        assert_eq!(&data_frame(b"{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        let frame = data_frame(b"{\"a\":\n 1}");
        assert_eq!(&frame[..], b"data: {\"a\":\ndata:  1}\n\n");
        let mut decoder = SseDecoder::new();
        decoder.push(&frame);
        let event = decoder.next_event().unwrap().unwrap();
        assert_eq!(&event.data[..], b"{\"a\":\n 1}");
        // Written straight into the frame: the same framing either way.
        assert_eq!(data_frame_with(0, |out| out.extend_from_slice(b"{\"a\":1}")), data_frame(b"{\"a\":1}"));
        assert_eq!(data_frame_with(0, |out| out.extend_from_slice(b"{\"a\":\n 1}")), frame);
    }
}
