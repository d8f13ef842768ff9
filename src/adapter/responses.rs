//! The OpenAI Responses dialect, bridged: a Responses client on an upstream that speaks only
//! chat completions (an OpenAI-compatible server, Claude through the chat translation, the
//! mock, a CLI). `request` (Responses request → chat request, with `messages` for the input
//! items), `response` (chat completion → `response` object) and `stream` (chat chunks →
//! Responses events; `through_chat` for an upstream whose own rewriter makes chat chunks, as
//! Claude's does). All pure: ids and timestamps are passed in; the HTTP and SSE plumbing is
//! elsewhere.

pub mod bridge;
mod messages;
pub mod native;
pub mod replay;
pub mod request;
pub mod response;
pub mod stream;
pub mod through_chat;
pub mod tools;

pub use bridge::Bridge;
pub use request::{ChatRequest, to_chat};
pub use response::{Envelope, to_response};
pub use stream::{Keep, ResponsesFromChunks};
pub use through_chat::ThroughChat;
pub use tools::ToolNames;

#[cfg(test)]
mod tests;
