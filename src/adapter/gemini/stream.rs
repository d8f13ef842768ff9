//! Gemini stream events (`streamGenerateContent?alt=sse`: one `GenerateContentResponse` per
//! `data:` line, CRLF allowed, no `[DONE]`, the end of the body ends it) → OpenAI chat chunks.
//! Text and thought parts go out as they come; a `functionCall` arrives whole and goes out as
//! one tool-call chunk with its generated id; `finishReason` closes its choice; usage is
//! cumulative (the last report wins) and goes out at the end when the client asked for it;
//! `data: {"error":…}` after the 200 is an in-stream error.

use bytes::Bytes;

use super::chunks::ChunkWriter;
use super::response::Piece;
use super::{error_body, finish_reason, usage};
use crate::adapter::openai;
use crate::api::gemini::{GenerateContentResponse, UsageMetadata};
use crate::api::{ErrorBody, Usage};
use crate::ctx::{Capture, Generated, utf8_text};
use crate::stream::sse::SseEvent;
use crate::stream::{ChunkRewriter, Step};

/// One candidate (choice) of the stream.
struct Choice {
    index: u32,
    calls: u32,
    finished: bool,
}

pub struct GeminiChunks {
    writer: ChunkWriter,
    include_usage: bool,
    response_id: Option<String>,
    choices: Vec<Choice>,
    usage: Option<UsageMetadata>,
    finish: Option<&'static str>,
    generated: Capture,
}

impl GeminiChunks {
    pub fn new(client_model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            writer: ChunkWriter { id: String::new(), created, model: client_model.to_owned() },
            include_usage,
            response_id: None,
            choices: Vec::new(),
            usage: None,
            finish: None,
            generated: Capture::default(),
        }
    }

    /// The state of choice `index`, announcing it (role chunk) the first time.
    fn choice(&mut self, index: u32, out: &mut Vec<Bytes>) -> usize {
        if let Some(at) = self.choices.iter().position(|c| c.index == index) {
            return at;
        }
        out.push(self.writer.role(index));
        self.choices.push(Choice { index, calls: 0, finished: false });
        self.choices.len() - 1
    }

    fn translate(&mut self, answer: GenerateContentResponse, out: &mut Vec<Bytes>) -> Step {
        if let Some(error) = answer.error {
            return Step::Failed(error_body(&error));
        }
        if self.response_id.is_none() {
            let id = answer.response_id.clone().unwrap_or_default();
            self.writer.id = if id.is_empty() { "chatcmpl-gemini".into() } else { format!("chatcmpl-{id}") };
            self.response_id = Some(id);
        }
        let response_id = self.response_id.clone().unwrap_or_default();
        if let Some(meta) = answer.usage_metadata {
            self.usage = Some(meta);
        }
        if answer.candidates.is_empty() && answer.prompt_feedback.is_some_and(|f| f.block_reason.is_some()) {
            let at = self.choice(0, out);
            self.close(at, "content_filter", out);
        }
        for candidate in answer.candidates {
            let at = self.choice(candidate.index, out);
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                let choice = &mut self.choices[at];
                match Piece::of(part, &response_id, choice.index, &mut choice.calls) {
                    Piece::Text(text) => {
                        out.push(self.writer.content(candidate.index, &text));
                        self.generated.push(text.as_bytes());
                    }
                    Piece::Thought(text) => {
                        out.push(self.writer.reasoning(candidate.index, &text));
                        self.generated.push(text.as_bytes());
                    }
                    Piece::Call(call) => {
                        let (name, arguments) = (&call.function.name, &call.function.arguments);
                        let position = self.choices[at].calls - 1;
                        out.push(self.writer.tool_start(candidate.index, position, &call.id, name, arguments));
                        self.generated.push(name.as_bytes());
                        self.generated.push(arguments.as_bytes());
                    }
                    Piece::Nothing => {}
                }
            }
            if let Some(reason) = candidate.finish_reason.as_deref() {
                let reason = finish_reason(reason, self.choices[at].calls > 0);
                self.close(at, reason, out);
            }
        }
        Step::Continue
    }

    fn close(&mut self, at: usize, reason: &'static str, out: &mut Vec<Bytes>) {
        let choice = &mut self.choices[at];
        if !choice.finished {
            choice.finished = true;
            out.push(self.writer.finish(choice.index, reason));
            self.finish.get_or_insert(reason);
        }
    }
}

impl ChunkRewriter for GeminiChunks {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Step {
        if event.data.trim_ascii().is_empty() {
            return Step::Continue;
        }
        match serde_json::from_slice::<GenerateContentResponse>(&event.data) {
            Ok(answer) => self.translate(answer, out),
            Err(e) => Step::Failed(ErrorBody::new(
                format!("The upstream sent an invalid stream event: {e}"),
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

    /// Counts are cumulative: only those that came with the finish are the whole answer's.
    fn usage_final(&self) -> bool {
        self.finish.is_some()
    }

    fn finish_reason(&self) -> Option<String> {
        self.finish.map(str::to_owned)
    }

    fn take_generated(&mut self) -> Option<Generated> {
        Some(self.generated.take(utf8_text))
    }
}
