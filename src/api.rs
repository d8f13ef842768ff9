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

/// OpenMeter's LLM token types. The five are disjoint: their sum is the request's total, so a
/// SUM meter over all types never counts a token twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenType {
    /// Prompt tokens neither read from nor written to the provider's prompt cache.
    Input,
    /// Completion tokens other than reasoning.
    Output,
    CacheRead,
    CacheWrite,
    Reasoning,
}

impl TokenType {
    pub const ALL: [TokenType; 5] =
        [TokenType::Input, TokenType::Output, TokenType::CacheRead, TokenType::CacheWrite, TokenType::Reasoning];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Input => "input",
            TokenType::Output => "output",
            TokenType::CacheRead => "cache_read",
            TokenType::CacheWrite => "cache_write",
            TokenType::Reasoning => "reasoning",
        }
    }
}

/// OpenAI-semantics usage (`prompt_tokens` includes cached and cache-write tokens,
/// `completion_tokens` includes reasoning) as disjoint per-type counts, every type present (what
/// a price is applied to, with no allocation).
pub fn token_parts(usage: &Usage) -> [(TokenType, u64); 5] {
    let cache_read = usage.prompt_tokens_details.map(|d| d.cached_tokens).unwrap_or(0);
    let cache_write = usage.prompt_tokens_details.map(|d| d.cache_write_tokens).unwrap_or(0);
    // Some servers report details that exceed the total they belong to: never go negative, and
    // never let a detail claim more than its total.
    let cache_read = cache_read.min(usage.prompt_tokens);
    let cache_write = cache_write.min(usage.prompt_tokens - cache_read);
    let reasoning =
        usage.completion_tokens_details.map(|d| d.reasoning_tokens).unwrap_or(0).min(usage.completion_tokens);
    [
        (TokenType::Input, usage.prompt_tokens - cache_read - cache_write),
        (TokenType::Output, usage.completion_tokens - reasoning),
        (TokenType::CacheRead, cache_read),
        (TokenType::CacheWrite, cache_write),
        (TokenType::Reasoning, reasoning),
    ]
}

/// `token_parts` with the zeros left out (one metering event per part).
pub fn split_usage(usage: &Usage) -> Vec<(TokenType, u64)> {
    token_parts(usage).into_iter().filter(|(_, n)| *n > 0).collect()
}
