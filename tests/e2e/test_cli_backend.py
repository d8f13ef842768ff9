"""The cli backend through the real binary and the official openai SDK: a pool of fake
stream-json CLI sessions (tests/fake_cli.py), streaming with usage, an in-band error when a
session crashes mid-answer, LLM_BACKEND=cli without a `claude` on PATH, no session process
left behind after shutdown, and teams that never see each other's prompts, files or the
gateway's secrets through a session."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from e2e_env import TEAM_A_KEY, TEAM_B_KEY
from e2e_support import GatewayProcess

FAKE_CLI = str(Path(__file__).resolve().parents[1] / "fake_cli.py")
WAIT_S = 30.0


def cli_config(*fake_args: str, **provider: Any) -> dict:
    return {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "keys": [{"key": TEAM_A_KEY, "team": "team-a"}],
        "teams": {"team-a": {"models": ["*"]}},
        "providers": {
            "claude-cli": {
                "dialect": "cli",
                "command": [sys.executable, FAKE_CLI, *fake_args],
                "keep_alive_prompt": "ping",
                **provider,
            }
        },
        "models": {"claude": {"deployments": [{"provider": "claude-cli", "model": "claude-code"}]}},
    }


def pool_of(gw: GatewayProcess) -> dict:
    r = httpx.get(f"{gw.url}/sessions", timeout=10)
    assert r.status_code == 200
    return r.json()["pools"][0]


def wait_for(gw: GatewayProcess, what: str, ready: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        pool = pool_of(gw)
        if ready(pool):
            return pool
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {pool}"
        time.sleep(0.02)


def in_state(pool: dict, state: str) -> list[dict]:
    return [s for s in pool["sessions"] if s["state"] == state]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture()
def cli_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        cli_config("--include-partial-messages", "--crash-after-chunks", "2", "--trigger", "CRASH-ME", pool_size=2),
        tmp_path,
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def test_streams_through_warm_sessions_with_the_clis_usage(cli_gateway: GatewayProcess) -> None:
    wait_for(cli_gateway, "2 warm sessions", lambda p: len(in_state(p, "warm")) == 2)
    client = openai.OpenAI(base_url=cli_gateway.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30)
    prompt = "Write $(whoami) and `ls` back to me"
    stream = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"You said: {prompt}"
    assert all(c.model == "claude" for c in chunks)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1, "streamed in pieces"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.prompt_tokens == len(prompt) + 5 + 2  # the fake CLI's own figures
    assert usage.prompt_tokens_details.cached_tokens == 5

    whole = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "again"}])
    assert whole.choices[0].message.content == "You said: again"
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == 3  # "You ", "said: ", "again"

    pool = wait_for(cli_gateway, "both sessions warm again", lambda p: len(in_state(p, "warm")) == 2)
    assert sum(s["requests_served"] for s in pool["sessions"]) == 2
    assert pool["totals"]["cold_starts"] == 0
    health = httpx.get(f"{cli_gateway.url}/health", timeout=10).json()
    assert health["cli_pools"][0]["warm"] == 2


def test_a_crash_mid_answer_raises_in_the_sdk_and_the_next_request_succeeds(cli_gateway: GatewayProcess) -> None:
    wait_for(cli_gateway, "2 warm sessions", lambda p: len(in_state(p, "warm")) == 2)
    client = openai.OpenAI(base_url=cli_gateway.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30)
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "CRASH-ME please"}], stream=True
        ):
            received.append(chunk)
    assert received, "the error came after the first chunks"
    assert "exited with status 3" in str(raised.value)
    pool = wait_for(
        cli_gateway,
        "the crashed session replaced",
        lambda p: len(in_state(p, "warm")) == 2 and len(in_state(p, "dead")) == 1,
    )
    assert "crashing on purpose" in in_state(pool, "dead")[0]["last_error"]
    ok = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hello"}])
    assert ok.choices[0].message.content == "You said: hello"
    # The original service's session metric counts the crash and the replacement start.
    metrics = httpx.get(f"{cli_gateway.url}/metrics", timeout=10).text
    crashed = [ln for ln in metrics.splitlines() if ln.startswith("llm_sessions_total{") and 'status="crashed"' in ln]
    assert crashed and int(crashed[0].rsplit(" ", 1)[1]) >= 1, metrics
    started = [ln for ln in metrics.splitlines() if ln.startswith("llm_sessions_total{") and 'status="started"' in ln]
    assert int(started[0].rsplit(" ", 1)[1]) >= 3, "two pre-warmed sessions and the replacement"


def test_the_anthropic_sdk_on_v1_messages_is_served_by_the_pool(cli_gateway: GatewayProcess) -> None:
    wait_for(cli_gateway, "2 warm sessions", lambda p: len(in_state(p, "warm")) == 2)
    client = anthropic.Anthropic(base_url=cli_gateway.url, api_key=TEAM_A_KEY, max_retries=0, timeout=30)
    message = client.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "You said: hi"
    assert message.model == "claude"
    # The CLI's usage, in Anthropic's split again.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (len("hi"), 5)
    with client.messages.stream(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "stream me"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "You said: stream me"


def test_no_session_process_outlives_the_gateway(tmp_path: Path) -> None:
    gw = GatewayProcess(cli_config(pool_size=2), tmp_path)
    gw.start()
    try:
        pool = wait_for(gw, "2 warm sessions", lambda p: len(in_state(p, "warm")) == 2)
        pids = [s["pid"] for s in in_state(pool, "warm")]
        assert all(alive(pid) for pid in pids)
    finally:
        gw.stop()
    assert gw.proc is not None and gw.proc.returncode == 0, gw.output_tail()
    assert not [pid for pid in pids if alive(pid)], "CLI sessions survived the gateway"


def test_llm_backend_cli_without_claude_on_path_answers_502(tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    cfg = {
        "server": {"listen": "127.0.0.1:0"},
        "keys": [{"key": TEAM_A_KEY, "team": "team-a"}],
        "teams": {"team-a": {"models": ["*"]}},
    }
    env = {"LLM_BACKEND": "cli", "LLM_POOL_SIZE": "1", "PATH": str(empty_path)}
    gw = GatewayProcess(cfg, tmp_path / "gw", env=env)
    gw.start()
    try:
        pool = wait_for(gw, "a dead session", lambda p: len(in_state(p, "dead")) >= 1)
        assert pool["pool_size"] == 1
        assert "cannot start `claude`" in in_state(pool, "dead")[0]["last_error"]
        client = openai.OpenAI(base_url=gw.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30)
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model="any-model", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 502
        assert "cannot start `claude`" in raised.value.message
        assert httpx.get(f"{gw.url}/health", timeout=10).json()["status"] == "ok"
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway is still running"
    finally:
        gw.stop()


# --- tenancy (issue #26) ----------------------------------------------------------------------

ADMIN_KEY = "sk-admin-" + uuid.uuid4().hex
UPSTREAM_KEY = "sk-upstream-" + uuid.uuid4().hex
# What the gateway holds that no CLI session may see: the admin key and a provider key.
GATEWAY_SECRETS = {"LLM_GATEWAY_ADMIN_KEY": ADMIN_KEY, "E2E_TENANCY_UPSTREAM_KEY": UPSTREAM_KEY}


def two_teams(**provider: Any) -> dict:
    """Teams a and b on one cli provider whose fake CLI answers "RECALL" with what it has seen."""
    config = cli_config("--recall", "RECALL", **provider)
    config["keys"].append({"key": TEAM_B_KEY, "team": "team-b"})
    config["teams"]["team-b"] = {"models": ["*"]}
    config["admin"] = {"key_env": "LLM_GATEWAY_ADMIN_KEY"}
    config["providers"]["upstream"] = {
        "dialect": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "E2E_TENANCY_UPSTREAM_KEY"
    }
    return config


def recall(gw: GatewayProcess, key: str) -> dict:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "RECALL"}])
    text = answer.choices[0].message.content
    assert text.startswith("Recall: "), text
    return json.loads(text.removeprefix("Recall: "))


def say(gw: GatewayProcess, key: str, prompt: str) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": prompt}])
    assert answer.choices[0].message.content == f"You said: {prompt}"


def test_a_team_never_gets_a_session_that_served_another_team(tmp_path: Path) -> None:
    """One warm session: team a's request leaves its prompt in the session's conversation; team
    b's next request must not be served by that session (it would see the prompt)."""
    gw = GatewayProcess(two_teams(pool_size=1), tmp_path, env=GATEWAY_SECRETS)
    gw.start()
    try:
        wait_for(gw, "1 warm session", lambda p: len(in_state(p, "warm")) == 1)
        secret = f"team a's secret {uuid.uuid4().hex}"
        say(gw, TEAM_A_KEY, secret)
        seen_by_b = recall(gw, TEAM_B_KEY)
        assert not [p for p in seen_by_b["prompts"] if secret in p], f"team b saw team a's prompt: {seen_by_b}"
        assert secret not in json.dumps(seen_by_b)
        # Team a keeps its own session (and conversation): partitions reuse their sessions.
        assert recall(gw, TEAM_A_KEY)["prompts"] == [secret]
        # /sessions names each session's team, never a key.
        listing = httpx.get(f"{gw.url}/sessions", timeout=10).text
        teams = {s["team"] for s in pool_of(gw)["sessions"] if s["requests_served"]}
        assert teams == {"team-a", "team-b"}, listing
        assert TEAM_A_KEY not in listing and TEAM_B_KEY not in listing
    finally:
        gw.stop()


def test_sessions_have_their_own_directory_and_none_of_the_gateways_secrets(tmp_path: Path) -> None:
    """With one request per session (so no conversation is shared) and a configured `cwd`: a file
    team a's session left in its working directory is not in team b's, the directory goes with
    its session, and no session sees the gateway's secrets in its environment."""
    work = tmp_path / "cli-work"
    work.mkdir()
    gw = GatewayProcess(two_teams(pool_size=2, max_requests_per_session=1, cwd=str(work)), tmp_path, env=GATEWAY_SECRETS)
    gw.start()
    try:
        wait_for(gw, "2 warm sessions", lambda p: len(in_state(p, "warm")) == 2)
        secret = f"team a's file {uuid.uuid4().hex}"
        say(gw, TEAM_A_KEY, secret)
        seen_by_b = recall(gw, TEAM_B_KEY)
        assert secret not in json.dumps(seen_by_b["files"]), f"team b read team a's file: {seen_by_b}"
        leaked = set(GATEWAY_SECRETS) & set(seen_by_b["env"])
        assert not leaked, f"the gateway's secrets reached a CLI session: {sorted(leaked)}"
        assert not {"VALKEY_URL", "OPENMETER_TOKEN"} & set(seen_by_b["env"])
        assert seen_by_b["cwd"] != str(work) and Path(seen_by_b["cwd"]).parent == work, seen_by_b["cwd"]
        # Team a's session served its one request and was recycled: its directory is gone.
        deadline = time.monotonic() + WAIT_S
        while [p for p in work.rglob("prompt-*") if secret in p.read_text()]:
            assert time.monotonic() < deadline, f"team a's file outlived its session: {list(work.rglob('*'))}"
            time.sleep(0.05)
    finally:
        gw.stop()
    assert not list(work.iterdir()), f"session directories outlived the gateway: {list(work.iterdir())}"


def test_an_inherited_environment_still_leaves_the_secrets_out(tmp_path: Path) -> None:
    """`inherit_env: true` passes the gateway's environment less what is named like a secret;
    `pass_env` passes one such variable on purpose."""
    env = {**GATEWAY_SECRETS, "E2E_PLAIN_SETTING": "1", "E2E_CLI_OWN_TOKEN": "for the CLI"}
    gw = GatewayProcess(two_teams(pool_size=1, inherit_env=True, pass_env=["E2E_CLI_OWN_TOKEN"]), tmp_path, env=env)
    gw.start()
    try:
        wait_for(gw, "1 warm session", lambda p: len(in_state(p, "warm")) == 1)
        names = set(recall(gw, TEAM_A_KEY)["env"])
        assert {"E2E_PLAIN_SETTING", "E2E_CLI_OWN_TOKEN", "PATH"} <= names
        assert not set(GATEWAY_SECRETS) & names, sorted(names)
    finally:
        gw.stop()
