"""Codex CLI (npm `@openai/codex`, installed by tests/run.sh) completes a tool-using turn through
the gateway's /v1/responses on a chat-only upstream: the mock (``shell-once``) answers the first
turn with a call to Codex's shell tool, Codex runs it and sends its output back, and the mock
answers with the tool's output, which Codex prints."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from e2e_env import TEAM_A_KEY, one_model_gateway
from e2e_support import REPO_ROOT, GatewayProcess
from mock_anthropic import MockAnthropic
from mock_openai import MockOpenAI

CODEX = Path(REPO_ROOT) / "target" / "npm-clients" / "node_modules" / ".bin" / "codex"


@pytest.fixture(scope="module")
def gw(
    upstream: MockOpenAI, anthropic_upstream: MockAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with one_model_gateway(upstream, anthropic_upstream.base_url, "codex-model", "shell-once", tmp_path_factory.mktemp("codex")) as proc:
        yield proc


def test_codex_runs_its_shell_tool_through_the_gateway(
    gw: GatewayProcess, upstream: MockOpenAI, tmp_path: Path
) -> None:
    assert CODEX.exists(), f"Codex CLI not installed at {CODEX} (tests/run.sh installs it)"
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f"""model_provider = "gw"
web_search = "disabled"
[model_providers.gw]
name = "Gateway"
base_url = "{gw.base_url}"
env_key = "GW_API_KEY"
wire_api = "responses"
stream_max_retries = 0
request_max_retries = 0
"""
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "CODEX_HOME": str(home), "GW_API_KEY": TEAM_A_KEY}
    done = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
         "-m", "codex-model", "Say hello with a shell command"],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The tool ran: its output went back upstream as the tool message answering the call.
    second = upstream.find(lambda r: r.model == "shell-once" and "call_mock_shell" in r.raw_body.decode()
                           and '"role": "tool"' in r.raw_body.decode().replace('":"', '": "'))
    assert second, "the second turn reached the upstream"
    tool = [m for m in second[-1].body["messages"] if m.get("role") == "tool"][-1]
    assert "Hello from the tool" in str(tool["content"])
    # And the final text arrived.
    assert "Tool results:" in done.stdout and "Hello from the tool" in done.stdout, done.stdout[-2000:]
