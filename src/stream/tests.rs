//! The relay's tests, with the dialects' rewriters: cut streams, usage, bounds and timeouts.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use super::*;
use crate::adapter::anthropic::passthrough::MessagesRelay;
use crate::adapter::anthropic::stream::ClaudeChunks;
use crate::adapter::openai::OpenAiChunks;

const MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"up\",\"content\":[],\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n";

fn text_delta(text: &str) -> String {
    format!(
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
    )
}

/// Relays `upstream` (then an upstream that dies, or one that stalls), reading `read` frames
/// before the client hangs up (`None`: to the end); returns the end-of-stream report.
async fn relay(upstream: Vec<String>, dies: bool, read: Option<usize>, rewriter: Box<dyn ChunkRewriter>) -> StreamEnd {
    let mut items: Vec<Result<Bytes, GatewayError>> = upstream.into_iter().map(|s| Ok(Bytes::from(s))).collect();
    if dies {
        items.push(Err(GatewayError::UpstreamProtocol { deployment: "d".into(), detail: "connection reset".into() }));
    }
    let tail = if dies || read.is_none() {
        futures_util::stream::empty().boxed()
    } else {
        futures_util::stream::pending().boxed()
    };
    let body: BodyStream = Box::pin(futures_util::stream::iter(items).chain(tail));
    let far = Instant::now() + Duration::from_secs(60);
    let mut relay = Relay::new(body, rewriter, "d".into(), Duration::from_secs(60), far, std::time::Instant::now());
    let first = relay.next_frame().await.unwrap().unwrap();
    let ended = Arc::new(Mutex::new(None));
    let slot = ended.clone();
    let body = relay.into_body(first, Box::new(move |end| *slot.lock().unwrap() = Some(end)));
    match read {
        Some(n) => drop(body.take(n).collect::<Vec<_>>().await),
        None => drop(body.collect::<Vec<_>>().await),
    }
    ended.lock().unwrap().take().expect("one report")
}

fn text(end: &StreamEnd) -> String {
    let generated = end.generated.as_ref().expect("generated text for a local count");
    (generated.text)(&generated.fragments)
}

#[tokio::test]
async fn an_anthropic_stream_cut_after_message_start_reports_partial_usage_and_the_text() {
    let upstream = vec![MESSAGE_START.to_owned(), text_delta("Hello"), text_delta(" world")];
    let openai_client = || Box::new(ClaudeChunks::new("claude", 1, false)) as Box<dyn ChunkRewriter>;
    let anthropic_client = || Box::new(MessagesRelay::new("claude")) as Box<dyn ChunkRewriter>;
    for make in [openai_client, anthropic_client] {
        // The upstream dies mid-stream.
        let end = relay(upstream.clone(), true, None, make()).await;
        assert!(end.error.is_some() && !end.client_gone);
        let usage = end.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, end.usage_partial), (42, 1, true));
        assert_eq!(text(&end), "Hello world");

        // The client hangs up after two frames (message_start, "Hello"); the upstream stalls.
        let end = relay(upstream.clone(), false, Some(2), make()).await;
        assert!(end.client_gone && end.error.is_none());
        assert!(end.usage_partial);
        assert_eq!(end.usage.unwrap().prompt_tokens, 42);
        // The relay reads upstream only as fast as the client does: " world" never came.
        assert_eq!(text(&end), "Hello");
    }
}

#[tokio::test]
async fn a_complete_anthropic_stream_reports_final_usage_and_keeps_no_text() {
    let mut upstream = vec![MESSAGE_START.to_owned(), text_delta("Hello")];
    upstream.push("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    let end = relay(upstream, false, None, Box::new(MessagesRelay::new("claude"))).await;
    let usage = end.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, end.usage_partial), (42, 2, false));
    assert!(end.generated.is_none());
}

#[tokio::test]
async fn openai_streams_are_unchanged_usage_is_final_text_only_without_it() {
    let chunk = |body: &str| format!("data: {{\"id\":\"c\",\"model\":\"up\",{body}}}\n\n");
    let content = chunk(r#""choices":[{"index":0,"delta":{"content":"Hi"}}]"#);
    let usage = chunk(r#""choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}"#);
    let end = relay(
        vec![content.clone(), usage, "data: [DONE]\n\n".into()],
        false,
        None,
        Box::new(OpenAiChunks::new("m", true)),
    )
    .await;
    assert!(!end.usage_partial && end.generated.is_none());
    let end = relay(vec![content], true, None, Box::new(OpenAiChunks::new("m", true))).await;
    assert!(end.usage.is_none() && !end.usage_partial);
    assert_eq!(text(&end), "Hi");
}

/// An upstream event past the provider's bound ends the stream with an in-band error that
/// names the bound, after the frames that went out before it.
#[tokio::test]
async fn an_event_past_the_bound_ends_the_stream_with_an_error_naming_it() {
    let chunk = |text: &str| {
        format!(
            "data: {{\"id\":\"c\",\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
        )
    };
    let upstream = [chunk("Hi"), chunk(&"x".repeat(2048))].map(|c| Ok(Bytes::from(c)));
    let body: BodyStream = Box::pin(futures_util::stream::iter(upstream));
    let far = Instant::now() + Duration::from_secs(60);
    let started = std::time::Instant::now();
    let mut relay =
        Relay::new(body, Box::new(OpenAiChunks::new("m", false)), "d".into(), Duration::from_secs(60), far, started)
            .max_event_bytes(1024);
    let first = relay.next_frame().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hi"));
    let ended = Arc::new(Mutex::new(None));
    let slot = ended.clone();
    let frames: Vec<Bytes> = relay
        .into_body(first, Box::new(move |end| *slot.lock().unwrap() = Some(end)))
        .map(|frame| frame.unwrap())
        .collect()
        .await;
    let last = String::from_utf8_lossy(frames.last().unwrap()).into_owned();
    assert!(last.contains("exceeded 1024 bytes") && last.contains("max_event_bytes"), "{last}");
    assert!(last.ends_with("data: [DONE]\n\n"), "{last}");
    assert_eq!(ended.lock().unwrap().take().expect("one report").error, Some("upstream_protocol"));
}

/// A stream waiting for its upstream holds no more than it has not relayed: not the buffer
/// a large event grew, nor that of a burst of events.
#[tokio::test]
async fn a_waiting_relay_holds_no_buffer_a_burst_grew() {
    let chunk = |text: &str| {
        format!(
            "data: {{\"id\":\"c\",\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
        )
    };
    let large = chunk(&"x".repeat(60_000));
    let burst: String = (0..100).map(|i| chunk(&i.to_string())).collect();
    // The upstream's reads, sent one at a time.
    let (read, reads) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let body: BodyStream = Box::pin(futures_util::stream::unfold(reads, |mut reads| async move {
        reads.recv().await.map(|bytes| (Ok(bytes), reads))
    }));
    let far = Instant::now() + Duration::from_secs(60);
    let rewriter = Box::new(OpenAiChunks::new("m", false));
    let mut relay = Relay::new(body, rewriter, "d".into(), Duration::from_secs(60), far, std::time::Instant::now());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // The large event in two reads, then a wait with the next one's start buffered.
    for piece in [&large[..30_000], &large[30_000..], &burst[..10]] {
        read.send(Bytes::copy_from_slice(piece.as_bytes())).unwrap();
    }
    let Poll::Ready(Ok(Some(frame))) = relay.poll_next_frame(&mut cx) else { panic!("no frame") };
    assert!(frame.len() > 60_000);
    assert!(relay.poll_next_frame(&mut cx).is_pending());
    let held = relay.decoder.buffer_capacity();
    assert!(held <= 1024, "the decoder holds {held} bytes for 10");
    // A hundred events in one read, relayed, then a wait.
    read.send(Bytes::copy_from_slice(&burst.as_bytes()[10..])).unwrap();
    let mut frames = 0;
    while let Poll::Ready(Ok(Some(_))) = relay.poll_next_frame(&mut cx) {
        frames += 1;
    }
    assert_eq!(frames, 100);
    assert_eq!(relay.decoder.buffer_capacity(), 0);
}

/// The idle gap is timed from the last chunk, not from the start: chunks that come 100 ms
/// apart pass a 300 ms idle timeout however long the stream runs, and a stall after them
/// ends the stream with the in-band error once 300 ms pass.
#[tokio::test]
async fn the_idle_timeout_runs_from_the_last_chunk() {
    let chunk = |i: u32| {
        format!(
            "data: {{\"id\":\"c\",\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{i}\"}}}}]}}\n\n"
        )
    };
    let spaced = futures_util::stream::unfold(0u32, move |i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (i < 8).then(|| (Ok(Bytes::from(chunk(i))), i + 1))
    });
    let body: BodyStream = Box::pin(spaced.chain(futures_util::stream::pending()));
    let started = std::time::Instant::now();
    let far = Instant::now() + Duration::from_secs(60);
    let idle = Duration::from_millis(300);
    let mut relay = Relay::new(body, Box::new(OpenAiChunks::new("m", false)), "d".into(), idle, far, started);
    let first = relay.next_frame().await.unwrap().unwrap();
    let ended = Arc::new(Mutex::new(None));
    let slot = ended.clone();
    let frames: Vec<Bytes> = relay
        .into_body(first, Box::new(move |end| *slot.lock().unwrap() = Some(end)))
        .map(|frame| frame.unwrap())
        .collect()
        .await;
    let text: Vec<String> = frames.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    // Eight chunks over 800 ms, then the error and the end.
    assert_eq!(text.iter().filter(|f| f.contains("\"delta\"")).count(), 8, "{text:?}");
    assert!(text.last().unwrap().contains("idle between chunks"), "{text:?}");
    assert!(started.elapsed() >= Duration::from_millis(1100), "the stall was cut short: {:?}", started.elapsed());
    let end = ended.lock().unwrap().take().expect("one report");
    assert_eq!(end.error, Some("upstream_timeout"));
}
