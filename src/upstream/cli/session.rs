//! One CLI session: a child process started directly (no shell, so nothing in a prompt or an
//! argument is ever interpreted), in its own process group, with piped stdin/stdout/stderr.
//! Output is read in bounded lines or chunks; stderr keeps a bounded tail for error messages.
//!
//! Each session runs in a working directory of its own, made empty for it and removed with it
//! (its `TMPDIR` inside), so no session finds what another left behind; and it gets only the
//! environment the config passes, never the gateway's secrets.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::Notify;

use crate::config::CliSpec;
use crate::config::cli::{PASSED_ENV, is_secret_env};

/// Bytes of stderr kept per session.
const STDERR_TAIL_BYTES: usize = 4096;
/// Characters of stderr quoted in an error message.
const STDERR_QUOTE_CHARS: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("writing to the CLI failed: {0}")]
    Write(std::io::Error),
    #[error("reading from the CLI failed: {0}")]
    Read(std::io::Error),
    #[error("the CLI printed a line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("the CLI printed more than {limit} bytes for one request")]
    OutputTooLarge { limit: usize },
    #[error("the CLI {0}")]
    Exited(String),
    #[error("the CLI did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the CLI broke its protocol: {0}")]
    Protocol(String),
    /// The CLI answered, with an error of its own (bad credentials, usage limit, ...).
    #[error("the CLI reported an error: {0}")]
    Reported(String),
}

/// The last few KiB a session wrote to stderr.
#[derive(Debug, Default)]
pub struct StderrTail {
    bytes: Mutex<VecDeque<u8>>,
    /// The process closed stderr and everything it wrote is in `bytes`.
    closed: AtomicBool,
    closing: Notify,
}

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..excess);
    }

    /// The end of stderr as one trimmed line of text, if there is any.
    pub fn quote(&self) -> Option<String> {
        let tail = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = tail.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return None;
        }
        let skip = text.chars().count().saturating_sub(STDERR_QUOTE_CHARS);
        Some(text.chars().skip(skip).collect())
    }

    /// Waits (at most `within`) until stderr is fully read: a process that just exited may still
    /// have its last words in the pipe.
    async fn settled(&self, within: Duration) {
        let wait = async {
            loop {
                let closing = self.closing.notified();
                tokio::pin!(closing);
                closing.as_mut().enable();
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
                closing.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
    }
}

pub struct Session {
    pub id: u64,
    pub pid: Option<u32>,
    pub started: Instant,
    pub served: u32,
    /// Whose requests it serves: set by its first request, never changed (it keeps their
    /// conversation). `None`: it has served no one yet.
    pub partition: Option<super::pool::Partition>,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub stderr: Arc<StderrTail>,
    /// Dropped (removed) with the session, after its process is gone.
    _workdir: WorkDir,
}

/// A session's own working directory: made empty (owner-only) at its start, removed with
/// everything in it when the session is dropped.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl WorkDir {
    /// A new directory under `base` (the system temp dir when `None`), named after the gateway's
    /// process and the session.
    fn create(base: Option<&Path>, id: u64) -> std::io::Result<Self> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = base.join(format!("llm-gateway-cli-{}-{id}-{:08x}", std::process::id(), fastrand::u32(..)));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let workdir = Self(dir);
        builder.create(workdir.tmp())?;
        Ok(workdir)
    }

    /// The session's `TMPDIR`.
    fn tmp(&self) -> PathBuf {
        self.0.join("tmp")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Best effort: a session is dropped once its process is reaped (or killed).
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "cli session directory not removed");
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("pid", &self.pid).finish_non_exhaustive()
    }
}

/// Starts the command in a new working directory of its own. Also returns the future that
/// drains its stderr (it ends when the process closes stderr); the caller runs it on the pool's
/// supervisor.
pub fn spawn(spec: &CliSpec, id: u64) -> Result<(Session, StderrDrain), SessionError> {
    let program = &spec.command[0];
    let workdir = WorkDir::create(spec.cwd.as_deref(), id).map_err(|e| SessionError::Spawn {
        program: program.clone(),
        source: std::io::Error::new(e.kind(), format!("its working directory: {e}")),
    })?;
    let mut command = Command::new(program);
    command
        .args(&spec.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .current_dir(&workdir.0);
    // Only what the config passes: the gateway's keys (providers', teams', the admin's, Valkey's)
    // must never reach a program that runs callers' prompts.
    command.env_clear();
    if spec.inherit_env {
        command.envs(std::env::vars_os().filter(|(name, _)| !name.to_str().is_none_or(is_secret_env)));
    } else {
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
    }
    for name in &spec.pass_env {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.env("TMPDIR", workdir.tmp());
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    // Its own process group, so that killing the session also kills whatever it started.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(|source| SessionError::Spawn { program: program.clone(), source })?;
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        return Err(SessionError::Spawn { program: program.clone(), source: std::io::Error::other("no pipes") });
    };
    let tail = Arc::new(StderrTail::default());
    let session = Session {
        id,
        pid: child.id(),
        started: Instant::now(),
        served: 0,
        partition: None,
        child,
        stdin: Some(stdin),
        stdout: BufReader::with_capacity(64 * 1024, stdout),
        stderr: tail.clone(),
        _workdir: workdir,
    };
    Ok((session, StderrDrain { stderr, tail }))
}

/// Reads a session's stderr into its tail until the process closes it.
pub struct StderrDrain {
    stderr: ChildStderr,
    tail: Arc<StderrTail>,
}

impl StderrDrain {
    pub async fn run(mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = self.stderr.read(&mut buf).await {
            self.tail.push(&buf[..n]);
        }
        self.tail.closed.store(true, Ordering::Release);
        self.tail.closing.notify_waiters();
    }
}

impl Session {
    /// Writes `bytes` and flushes; `close` then ends the CLI's input (one-shot protocols).
    pub async fn send(&mut self, bytes: &[u8], close: bool) -> Result<(), SessionError> {
        let stdin = self.stdin.as_mut().ok_or_else(|| SessionError::Write(std::io::ErrorKind::BrokenPipe.into()))?;
        let written = async {
            stdin.write_all(bytes).await?;
            stdin.flush().await
        }
        .await;
        if close {
            self.stdin = None;
        }
        written.map_err(|e| self.exited_or(SessionError::Write(e)))
    }

    /// The next line of output without its newline; `None` at end of output. A line longer than
    /// `limit` is an error (the rest of it is not read).
    pub async fn next_line(&mut self, limit: usize) -> Result<Option<Vec<u8>>, SessionError> {
        let mut line = Vec::new();
        loop {
            let buf = match self.stdout.fill_buf().await {
                Ok(buf) => buf,
                Err(e) => return Err(SessionError::Read(e)),
            };
            if buf.is_empty() {
                return Ok(if line.is_empty() { None } else { Some(line) });
            }
            let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if line.len() + take > limit {
                return Err(SessionError::LineTooLong { limit });
            }
            line.extend_from_slice(&buf[..take]);
            self.stdout.consume(take + usize::from(complete));
            if complete {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
        }
    }

    /// The next chunk of raw output, `None` at end of output.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, SessionError> {
        let buf = self.stdout.fill_buf().await.map_err(SessionError::Read)?;
        if buf.is_empty() {
            return Ok(None);
        }
        let chunk = Bytes::copy_from_slice(buf);
        self.stdout.consume(chunk.len());
        Ok(Some(chunk))
    }

    /// Discards what an idle session printed unasked, which would otherwise be read as part of the
    /// next answer: a banner (raw output), or whole JSON lines (`json_lines`). Fails if the
    /// session closed its output, or printed a partial or non-JSON line in `json_lines` mode.
    pub fn discard_idle_output(&mut self, json_lines: bool) -> Result<(), String> {
        loop {
            let Some(ready) = self.stdout.fill_buf().now_or_never() else { return Ok(()) };
            let buf = ready.map_err(|e| format!("output failed while idle: {e}"))?;
            if buf.is_empty() {
                return Err("closed its output while idle".into());
            }
            let take = if json_lines {
                let line = buf.iter().position(|&b| b == b'\n').map(|i| &buf[..i]);
                match line {
                    Some(line) if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() => line.len() + 1,
                    _ => {
                        let shown = String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned();
                        return Err(format!("printed {shown:?} while idle"));
                    }
                }
            } else {
                buf.len()
            };
            self.stdout.consume(take);
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// `Exited` (with status and stderr) if the process is gone, else `other`.
    pub fn exited_or(&mut self, other: SessionError) -> SessionError {
        match self.exited() {
            Some(status) => SessionError::Exited(self.describe_exit(status)),
            None => other,
        }
    }

    /// "exited with status 1 (stderr: ...)".
    pub fn describe_exit(&self, status: ExitStatus) -> String {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was killed ({status})"),
        };
        match self.stderr.quote() {
            Some(quote) => format!("{how} (stderr: {quote})"),
            None => how,
        }
    }

    /// A description of how the session ended for an unexpected end of output.
    pub async fn end_of_output(&mut self) -> SessionError {
        // The process closes stdout as it exits: give it a moment to be reaped.
        match self.wait_exit(Duration::from_millis(500)).await {
            Some(status) => SessionError::Exited(self.describe_exit_settled(status).await),
            None => SessionError::Exited("closed its output".into()),
        }
    }

    /// `describe_exit`, once the process's last stderr output is in (briefly bounded).
    pub async fn describe_exit_settled(&self, status: ExitStatus) -> String {
        self.stderr.settled(Duration::from_millis(500)).await;
        self.describe_exit(status)
    }

    /// Kills the session's whole process group at once (SIGKILL).
    pub fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.pid
            && self.child.try_wait().ok().flatten().is_none()
            && let Ok(pgid) = i32::try_from(pid)
        {
            // SAFETY: kill(2) with a negative pid signals the process group the session leads
            // (we created it with process_group(0)); no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
    }

    /// Ends the session politely: end of input first (a CLI exits on it), SIGKILL after `grace`.
    /// Reaps the process.
    pub async fn close(mut self, grace: Duration) {
        self.stdin = None;
        if self.wait_exit(grace).await.is_none() {
            self.kill();
            let _ = self.wait_exit(Duration::from_secs(5)).await;
        }
    }

    /// Kills the session at once and reaps it.
    pub async fn terminate(mut self) {
        self.kill();
        let _ = self.wait_exit(Duration::from_secs(5)).await;
    }
}
