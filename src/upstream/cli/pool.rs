//! The session pool of one `cli` provider: `pool_size` sessions started and warmed ahead of
//! demand, handed to one request at a time, pinged while idle, replaced when they die, hang or
//! have served `max_requests_per_session`; cold-started overflow sessions (at most
//! `max_overflow`) when every warm one is busy, retired again once the pool is back above size.
//!
//! Sessions are partitioned between callers (`partition_by`: team, or team and key): a session
//! keeps the conversation of every request it answered, so it is bound to the partition of its
//! first request and never serves another. A request takes an idle session of its own partition,
//! else a fresh one (warmed ahead, bound to no one yet), else starts one; at the session limit,
//! another partition's least recently used idle session is closed to make room. A partition's
//! session idle for `partition_idle_timeout` is closed, and the pool tops up with fresh ones.
//!
//! Requests take sessions through `acquire` (a `Lease`); everything else — starting and warming
//! pool sessions, keep-alive pings, liveness checks, draining stderr, reaping killed processes —
//! runs inside `supervise`, one future per pool that the application tracks and stops.

mod registry;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::protocol::{self, Event};
use super::session::{self, Session, SessionError};
use crate::config::CliSpec;
use crate::config::cli::PartitionBy;
use crate::ctx::Principal;
use registry::{Entry, State};
pub use registry::{SessionState, Totals};

/// Idle sessions are checked for having exited at least this often.
const LIVENESS_EVERY: Duration = Duration::from_secs(2);
/// A retired session gets this long to exit on end of input before it is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type Job = Pin<Box<dyn Future<Output = JobDone> + Send>>;

enum JobDone {
    /// A pool session's warm-up exchange finished.
    WarmedUp(Session, Result<(), SessionError>),
    /// An idle session's keep-alive ping finished.
    Pinged(Session, Result<(), SessionError>),
    Nothing,
}

/// Whose requests a session serves: the caller's team, and its key (or token subject) when
/// sessions are partitioned by key. `/sessions` shows the team, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub team: Arc<str>,
    /// The key's id, when partitioned by key.
    key: Option<Arc<str>>,
}

impl Partition {
    pub fn of(principal: Option<&Principal>, by: PartitionBy) -> Self {
        match principal {
            Some(p) => Self { team: p.team.clone(), key: (by == PartitionBy::Key).then(|| p.key_id.clone()) },
            // No known caller (never on an authenticated route): a partition nothing else matches.
            None => Self { team: "".into(), key: Some(format!("anonymous-{:016x}", fastrand::u64(..)).into()) },
        }
    }
}

pub struct Pool {
    pub provider: String,
    pub spec: Arc<CliSpec>,
    state: Mutex<State>,
    /// Wakes requests waiting for a session (a session became warm, was released or died).
    changed: Notify,
    /// Wakes the supervisor (it has work: a job was handed over, a session ended).
    wake: Notify,
    /// Work handed to the supervisor; at most a few per session.
    jobs: Mutex<Vec<Job>>,
    next_id: AtomicU64,
    pub totals: Totals,
}

/// Why no session could be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("every CLI session stayed busy for {waited_ms} ms ({live} running, limit {limit})")]
    Busy { waited_ms: u128, live: usize, limit: usize },
    #[error("{0}")]
    Start(SessionError),
    #[error("the gateway is shutting down")]
    Closed,
}

impl Pool {
    pub fn new(provider: &str, spec: Arc<CliSpec>) -> Arc<Self> {
        Arc::new(Self {
            provider: provider.to_owned(),
            spec,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            wake: Notify::new(),
            jobs: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            totals: Totals::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain bookkeeping: still consistent if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hand_over(&self, job: Job) {
        if self.lock().closed {
            return;
        }
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).push(job);
        self.wake.notify_one();
    }

    /// Reaps a session the gateway is done with (killed at once, or closed politely).
    fn dispose(&self, mut session: Session, politely: bool) {
        if politely {
            self.hand_over(Box::pin(session.close(CLOSE_GRACE).map(|()| JobDone::Nothing)));
        } else {
            session.kill();
            self.hand_over(Box::pin(session.terminate().map(|()| JobDone::Nothing)));
        }
    }

    /// Spawns a session; its stderr drain goes to the supervisor.
    fn spawn(&self, id: u64) -> Result<Session, SessionError> {
        Totals::bump(&self.totals.started);
        let (session, drain) = session::spawn(&self.spec, id)?;
        self.hand_over(Box::pin(drain.run().map(|()| JobDone::Nothing)));
        let mut st = self.lock();
        if let Some(entry) = st.entries.get_mut(&id) {
            entry.pid = session.pid;
            entry.stderr = Some(session.stderr.clone());
        }
        Ok(session)
    }

    /// A session for one request of `partition`: an idle one of the partition, else a fresh warm
    /// one (bound to the partition from then on); else the one a pre-warming session will become;
    /// else a cold start while under `pool_size + max_overflow` (at the limit, after closing
    /// another partition's least recently used idle session); else waits for a release, until
    /// `wait_until`.
    pub async fn acquire(self: &Arc<Self>, partition: &Partition, wait_until: Instant) -> Result<Lease, AcquireError> {
        let asked = Instant::now();
        Totals::bump(&self.totals.requests);
        let mut ticket: Option<WaitTicket> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Each round decides afresh whether to keep waiting for a pre-warming session.
            drop(ticket.take());
            let mut evicted = None;
            let cold_start_id = {
                let mut st = self.lock();
                if st.closed {
                    return Err(AcquireError::Closed);
                }
                while let Some(mut session) = pick(&st.idle, partition).and_then(|i| st.idle.remove(i)) {
                    if let Some(why) = idle_failure(&mut session, &self.spec) {
                        st.end(session.id, "crashed while idle".into(), Some(format!("the CLI {why}")));
                        Totals::bump(&self.totals.crashed);
                        self.wake.notify_one();
                        drop(st);
                        self.dispose(session, false);
                        st = self.lock();
                        continue;
                    }
                    session.partition.get_or_insert_with(|| partition.clone());
                    if let Some(entry) = st.entries.get_mut(&session.id) {
                        entry.state = SessionState::Busy;
                        entry.doing = "request";
                        entry.partition = session.partition.clone();
                    }
                    return Ok(Lease::new(self.clone(), session));
                }
                let limit = self.spec.pool_size + self.spec.max_overflow;
                if st.waiters < st.prewarming() {
                    st.waiters += 1;
                    ticket = Some(WaitTicket(self.clone()));
                    None
                } else {
                    if st.live() >= limit
                        && let Some(session) = st.idle.pop_front()
                    {
                        // Every idle session left is another partition's: the least recently
                        // used one makes room (its partition gets a new one when it is back).
                        st.end(session.id, "closed: its slot went to another partition".into(), None);
                        Totals::bump(&self.totals.recycled);
                        evicted = Some(session);
                    }
                    (st.live() < limit).then(|| {
                        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                        let mut entry = Entry::new(false, Instant::now());
                        entry.partition = Some(partition.clone());
                        st.entries.insert(id, entry);
                        id
                    })
                }
            };
            if let Some(session) = evicted {
                self.dispose(session, true);
            }
            if let Some(id) = cold_start_id {
                Totals::bump(&self.totals.cold_starts);
                return self.cold_start(id, partition);
            }
            if tokio::time::timeout_at(wait_until, notified).await.is_err() {
                let st = self.lock();
                return Err(AcquireError::Busy {
                    waited_ms: asked.elapsed().as_millis(),
                    live: st.live(),
                    limit: self.spec.pool_size + self.spec.max_overflow,
                });
            }
        }
    }

    /// Starts session `id` for a request of `partition` that found no idle one.
    fn cold_start(self: &Arc<Self>, id: u64, partition: &Partition) -> Result<Lease, AcquireError> {
        match self.spawn(id) {
            Ok(mut session) => {
                session.partition = Some(partition.clone());
                let mut st = self.lock();
                if let Some(entry) = st.entries.get_mut(&id) {
                    entry.state = SessionState::Busy;
                    entry.doing = "request";
                }
                drop(st);
                Ok(Lease::new(self.clone(), session))
            }
            Err(e) => {
                self.lock().end(id, "failed to start".into(), Some(e.to_string()));
                Totals::bump(&self.totals.failed);
                self.changed.notify_waiters();
                Err(AcquireError::Start(e))
            }
        }
    }

    /// A request's session answered completely: back to the pool, or retired.
    fn release(&self, mut session: Session) {
        session.served += 1;
        let mut st = self.lock();
        let id = session.id;
        if let Some(entry) = st.entries.get_mut(&id) {
            entry.served = session.served;
            entry.last_active = Instant::now();
            entry.last_request = entry.last_active;
        }
        let retire = if st.closed {
            Some("gateway shutting down".to_owned())
        } else if session.served >= self.spec.max_requests_per_session {
            Some(format!("recycled after {} requests", session.served))
        } else if st.live() > self.spec.pool_size && !st.keep_on_surplus(id, self.spec.pool_size) {
            Some("retired: the pool is above pool_size".to_owned())
        } else {
            None
        };
        match retire {
            Some(reason) => {
                st.end(id, reason, None);
                drop(st);
                Totals::bump(&self.totals.recycled);
                self.dispose(session, true);
                // The pool may be short now: the supervisor tops it up.
                self.wake.notify_one();
            }
            None => {
                if let Some(entry) = st.entries.get_mut(&id) {
                    entry.state = SessionState::Warm;
                    entry.doing = "";
                }
                st.idle.push_back(session);
            }
        }
        self.changed.notify_waiters();
    }

    /// A request's session failed or was abandoned mid-answer: it cannot be trusted, kill it.
    fn discard(&self, session: Session, error: Option<&SessionError>, abandoned: bool) {
        let reason = match (error, abandoned) {
            (_, true) => "killed: the request ended mid-answer (timeout or client gone)".to_owned(),
            (Some(SessionError::Exited(_)), _) => "crashed mid-answer".to_owned(),
            (Some(_), _) => "killed after an error".to_owned(),
            (None, false) => "killed".to_owned(),
        };
        let crashed = matches!(error, Some(SessionError::Exited(_) | SessionError::Protocol(_)));
        Totals::bump(if crashed { &self.totals.crashed } else { &self.totals.killed });
        self.lock().end(session.id, reason, error.map(ToString::to_string));
        self.dispose(session, false);
        self.wake.notify_one();
        self.changed.notify_waiters();
    }

    /// Keeps the pool at size, pings idle sessions, reaps and drains: runs until `shutdown`.
    pub async fn supervise(self: Arc<Self>) {
        let mut jobs: FuturesUnordered<Job> = FuturesUnordered::new();
        loop {
            jobs.extend(std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner())));
            if self.lock().closed {
                break;
            }
            let wake_at = self.maintain(&mut jobs);
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
                Some(done) = jobs.next(), if !jobs.is_empty() => self.finished(done),
            }
        }
        // Closing: let the reaping and closing jobs already running finish, briefly.
        let _ = tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), jobs.collect::<Vec<_>>()).await;
    }

    /// One round of upkeep; returns when the next one is due at the latest.
    fn maintain(&self, jobs: &mut FuturesUnordered<Job>) -> Instant {
        let now = Instant::now();
        let mut wake_at = now + LIVENESS_EVERY;
        let mut st = self.lock();

        self.reap_dead_idle(&mut st, jobs);
        self.close_quiet(&mut st, now, &mut wake_at, jobs);
        self.ping_due(&mut st, now, &mut wake_at, jobs);

        // Top up to pool_size, after the backoff when starts have been failing.
        let short = self.spec.pool_size.saturating_sub(st.live());
        if short == 0 {
            return wake_at;
        }
        if let Some(at) = st.restart_at.filter(|at| *at > now) {
            return wake_at.min(at);
        }
        let ids: Vec<u64> = (0..short)
            .map(|_| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                st.entries.insert(id, Entry::new(true, now));
                id
            })
            .collect();
        drop(st);
        for id in ids {
            match self.spawn(id) {
                Ok(mut session) if self.spec.warm_up => {
                    let spec = self.spec.clone();
                    jobs.push(Box::pin(async move {
                        let result = exchange(&mut session, &spec, spec.startup_timeout).await;
                        JobDone::WarmedUp(session, result)
                    }));
                }
                Ok(session) => self.finished(JobDone::WarmedUp(session, Ok(()))),
                Err(e) => wake_at = wake_at.min(self.start_failed(id, &e)),
            }
        }
        // Jobs handed over while spawning (stderr drains) are picked up on the next round.
        self.wake.notify_one();
        wake_at
    }

    /// Idle sessions that exited on their own.
    fn reap_dead_idle(&self, st: &mut State, jobs: &mut FuturesUnordered<Job>) {
        let mut dead = Vec::new();
        let mut i = 0;
        while i < st.idle.len() {
            match idle_failure(&mut st.idle[i], &self.spec) {
                Some(why) => dead.extend(st.idle.remove(i).map(|s| (s, why))),
                None => i += 1,
            }
        }
        for (session, why) in dead {
            st.end(session.id, "crashed while idle".into(), Some(format!("the CLI {why}")));
            Totals::bump(&self.totals.crashed);
            jobs.push(Box::pin(session.terminate().map(|()| JobDone::Nothing)));
        }
    }

    /// Sessions of partitions that went quiet: closed, and fresh ones take their place.
    fn close_quiet(&self, st: &mut State, now: Instant, wake_at: &mut Instant, jobs: &mut FuturesUnordered<Job>) {
        let quiet = self.spec.partition_idle_timeout;
        let mut i = 0;
        while i < st.idle.len() {
            let id = st.idle[i].id;
            let due = st.entries.get(&id).map_or(now, |e| e.last_request + quiet);
            if st.idle[i].partition.is_none() || due > now {
                if st.idle[i].partition.is_some() {
                    *wake_at = (*wake_at).min(due);
                }
                i += 1;
                continue;
            }
            let Some(session) = st.idle.remove(i) else { break };
            st.end(id, format!("closed: its partition sent nothing for {}s", quiet.as_secs()), None);
            Totals::bump(&self.totals.recycled);
            jobs.push(Box::pin(session.close(CLOSE_GRACE).map(|()| JobDone::Nothing)));
        }
    }

    /// Keep-alive pings for sessions idle for an interval.
    fn ping_due(&self, st: &mut State, now: Instant, wake_at: &mut Instant, jobs: &mut FuturesUnordered<Job>) {
        let Some(interval) = self.spec.keep_alive_interval.filter(|_| self.spec.protocol.reusable()) else {
            return;
        };
        let mut i = 0;
        while i < st.idle.len() {
            let id = st.idle[i].id;
            let due = st.entries.get(&id).map_or(now, |e| e.last_active + interval);
            if due > now {
                *wake_at = (*wake_at).min(due);
                i += 1;
                continue;
            }
            let Some(mut session) = st.idle.remove(i) else { break };
            if let Some(entry) = st.entries.get_mut(&id) {
                entry.state = SessionState::Busy;
                entry.doing = "ping";
            }
            let spec = self.spec.clone();
            jobs.push(Box::pin(async move {
                let result = exchange(&mut session, &spec, spec.ping_timeout).await;
                JobDone::Pinged(session, result)
            }));
        }
    }

    /// Records a failed pool start; returns when the next try is due.
    fn start_failed(&self, id: u64, error: &SessionError) -> Instant {
        let mut st = self.lock();
        st.end(id, "failed to start".into(), Some(error.to_string()));
        Totals::bump(&self.totals.failed);
        let delay = restart_delay(&self.spec, st.failures);
        st.failures = st.failures.saturating_add(1);
        let at = Instant::now() + delay;
        st.restart_at = Some(at);
        drop(st);
        tracing::warn!(provider = %self.provider, session = id, error = %error, retry_in_ms = delay.as_millis() as u64, "cli session failed to start");
        self.changed.notify_waiters();
        at
    }

    fn finished(&self, done: JobDone) {
        match done {
            JobDone::Nothing => {}
            JobDone::WarmedUp(session, Ok(())) | JobDone::Pinged(session, Ok(())) => {
                let mut st = self.lock();
                if st.closed {
                    drop(st);
                    self.dispose(session, true);
                    return;
                }
                let now = Instant::now();
                let id = session.id;
                if let Some(entry) = st.entries.get_mut(&id) {
                    if entry.state == SessionState::Starting {
                        Totals::bump(&self.totals.warm);
                        st.failures = 0;
                        st.restart_at = None;
                    } else {
                        Totals::bump(&self.totals.pings);
                    }
                }
                if let Some(entry) = st.entries.get_mut(&id) {
                    entry.state = SessionState::Warm;
                    entry.doing = "";
                    entry.last_active = now;
                }
                st.idle.push_back(session);
                drop(st);
                self.changed.notify_waiters();
            }
            JobDone::WarmedUp(session, Err(e)) => {
                let id = session.id;
                self.dispose(session, false);
                self.start_failed(id, &e);
            }
            JobDone::Pinged(session, Err(e)) => {
                tracing::warn!(provider = %self.provider, session = session.id, error = %e, "cli session failed its keep-alive ping");
                let crashed = matches!(e, SessionError::Exited(_) | SessionError::Protocol(_));
                Totals::bump(if crashed { &self.totals.crashed } else { &self.totals.killed });
                self.lock().end(session.id, "failed its keep-alive ping".into(), Some(e.to_string()));
                self.dispose(session, false);
                self.changed.notify_waiters();
            }
        }
    }

    /// Stops the pool: no new sessions, idle ones closed (end of input, then SIGKILL), busy ones
    /// killed as their requests end. The supervisor exits.
    pub async fn shutdown(&self) {
        let idle: Vec<Session> = {
            let mut st = self.lock();
            st.closed = true;
            st.idle.drain(..).collect()
        };
        self.wake.notify_one();
        self.changed.notify_waiters();
        futures_util::future::join_all(idle.into_iter().map(|s| s.close(CLOSE_GRACE))).await;
    }

    /// Counts per state, for `/health`.
    pub fn summary(&self) -> serde_json::Value {
        let st = self.lock();
        serde_json::json!({
            "provider": self.provider,
            "protocol": self.spec.protocol.name(),
            "pool_size": self.spec.pool_size,
            "max_overflow": self.spec.max_overflow,
            "partition_by": self.spec.partition_by.name(),
            "warm": st.count(SessionState::Warm),
            "busy": st.count(SessionState::Busy),
            "starting": st.count(SessionState::Starting),
            "dead": st.count(SessionState::Dead),
            "totals": self.totals.report(),
        })
    }

    /// Every session (live, and the last few ended), for `/sessions`.
    pub fn report(&self) -> serde_json::Value {
        let now = Instant::now();
        let sessions: Vec<serde_json::Value> = self.lock().entries.iter().map(|(id, e)| e.report(*id, now)).collect();
        let mut report = self.summary();
        report["sessions"] = serde_json::Value::Array(sessions);
        report
    }
}

/// Counts a request waiting for a pre-warming session; uncounted when dropped (the request went
/// away while waiting).
struct WaitTicket(Arc<Pool>);

impl Drop for WaitTicket {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.waiters = st.waiters.saturating_sub(1);
    }
}

/// One request's hold on a session. Finish it with `done` (the answer is complete) or `fail`;
/// dropping it unfinished (timeout, client gone) kills the session.
pub struct Lease {
    pool: Arc<Pool>,
    session: Option<Session>,
}

impl Lease {
    fn new(pool: Arc<Pool>, session: Session) -> Self {
        Self { pool, session: Some(session) }
    }

    pub fn session(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    pub fn spec(&self) -> &CliSpec {
        &self.pool.spec
    }

    pub fn id(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.id)
    }

    pub fn done(mut self) {
        if let Some(session) = self.session.take() {
            self.pool.release(session);
        }
    }

    pub fn fail(mut self, error: &SessionError) {
        if let Some(session) = self.session.take() {
            self.pool.discard(session, Some(error), false);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.discard(session, None, true);
        }
    }
}

/// The wait before the next start after `failures` failed ones in a row: `restart_backoff`,
/// doubling each time, at most `max_restart_backoff`.
fn restart_delay(spec: &CliSpec, failures: u32) -> Duration {
    spec.restart_backoff.saturating_mul(1u32 << failures.min(20)).min(spec.max_restart_backoff)
}

/// Where in `idle` (least recently used first) the session for a request of `partition` is: its
/// partition's first, else the first fresh one. Never another partition's.
fn pick(idle: &std::collections::VecDeque<Session>, partition: &Partition) -> Option<usize> {
    idle.iter()
        .position(|s| s.partition.as_ref() == Some(partition))
        .or_else(|| idle.iter().position(|s| s.partition.is_none()))
}

/// Why an idle session is unusable: it exited, or misbehaved on its output unasked.
fn idle_failure(session: &mut Session, spec: &CliSpec) -> Option<String> {
    match session.exited() {
        Some(status) => Some(session.describe_exit(status)),
        None => session.discard_idle_output(spec.protocol.reusable()).err().map(|why| match session.stderr.quote() {
            Some(quote) => format!("{why} (stderr: {quote})"),
            None => why,
        }),
    }
}

/// Sends the keep-alive prompt and reads the whole answer (stream-json protocol), within `limit`.
async fn exchange(session: &mut Session, spec: &CliSpec, limit: Duration) -> Result<(), SessionError> {
    let conversation = async {
        session.send(&protocol::user_line(&spec.keep_alive_prompt), false).await?;
        let mut read = 0usize;
        loop {
            let Some(line) = session.next_line(spec.max_line_bytes).await? else {
                return Err(session.end_of_output().await);
            };
            read += line.len() + 1;
            if read > spec.max_output_bytes {
                return Err(SessionError::OutputTooLarge { limit: spec.max_output_bytes });
            }
            match protocol::parse_line(&line).map_err(SessionError::Protocol)? {
                Event::Result(done) => {
                    return match done.error {
                        Some(e) => Err(SessionError::Reported(e)),
                        None => Ok(()),
                    };
                }
                _ => continue,
            }
        }
    };
    match tokio::time::timeout(limit, conversation).await {
        Ok(result) => result.map_err(|e| session.exited_or(e)),
        Err(_) => Err(SessionError::Timeout(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_up_to_its_cap() {
        let yaml = "providers: { p: { dialect: cli, restart_backoff: 250ms, max_restart_backoff: 3s } }";
        let config = crate::config::Config::from_yaml(yaml, &std::collections::HashMap::<&str, &str>::new()).unwrap();
        let spec = config.providers["p"].cli.clone().unwrap();
        let delays: Vec<u128> = (0..7).map(|n| restart_delay(&spec, n).as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(restart_delay(&spec, u32::MAX), Duration::from_secs(3));
    }
}
