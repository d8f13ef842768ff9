//! Property tests of the request reading (`parse_head`, then the body's `Framing::decode`)
//! against hyper's HTTP/1.1 server on the same bytes: generated requests — methods, targets,
//! versions, `Content-Length` and transfer codings spelled right and wrong, chunked bodies with
//! extensions and trailers — valid and damaged, cut into reads at random offsets. Both must take
//! or refuse a request alike and hand the application the same method, target, version, fields
//! and body. Where this server is deliberately stricter than hyper (a bare LF in the head, a
//! transfer coding other than chunked alone, both framings at once) it must refuse.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::parse_head;
use crate::http::h1::Pieces;
use crate::upstream::h1::props::{
    Body, apply, bodies, codings, cut, damage, lengths, put_body, put_fields, spell_lengths,
};

/// What the application got from the first request of the reads.
#[derive(Debug, PartialEq, Clone)]
enum Outcome {
    /// Answered with a 4xx or 5xx without a request reaching the application.
    Refused,
    Request {
        method: String,
        target: String,
        version: String,
        fields: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        complete: bool,
    },
    /// Nothing yet: the head is incomplete.
    Nothing,
}

/// This server's reading of `reads`: the head, then the body from what follows.
fn ours(reads: &[Vec<u8>]) -> (Outcome, Option<StatusCode>) {
    let mut buf = BytesMut::new();
    let mut reads = reads.iter();
    let head = loop {
        match parse_head(&mut buf) {
            Ok(Some(head)) => break head,
            Ok(None) => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => return (Outcome::Nothing, None),
            },
            Err(status) => return (Outcome::Refused, Some(status)),
        }
    };
    let request = &head.request;
    let fields = request.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    let (method, target, version) =
        (request.method().to_string(), request.uri().to_string(), format!("{:?}", request.version()));
    let mut framing = head.framing;
    let mut body = Vec::new();
    let complete = loop {
        let mut out = Pieces::default();
        let decoded = framing.decode(&mut buf, &mut out);
        body.extend_from_slice(&out.take().unwrap_or_default());
        match decoded {
            Ok(true) => break true,
            Ok(false) => {}
            Err(_) => break false,
        }
        match reads.next() {
            Some(read) => buf.extend_from_slice(read),
            None => break false,
        }
    };
    (Outcome::Request { method, target, version, fields, body, complete }, None)
}

/// A connection that yields `reads` one per read, then nothing (it stays open); what the server
/// writes is kept.
struct Script {
    reads: VecDeque<Vec<u8>>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Script {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let Some(mut read) = self.reads.pop_front() else { return Poll::Pending };
        let n = read.len().min(out.remaining());
        out.put_slice(&read[..n]);
        if n < read.len() {
            self.reads.push_front(read.split_off(n));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.written.lock().unwrap().extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// hyper's server reading the same reads, its application noting the first request and as much
/// of its body as came (time is paused: the wait ends as soon as nothing more can happen).
async fn hyper_reads(reads: &[Vec<u8>]) -> Outcome {
    let written = Arc::new(Mutex::new(Vec::new()));
    let seen: Arc<Mutex<Option<Outcome>>> = Arc::new(Mutex::new(None));
    let io = hyper_util::rt::TokioIo::new(Script { reads: reads.iter().cloned().collect(), written: written.clone() });
    let noted = seen.clone();
    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let noted = noted.clone();
        async move {
            let (parts, mut body) = request.into_parts();
            let first = {
                let mut noted = noted.lock().unwrap();
                let first = noted.is_none();
                if first {
                    *noted = Some(Outcome::Request {
                        method: parts.method.to_string(),
                        target: parts.uri.to_string(),
                        version: format!("{:?}", parts.version),
                        fields: parts
                            .headers
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                            .collect(),
                        body: Vec::new(),
                        complete: false,
                    });
                }
                first
            };
            if !first {
                // Only the first request is compared.
                return Ok(http::Response::new(http_body_util::Empty::<Bytes>::new()));
            }
            let complete = loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let (Ok(data), Some(Outcome::Request { body, .. })) =
                            (frame.into_data(), noted.lock().unwrap().as_mut())
                        {
                            body.extend_from_slice(&data);
                        }
                    }
                    Some(Err(_)) => break false,
                    None => break true,
                }
            };
            if let Some(Outcome::Request { complete: c, .. }) = noted.lock().unwrap().as_mut() {
                *c = complete;
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), connection).await;
    if let Some(outcome) = seen.lock().unwrap().take() {
        return outcome;
    }
    let written = written.lock().unwrap();
    if written.starts_with(b"HTTP/1.1 4") || written.starts_with(b"HTTP/1.1 5") {
        Outcome::Refused
    } else {
        Outcome::Nothing
    }
}

/// A request as generated: its parts, put together by `wire`.
#[derive(Debug, Clone)]
struct Generated {
    line: (&'static str, &'static str, &'static str),
    fields: Vec<(&'static str, String)>,
    body: Body,
}

fn wire(request: &Generated) -> Vec<u8> {
    let (method, target, version) = request.line;
    let mut out = format!("{method} {target} {version}\r\n").into_bytes();
    put_fields(&mut out, &request.fields);
    put_body(&mut out, &request.body);
    out
}

fn requests() -> impl Strategy<Value = Generated> {
    let method =
        prop::sample::select(vec!["POST", "POST", "POST", "POST", "GET", "HEAD", "PUT", "OPTIONS", "G@T", "post"]);
    let target = prop::sample::select(vec![
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/messages?beta=true",
        "/",
        "*",
        "http://gw.example/v1/x",
        "/a%20b",
        "/a b",
        "",
    ]);
    let version = prop::sample::select(vec![
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "http/1.1",
    ]);
    let field = prop_oneof![
        8 => Just(("content-length", "{n}".to_owned())),
        8 => Just(("transfer-encoding", "chunked".to_owned())),
        3 => lengths().prop_map(|v| ("content-length", v.to_owned())),
        3 => codings().prop_map(|v| ("transfer-encoding", v.to_owned())),
        1 => prop::sample::select(vec!["close", "keep-alive", "Keep-Alive, Close"]).prop_map(|v| ("connection", v.to_owned())),
        1 => prop::sample::select(vec!["100-continue", "nothing"]).prop_map(|v| ("expect", v.to_owned())),
        2 => "[ -~]{0,8}".prop_map(|v| ("x-other", v)),
        1 => "[a-z.]{0,8}".prop_map(|v| ("host", v)),
    ];
    let fields = prop::collection::vec(field, 0..3);
    (method, target, version, fields, bodies(b"ab\r\n0;:{}")).prop_map(|(method, target, version, mut fields, body)| {
        spell_lengths(&mut fields, &body);
        Generated { line: (method, target, version), fields, body }
    })
}

/// Where this server refuses what hyper takes, on purpose.
fn stricter_on_purpose(wire: &[u8], status: StatusCode) -> bool {
    let head_end = memchr::memmem::find(wire, b"\r\n\r\n").unwrap_or(wire.len());
    let head = String::from_utf8_lossy(&wire[..head_end]).to_ascii_lowercase();
    let bare_lf = wire.iter().enumerate().any(|(at, &b)| b == b'\n' && (at == 0 || wire[at - 1] != b'\r'));
    let coded = head.contains("transfer-encoding");
    bare_lf || status == StatusCode::NOT_IMPLEMENTED || (coded && head.contains("content-length"))
}

#[test]
fn request_reading_matches_hyper_on_generated_and_damaged_requests() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let mut runner = TestRunner::new(Config { cases: 3000, failure_persistence: None, ..Config::default() });
    let strategy = (requests(), damage(), prop::collection::vec(any::<usize>(), 0..4));
    runner
        .run(&strategy, |(request, damage, offsets)| {
            let wire = apply(wire(&request), &damage);
            let reads = cut(&wire, &offsets);
            let (ours, refused) = ours(&reads);
            let theirs = runtime.block_on(hyper_reads(&reads));
            let shown = String::from_utf8_lossy(&wire);
            // No request reached the application: refused, or waiting for more (hyper does not
            // always get to write its refusal before the connection is given up on).
            let none = |outcome: &Outcome| !matches!(outcome, Outcome::Request { .. });
            if none(&ours) && none(&theirs) {
                return Ok(());
            }
            if let Some(status) = refused {
                prop_assert!(stricter_on_purpose(&wire, status), "{status} where hyper took {shown:?}: {theirs:?}");
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
