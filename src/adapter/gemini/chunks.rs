//! OpenAI `chat.completion.chunk` frames, written for the dialects whose streams are rebuilt
//! from another shape (Gemini here, Bedrock Converse too). Borrowed fields, one frame per call.

use bytes::Bytes;
use serde::Serialize;

use crate::api::Usage;
use crate::stream::data_frame_with;

/// The stream's fixed fields; each method returns one complete `data: ...\n\n` frame.
pub struct ChunkWriter {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ChunkWriter {
    pub fn role(&self, choice: u32) -> Bytes {
        self.delta(choice, Delta { role: Some("assistant"), content: Some(""), ..Delta::default() }, None)
    }

    pub fn content(&self, choice: u32, text: &str) -> Bytes {
        self.delta(choice, Delta { content: Some(text), ..Delta::default() }, None)
    }

    pub fn reasoning(&self, choice: u32, text: &str) -> Bytes {
        self.delta(choice, Delta { reasoning_content: Some(text), ..Delta::default() }, None)
    }

    /// A tool call's first chunk: id, type and name, `arguments` as given (`""` when the
    /// arguments follow in pieces).
    pub fn tool_start(&self, choice: u32, call: u32, id: &str, name: &str, arguments: &str) -> Bytes {
        let calls = [ToolCall {
            index: call,
            id: Some(id),
            kind: Some("function"),
            function: Function { name: Some(name), arguments },
        }];
        self.delta(choice, Delta { tool_calls: Some(&calls), ..Delta::default() }, None)
    }

    pub fn tool_arguments(&self, choice: u32, call: u32, arguments: &str) -> Bytes {
        let calls = [ToolCall { index: call, id: None, kind: None, function: Function { name: None, arguments } }];
        self.delta(choice, Delta { tool_calls: Some(&calls), ..Delta::default() }, None)
    }

    pub fn finish(&self, choice: u32, reason: &str) -> Bytes {
        self.delta(choice, Delta::default(), Some(reason))
    }

    /// The usage chunk (`choices: []`), for clients that asked with `include_usage`.
    pub fn usage(&self, usage: Usage) -> Bytes {
        self.frame(&[], Some(usage))
    }

    fn delta(&self, index: u32, delta: Delta<'_>, finish_reason: Option<&str>) -> Bytes {
        self.frame(&[Choice { index, delta, logprobs: None, finish_reason }], None)
    }

    fn frame(&self, choices: &[Choice<'_>], usage: Option<Usage>) -> Bytes {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
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
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCall<'a>]>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}
