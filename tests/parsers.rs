//! Property tests of the stream translators (OpenAI ⇄ Anthropic, and each dialect relayed to
//! itself) on recorded streams cut at random: the upstream's events up to a random point,
//! then one of them damaged (its data cut short, or something else in its place), then junk.
//! Whatever arrives, a translator must not panic, must write whole SSE frames (and, where it
//! writes the JSON itself, JSON), and must keep the usage the events before the cut reported —
//! a cut stream is still billed for what it used.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

use bytes::Bytes;
use llm_gateway::adapter::anthropic::inbound_stream::MessagesFromChunks;
use llm_gateway::adapter::anthropic::passthrough::MessagesRelay;
use llm_gateway::adapter::anthropic::stream::ClaudeChunks;
use llm_gateway::adapter::openai::OpenAiChunks;
use llm_gateway::adapter::{ChunkRewriter, Step};
use llm_gateway::api::ErrorBody;
use llm_gateway::api::sse::{SseDecoder, SseEvent};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The events of a recorded stream.
fn events_of(path: &str) -> Vec<SseEvent> {
    let bytes = std::fs::read(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut decoder = SseDecoder::new();
    decoder.push(&bytes);
    let mut events = Vec::new();
    while let Some(event) = decoder.next_event().unwrap() {
        events.push(event);
    }
    events.extend(decoder.finish().unwrap());
    events
}

/// A translator for each pairing, and whether it writes the client's JSON itself (a relay
/// passes what is not JSON through as it came).
struct Pairing {
    name: &'static str,
    fixtures: &'static [&'static str],
    make: fn() -> Box<dyn ChunkRewriter>,
    writes_json: bool,
}

const OPENAI: &[&str] =
    &["openai/chat_stream_usage.sse", "openai/chat_stream_tools.sse", "openai/tgi_keepalive_crlf.sse"];
const ANTHROPIC: &[&str] = &[
    "anthropic/stream_text.sse",
    "anthropic/stream_tools.sse",
    "anthropic/stream_thinking.sse",
    "anthropic/stream_max_tokens.sse",
    "anthropic/stream_cache_usage.sse",
    "anthropic/stream_overloaded.sse",
];

fn pairings() -> Vec<Pairing> {
    vec![
        Pairing {
            name: "openai→openai",
            fixtures: OPENAI,
            make: || Box::new(OpenAiChunks::new("m", false)),
            writes_json: false,
        },
        Pairing {
            name: "openai→anthropic",
            fixtures: OPENAI,
            make: || Box::new(MessagesFromChunks::new("m")),
            writes_json: true,
        },
        Pairing {
            name: "anthropic→openai",
            fixtures: ANTHROPIC,
            make: || Box::new(ClaudeChunks::new("m", 1, true)),
            writes_json: true,
        },
        Pairing {
            name: "anthropic→anthropic",
            fixtures: ANTHROPIC,
            make: || Box::new(MessagesRelay::new("m")),
            writes_json: false,
        },
    ]
}

/// What a translator made of some events, as the relay drives it: events until one ends the
/// stream, then the closing frames (or the in-band error's).
struct Run {
    frames: Vec<Bytes>,
    usage: Option<llm_gateway::api::Usage>,
    /// Events taken before one ended the stream.
    taken: usize,
}

fn run(make: fn() -> Box<dyn ChunkRewriter>, events: &[SseEvent]) -> Run {
    let mut rewriter = make();
    let mut frames = Vec::new();
    let mut taken = 0;
    // Ran out of events without an end: the stream was cut, as by a connection lost.
    let mut end = Some(ErrorBody::new("the stream was cut", "upstream_error", None, None));
    for event in events {
        taken += 1;
        match rewriter.on_event(event, &mut frames) {
            Step::Continue => {}
            Step::Done => {
                end = None;
                break;
            }
            Step::Failed(body) => {
                end = Some(body);
                break;
            }
        }
    }
    match end {
        Some(body) => rewriter.on_error(&body, &mut frames),
        None => rewriter.on_end(&mut frames),
    }
    // Everything the end-of-stream report reads.
    let _ = (rewriter.usage_final(), rewriter.finish_reason(), rewriter.take_generated().is_some());
    Run { frames, usage: rewriter.usage(), taken }
}

/// What takes the place of the event at the cut.
#[derive(Debug, Clone)]
enum Damage {
    /// Its data cut after this many bytes (of its length, modulo).
    Truncated(usize),
    /// Its data replaced.
    Replaced(&'static str),
    /// Its name replaced.
    Renamed(&'static str),
}

fn damage() -> impl Strategy<Value = Damage> {
    let junk = vec![
        "",
        "not json",
        "{}",
        "[]",
        "null",
        "{\"type\":\"ping\"}",
        "{\"choices\":[]}",
        "{\"type\":\"message_delta\"}",
        "[DONE]",
        "{\"usage\":7}",
        "{\"type\":\"content_block_delta\",\"index\":9}",
    ];
    prop_oneof![
        3 => any::<usize>().prop_map(Damage::Truncated),
        2 => prop::sample::select(junk).prop_map(Damage::Replaced),
        1 => prop::sample::select(vec!["ping", "error", "message_stop", "", "content_block_stop"]).prop_map(Damage::Renamed),
    ]
}

fn damaged(event: &SseEvent, damage: &Damage) -> SseEvent {
    match *damage {
        Damage::Truncated(at) => {
            SseEvent { event: event.event.clone(), data: event.data.slice(..at % (event.data.len() + 1)) }
        }
        Damage::Replaced(data) => SseEvent { event: event.event.clone(), data: Bytes::from_static(data.as_bytes()) },
        Damage::Renamed(name) => SseEvent { event: Some(name.to_owned()), data: event.data.clone() },
    }
}

#[test]
fn translators_never_panic_write_whole_frames_and_keep_usage_on_random_cuts() {
    for pairing in pairings() {
        for fixture in pairing.fixtures {
            let events = events_of(fixture);
            // The usage after each prefix of the intact stream (as far as a translator takes it).
            let intact: Vec<(usize, Option<llm_gateway::api::Usage>)> = (0..=events.len())
                .map(|k| {
                    let run = run(pairing.make, &events[..k]);
                    (run.taken, run.usage)
                })
                .collect();
            let mut runner = TestRunner::new(Config { cases: 128, failure_persistence: None, ..Config::default() });
            let strategy = (0..=events.len(), damage(), prop::collection::vec(damage(), 0..3));
            runner
                .run(&strategy, |(cut, first, junk)| {
                    let mut input = events[..cut].to_vec();
                    if let Some(event) = events.get(cut) {
                        input.push(damaged(event, &first));
                    }
                    for damage in &junk {
                        input.push(damaged(
                            events.last().unwrap_or(&SseEvent { event: None, data: Bytes::new() }),
                            damage,
                        ));
                    }
                    let run = run(pairing.make, &input);
                    let case = format!("{} {fixture} cut at {cut}: {first:?} then {junk:?}", pairing.name);
                    // Whole frames: each ends with its blank line and holds an event.
                    for frame in &run.frames {
                        prop_assert!(frame.ends_with(b"\n\n"), "{}: frame {:?}", case, String::from_utf8_lossy(frame));
                        let mut decoder = SseDecoder::new();
                        decoder.push(frame);
                        let event = decoder.next_event().ok().flatten();
                        prop_assert!(event.is_some(), "{}: frame {:?}", case, String::from_utf8_lossy(frame));
                        if pairing.writes_json
                            && let Some(event) = event
                            && &event.data[..] != b"[DONE]"
                        {
                            prop_assert!(
                                serde_json::from_slice::<serde_json::Value>(&event.data).is_ok(),
                                "{}: not JSON {:?}",
                                case,
                                String::from_utf8_lossy(&event.data)
                            );
                        }
                    }
                    // The usage of the events before the cut is kept: exactly, when what came
                    // after holds none (a cut event, junk); at least not lost otherwise (a renamed
                    // event whose data still reports usage).
                    let (_, usage) = intact[cut];
                    let holds_none = match (&first, events.get(cut)) {
                        (_, None) | (Damage::Replaced(_), _) => true,
                        (Damage::Truncated(at), Some(event)) => at % (event.data.len() + 1) < event.data.len(),
                        (Damage::Renamed(_), _) => false,
                    };
                    if run.taken <= cut || holds_none {
                        prop_assert_eq!(run.usage, usage, "{}", case);
                    } else if usage.is_some() {
                        prop_assert!(run.usage.is_some(), "{}: usage lost", case);
                    }
                    Ok(())
                })
                .unwrap();
        }
    }
}
