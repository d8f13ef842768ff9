"""Claude Code, the real CLI from npm, through the gateway:

- on a Claude deployment, Claude Code's request reaches the Anthropic upstream exactly as Claude
  Code sends it straight to that upstream — body, `?beta=true`, beta and version headers — but
  for `model`, and the streamed answer is Claude Code's result;
- on an OpenAI-compatible model that calls Claude Code's `Bash` tool and then answers from its
  result, the tool runs, the final text is Claude Code's result, and each of the two turns is
  metered once with the upstream's usage.

The requests Claude Code sends are kept as golden fixtures (tests/fixtures/claude_code/); a
change in what this version sends fails here, and the translation of those fixtures is checked
without the CLI in src/adapter/anthropic/fixtures.rs. Set CLAUDE_CODE_VERSION (tests/run.sh) to
run the same tests against another release; the golden comparison applies to the pinned one.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

import mock_anthropic as mo
from claude_code import AgentModel, RecordingProxy, claude_version, golden, run_claude, structure
from e2e_env import PROVIDER_KEY, TEAM_A_KEY, Gateway
from e2e_support import GatewayProcess
from metering_env import TEAM_A, by_request, config, wait_until
from mock_anthropic import MockAnthropic
from openmeter_server import OpenMeterServer

# Claude Code's default model name: what it sends decides thinking and effort settings, so the
# tests use a real Claude name (tests/e2e/e2e_env.py maps it to the mock).
MODEL = "claude-opus-5-5"


@pytest.fixture(scope="module")
def version() -> str:
    return claude_version()


def test_on_a_claude_deployment_the_request_arrives_as_claude_code_sent_it(
    gateway: Gateway, anthropic_upstream: MockAnthropic, tmp_path: Path, version: str
) -> None:
    marker = uuid.uuid4().hex
    prompt = f"Say hello {marker}"
    home, cwd = tmp_path / "home", tmp_path / "work"
    direct = run_claude(anthropic_upstream.base_url, PROVIDER_KEY, prompt, home=home, cwd=cwd, model=MODEL)
    assert direct.returncode == 0, direct.stderr
    sent = anthropic_upstream.find(marker)

    via = run_claude(gateway.url, TEAM_A_KEY, prompt, home=home, cwd=cwd, model=MODEL)
    assert via.returncode == 0, (via.stdout, via.stderr)
    received = anthropic_upstream.find(marker)
    assert received is not sent

    assert received.path == sent.path == "/v1/messages?beta=true"
    for header in ("anthropic-beta", "anthropic-version"):
        assert received.headers[header] == sent.headers[header], header
    assert "context-management-2025-06-27" in received.headers["anthropic-beta"]
    assert received.body == {**sent.body, "model": "claude-echo:opus"}
    # What broke Claude Code before: system turns among the messages, and fields the gateway
    # does not know.
    assert "system" in [m["role"] for m in received.body["messages"]]
    assert {"context_management", "output_config", "thinking"} <= set(received.body)

    assert via.result["is_error"] is False, via.result
    assert via.result["result"] == mo.answer_for(received.body)
    assert via.result["result"] == direct.result["result"]

    fixture = golden("messages_request", {"path": received.path, "headers": sent.headers, "body": sent.body}, version)
    if fixture is not None:
        assert structure(sent.body) == structure(fixture["body"]), "Claude Code sends a different request shape"
        assert fixture["headers"]["anthropic-beta"] == sent.headers["anthropic-beta"]


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentModel]:
    model = AgentModel(api_key="sk-agent-upstream-" + uuid.uuid4().hex).start()
    yield model
    model.stop()


@pytest.fixture(scope="module")
def agent_gateway(agent: AgentModel, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    dirs = tmp_path_factory.mktemp("claude-code-gateway")
    cfg = config(agent.base_url, openmeter.url, dirs / "outbox")
    cfg["providers"] = {
        "agent": {"dialect": "openai", "base_url": agent.base_url, "api_key_env": "AGENT_KEY", "stream_usage": "stream_options"}
    }
    cfg["models"] = {MODEL: {"deployments": [{"provider": "agent", "model": "agent-model"}]}}
    gw = GatewayProcess(cfg, dirs, env={"AGENT_KEY": agent.api_key})
    gw.start()
    yield gw
    gw.stop()


def test_on_an_openai_model_claude_code_runs_the_tool_and_gets_the_answer(
    agent_gateway: GatewayProcess, agent: AgentModel, openmeter: OpenMeterServer, tmp_path: Path, version: str
) -> None:
    marker = uuid.uuid4().hex
    cwd = tmp_path / "work"
    proxy = RecordingProxy(agent_gateway.url)
    try:
        run = run_claude(
            proxy.url, TEAM_A, f"Please RUN<<echo tool-ran-{marker} | tee ran.txt>> and report.",
            home=tmp_path / "home", cwd=cwd, model=MODEL, args=("--allowedTools", "Bash"),
        )
    finally:
        proxy.stop()
    assert run.returncode == 0, (run.stdout, run.stderr, agent.problems)
    assert not agent.problems
    assert (cwd / "ran.txt").read_text().strip() == f"tool-ran-{marker}", "the Bash tool ran"
    assert run.result["result"] == f"The command printed: tool-ran-{marker}"

    turns = [t for t in agent.turns if marker in str(t.body)]
    assert len(turns) == 2, [t.body["messages"][-1] for t in turns]
    first, second = turns
    assert [m["role"] for m in second.body["messages"]][-2:] == ["assistant", "tool"]
    assert second.body["messages"][-2]["tool_calls"][0]["function"]["name"] == "Bash"
    assert "context_management" not in first.body and "metadata" not in first.body
    assert "Bash" in [t["function"]["name"] for t in first.body["tools"]]

    # One input and one output event per turn, with the upstream's usage.
    messages = [r for r in proxy.requests if r["path"].startswith("/v1/messages") and marker in str(r["body"])]
    assert len(messages) == 2
    wait_until(lambda: len(openmeter.snapshot()) >= 4, 15, "metering events for both turns")
    events = by_request(openmeter.snapshot())
    metered = sorted((d["input"][0]["data"]["tokens"], d["output"][0]["data"]["tokens"]) for d in events.values()
                     if len(d["input"]) == 1 and len(d["output"]) == 1)
    assert metered == sorted((t.usage["prompt_tokens"], t.usage["completion_tokens"]) for t in turns)
    assert sum(len(v) for d in events.values() for v in d.values()) == 4, events

    for name, request in zip(("tool_turn_1", "tool_turn_2"), messages):
        fixture = golden(name, request, version)
        if fixture is not None:
            assert structure(request["body"]) == structure(fixture["body"]), name


def test_the_cli_backend_drives_the_real_claude_code(tmp_path: Path) -> None:
    """LLM_BACKEND=cli with the real binary: gateway A's session pool runs `claude` in its
    stream-json mode, and that CLI talks (through its own ANTHROPIC_BASE_URL) to gateway B, whose
    mock answers. The OpenAI SDK on gateway A gets B's answer, streamed and whole, from warm
    sessions."""
    import openai

    from claude_code import claude_bin

    inner_key = "sk-inner-" + uuid.uuid4().hex
    inner = GatewayProcess(
        {
            "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
            "keys": [{"key": inner_key, "team": "cli"}],
            "teams": {"cli": {"models": ["*"]}},
            "providers": {"mock": {"dialect": "mock"}},
            "models": {MODEL: {"deployments": [{"provider": "mock", "model": "mock-chat"}]}},
        },
        tmp_path / "inner",
    )
    inner.start()
    outer = GatewayProcess(
        {
            "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
            "keys": [{"key": TEAM_A_KEY, "team": "team-a"}],
            "teams": {"team-a": {"models": ["*"]}},
            "providers": {
                "claude-cli": {
                    "dialect": "cli",
                    "command": [claude_bin(), "-p", "--input-format", "stream-json", "--output-format", "stream-json",
                                "--verbose", "--include-partial-messages", "--model", MODEL, "--no-session-persistence"],
                    "env": {"HOME": str(tmp_path / "home"), "ANTHROPIC_BASE_URL": inner.url,
                            "ANTHROPIC_API_KEY": inner_key, "DISABLE_TELEMETRY": "1",
                            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"},
                    "cwd": str(tmp_path),
                    "pool_size": 1,
                    "keep_alive_prompt": "ping",
                }
            },
            "models": {"claude": {"deployments": [{"provider": "claude-cli", "model": "claude-code"}]}},
        },
        tmp_path / "outer",
    )
    (tmp_path / "home").mkdir()
    outer.start()
    try:
        wait_until(lambda: outer.http().get("/sessions").json()["pools"][0]["sessions"][0]["state"] == "warm", 90,
                   "a warm Claude Code session")
        client = openai.OpenAI(base_url=outer.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=90)
        marker = uuid.uuid4().hex
        chunks = list(client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": f"first {marker}"}], stream=True,
            stream_options={"include_usage": True},
        ))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Mock response to:") and f"first {marker}" in text, text
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0

        whole = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": f"second {marker}"}])
        assert f"second {marker}" in whole.choices[0].message.content
        assert whole.choices[0].finish_reason == "stop"
        pool = outer.http().get("/sessions").json()["pools"][0]
        assert pool["totals"]["cold_starts"] == 0, pool
    finally:
        outer.stop()
        inner.stop()


def test_count_tokens_and_the_start_up_check_answer_claude_code(gateway: Gateway) -> None:
    """What Claude Code calls besides /v1/messages: `HEAD /api/hello` before its first request
    (unless non-essential traffic is off) and `/v1/messages/count_tokens?beta=true` with the
    same body it sends to /v1/messages."""
    import json

    from claude_code import FIXTURES

    with gateway.http() as h:
        assert h.head("/api/hello").status_code == 200
        body = json.loads((FIXTURES / "messages_request.json").read_text())["body"]
        body.pop("stream"), body.pop("max_tokens")
        r = h.post("/v1/messages/count_tokens?beta=true", json=body,
                   headers={"x-api-key": TEAM_A_KEY, "anthropic-beta": "token-counting-2024-11-01"})
        assert r.status_code == 200, r.text
        tokens = r.json()["input_tokens"]
        # About four characters a token, over the system prompt, the turns and the tools.
        size = len(json.dumps([body["system"], body["messages"], body["tools"]]))
        assert size // 8 < tokens < size // 2, (tokens, size)
