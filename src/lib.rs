//! llm-gateway: a streaming, OpenAI-compatible reverse proxy for every model an organisation uses.
//!
//! A request flows through the stages below, in the order the modules are declared:
//!
//! ```text
//! client ─► server ─► ingress ─► pipeline: auth ─► limits ─► cache ─► router ─► adapter ─► upstream
//!                        ▲                                                          │
//!                        └──── stream (end-of-stream observers) ◄───────────────────┘
//! ```
//!
//! - `server`   listener, graceful drain, request ids, `/health` `/ready`
//! - `ingress`  one handler per endpoint (OpenAI's, Anthropic's); reads request bodies (bounded,
//!   per credential)
//! - `pipeline` the order of the stages below for one request: auth, the body (read by ingress)
//!   parsed into what we act on (the rest kept verbatim), limits, cache, the route's attempts;
//!   one report to the observers however the request ends
//! - `auth`     key or JWT → `Principal` (team, key id, allowed models, limits); admin-made keys
//! - `limits`   admit or 429: rates, concurrency, budgets, exact across replicas (Valkey)
//! - `cache`    exact and semantic answers (moka in each replica, Valkey shared); stores clean misses
//! - `router`   client model name → ordered deployments; failover before the first byte
//! - `adapter`  one translator per wire dialect (openai-compatible, anthropic); each implements
//!   the relay's `ChunkRewriter`
//! - `upstream` one transport per provider, chosen when the config is built (pooled HTTP, the
//!   in-process mock, the CLI session pool); credentials, connect / first-byte / idle / total
//!   timeouts
//! - `stream`   the relay: chunk rewriting, idle and total timeouts, one end-of-stream report
//!   per request
//! - `metering` (an end-of-stream observer) tokens → CloudEvents → durable outbox → OpenMeter
//! - `request_log` (an end-of-stream observer) one row per request → durable outbox → PostgreSQL
//! - `spend`    prices per deployment, each request's cost (header, metrics, metering, log)
//!
//! Shared vocabulary: `api` (wire types, SSE framing), `ctx` (per-request state), `error`,
//! `config`, `clock`, `providers` (the embedded vendor catalogue). Infrastructure: `telemetry`
//! (logs, metrics, traces), `kv` (Valkey). `app` composes the stack and nothing imports it.

// The stages, in the order a request meets them.
pub mod server;
pub mod ingress;
pub mod pipeline;
pub mod auth;
pub mod limits;
pub mod cache;
pub mod router;
pub mod adapter;
pub mod upstream;
pub mod stream;
pub mod metering;
pub mod request_log;
pub mod responses_store;
pub mod spend;

// Shared vocabulary.
pub mod api;
pub mod clock;
pub mod config;
pub mod ctx;
pub mod error;
pub mod providers;

// Infrastructure.
pub mod http;
pub mod kv;
pub mod telemetry;

// Composes the stack; nothing imports it.
pub mod app;
