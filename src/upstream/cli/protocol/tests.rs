//! The stream-json decoder against transcripts in `tests/fixtures/cli/`, and prompt rendering.

use super::*;

const PARTIAL: &str = include_str!("../../../../tests/fixtures/cli/claude_partial.jsonl");
const WHOLE_TOOL_USE: &str = include_str!("../../../../tests/fixtures/cli/claude_whole_tool_use.jsonl");
const ERROR: &str = include_str!("../../../../tests/fixtures/cli/claude_error.jsonl");

/// The text an answer streams and how it ends.
fn run(transcript: &str) -> (String, Completion) {
    let mut answer = Answer::default();
    let mut text = String::new();
    for line in transcript.lines() {
        match answer.on_event(parse_line(line.as_bytes()).unwrap()) {
            Step::Text(t) => text.push_str(&t),
            Step::Nothing => {}
            Step::Done(completion) => return (text, completion),
        }
    }
    panic!("no result line");
}

#[test]
fn deltas_are_streamed_and_the_whole_message_is_not_repeated() {
    let (text, done) = run(PARTIAL);
    assert_eq!(text, "Hello, wörld");
    assert_eq!(done.error, None);
    let usage = done.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 3 + 1200 + 13000);
    assert_eq!(usage.completion_tokens, 5);
    assert_eq!(usage.total_tokens, 3 + 1200 + 13000 + 5);
    assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, 13000);
    assert_eq!(usage.prompt_tokens_details.unwrap().cache_write_tokens, 1200);
}

#[test]
fn whole_messages_across_tool_use_are_joined() {
    let (text, done) = run(WHOLE_TOOL_USE);
    assert_eq!(text, "Let me look.\n\nIt says hello.");
    assert_eq!(done.text.as_deref(), Some("It says hello."));
    assert_eq!(done.usage.unwrap().completion_tokens, 26);
}

#[test]
fn an_error_result_carries_the_clis_message() {
    let (_, done) = run(ERROR);
    assert_eq!(done.error.as_deref(), Some("success: Invalid API key · Please run /login"));
    let line = br#"{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["too many turns"]}"#;
    let Event::Result(done) = parse_line(line).unwrap() else { panic!() };
    assert_eq!(done.error.as_deref(), Some("error_max_turns: too many turns"));
}

#[test]
fn result_text_is_the_answer_when_nothing_else_carried_text() {
    let mut answer = Answer::default();
    assert_eq!(answer.on_event(Event::Other), Step::Nothing);
    assert!(!answer.emitted_any());
    let line = br#"{"type":"result","subtype":"success","is_error":false,"result":"42"}"#;
    let Step::Done(done) = answer.on_event(parse_line(line).unwrap()) else { panic!() };
    assert_eq!(done.text.as_deref(), Some("42"));
    assert_eq!(done.usage, None);
}

#[test]
fn garbage_is_a_protocol_error_and_blank_or_unknown_lines_are_not() {
    assert!(parse_line(b"Segmentation fault (core dumped)").unwrap_err().contains("not a stream-json line"));
    assert!(parse_line(b"[1,2,3]").is_err());
    assert_eq!(parse_line(b"  ").unwrap(), Event::Other);
    assert_eq!(parse_line(br#"{"type":"rate_limit_event","x":1}"#).unwrap(), Event::Other);
}

#[test]
fn the_user_line_carries_the_prompt_verbatim() {
    let prompt = "$(touch /tmp/x); rm -rf ~ && echo `id` \"quoted\"\nnext line \u{1f600}";
    let line = user_line(prompt);
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line, newlines escaped");
    let v: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["type"], "user");
    assert_eq!(v["message"]["role"], "user");
    assert_eq!(v["message"]["content"][0]["type"], "text");
    assert_eq!(v["message"]["content"][0]["text"], prompt);
}

#[test]
fn prompts_render_single_messages_verbatim_and_conversations_as_transcripts() {
    let one = RawObject::from_slice(br#"{"messages":[{"role":"user","content":"just this"}]}"#).unwrap();
    assert_eq!(render_prompt(Endpoint::ChatCompletions, &one).unwrap(), "just this");
    let many = RawObject::from_slice(
        br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":"hello"},{"role":"user","content":"again"}]}"#,
    )
    .unwrap();
    assert_eq!(
        render_prompt(Endpoint::ChatCompletions, &many).unwrap(),
        "System: Be brief.\n\nUser: hi\n[image_url omitted]\n\nAssistant: hello\n\nUser: again"
    );
    let completion = RawObject::from_slice(br#"{"prompt":["a","b"]}"#).unwrap();
    assert_eq!(render_prompt(Endpoint::Completions, &completion).unwrap(), "a\nb");
    assert!(render_prompt(Endpoint::Embeddings, &completion).is_err());
}

#[test]
fn utf8_chunks_never_split_a_character() {
    let text = "añb€c😀";
    let bytes = text.as_bytes();
    for cut in 0..bytes.len() {
        let mut chunks = Utf8Chunks::default();
        let mut out = chunks.push(&bytes[..cut]);
        out.push_str(&chunks.push(&bytes[cut..]));
        out.push_str(&chunks.finish());
        assert_eq!(out, text, "cut at {cut}");
    }
}
