//! The cli backend against real processes: the gateway in-process, its session pool driving
//! `tests/fake_cli.py` (a stand-in for the Claude Code CLI's stream-json mode) with switches
//! for slow starts, crashes, hangs, garbage and idle exits. State changes are observed by polling
//! `/sessions` with a bounded wait, never by sleeping.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Gateway, json};

const WAIT: Duration = Duration::from_secs(30);

fn fake_cli() -> String {
    format!("{}/tests/fake_cli.py", env!("CARGO_MANIFEST_DIR"))
}

/// A gateway config with one cli provider `fake` running the fake CLI with `args`, serving the
/// model `claude`; `extra` adds provider fields (YAML flow-map members).
fn config(args: &[&str], extra: &str) -> String {
    let mut command = vec!["python3".to_owned(), fake_cli()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    let command = serde_json::to_string(&command).unwrap();
    format!(
        "keys: [{{ key: sk-test, team: t }}]\n\
         teams: {{ t: {{ models: ['*'] }} }}\n\
         providers:\n  fake: {{ dialect: cli, command: {command}, keep_alive_prompt: ping, {extra} }}\n\
         models:\n  claude:\n    deployments: [{{ provider: fake, model: fake-model }}]\n"
    )
}

async fn pool(gw: &Gateway) -> Value {
    let sessions = json(gw.client.get(gw.url("/sessions")).send().await.unwrap()).await;
    sessions["pools"][0].clone()
}

fn sessions_in(pool: &Value, state: &str) -> Vec<Value> {
    pool["sessions"].as_array().unwrap().iter().filter(|s| s["state"] == state).cloned().collect()
}

fn ids(sessions: &[Value]) -> BTreeSet<u64> {
    sessions.iter().map(|s| s["id"].as_u64().unwrap()).collect()
}

fn live(pool: &Value) -> usize {
    pool["sessions"].as_array().unwrap().iter().filter(|s| s["state"] != "dead").count()
}

/// Polls `/sessions` until `ready` holds for the pool, at most `WAIT`.
async fn wait_for(gw: &Gateway, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let snapshot = pool(gw).await;
        if ready(&snapshot) {
            return snapshot;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; /sessions: {snapshot:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn warm(gw: &Gateway, n: usize) -> Value {
    wait_for(gw, &format!("{n} warm sessions"), |p| sessions_in(p, "warm").len() == n && live(p) == n).await
}

fn ask(prompt: &str, stream: bool) -> Value {
    let mut body = json!({"model": "claude", "stream": stream, "messages": [{"role": "user", "content": prompt}]});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The text and usage of an SSE answer, plus any in-band error.
fn read_stream(body: &str) -> (String, Option<Value>, Option<Value>) {
    let (mut text, mut usage, mut error) = (String::new(), None, None);
    let datas: Vec<&str> = body.split("\n\n").filter_map(|f| f.strip_prefix("data: ")).collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "stream not terminated: {body}");
    for data in &datas[..datas.len() - 1] {
        let chunk: Value = serde_json::from_str(data).unwrap();
        if chunk.get("error").is_some() {
            error = Some(chunk["error"].clone());
            continue;
        }
        assert_eq!(chunk["model"], "claude", "the client's model name: {chunk}");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if !chunk["usage"].is_null() {
            usage = Some(chunk["usage"].clone());
        }
    }
    (text, usage, error)
}

fn served_by(before: &Value, after: &Value) -> u64 {
    let served = |p: &Value, id: u64| {
        p["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map_or(0, |s| s["requests_served"].as_u64().unwrap())
    };
    let changed: Vec<u64> = ids(&sessions_in(after, "warm"))
        .into_iter()
        .chain(ids(&sessions_in(after, "dead")))
        .filter(|id| served(after, *id) > served(before, *id))
        .collect();
    assert_eq!(changed.len(), 1, "exactly one session served the request: {after:#}");
    changed[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_is_served_by_a_prewarmed_session() {
    let slow_start = Duration::from_millis(1500);
    let gw = Gateway::start(&config(&["--include-partial-messages", "--slow-start", "1.5"], "pool_size: 2")).await;
    let starting = pool(&gw).await;
    assert_eq!(sessions_in(&starting, "starting").len(), 2, "both sessions start at once: {starting:#}");
    let before = warm(&gw, 2).await;
    assert_eq!(before["totals"]["started"], 2);

    let asked = Instant::now();
    let r = gw.chat_with(ask("Hello", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(support::deployment_of(&r), "fake/fake-model");
    let (text, usage, error) = read_stream(&r.text().await.unwrap());
    let took = asked.elapsed();
    assert_eq!(error, None);
    assert_eq!(text, "You said: Hello");
    assert!(took < slow_start, "a warm session answers without the start-up delay; took {took:?}");
    // The CLI's own usage (Anthropic's split, cached tokens included in prompt_tokens).
    let usage = usage.expect("usage chunk");
    assert_eq!(usage["prompt_tokens"], "Hello".len() + 5 + 2);
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 5);

    let after = warm(&gw, 2).await;
    let id = served_by(&before, &after);
    assert!(ids(&sessions_in(&before, "warm")).contains(&id));
    assert_eq!(after["totals"]["started"], 2, "no process was started for the request: {after:#}");
    assert_eq!(after["totals"]["cold_starts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_pool_starts_overflow_sessions_then_the_pool_returns_to_size() {
    let gw = Gateway::start(&config(&["--chunk-delay", "0.5"], "pool_size: 2, max_overflow: 3")).await;
    let before = warm(&gw, 2).await;
    let requests: Vec<_> = (0..5)
        .map(|i| {
            let (client, url) = (gw.client.clone(), gw.url("/v1/chat/completions"));
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth("sk-test")
                    .body(ask(&format!("burst {i}"), false).to_string())
                    .send()
                    .await
                    .unwrap();
                (r.status(), json(r).await)
            })
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], format!("You said: burst {i}"));
        assert_eq!(body["model"], "claude");
    }
    let after = wait_for(&gw, "the pool back at 2 warm sessions", |p| {
        sessions_in(p, "warm").len() == 2 && live(p) == 2 && p["totals"]["recycled"] == 3
    })
    .await;
    assert_eq!(after["totals"]["cold_starts"], 3, "{after:#}");
    assert_eq!(after["totals"]["started"], 5);
    assert_eq!(after["totals"]["requests"], 5);
    let retired = sessions_in(&after, "dead");
    assert_eq!(retired.len(), 3);
    assert!(retired.iter().all(|s| s["ended"].as_str().unwrap().starts_with("retired") && s["last_error"].is_null()));
    assert!(retired.iter().all(|s| !s["prewarmed"].as_bool().unwrap()), "the overflow sessions were retired");
    assert_eq!(ids(&sessions_in(&after, "warm")), ids(&sessions_in(&before, "warm")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_crashing_mid_answer_is_an_error_and_is_replaced() {
    let gw = Gateway::start(&config(
        &["--include-partial-messages", "--crash-after-chunks", "2", "--trigger", "CRASH-ME"],
        "pool_size: 1",
    ))
    .await;
    let first = warm(&gw, 1).await;
    let first_id = ids(&sessions_in(&first, "warm")).into_iter().next().unwrap();

    // Streaming: text went out already, so the failure arrives in-band.
    let r = gw.chat_with(ask("please CRASH-ME now", true)).await;
    assert_eq!(r.status(), 200);
    let (text, _, error) = read_stream(&r.text().await.unwrap());
    assert_eq!(text, "You said: ");
    let error = error.expect("an in-band SSE error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("exited with status 3"), "{error}");
    assert!(message.contains("crashing on purpose"), "stderr is quoted: {error}");

    let replaced = wait_for(&gw, "the crashed session replaced", |p| {
        sessions_in(p, "warm").len() == 1 && !ids(&sessions_in(p, "warm")).contains(&first_id)
    })
    .await;
    let dead = sessions_in(&replaced, "dead");
    assert_eq!(ids(&dead), BTreeSet::from([first_id]));
    assert_eq!(dead[0]["ended"], "crashed mid-answer");
    assert!(dead[0]["last_error"].as_str().unwrap().contains("crashing on purpose"));
    assert_eq!(replaced["totals"]["crashed"], 1);

    let r = gw.chat_with(ask("and now?", true)).await;
    let (text, _, error) = read_stream(&r.text().await.unwrap());
    assert_eq!((text.as_str(), error), ("You said: and now?", None));

    // Not streaming: the client gets a 502, and again the next request succeeds.
    warm(&gw, 1).await;
    let r = gw.chat_with(ask("CRASH-ME again", false)).await;
    assert_eq!(r.status(), 502);
    let body = json(r).await;
    assert_eq!(body["error"]["code"], "upstream_protocol", "{body}");
    warm(&gw, 1).await;
    let r = gw.chat_with(ask("fine", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["choices"][0]["message"]["content"], "You said: fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_session_is_killed_after_its_timeout() {
    let gw =
        Gateway::start(&config(&["--hang", "--trigger", "HANG"], "pool_size: 1, timeouts: { first_byte: 1s }")).await;
    let before = warm(&gw, 1).await;
    let hung = sessions_in(&before, "warm")[0].clone();
    let pid = hung["pid"].as_u64().unwrap();
    assert!(process_alive(pid));

    for stream in [false, true] {
        let asked = Instant::now();
        let r = gw.chat_with(ask("HANG please", stream)).await;
        assert_eq!(r.status(), 504, "stream={stream}");
        let body = json(r).await;
        assert_eq!(body["error"]["code"], "upstream_timeout");
        assert!(asked.elapsed() < Duration::from_secs(10));
        warm(&gw, 1).await;
    }
    let after = pool(&gw).await;
    let dead = sessions_in(&after, "dead");
    assert_eq!(dead.len(), 2, "{after:#}");
    assert!(dead.iter().all(|s| s["ended"].as_str().unwrap().contains("ended mid-answer")));
    assert_eq!(after["totals"]["killed"], 2);
    let deadline = Instant::now() + WAIT;
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "the hung process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = gw.chat_with(ask("hello", false)).await;
    assert_eq!(r.status(), 200);
}

/// Whether `pid` is a running (not zombie) process.
fn process_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_warms_up_is_killed_and_retried_with_backoff() {
    let gw = Gateway::start(&config(
        &["--hang", "--trigger", "ping"],
        "pool_size: 1, startup_timeout: 300ms, restart_backoff: 100ms, max_restart_backoff: 400ms",
    ))
    .await;
    let p = wait_for(&gw, "three failed starts", |p| p["totals"]["failed"].as_u64() >= Some(3)).await;
    let failed = sessions_in(&p, "dead");
    assert!(failed.len() >= 3, "{p:#}");
    for session in &failed {
        assert_eq!(session["ended"], "failed to start");
        assert!(session["last_error"].as_str().unwrap().contains("did not answer within 300ms"), "{session}");
    }
    assert_eq!(p["totals"]["warm"], 0);
    // Each hung process was killed, not left behind.
    let deadline = Instant::now() + WAIT;
    for pid in failed.iter().map(|s| s["pid"].as_u64().unwrap()) {
        while process_alive(pid) {
            assert!(Instant::now() < deadline, "hung process {pid} still running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A request does not wait for a pool that cannot warm up: it cold-starts its own session,
    // which answers (only the warm-up prompt hangs).
    let r = gw.chat_with(ask("hello", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pings_keep_idle_sessions_from_exiting() {
    let gw = Gateway::start(&config(&["--idle-exit", "1"], "pool_size: 2, keep_alive_interval: 250ms")).await;
    let before = warm(&gw, 2).await;
    // Twelve pings at 250 ms for two sessions take at least 1.5 s: past the 1 s idle exit.
    let after = wait_for(&gw, "12 keep-alive pings", |p| p["totals"]["pings"].as_u64().unwrap() >= 12).await;
    assert_eq!(after["totals"]["crashed"], 0, "{after:#}");
    assert_eq!(after["totals"]["started"], 2);
    let now = warm(&gw, 2).await;
    assert_eq!(ids(&sessions_in(&now, "warm")), ids(&sessions_in(&before, "warm")));
    let r = gw.chat_with(ask("still there?", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keep_alive_idle_sessions_exit_and_are_replaced() {
    let gw = Gateway::start(&config(&["--idle-exit", "0.5"], "pool_size: 1, keep_alive_interval: 0")).await;
    let first = warm(&gw, 1).await;
    let first_id = ids(&sessions_in(&first, "warm")).into_iter().next().unwrap();
    let after = wait_for(&gw, "the idle session to exit and be replaced", |p| {
        p["totals"]["crashed"].as_u64() >= Some(1)
            && sessions_in(p, "warm").len() == 1
            && !ids(&sessions_in(p, "warm")).contains(&first_id)
    })
    .await;
    let dead = &sessions_in(&after, "dead")[0];
    assert_eq!(dead["ended"], "crashed while idle");
    assert!(dead["last_error"].as_str().unwrap().contains("no input for 0.5s"), "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_reflect_every_state_change() {
    let gw = Gateway::start(&config(
        &["--slow-start", "0.5", "--chunk-delay", "0.3"],
        "pool_size: 1, max_requests_per_session: 2",
    ))
    .await;
    // Its entry exists a moment before its process does: wait for the pid.
    let starting =
        wait_for(&gw, "a starting session", |p| sessions_in(p, "starting").first().is_some_and(|s| s["pid"].is_u64()))
            .await;
    let session = &sessions_in(&starting, "starting")[0];
    assert_eq!(session["doing"], "warm-up");
    let id = session["id"].as_u64().unwrap();
    let warm_now = warm(&gw, 1).await;
    assert_eq!(sessions_in(&warm_now, "warm")[0]["id"], id);
    assert_eq!(sessions_in(&warm_now, "warm")[0]["requests_served"], 0);

    for served in 1..=2u64 {
        let (client, url) = (gw.client.clone(), gw.url("/v1/chat/completions"));
        let request = tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth("sk-test")
                .body(ask("one two three", false).to_string())
                .send()
                .await
                .unwrap()
                .status()
        });
        let busy = wait_for(&gw, "a busy session", |p| sessions_in(p, "busy").len() == 1).await;
        assert_eq!(sessions_in(&busy, "busy")[0]["id"], id);
        assert_eq!(sessions_in(&busy, "busy")[0]["doing"], "request");
        assert_eq!(request.await.unwrap(), 200);
        if served == 1 {
            let back = warm(&gw, 1).await;
            assert_eq!(sessions_in(&back, "warm")[0]["requests_served"], 1);
        }
    }
    // Two requests are this session's budget: it is recycled and a new one takes its place.
    let recycled = wait_for(&gw, "the session recycled and replaced", |p| {
        sessions_in(p, "dead").len() == 1 && sessions_in(p, "warm").len() == 1
    })
    .await;
    let dead = &sessions_in(&recycled, "dead")[0];
    assert_eq!(dead["id"], id);
    assert_eq!(dead["ended"], "recycled after 2 requests");
    assert_eq!(dead["requests_served"], 2);
    assert_ne!(sessions_in(&recycled, "warm")[0]["id"], id);

    let health = gw.health().await;
    let figures = &health["cli_pools"][0];
    assert_eq!(figures["provider"], "fake");
    assert_eq!((figures["warm"].as_u64(), figures["dead"].as_u64()), (Some(1), Some(1)), "{health}");
    assert_eq!(figures["totals"]["recycled"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_reach_the_cli_verbatim_and_run_nothing() {
    let marker = format!("/tmp/pwned-{:016x}", fastrand_u64());
    let trigger = format!("$(touch {marker}-arg)");
    let gw = Gateway::start(&config(&["--trigger", &trigger], "pool_size: 1")).await;
    warm(&gw, 1).await;
    let prompt = format!(
        "$(touch {marker}); rm -rf ~ && echo `id` | tee {marker} > /dev/null; exit 1 \
         'single' \"double\" \\ back\\slash ${{HOME}} %s %n\nnew line\ttab {{}} ; & | > < * ?"
    );
    for stream in [false, true] {
        let r = gw.chat_with(ask(&prompt, stream)).await;
        assert_eq!(r.status(), 200);
        let text = if stream {
            read_stream(&r.text().await.unwrap()).0
        } else {
            json(r).await["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
        };
        assert_eq!(text, format!("You said: {prompt}"));
    }
    assert!(!std::path::Path::new(&marker).exists(), "a shell ran the prompt");
    assert!(!std::path::Path::new(&format!("{marker}-arg")).exists(), "a shell ran an argument");
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        ^ u64::from(std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_printed_between_answers_are_not_taken_for_the_next_answer() {
    let gw = Gateway::start(&config(&["--chatter"], "pool_size: 1")).await;
    let before = warm(&gw, 1).await;
    for i in 0..3 {
        let r = gw.chat_with(ask(&format!("question {i}"), i % 2 == 0)).await;
        let text = if i % 2 == 0 {
            read_stream(&r.text().await.unwrap()).0
        } else {
            json(r).await["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
        };
        assert_eq!(text, format!("You said: question {i}"));
    }
    let after = warm(&gw, 1).await;
    assert_eq!(ids(&sessions_in(&after, "warm")), ids(&sessions_in(&before, "warm")), "{after:#}");
    assert_eq!(after["totals"]["crashed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_output_is_a_502_and_the_session_is_replaced() {
    let gw = Gateway::start(&config(&["--garbage", "--trigger", "GARBAGE"], "pool_size: 1")).await;
    warm(&gw, 1).await;
    let r = gw.chat_with(ask("GARBAGE in", false)).await;
    assert_eq!(r.status(), 502);
    let body = json(r).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("not a stream-json line"), "{body}");
    let after =
        wait_for(&gw, "a replacement", |p| sessions_in(p, "warm").len() == 1 && sessions_in(p, "dead").len() == 1)
            .await;
    assert_eq!(after["totals"]["crashed"], 1);
    assert_eq!(gw.chat_with(ask("clean", false)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_the_cli_reports_is_a_502_and_keeps_the_session() {
    let gw = Gateway::start(&config(&["--error-result", "--trigger", "BADKEY"], "pool_size: 1")).await;
    let before = warm(&gw, 1).await;
    let r = gw.chat_with(ask("BADKEY", false)).await;
    assert_eq!(r.status(), 502);
    let body = json(r).await;
    assert_eq!(body["error"]["code"], "cli_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("Invalid API key"), "{body}");
    let after = warm(&gw, 1).await;
    assert_eq!(ids(&sessions_in(&after, "warm")), ids(&sessions_in(&before, "warm")), "the session is healthy");
    assert_eq!(gw.chat_with(ask("ok now", false)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_shows_dead_sessions_and_answers_502() {
    let yaml = "keys: [{ key: sk-test, team: t }]\nteams: { t: { models: ['*'] } }\n\
                providers:\n  fake: { dialect: cli, command: ['/nonexistent/claude-cli-test', '-p'], pool_size: 2 }\n\
                models:\n  claude:\n    deployments: [{ provider: fake, model: m }]\n";
    let gw = Gateway::start(yaml).await;
    let p = wait_for(&gw, "dead sessions", |p| sessions_in(p, "dead").len() >= 2).await;
    for dead in sessions_in(&p, "dead") {
        let error = dead["last_error"].as_str().unwrap();
        assert!(error.contains("cannot start `/nonexistent/claude-cli-test`"), "{error}");
    }
    let r = gw.chat_with(ask("hi", true)).await;
    assert_eq!(r.status(), 502);
    let body = json(r).await;
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(body["error"]["message"].as_str().unwrap().contains("No such file"), "{body}");
    assert_eq!(gw.health().await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_text_protocol_runs_one_process_per_request() {
    let gw = Gateway::start(&config(&["--protocol", "plain-text"], "protocol: plain-text, pool_size: 1")).await;
    let before = warm(&gw, 1).await;
    for round in 0..2 {
        let r = gw.chat_with(ask("Hello", round == 1)).await;
        assert_eq!(r.status(), 200);
        let (text, usage) = if round == 1 {
            let (text, usage, error) = read_stream(&r.text().await.unwrap());
            assert_eq!(error, None);
            (text, usage.unwrap())
        } else {
            let body = json(r).await;
            (body["choices"][0]["message"]["content"].as_str().unwrap().to_owned(), body["usage"].clone())
        };
        assert_eq!(text, "You said: Hello");
        // No usage from a plain-text CLI: counted locally (about four characters a token).
        assert_eq!(usage["prompt_tokens"], 2);
        assert_eq!(usage["completion_tokens"], 4);
        warm(&gw, 1).await;
    }
    let after = pool(&gw).await;
    assert_eq!(after["totals"]["recycled"], 2, "one request per process: {after:#}");
    assert_eq!(after["totals"]["cold_starts"], 0);
    assert!(ids(&sessions_in(&after, "warm")).is_disjoint(&ids(&sessions_in(&before, "warm"))));
}

// --- partitions (issue #26) -------------------------------------------------------------------

/// `config` with two keys of team a and one of team b, the fake CLI answering "RECALL" with the
/// prompts its session has seen.
fn two_teams(extra: &str) -> String {
    config(&["--recall", "RECALL"], extra).replace(
        "keys: [{ key: sk-test, team: t }]\nteams: { t: { models: ['*'] } }",
        "keys: [{ key: sk-a1, team: a, id: a1 }, { key: sk-a2, team: a, id: a2 }, { key: sk-b, team: b, id: b }]\n\
         teams: { a: { models: ['*'] }, b: { models: ['*'] } }",
    )
}

/// The prompts the session serving `key`'s "RECALL" has seen before it.
async fn recall(gw: &Gateway, key: &str) -> Vec<String> {
    let r = gw.chat_as(key, ask("RECALL", false)).await;
    assert_eq!(r.status(), 200);
    let text = json(r).await["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let seen: Value = serde_json::from_str(text.strip_prefix("Recall: ").unwrap()).unwrap();
    seen["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
}

async fn say(gw: &Gateway, key: &str, prompt: &str) {
    let r = gw.chat_as(key, ask(prompt, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["choices"][0]["message"]["content"], format!("You said: {prompt}"));
}

/// By team (the default) a team's keys share its sessions and the other team gets its own; by
/// key, every key has its own. `/sessions` shows each session's team.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_serve_one_team_or_one_key() {
    let by_team = Gateway::start(&two_teams("pool_size: 2")).await;
    warm(&by_team, 2).await;
    say(&by_team, "sk-a1", "a1 speaking").await;
    assert_eq!(recall(&by_team, "sk-b").await, Vec::<String>::new(), "team b gets a session of its own");
    assert_eq!(recall(&by_team, "sk-a2").await, ["a1 speaking"], "team a's keys share its session");
    let listing = pool(&by_team).await;
    assert_eq!(listing["partition_by"], "team");
    let mut teams: Vec<&str> =
        listing["sessions"].as_array().unwrap().iter().filter_map(|s| s["team"].as_str()).collect();
    teams.sort_unstable();
    assert_eq!(teams, ["a", "b"], "{listing:#}");
    assert_eq!(listing["totals"]["cold_starts"], 0, "both teams got a pre-warmed session: {listing:#}");

    let by_key = Gateway::start(&two_teams("pool_size: 3, partition_by: key")).await;
    warm(&by_key, 3).await;
    say(&by_key, "sk-a1", "a1 speaking").await;
    assert_eq!(recall(&by_key, "sk-a2").await, Vec::<String>::new(), "another key of team a: its own session");
    assert_eq!(recall(&by_key, "sk-a1").await, ["a1 speaking"]);
    let text = by_key.client.get(by_key.url("/sessions")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("sk-a") && !text.contains("\"a1\"") && !text.contains("\"a2\""), "{text}");
}

/// At the session limit another team's idle session makes room (closed, never handed over), and
/// a team's session left idle for `partition_idle_timeout` is closed and replaced by a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_of_other_teams_make_room_and_quiet_teams_lose_theirs() {
    let gw = Gateway::start(&two_teams("pool_size: 1, max_overflow: 0, partition_idle_timeout: 1s")).await;
    let first = warm(&gw, 1).await;
    let a_session = *ids(&sessions_in(&first, "warm")).iter().next().unwrap();
    say(&gw, "sk-a1", "team a's secret").await;
    // The only session is team a's; team b's request closes it and starts one of its own.
    assert_eq!(recall(&gw, "sk-b").await, Vec::<String>::new());
    let after = pool(&gw).await;
    let dead = sessions_in(&after, "dead");
    assert_eq!(ids(&dead), BTreeSet::from([a_session]), "{after:#}");
    assert_eq!(dead[0]["ended"], "closed: its slot went to another partition");
    assert_eq!(after["totals"]["cold_starts"], 1);

    // Team b's session goes quiet: closed after a second, a fresh one (no team) takes its place.
    let quiet = wait_for(&gw, "team b's session closed and replaced", |p| {
        sessions_in(p, "dead").len() == 2 && sessions_in(p, "warm").len() == 1
    })
    .await;
    assert!(sessions_in(&quiet, "dead").iter().any(|s| s["ended"] == "closed: its partition sent nothing for 1s"));
    assert!(sessions_in(&quiet, "warm")[0]["team"].is_null(), "{quiet:#}");
    assert_eq!(recall(&gw, "sk-a1").await, Vec::<String>::new(), "team a starts afresh");
}
