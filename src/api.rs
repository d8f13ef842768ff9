//! Wire vocabulary shared by every stage: order-preserving raw JSON objects and OpenAI types.

pub mod object;
pub mod openai;
pub mod ratelimit;
pub mod tokens;

pub use object::RawObject;
pub use openai::{ErrorBody, Usage};
