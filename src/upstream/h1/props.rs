//! Property tests of the answer framing (`parse_head`, `Framing::decode`, `Framing::at_eof`)
//! against hyper's HTTP/1.1 client on the same bytes: generated answers — interim answers,
//! `Content-Length`, chunked (extensions, trailers), read to the close — valid and mutated, cut
//! into reads at random offsets. Both must take or refuse an answer alike and read the same
//! body; where this client is deliberately stricter than hyper (a `101`, a bare LF in the
//! head, both allowed by RFC 9112 to a recipient but refused here) it must refuse.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Error, Pieces, parse_head};

/// How reading an answer ended: its status and the body bytes read, and whether the body came
/// whole (`Ok(None)`: the head itself was refused or never complete).
#[derive(Debug, PartialEq)]
struct Outcome {
    status: Option<u16>,
    body: Vec<u8>,
    complete: bool,
}

/// This client's reading of `reads`, as `H1Body` reads a connection: the head (interim
/// answers skipped), then the body from what follows, then the connection's end.
fn ours(reads: &[Vec<u8>]) -> (Outcome, Option<Error>) {
    let mut buf = BytesMut::new();
    let mut reads = reads.iter();
    let head = loop {
        match parse_head(&mut buf) {
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            Ok(None) => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => return (Outcome { status: None, body: Vec::new(), complete: false }, Some(Error::Closed)),
            },
            Err(e) => return (Outcome { status: None, body: Vec::new(), complete: false }, Some(e)),
        }
    };
    let mut framing = head.framing;
    let mut body = Vec::new();
    let status = Some(head.status.as_u16());
    loop {
        let mut out = Pieces::default();
        let decoded = framing.decode(&mut buf, &mut out);
        body.extend_from_slice(&out.take().unwrap_or_default());
        match decoded {
            Ok(true) => return (Outcome { status, body, complete: true }, None),
            Ok(false) => {}
            Err(e) => return (Outcome { status, body, complete: false }, Some(e)),
        }
        match reads.next() {
            Some(read) => buf.extend_from_slice(read),
            None => {
                return match framing.at_eof() {
                    Ok(()) => (Outcome { status, body, complete: true }, None),
                    Err(e) => (Outcome { status, body, complete: false }, Some(e)),
                };
            }
        }
    }
}

/// A connection that yields `reads` one per read once the request was written (an answer
/// before it is not hyper's case), then its end; what is written to it is dropped.
struct Script {
    reads: VecDeque<Vec<u8>>,
    asked: bool,
    reader: Option<std::task::Waker>,
}

impl AsyncRead for Script {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.asked {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if let Some(mut read) = self.reads.pop_front() {
            let n = read.len().min(out.remaining());
            out.put_slice(&read[..n]);
            if n < read.len() {
                self.reads.push_front(read.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.asked = true;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// hyper's client reading the same reads as the answer to a `POST`.
async fn hyper_reads(reads: &[Vec<u8>]) -> Outcome {
    let io =
        hyper_util::rt::TokioIo::new(Script { reads: reads.iter().cloned().collect(), asked: false, reader: None });
    let failed = Outcome { status: None, body: Vec::new(), complete: false };
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await else { return failed };
    tokio::spawn(connection);
    let request = http::Request::post("/v1/x").header("host", "t").body(http_body_util::Empty::<bytes::Bytes>::new());
    let Ok(response) = sender.send_request(request.unwrap_or_default()).await else { return failed };
    let status = Some(response.status().as_u16());
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => data.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => return Outcome { status, body: data, complete: false },
        }
    }
    Outcome { status, body: data, complete: true }
}

/// An answer as generated: its parts, put together by `wire`.
#[derive(Debug, Clone)]
struct Answer {
    interim: Vec<&'static str>,
    version: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

/// A generated body (shared with the server's property tests, `server::h1::props`).
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Chunks of the payload, each with its size's spelling and an extension; then trailers.
    Chunked { chunks: Vec<(Vec<u8>, bool, &'static str)>, trailers: Vec<&'static str> },
    /// The payload, then bytes past it (or fewer: a negative cut).
    Plain { payload: Vec<u8>, cut: i64 },
}

fn wire(answer: &Answer) -> Vec<u8> {
    let mut out = Vec::new();
    for interim in &answer.interim {
        out.extend_from_slice(interim.as_bytes());
    }
    out.extend_from_slice(format!("{} {} Whatever\r\n", answer.version, answer.status).as_bytes());
    put_fields(&mut out, &answer.headers);
    put_body(&mut out, &answer.body);
    out
}

/// Header field lines, then the empty line that ends a head.
pub(crate) fn put_fields(out: &mut Vec<u8>, fields: &[(&'static str, String)]) {
    for (name, value) in fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn put_body(out: &mut Vec<u8>, body: &Body) {
    match body {
        Body::Chunked { chunks, trailers } => {
            for (data, upper, extension) in chunks {
                let size = if *upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
                out.extend_from_slice(format!("{size}{extension}\r\n").as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            for trailer in trailers {
                out.extend_from_slice(trailer.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        Body::Plain { payload, cut } => {
            let end = (payload.len() as i64 + cut.min(&0)).max(0) as usize;
            out.extend_from_slice(&payload[..end]);
            out.extend(std::iter::repeat_n(b'z', (*cut).max(0) as usize));
        }
    }
}

/// `Content-Length` values, right and wrong: `{n}` stands for the body's length, `{m}` for
/// another (see `spell_lengths`).
pub(crate) fn lengths() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "{n}", "{n}", "{n}", "+{n}", "-{n}", " {n} ", "{n}, {n}", "{n},{m}", "", "0x{n}", "{n} {n}", "{m}",
    ])
}

/// `Transfer-Encoding` values.
pub(crate) fn codings() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["chunked", "chunked", "gzip, chunked", "gzip", "chunked, gzip", "Chunked", "x"])
}

/// Chunked bodies (extensions, trailers, good and bad) and plain ones, cut short or overlong.
pub(crate) fn bodies(payload_bytes: &'static [u8]) -> impl Strategy<Value = Body> {
    let payload = prop::collection::vec(prop::sample::select(payload_bytes.to_vec()), 0..40);
    let extension = prop::sample::select(vec!["", "", "", ";a=b", " ;x", "\t", "; q=\"z\"", " "]);
    let chunks = prop::collection::vec((prop::collection::vec(any::<u8>(), 1..20), any::<bool>(), extension), 0..4);
    let trailers =
        prop::collection::vec(prop::sample::select(vec!["x-t: 1", "x-u:", "bad trailer", " x: folded"]), 0..2);
    prop_oneof![
        (chunks, trailers).prop_map(|(chunks, trailers)| Body::Chunked { chunks, trailers }),
        (payload, -3i64..3).prop_map(|(payload, cut)| Body::Plain { payload, cut }),
    ]
}

/// Lengths spelled after the body they frame (`{n}` its length, `{m}` another).
pub(crate) fn spell_lengths(fields: &mut [(&'static str, String)], body: &Body) {
    let n = match body {
        Body::Plain { payload, .. } => payload.len(),
        Body::Chunked { .. } => 7,
    };
    for (_, value) in fields {
        *value = value.replace("{n}", &n.to_string()).replace("{m}", &(n + 1).to_string());
    }
}

fn answers() -> impl Strategy<Value = Answer> {
    let interim = prop::collection::vec(
        prop::sample::select(vec!["HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"]),
        0..2,
    );
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let status = prop::sample::select(vec![200u16, 200, 200, 201, 204, 304, 400, 413, 429, 500, 503, 101, 199]);
    let header = prop_oneof![
        4 => lengths().prop_map(|v| ("content-length", v.to_owned())),
        4 => codings().prop_map(|v| ("transfer-encoding", v.to_owned())),
        1 => prop::sample::select(vec!["close", "keep-alive", "Keep-Alive, Close"]).prop_map(|v| ("connection", v.to_owned())),
        2 => "[a-z]{0,6}".prop_map(|v| ("x-other", v)),
    ];
    let headers = prop::collection::vec(header, 0..4);
    (interim, version, status, headers, bodies(b"ab\r\n0;:")).prop_map(
        |(interim, version, status, mut headers, body)| {
            spell_lengths(&mut headers, &body);
            Answer { interim, version, status, headers, body }
        },
    )
}

/// Byte-level damage: a CRLF made a bare LF, a byte dropped, a byte put in, or a cut.
#[derive(Debug, Clone)]
pub(crate) enum Damage {
    None,
    BareLf(usize),
    Drop(usize),
    Insert(usize, u8),
    Truncate(usize),
}

pub(crate) fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::BareLf),
        1 => any::<usize>().prop_map(Damage::Drop),
        1 => (any::<usize>(), prop::sample::select(b"\r\n:;+- 0aZ\x00\x7f\xff".to_vec())).prop_map(|(at, b)| Damage::Insert(at, b)),
        1 => any::<usize>().prop_map(Damage::Truncate),
    ]
}

pub(crate) fn apply(mut wire: Vec<u8>, damage: &Damage) -> Vec<u8> {
    if wire.is_empty() {
        return wire;
    }
    match *damage {
        Damage::None => {}
        Damage::BareLf(at) => {
            let crs: Vec<usize> = (0..wire.len() - 1).filter(|&i| wire[i] == b'\r' && wire[i + 1] == b'\n').collect();
            if !crs.is_empty() {
                wire.remove(crs[at % crs.len()]);
            }
        }
        Damage::Drop(at) => {
            wire.remove(at % wire.len());
        }
        Damage::Insert(at, byte) => wire.insert(at % (wire.len() + 1), byte),
        Damage::Truncate(at) => wire.truncate(at % wire.len()),
    }
    wire
}

/// `wire` cut into reads at the given offsets.
pub(crate) fn cut(wire: &[u8], offsets: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = offsets.iter().map(|o| o % (wire.len() + 1)).collect();
    at.sort_unstable();
    at.push(wire.len());
    let mut start = 0;
    at.into_iter()
        .map(|end| {
            let read = wire[start..end].to_vec();
            start = end;
            read
        })
        .filter(|read| !read.is_empty())
        .collect()
}

#[test]
fn answer_framing_matches_hyper_on_generated_and_damaged_answers() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut runner = TestRunner::new(Config { cases: 1500, failure_persistence: None, ..Config::default() });
    let strategy = (answers(), damage(), prop::collection::vec(any::<usize>(), 0..4));
    runner
        .run(&strategy, |(answer, damage, offsets)| {
            let wire = apply(wire(&answer), &damage);
            let reads = cut(&wire, &offsets);
            let (ours, error) = ours(&reads);
            let theirs = runtime.block_on(hyper_reads(&reads));
            let shown = String::from_utf8_lossy(&wire);
            // Deliberately stricter than hyper: the head is refused.
            if let Some(Error::Invalid(why)) = &error
                && (why.starts_with("101") || why.starts_with("bare LF in the response head"))
            {
                prop_assert!(ours.status.is_none(), "{shown:?}");
                return Ok(());
            }
            prop_assert_eq!(
                &ours,
                &theirs,
                "{:?} in reads {:?}",
                shown,
                reads.iter().map(Vec::len).collect::<Vec<_>>()
            );
            Ok(())
        })
        .unwrap();
}
