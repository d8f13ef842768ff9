//! The OpenAI Responses dialect, bridged: a Responses client on an upstream that speaks only
//! chat completions (an OpenAI-compatible server, Claude through the chat translation, the
//! mock, a CLI). `request` (Responses request → chat request, with `messages` for the input
//! items), `response` (chat completion → `response` object) and `stream` (chat chunks →
//! Responses events). All pure: ids and timestamps are passed in; the HTTP and SSE plumbing
//! is elsewhere.

mod messages;
pub mod request;
pub mod response;
pub mod stream;
pub mod tools;

pub use request::{ChatRequest, to_chat};
pub use response::{Envelope, to_response};
pub use stream::ResponsesFromChunks;
pub use tools::ToolNames;

#[cfg(test)]
mod tests;
