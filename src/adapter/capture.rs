//! What a stream rewriter keeps of the generated text, for a local count should the stream end
//! without the upstream's usage: the text of each chunk rather than the chunk's JSON.
//!
//! A chunk's raw JSON is ten times its text (`[{"index":0,"delta":{"content":" the"},
//! "finish_reason":null}]` for four characters), and a stream kept all of it: 26 KB for a
//! 400-event answer, up to the 1 MiB bound for an agent's minutes-long stream, per stream and for
//! as long as it runs. Here, a chunk whose only text is one plain string in the dialect's usual
//! place (`delta.content`, `delta.text`, ...) adds just that string, still JSON-escaped as it
//! came, to a run of such strings kept as one synthetic line that the dialect's own extractor
//! (`choices_text`, `events_text`) reads back as the same text. Any other chunk — several texts,
//! a text that is not a string, in an unusual place, JSON the one-pass scan does not follow — is
//! kept whole as before, ending the run, so the text read back keeps its order. Finding the
//! text is one pass over the chunk's bytes, with no parse and no allocation.

use crate::ctx::{Capture, Generated};

/// Where a dialect's chunks carry their text, and how a run of texts is written back.
pub struct Shape {
    /// Members whose string value is generated text, each with the member whose object holds
    /// it (`content` in `delta`).
    pub text: &'static [(&'static [u8], &'static [u8])],
    /// Members that carry text in another form or place: a chunk with one (not `null`) is kept
    /// whole, as is one with a `text` member elsewhere than in its pair's object.
    pub other: &'static [&'static [u8]],
    /// A run's line, around the joined strings: read back by the dialect's extractor as the
    /// strings' text.
    pub open: &'static [u8],
    pub close: &'static [u8],
}

/// OpenAI stream chunks' `choices` (read back by `openai::choices_text`, which reads `delta`'s
/// strings and its tool calls' `function` name and arguments; legacy completions' `text` and
/// whole messages go whole).
pub const OPENAI_CHOICES: Shape = Shape {
    text: &[
        (b"content", b"delta"),
        (b"reasoning_content", b"delta"),
        (b"reasoning", b"delta"),
        (b"refusal", b"delta"),
        (b"name", b"function"),
        (b"arguments", b"function"),
    ],
    other: &[b"text", b"message"],
    open: b"[{\"text\":\"",
    close: b"\"}]\n",
};

/// Anthropic stream events' payloads (read back by `anthropic::events_text`, which reads the
/// strings of `delta` and `content_block`).
pub const ANTHROPIC_EVENTS: Shape = Shape {
    text: &[
        (b"text", b"delta"),
        (b"thinking", b"delta"),
        (b"partial_json", b"delta"),
        (b"name", b"delta"),
        (b"text", b"content_block"),
        (b"thinking", b"content_block"),
        (b"partial_json", b"content_block"),
        (b"name", b"content_block"),
    ],
    other: &[],
    open: b"{\"delta\":{\"text\":\"",
    close: b"\"}}\n",
};

/// A run is ended past this many bytes: at the capture's bound, a run cut short is unreadable
/// (its line has no end) and counts nothing, so runs are kept short.
const MAX_RUN: usize = 4096;

/// Containers a chunk may nest before the scan gives up on it (and keeps it whole).
const MAX_DEPTH: usize = 16;

/// The generated text of a stream, kept compactly (see the module's doc).
pub struct TextCapture {
    kept: Capture,
    shape: &'static Shape,
    /// Bytes in the run being written; 0 when none is open.
    run: usize,
}

impl TextCapture {
    pub fn new(shape: &'static Shape) -> Self {
        Self { kept: Capture::default(), shape, run: 0 }
    }

    /// Keeps the text of one chunk's JSON (`choices`, or an event's payload).
    pub fn push(&mut self, json: &[u8]) {
        match lone_text(json, self.shape) {
            Text::None => {}
            Text::One(escaped) => {
                if self.run == 0 {
                    self.kept.push(self.shape.open);
                }
                self.kept.push(escaped);
                // (+1: a run of empty strings ends too.)
                self.run += escaped.len() + 1;
                if self.run >= MAX_RUN {
                    self.end_run();
                }
            }
            Text::Other => {
                self.end_run();
                self.kept.push_line(json);
            }
        }
    }

    fn end_run(&mut self) {
        if self.run > 0 {
            self.kept.push(self.shape.close);
            self.run = 0;
        }
    }

    /// Hands what was kept over for counting (see `Capture::take`).
    pub fn take(&mut self, text: fn(&[u8]) -> String) -> Generated {
        self.end_run();
        self.kept.take(text)
    }

    /// What is kept so far, as the extractor will read it (tests).
    #[cfg(test)]
    pub fn kept(&mut self, text: fn(&[u8]) -> String) -> bytes::Bytes {
        self.take(text).fragments
    }
}

/// What one pass over a chunk found of its text.
#[derive(Debug, PartialEq)]
enum Text<'a> {
    /// No text-bearing member (or only `null` ones): the chunk adds no text.
    None,
    /// One, a string in its usual place: its bytes between the quotes, still escaped.
    One(&'a [u8]),
    /// Anything else: keep the chunk whole.
    Other,
}

/// The text-bearing members of `json`, by one pass over its bytes: strings are skipped with
/// `memchr`, and a string followed by `:` is a member name. Only well-formed strings are taken
/// (escapes and control characters checked, UTF-8 too), so a run's line is always valid JSON.
fn lone_text<'a>(json: &'a [u8], shape: &Shape) -> Text<'a> {
    // For each open container: the member whose value it is (`None`: an array, an array's
    // element or the top level).
    let mut holder: [Option<&[u8]>; MAX_DEPTH] = [None; MAX_DEPTH];
    let mut depth = 0;
    // The member whose value comes next.
    let mut member: Option<&[u8]> = None;
    let mut found = Text::None;
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => {
                let Some(len) = string_len(&json[at + 1..]) else { return Text::Other };
                let name = &json[at + 1..at + 1 + len];
                at = skip_space(json, at + len + 2);
                if json.get(at) != Some(&b':') {
                    // A string value.
                    member = None;
                    continue;
                }
                at = skip_space(json, at + 1);
                member = Some(name);
                let text = shape.text.iter().any(|(key, _)| *key == name);
                if !text && !shape.other.contains(&name) {
                    continue;
                }
                member = None;
                let value = &json[at..];
                if value.starts_with(b"null") {
                    at += 4;
                    continue;
                }
                let held_by = if depth == 0 { None } else { holder[depth - 1] };
                let in_place = shape.text.iter().any(|&(key, parent)| key == name && held_by == Some(parent));
                if !in_place || value.first() != Some(&b'"') || found != Text::None {
                    return Text::Other;
                }
                let Some(len) = string_len(&value[1..]) else { return Text::Other };
                let escaped = &value[1..1 + len];
                if std::str::from_utf8(escaped).is_err() {
                    return Text::Other;
                }
                found = Text::One(escaped);
                at += len + 2;
            }
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return Text::Other;
                }
                holder[depth] = if byte == b'{' { member } else { None };
                depth += 1;
                member = None;
                at += 1;
            }
            b'}' | b']' => {
                if depth == 0 {
                    return Text::Other;
                }
                depth -= 1;
                member = None;
                at += 1;
            }
            _ => at += 1,
        }
    }
    if depth == 0 { found } else { Text::Other }
}

/// The length of the JSON string whose bytes (after its opening quote) start `rest`, up to its
/// closing quote; `None` unless it is well formed (RFC 8259 escapes, no control characters).
fn string_len(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        at += memchr::memchr2(b'"', b'\\', &rest[at..])?;
        if rest[at] == b'"' {
            break;
        }
        let escape = match rest.get(at + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
            b'u' if rest.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
            _ => return None,
        };
        at += escape;
    }
    if rest[..at].iter().any(|&b| b < 0x20) {
        return None;
    }
    Some(at)
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::anthropic::events_text;
    use crate::adapter::openai::choices_text;

    /// The text read back from the compact capture of `chunks`, and from the raw one (each
    /// chunk's JSON on a line, as before).
    fn both(chunks: &[&str], shape: &'static Shape, text: fn(&[u8]) -> String) -> (String, String, usize, usize) {
        let mut compact = TextCapture::new(shape);
        let mut raw = Capture::default();
        for chunk in chunks {
            compact.push(chunk.as_bytes());
            raw.push_line(chunk.as_bytes());
        }
        let compact = compact.kept(text);
        let raw = raw.take(text).fragments;
        (text(&compact), text(&raw), compact.len(), raw.len())
    }

    #[test]
    fn plain_deltas_are_kept_as_their_text_and_read_back_the_same() {
        let chunks: Vec<String> = [" Hello", ",", " \\\"world\\\"", " caf\\u00e9 ", "\\n", "🌍"]
            .iter()
            .map(|t| format!(r#"[{{"index":0,"delta":{{"content":"{t}"}},"logprobs":null,"finish_reason":null}}]"#))
            .collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let (compact, raw, compact_len, raw_len) = both(&chunks, &OPENAI_CHOICES, choices_text);
        assert_eq!(compact, raw);
        assert_eq!(compact, " Hello, \"world\" café \n🌍");
        assert!(compact_len * 5 < raw_len, "{compact_len} vs {raw_len}");
    }

    /// Every shape the extractor reads, mixed: what is read back is the same text, in order.
    #[test]
    fn every_openai_shape_reads_back_the_same_text() {
        let chunks = [
            r#"[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]"#,
            r#"[{"index":0,"delta":{"content":"Hel"}}]"#,
            r#"[{"index":0,"delta":{"content":"lo","reasoning_content":" think"}}]"#,
            r#"[{"index":0,"delta":{"reasoning_content":" more","content":null}}]"#,
            r#"[{"index":0,"delta":{"reasoning":" r"}}]"#,
            r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":""}}]}}]"#,
            r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]"#,
            r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]"#,
            r#"[{"index":0,"text":" legacy"}]"#,
            r#"[{"index":0,"delta":{"content":[{"type":"text","text":" parts"}]}}]"#,
            r#"[{"index":0,"delta":{"content":" a"}},{"index":1,"delta":{"content":" b"}}]"#,
            r#"[{"index":0,"delta":{"content":" x"},"logprobs":{"content":[{"token":" x","logprob":-0.1}]}}]"#,
            r#"[{"index":0, "delta": {"content": " spaced"}}]"#,
            r#"[{"index":0,"delta":{"refusal":" no"}}]"#,
            r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#,
            r#"[{"index":0,"message":{"content":" whole"}}]"#,
            r#"[{"index":0,"delta":{"content":" bad \q escape"}}]"#,
        ];
        let (compact, raw, ..) = both(&chunks[..chunks.len() - 1], &OPENAI_CHOICES, choices_text);
        assert_eq!(compact, raw);
        assert!(compact.starts_with("Hello think more r") && compact.ends_with(" no whole"), "{compact}");
        // A chunk that is not JSON ends what the extractor reads, as it did.
        let (compact, raw, ..) = both(&chunks, &OPENAI_CHOICES, choices_text);
        assert_eq!(compact, raw);
    }

    #[test]
    fn every_anthropic_shape_reads_back_the_same_text() {
        let chunks = [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"27 * 453"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" I'll check"}}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
        ];
        let (compact, raw, compact_len, raw_len) = both(&chunks, &ANTHROPIC_EVENTS, events_text);
        assert_eq!(compact, raw);
        assert_eq!(compact, r#"27 * 453 I'll checkget_weather{"city": "Paris"}"#);
        assert!(compact_len * 4 < raw_len, "{compact_len} vs {raw_len}");
    }

    #[test]
    fn long_runs_are_ended_and_read_back_whole() {
        let chunk = r#"[{"index":0,"delta":{"content":"0123456789"}}]"#;
        let chunks = vec![chunk; 2000];
        let (compact, raw, ..) = both(&chunks, &OPENAI_CHOICES, choices_text);
        assert_eq!(compact.len(), 20_000);
        assert_eq!(compact, raw);
    }

    #[test]
    fn the_scan_takes_only_a_lone_well_formed_string_in_its_place() {
        fn one(json: &str) -> Text<'_> {
            lone_text(json.as_bytes(), &OPENAI_CHOICES)
        }
        assert_eq!(one(r#"[{"delta":{"content":"a\"b"}}]"#), Text::One(br#"a\"b"#));
        assert_eq!(one(r#"[{"delta":{"role":"content"}}]"#), Text::None);
        assert_eq!(one(r#"[{"delta":{"content":null}}]"#), Text::None);
        // Text members count only in their own object.
        assert_eq!(one(r#"[{"delta":{"name":"bob"}}]"#), Text::Other);
        assert_eq!(one(r#"[{"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]"#), Text::One(b"{}"));
        for other in [
            r#"[{"delta":{"content":"a","content":"b"}}]"#,
            r#"[{"delta":{"x":{"content":"a"}}}]"#,
            r#"[{"content":"a"}]"#,
            r#"[{"delta":{"content":"a\u00"}}]"#,
            "[{\"delta\":{\"content\":\"a\tb\"}}]",
            r#"[{"delta":{"content":"a"}"#,
            r#"[{"delta":{"content":"a"}}]]"#,
        ] {
            assert_eq!(one(other), Text::Other, "{other}");
        }
    }
}
