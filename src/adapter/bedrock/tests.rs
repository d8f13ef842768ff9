//! Bedrock tests.
