//! Wire vocabulary shared by every stage: order-preserving raw JSON objects, OpenAI and
//! Anthropic types, Server-Sent Events framing.

pub mod anthropic;
pub mod chat;
pub mod converse;
pub mod gemini;
pub mod object;
pub mod openai;
pub mod ratelimit;
pub mod responses;
pub mod sse;
pub mod tokens;

pub use object::{RawMembers, RawObject};
pub use openai::{ErrorBody, Usage};
