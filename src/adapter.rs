//! Adapters: one pure translator per wire dialect. Each turns the client's request into the
//! upstream's, and the upstream's answer — whole, or event by event through
//! `stream::ChunkRewriter` — back into the client's dialect.

pub mod mock;
pub mod openai;
