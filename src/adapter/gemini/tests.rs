//! Gemini tests.
