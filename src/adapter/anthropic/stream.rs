//! Anthropic Messages events → OpenAI chat chunks, one event at a time. One `id` for the whole
//! stream; a tool call's first chunk carries its `id`, `type` and `name` with `arguments: ""`,
//! later ones only argument fragments, indexed by the call's position among tool calls (not by
//! the Anthropic block index, which text and thinking blocks shift); thinking becomes
//! `reasoning_content`; `ping` is dropped; the usage chunk comes when the client asked for it;
//! an `error` event becomes the in-band OpenAI error.

use bytes::Bytes;
use serde::Serialize;

use super::finish_reason;
use crate::adapter::openai;
use crate::adapter::{ChunkRewriter, Step};
use crate::api::anthropic::{Block, Delta, StreamEvent, UsageReport};
use crate::api::sse::SseEvent;
use crate::api::sse::data_frame_with;
use crate::api::{ErrorBody, Usage};
use crate::ctx::{Capture, Generated, utf8_text};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    Tool { call: u32, has_arguments: bool },
    Other,
}

pub struct ClaudeChunks {
    client_model: String,
    created: u64,
    include_usage: bool,
    id: String,
    usage: Option<UsageReport>,
    /// `message_delta` gave the final output count (until then `usage` is `message_start`'s).
    usage_final: bool,
    /// Open blocks by Anthropic index (a handful at most).
    blocks: Vec<(u64, BlockKind)>,
    tool_calls: u32,
    finished: bool,
    /// The text, reasoning, tool names and arguments sent to the client (bounded).
    generated: Capture,
}

impl ClaudeChunks {
    pub fn new(client_model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            client_model: client_model.to_owned(),
            created,
            include_usage,
            id: String::new(),
            usage: None,
            usage_final: false,
            blocks: Vec::new(),
            tool_calls: 0,
            finished: false,
            generated: Capture::default(),
        }
    }

    fn chunk(&self, delta: DeltaOut<'_>, finish: Option<&str>) -> Bytes {
        let choices = [ChoiceOut { index: 0, delta, logprobs: None, finish_reason: finish }];
        self.frame(&choices, None)
    }

    fn frame(&self, choices: &[ChoiceOut<'_>], usage: Option<Usage>) -> Bytes {
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.client_model,
            choices,
            usage,
        };
        data_frame_with(256, |out| {
            let start = out.len();
            if serde_json::to_writer(&mut *out, &chunk).is_err() {
                out.truncate(start);
            }
        })
    }

    fn kind(&self, index: u64) -> Option<BlockKind> {
        self.blocks.iter().find(|(i, _)| *i == index).map(|(_, k)| *k)
    }

    fn tool_arguments(&self, call: u32, arguments: &str) -> Bytes {
        let calls =
            [ToolCallOut { index: call, id: None, kind: None, function: FunctionOut { name: None, arguments } }];
        self.chunk(DeltaOut { tool_calls: Some(&calls), ..Default::default() }, None)
    }

    fn translate(&mut self, event: StreamEvent, out: &mut Vec<Bytes>) -> Step {
        match event {
            StreamEvent::MessageStart { message } => {
                self.id = if message.id.is_empty() { "msg_gateway".into() } else { message.id };
                self.usage = Some(message.usage);
                out.push(
                    self.chunk(DeltaOut { role: Some("assistant"), content: Some(""), ..Default::default() }, None),
                );
            }
            StreamEvent::ContentBlockStart { index, content_block } => self.block_start(index, content_block, out),
            StreamEvent::ContentBlockDelta { index, delta } => self.block_delta(index, delta, out),
            StreamEvent::ContentBlockStop { index } => {
                if let Some(BlockKind::Tool { call, has_arguments: false }) = self.kind(index) {
                    out.push(self.tool_arguments(call, "{}"));
                }
                self.blocks.retain(|(i, _)| *i != index);
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(later) = usage {
                    self.usage.get_or_insert_default().merge(&later);
                    self.usage_final |= later.output_tokens.is_some();
                }
                if let Some(stop) = delta.stop_reason
                    && !self.finished
                {
                    self.finished = true;
                    out.push(self.chunk(DeltaOut::default(), Some(finish_reason(&stop))));
                }
            }
            StreamEvent::MessageStop => {
                if self.include_usage {
                    out.push(self.frame(&[], Some(self.usage.unwrap_or_default().to_openai())));
                }
                return Step::Done;
            }
            StreamEvent::Error { error } => {
                return Step::Failed(ErrorBody::new(error.message, &error.kind, None, None));
            }
            StreamEvent::Ping | StreamEvent::Unknown => {}
        }
        Step::Continue
    }

    /// A block opens: its first text, thinking or tool call (name and id) goes out at once.
    fn block_start(&mut self, index: u64, content_block: Block, out: &mut Vec<Bytes>) {
        let kind = match content_block {
            Block::Text { text, .. } => {
                if !text.is_empty() {
                    out.push(self.chunk(DeltaOut { content: Some(&text), ..Default::default() }, None));
                    self.generated.push(text.as_bytes());
                }
                BlockKind::Text
            }
            Block::Thinking { thinking, .. } => {
                if !thinking.is_empty() {
                    out.push(self.chunk(DeltaOut { reasoning_content: Some(&thinking), ..Default::default() }, None));
                    self.generated.push(thinking.as_bytes());
                }
                BlockKind::Thinking
            }
            Block::ToolUse { id, name, .. } => {
                let call = self.tool_calls;
                self.tool_calls += 1;
                // `arguments: ""`, not the start event's `{}`: clients concatenate.
                let calls = [ToolCallOut {
                    index: call,
                    id: Some(&id),
                    kind: Some("function"),
                    function: FunctionOut { name: Some(&name), arguments: "" },
                }];
                out.push(self.chunk(DeltaOut { tool_calls: Some(&calls), ..Default::default() }, None));
                self.generated.push(name.as_bytes());
                BlockKind::Tool { call, has_arguments: false }
            }
            _ => BlockKind::Other,
        };
        self.blocks.retain(|(i, _)| *i != index);
        self.blocks.push((index, kind));
    }

    /// Text, thinking or tool-call arguments, each as its own chunk.
    fn block_delta(&mut self, index: u64, delta: Delta, out: &mut Vec<Bytes>) {
        match (self.kind(index), delta) {
            (_, Delta::TextDelta { text }) if !text.is_empty() => {
                out.push(self.chunk(DeltaOut { content: Some(&text), ..Default::default() }, None));
                self.generated.push(text.as_bytes());
            }
            (_, Delta::ThinkingDelta { thinking }) if !thinking.is_empty() => {
                out.push(self.chunk(DeltaOut { reasoning_content: Some(&thinking), ..Default::default() }, None));
                self.generated.push(thinking.as_bytes());
            }
            // Only inside a tool_use block: result blocks carry JSON deltas too.
            (Some(BlockKind::Tool { call, .. }), Delta::InputJsonDelta { partial_json })
                if !partial_json.is_empty() =>
            {
                out.push(self.tool_arguments(call, &partial_json));
                self.generated.push(partial_json.as_bytes());
                if let Some((_, BlockKind::Tool { has_arguments, .. })) =
                    self.blocks.iter_mut().find(|(i, _)| *i == index)
                {
                    *has_arguments = true;
                }
            }
            _ => {}
        }
    }
}

impl ChunkRewriter for ClaudeChunks {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        match serde_json::from_slice::<StreamEvent>(&event.data) {
            Ok(parsed) => self.translate(parsed, out),
            Err(e) => Step::Failed(ErrorBody::new(
                format!("The upstream sent an invalid stream event: {e}"),
                "upstream_error",
                None,
                Some("upstream_protocol"),
            )),
        }
    }

    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        openai::end_frames(out);
    }

    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        openai::error_frames(error, out);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.to_openai())
    }

    fn usage_final(&self) -> bool {
        self.usage_final
    }

    fn take_generated(&mut self) -> Option<Generated> {
        Some(self.generated.take(utf8_text))
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCallOut<'a>]>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::anthropic::fixtures::{cut_before, read, run};

    fn generated_text(rewriter: &mut dyn ChunkRewriter) -> String {
        let generated = rewriter.take_generated().unwrap();
        (generated.text)(&generated.fragments)
    }

    #[test]
    fn a_stream_cut_before_message_delta_has_partial_usage_and_keeps_the_text_sent() {
        // (fixture, text sent, message_start's input and output counts, message_delta's output)
        for (fixture, sent, started, output) in [
            ("stream_tools", r#"I'll check both.get_weather{"city": "Paris"}get_time"#, (2212, 2), 61),
            ("stream_thinking", "27 * 453: 27*400=10800, 27*53=1431, total 12231.27 × 453 = 12,231", (30, 3), 95),
        ] {
            let whole = read(&format!("anthropic/{fixture}.sse"));
            let mut cut = ClaudeChunks::new("claude", 1, false);
            run(cut_before(&whole, r#""type":"message_delta""#), &[], &mut cut);
            let usage = cut.usage().unwrap();
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), started, "{fixture}");
            assert!(!cut.usage_final(), "{fixture}: message_start's usage is not final");
            assert_eq!(generated_text(&mut cut), sent, "{fixture}");

            let mut complete = ClaudeChunks::new("claude", 1, false);
            run(&whole, &[], &mut complete);
            assert!(complete.usage_final(), "{fixture}: message_delta gave the output count");
            assert_eq!(complete.usage().unwrap().completion_tokens, output, "{fixture}");
            assert_eq!(generated_text(&mut complete), sent, "{fixture}");
        }
    }

    #[test]
    fn a_stream_cut_right_after_message_start_generated_nothing_yet() {
        let whole = read("anthropic/stream_text.sse");
        let mut cut = ClaudeChunks::new("claude", 1, true);
        run(cut_before(&whole, r#""type":"content_block_start""#), &[], &mut cut);
        assert_eq!((cut.usage().unwrap().prompt_tokens, cut.usage_final()), (25, false));
        assert_eq!(generated_text(&mut cut), "");
    }
}
