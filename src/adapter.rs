//! Adapters: one pure translator per wire dialect. Each turns the client's (OpenAI-shaped)
//! request into the upstream's, and the upstream's answer — whole or chunk by chunk — back.

pub mod mock;
pub mod openai;

use bytes::Bytes;

use crate::api::{ErrorBody, Usage};

/// What to do with one upstream stream event.
#[derive(Debug, PartialEq)]
pub enum ChunkAction {
    /// Forward this JSON as one `data:` event.
    Forward(Bytes),
    /// Swallow it (a usage-only chunk the client did not ask for, a keep-alive).
    Skip,
    /// The upstream says the stream is complete.
    Done,
    /// The upstream reported an error inside the stream.
    Error(ErrorBody),
}

/// Rewrites a stream event by event and remembers what the end-of-stream observers need.
pub trait ChunkRewriter: Send {
    fn rewrite(&mut self, data: &[u8]) -> ChunkAction;
    /// The last usage the upstream reported, if any.
    fn usage(&self) -> Option<Usage>;
}
