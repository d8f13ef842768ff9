//! ConverseStream events (decoded by `eventstream`) → OpenAI chat chunks. `messageStart` opens
//! the answer; text and reasoning deltas go out as they come; a tool call opens with
//! `contentBlockStart` (its id and name) and its input follows as JSON fragments, indexed by the
//! call's position among tool calls; `messageStop` carries the finish reason; `metadata` (after
//! it) the usage, sent at the end when the client asked for it; an exception is an in-stream
//! error classified by `error::classify`.

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::classify;
use super::{ToolNames, finish_reason, usage};
use crate::adapter::gemini::chunks::ChunkWriter;
use crate::adapter::openai;
use crate::api::converse::{BlockDelta, BlockStart, BlockStop, MessageStop, Metadata, TokenUsage};
use crate::api::{ErrorBody, Usage};
use crate::ctx::{Capture, Generated, utf8_text};
use crate::stream::sse::SseEvent;
use crate::stream::{ChunkRewriter, Step};

pub struct ConverseChunks {
    writer: ChunkWriter,
    include_usage: bool,
    names: ToolNames,
    /// Open tool-use blocks: (Bedrock block index, call position, input seen).
    tools: Vec<(u32, u32, bool)>,
    calls: u32,
    usage: Option<TokenUsage>,
    finish: Option<&'static str>,
    generated: Capture,
}

impl ConverseChunks {
    /// `id` names the answer (Converse has none of its own: the request id serves).
    pub fn new(client_model: &str, id: &str, created: u64, include_usage: bool, names: ToolNames) -> Self {
        Self {
            writer: ChunkWriter { id: id.to_owned(), created, model: client_model.to_owned() },
            include_usage,
            names,
            tools: Vec::new(),
            calls: 0,
            usage: None,
            finish: None,
            generated: Capture::default(),
        }
    }

    fn translate(&mut self, name: &str, data: &[u8], out: &mut Vec<Bytes>) -> Result<Step, serde_json::Error> {
        match name {
            "messageStart" => out.push(self.writer.role(0)),
            "contentBlockStart" => {
                let start: BlockStart = parse(data)?;
                if let Some(tool) = start.start.and_then(|s| s.tool_use) {
                    let call = self.calls;
                    self.calls += 1;
                    let name = self.names.original(&tool.name);
                    out.push(self.writer.tool_start(0, call, &tool.tool_use_id, name, ""));
                    self.generated.push(name.as_bytes());
                    self.tools.retain(|(index, ..)| *index != start.content_block_index);
                    self.tools.push((start.content_block_index, call, false));
                }
            }
            "contentBlockDelta" => {
                let delta: BlockDelta = parse(data)?;
                let Some(d) = delta.delta else { return Ok(Step::Continue) };
                if let Some(text) = d.text.filter(|t| !t.is_empty()) {
                    out.push(self.writer.content(0, &text));
                    self.generated.push(text.as_bytes());
                }
                if let Some(text) = d.reasoning_content.and_then(|r| r.text).filter(|t| !t.is_empty()) {
                    out.push(self.writer.reasoning(0, &text));
                    self.generated.push(text.as_bytes());
                }
                if let Some(input) = d.tool_use.map(|t| t.input).filter(|i| !i.is_empty())
                    && let Some(tool) = self.tools.iter_mut().find(|(index, ..)| *index == delta.content_block_index)
                {
                    tool.2 = true;
                    out.push(self.writer.tool_arguments(0, tool.1, &input));
                    self.generated.push(input.as_bytes());
                }
            }
            "contentBlockStop" => {
                let stop: BlockStop = parse(data)?;
                if let Some(at) = self.tools.iter().position(|(index, ..)| *index == stop.content_block_index) {
                    let (_, call, had_input) = self.tools.swap_remove(at);
                    // A call without arguments still needs a JSON object for the client.
                    if !had_input {
                        out.push(self.writer.tool_arguments(0, call, "{}"));
                    }
                }
            }
            "messageStop" => {
                let stop: MessageStop = parse(data)?;
                let reason = finish_reason(&stop.stop_reason);
                if self.finish.is_none() {
                    self.finish = Some(reason);
                    out.push(self.writer.finish(0, reason));
                }
            }
            "metadata" => {
                let meta: Metadata = parse(data)?;
                if let Some(u) = meta.usage {
                    self.usage = Some(u);
                }
                return Ok(Step::Done);
            }
            other => {
                if let Some(kind) = other.strip_prefix("exception:") {
                    return Ok(Step::Failed(classify(502, Some(kind), data).body));
                }
                // New event kinds carry nothing this translation knows.
            }
        }
        Ok(Step::Continue)
    }
}

fn parse<T: DeserializeOwned>(data: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(data)
}

impl ChunkRewriter for ConverseChunks {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        let name = event.event.as_deref().unwrap_or_default();
        match self.translate(name, &event.data, out) {
            Ok(step) => step,
            Err(e) => Step::Failed(ErrorBody::new(
                format!("The upstream sent an invalid {name} event: {e}"),
                "upstream_error",
                None,
                Some("upstream_protocol"),
            )),
        }
    }

    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        if self.include_usage
            && let Some(usage) = self.usage()
        {
            out.push(self.writer.usage(usage));
        }
        openai::end_frames(out);
    }

    fn on_error(&mut self, error: &ErrorBody, out: &mut Vec<Bytes>) {
        openai::error_frames(error, out);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(usage)
    }

    fn finish_reason(&self) -> Option<String> {
        self.finish.map(str::to_owned)
    }

    fn take_generated(&mut self) -> Option<Generated> {
        Some(self.generated.take(utf8_text))
    }
}
