//! The `cli` dialect's settings: the command, its environment and I/O protocol, and the session
//! pool's knobs (how sessions are partitioned between callers among them), validated (with the
//! original service's `LLM_POOL_SIZE` and `LLM_KEEP_ALIVE_INTERVAL` overrides) into a `CliSpec`.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawProvider;
use super::{ConfigError, Env, duration};

/// The Claude Code CLI in non-interactive stream-json mode, with token-level partial messages:
/// what `LLM_BACKEND=cli` runs when no command is configured.
pub const DEFAULT_COMMAND: &[&str] = &[
    "claude",
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--include-partial-messages",
];
pub const DEFAULT_POOL_SIZE: usize = 2;
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);
pub const DEFAULT_KEEP_ALIVE_PROMPT: &str = "Reply with the single word OK.";
pub const DEFAULT_MAX_REQUESTS_PER_SESSION: u32 = 20;
pub const DEFAULT_PARTITION_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// What a session gets of the gateway's environment unless `inherit_env`: where programs are and
/// the user's home (the Claude CLI keeps its login there) and language; never a secret. `TMPDIR`
/// is the session's own (inside its working directory), not passed.
pub const PASSED_ENV: &[&str] = &["PATH", "HOME", "LANG"];
/// Upper bound on `pool_size + max_overflow`: each session is a process.
pub const MAX_SESSIONS: usize = 256;

/// How requests go in and answers come out of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliProtocol {
    /// Claude Code's `--input-format stream-json --output-format stream-json`: one JSON `user`
    /// line in per request, `system` / `assistant` / `stream_event` lines out, one `result` line
    /// (answer and usage) closing each answer. A session answers many requests in turn.
    ClaudeStreamJson,
    /// The rendered prompt on stdin, then end of input; the answer is everything on stdout until
    /// the command exits (status 0). One request per process.
    PlainText,
}

impl CliProtocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::ClaudeStreamJson => "claude-stream-json",
            Self::PlainText => "plain-text",
        }
    }

    /// Whether one process answers several requests in sequence (and can be pinged).
    pub fn reusable(self) -> bool {
        self == Self::ClaudeStreamJson
    }
}

/// Whose requests one session may serve. A session keeps the conversation of every request it
/// answered, so it never serves two partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionBy {
    /// The caller's team: a team's keys and users share its sessions.
    Team,
    /// The caller's team and key (or token subject): nobody shares a session.
    Key,
}

impl PartitionBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Key => "key",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CliSpec {
    /// Program, then its arguments: executed directly, never through a shell.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Names of the gateway's environment variables passed on as they are.
    pub pass_env: Vec<String>,
    /// The gateway's environment, less every variable that may hold a secret (`is_secret_env`).
    pub inherit_env: bool,
    /// Where each session's own working directory is made (`None`: the system temp dir).
    pub cwd: Option<PathBuf>,
    pub partition_by: PartitionBy,
    /// A partition's idle session is closed after this long without a request of it.
    pub partition_idle_timeout: Duration,
    pub protocol: CliProtocol,
    pub pool_size: usize,
    pub max_overflow: usize,
    /// A new pool session answers `keep_alive_prompt` once before it counts as warm.
    pub warm_up: bool,
    /// `None`: idle sessions are never pinged (they are still checked for having exited).
    pub keep_alive_interval: Option<Duration>,
    pub keep_alive_prompt: String,
    pub ping_timeout: Duration,
    /// Spawn plus warm-up, for pool sessions.
    pub startup_timeout: Duration,
    pub max_requests_per_session: u32,
    pub restart_backoff: Duration,
    pub max_restart_backoff: Duration,
    pub max_line_bytes: usize,
    pub max_output_bytes: usize,
}

pub(super) fn build(path: &str, raw: &RawProvider, env: &dyn Env) -> Result<CliSpec, ConfigError> {
    let err = |field: &str, msg: String| ConfigError(format!("{path}.{field}: {msg}"));
    let protocol = match raw.protocol.as_deref().unwrap_or("claude-stream-json") {
        "claude-stream-json" => CliProtocol::ClaudeStreamJson,
        "plain-text" => CliProtocol::PlainText,
        other => {
            return Err(err(
                "protocol",
                format!("unknown protocol {other:?} (expected claude-stream-json or plain-text)"),
            ));
        }
    };
    let command = command_checked(raw, protocol, &err)?;
    let cwd = match raw.cwd.as_deref() {
        Some("") => return Err(err("cwd", "must not be empty".into())),
        Some(dir) => Some(PathBuf::from(dir)),
        None => None,
    };
    let partition_by = match raw.partition_by.as_deref().unwrap_or("team") {
        "team" => PartitionBy::Team,
        "key" => PartitionBy::Key,
        other => return Err(err("partition_by", format!("{other:?}: expected team or key"))),
    };
    let partition_idle_timeout = raw.partition_idle_timeout.unwrap_or(DEFAULT_PARTITION_IDLE_TIMEOUT);
    if partition_idle_timeout.is_zero() {
        return Err(err("partition_idle_timeout", "must be greater than 0".into()));
    }
    let (pool_size, max_overflow) = pool_sizes(raw, env, &err)?;
    let keep_alive = match env.var("LLM_KEEP_ALIVE_INTERVAL") {
        Some(v) => duration::parse(&v).map_err(|e| ConfigError(format!("LLM_KEEP_ALIVE_INTERVAL: {e}")))?,
        None => raw.keep_alive_interval.unwrap_or(DEFAULT_KEEP_ALIVE),
    };
    let keep_alive_prompt = raw.keep_alive_prompt.clone().unwrap_or_else(|| DEFAULT_KEEP_ALIVE_PROMPT.into());
    if keep_alive_prompt.trim().is_empty() {
        return Err(err("keep_alive_prompt", "must not be empty".into()));
    }
    let (max_requests_per_session, warm_up) = session_reuse(raw, protocol, &err)?;
    let restart_backoff = raw.restart_backoff.unwrap_or(Duration::from_secs(1));
    let max_restart_backoff = raw.max_restart_backoff.unwrap_or(Duration::from_secs(60));
    if restart_backoff.is_zero() || max_restart_backoff < restart_backoff {
        return Err(err("max_restart_backoff", "must be at least restart_backoff, which must be above 0".into()));
    }
    let ping_timeout = raw.ping_timeout.unwrap_or(Duration::from_secs(60));
    let startup_timeout = raw.startup_timeout.unwrap_or(Duration::from_secs(60));
    for (field, d) in [("ping_timeout", ping_timeout), ("startup_timeout", startup_timeout)] {
        if d.is_zero() {
            return Err(err(field, "must be greater than 0".into()));
        }
    }
    let max_line_bytes = byte_limit(&err, "max_line_bytes", raw.max_line_bytes, 4 * 1024 * 1024)?;
    let max_output_bytes = byte_limit(&err, "max_output_bytes", raw.max_output_bytes, 16 * 1024 * 1024)?;
    Ok(CliSpec {
        command,
        env: raw.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        pass_env: raw.pass_env.clone(),
        inherit_env: raw.inherit_env.unwrap_or(false),
        cwd,
        partition_by,
        partition_idle_timeout,
        protocol,
        pool_size,
        max_overflow,
        warm_up,
        keep_alive_interval: Some(keep_alive).filter(|d| !d.is_zero()),
        keep_alive_prompt,
        ping_timeout,
        startup_timeout,
        max_requests_per_session,
        restart_backoff,
        max_restart_backoff,
        max_line_bytes,
        max_output_bytes: max_output_bytes.max(max_line_bytes),
    })
}

/// Builds a `ConfigError` naming a field of this provider.
type FieldErr<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

/// `command` (defaulted for claude-stream-json), `env` and `pass_env`: a program to run and
/// variables the OS accepts.
fn command_checked(raw: &RawProvider, protocol: CliProtocol, err: &FieldErr) -> Result<Vec<String>, ConfigError> {
    let command: Vec<String> = match (&raw.command, protocol) {
        (Some(c), _) => c.clone(),
        (None, CliProtocol::ClaudeStreamJson) => DEFAULT_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
        (None, CliProtocol::PlainText) => {
            return Err(err("command", "required for the plain-text protocol".into()));
        }
    };
    if command.first().is_none_or(|program| program.trim().is_empty()) {
        return Err(err("command", "must name a program (an array: program, then arguments)".into()));
    }
    if command.iter().any(|arg| arg.contains('\0')) {
        return Err(err("command", "arguments cannot contain NUL".into()));
    }
    for (name, value) in &raw.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(err(&format!("env.{name}"), "not a valid environment variable".into()));
        }
    }
    for (i, name) in raw.pass_env.iter().enumerate() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(err(&format!("pass_env[{i}]"), "not a valid environment variable name".into()));
        }
    }
    Ok(command)
}

/// `pool_size` (`LLM_POOL_SIZE` wins) and `max_overflow`: at least one session, at most
/// `MAX_SESSIONS` in all.
fn pool_sizes(raw: &RawProvider, env: &dyn Env, err: &FieldErr) -> Result<(usize, usize), ConfigError> {
    let pool_size = match env.var("LLM_POOL_SIZE") {
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ConfigError(format!("LLM_POOL_SIZE: {v:?} is not a number of sessions")))?,
        None => raw.pool_size.map_or(DEFAULT_POOL_SIZE, |n| n as usize),
    };
    let max_overflow = raw.max_overflow.map_or(pool_size.max(1), |n| n as usize);
    if pool_size + max_overflow == 0 {
        return Err(err("max_overflow", "with pool_size 0, at least 1 is needed to serve anything".into()));
    }
    if pool_size + max_overflow > MAX_SESSIONS {
        return Err(err("pool_size", format!("pool_size + max_overflow must be at most {MAX_SESSIONS}")));
    }
    Ok((pool_size, max_overflow))
}

/// `max_requests_per_session` and `warm_up`, whose defaults and limits follow the protocol: a
/// plain-text session answers one request and cannot be warmed up.
fn session_reuse(raw: &RawProvider, protocol: CliProtocol, err: &FieldErr) -> Result<(u32, bool), ConfigError> {
    let max_requests_per_session = match (raw.max_requests_per_session, protocol) {
        (Some(0), _) => return Err(err("max_requests_per_session", "must be at least 1".into())),
        (Some(n), CliProtocol::PlainText) if n > 1 => {
            return Err(err("max_requests_per_session", "plain-text sessions answer one request each".into()));
        }
        (Some(n), _) => n,
        (None, CliProtocol::ClaudeStreamJson) => DEFAULT_MAX_REQUESTS_PER_SESSION,
        (None, CliProtocol::PlainText) => 1,
    };
    let warm_up = match (raw.warm_up, protocol) {
        (Some(true), CliProtocol::PlainText) => {
            return Err(err(
                "warm_up",
                "a plain-text session cannot answer a warm-up prompt and then a request".into(),
            ));
        }
        (Some(w), _) => w,
        (None, p) => p.reusable(),
    };
    Ok((max_requests_per_session, warm_up))
}

/// A byte limit of at least 1KiB, or `default` when unset.
fn byte_limit(err: &FieldErr, field: &str, value: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if n < 1024 => Err(err(field, "must be at least 1024".into())),
        Some(n) => usize::try_from(n).map_err(|_| err(field, "too large".into())),
    }
}

/// Whether an environment variable of the gateway may hold a secret, by its name: never passed to
/// a session, even with `inherit_env` (name it in `pass_env` to pass it). Covers the variables the
/// gateway reads its own secrets from by convention (provider and team keys, the admin key,
/// Valkey's URL and password, the OpenMeter token, OTLP headers) and anything named like a
/// credential.
pub fn is_secret_env(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    const PARTS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE", "SESSION"];
    const PREFIXES: &[&str] = &["LLM_GATEWAY_", "VALKEY_", "REDIS_", "OPENMETER_", "OTEL_EXPORTER_OTLP_"];
    PARTS.iter().any(|p| upper.contains(p)) || PREFIXES.iter().any(|p| upper.starts_with(p))
}
