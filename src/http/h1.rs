//! HTTP/1.1 message framing shared by the gateway's two HTTP/1.1 codecs: the plain-HTTP upstream
//! client (`upstream::h1`, answers) and the client connections' server (`server::h1`, request
//! bodies). Bodies are delimited by `Content-Length` or chunked transfer coding (RFC 9112 §6, §7),
//! lines end with CRLF only, and a length is digits only; the upstream client's property tests
//! compare this decoding with hyper's on the same bytes.

use std::io;

use bytes::{Bytes, BytesMut};

/// A chunk-size line (with extensions) or trailer line may take this much at most.
pub(crate) const MAX_LINE: usize = 4096;

/// A waiting connection's unread bytes up to this size are moved to a buffer of their own size
/// (see `trimmed`).
pub(crate) const WAITING_SPARE: usize = 1024;

/// Why a message (an upstream's answer, a client's request body) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The peer closed the connection before the message was complete.
    #[error("the connection closed before the message was complete")]
    Closed,
    #[error("invalid HTTP message: {0}")]
    Invalid(&'static str),
}

/// `buf` sized to what it holds, for a wait: a stream between two events, or an idle pooled
/// connection, then keeps no `READ_SIZE` buffer (thousands of slow streams held thousands of
/// them). A view into a buffer does not tell how large the allocation behind it is, so anything
/// small is moved: empty, to no allocation at all; up to `WAITING_SPARE` bytes, to their own.
pub(crate) fn trimmed(buf: BytesMut) -> BytesMut {
    match buf.len() {
        0 => BytesMut::new(),
        held if held <= WAITING_SPARE => BytesMut::from(&buf[..]),
        _ => buf,
    }
}

/// `Content-Length` values seen so far (`seen`) and one more header's: RFC 9110 wants
/// `1*DIGIT` (no sign, no space inside); a list of identical values, or the same value
/// repeated, is one length (§8.6); different ones are an error.
pub(crate) fn same_length(seen: Option<u64>, value: &[u8]) -> Result<Option<u64>, ()> {
    let mut length = seen;
    for item in value.split(|&b| b == b',') {
        let digits = item.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = digits.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0'))).ok_or(())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

/// Whether a header value is visible ASCII, spaces and tabs (what a coding name can be).
pub(crate) fn visible(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The last comma-separated token of a header value, trimmed.
pub(crate) fn last_token(value: &[u8]) -> &[u8] {
    value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii()
}

pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// At the connection's close.
    ToEnd,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// After a chunk's data, before its line end.
    DataEnd,
    /// After the last chunk, in the trailer section.
    Trailers,
}

/// Body pieces taken from the buffer, joined into one when there are several.
#[derive(Default)]
pub(crate) struct Pieces {
    first: Option<Bytes>,
    more: Option<BytesMut>,
}

impl Pieces {
    pub(crate) fn push(&mut self, data: Bytes) {
        match (&self.first, &mut self.more) {
            (None, _) => self.first = Some(data),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(first);
                joined.extend_from_slice(&data);
                self.more = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(crate) fn take(&mut self) -> Option<Bytes> {
        let first = self.first.take();
        self.more.take().map(BytesMut::freeze).or(first)
    }
}

impl Framing {
    /// Moves the body's bytes at the front of `buf` into `out`; true once the body is complete.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut, out: &mut Pieces) -> Result<bool, Error> {
        loop {
            match self {
                Framing::Length(0) => return Ok(true),
                Framing::Length(rest) => {
                    let n = (*rest).min(buf.len() as u64) as usize;
                    if n == 0 {
                        return Ok(false);
                    }
                    out.push(buf.split_to(n).freeze());
                    *rest -= n as u64;
                }
                Framing::ToEnd => {
                    if !buf.is_empty() {
                        out.push(buf.split().freeze());
                    }
                    return Ok(false);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf)? else { return Ok(false) };
                    let size = chunk_size(&line)?;
                    *self = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Framing::Chunked(Chunk::Data(rest)) => {
                    let n = (*rest).min(buf.len() as u64) as usize;
                    if n == 0 {
                        return Ok(false);
                    }
                    out.push(buf.split_to(n).freeze());
                    *rest -= n as u64;
                    if *rest == 0 {
                        *self = Framing::Chunked(Chunk::DataEnd);
                    }
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    let Some(line) = take_line(buf)? else { return Ok(false) };
                    if !line.is_empty() {
                        return Err(Error::Invalid("chunk data longer than its size"));
                    }
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let Some(line) = take_line(buf)? else { return Ok(false) };
                    if line.is_empty() {
                        *self = Framing::Length(0);
                    } else if !trailer_ok(&line) {
                        return Err(Error::Invalid("bad trailer field"));
                    }
                }
            }
        }
    }

    /// What the connection's end means here: the end of the body, or a truncated one.
    pub(crate) fn at_eof(&self) -> Result<(), Error> {
        match self {
            Framing::ToEnd | Framing::Length(0) => Ok(()),
            _ => Err(Error::Closed),
        }
    }
}

/// Takes one line (without its CRLF) from the front of `buf`; `None` while incomplete. A line
/// ends with CRLF only (RFC 9112 §7.1): a bare LF is an error.
pub(crate) fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_LINE { Err(Error::Invalid("chunk line too long")) } else { Ok(None) };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(Error::Invalid("bare LF in chunked framing"));
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// The size in a chunk-size line: hex digits, optional spaces or tabs, then optional
/// `;extensions` (ignored, but without a CR: a line has none but its end).
pub(crate) fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let bad = Error::Invalid("bad chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let spaces = line[digits..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let rest = &line[digits + spaces..];
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') || memchr::memchr(b'\r', rest).is_some() {
        return Err(bad);
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |size, &d| size.checked_mul(16)?.checked_add(u64::from((d as char).to_digit(16)?)))
        .ok_or(bad)
}

/// A trailer line (RFC 9112 §7.1.2): a field line, `name:value`, the name a token.
pub(crate) fn trailer_ok(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else { return false };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}
