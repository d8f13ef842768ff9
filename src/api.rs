//! Wire vocabulary shared by every stage: order-preserving raw JSON objects and OpenAI types.

pub mod object;
pub mod openai;

pub use object::RawObject;
pub use openai::{ErrorBody, Usage};
