"""Settings shared by the fixtures and the tests: keys, models, the gateway config."""

from __future__ import annotations

import hashlib
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai

from e2e_support import GatewayProcess
from mock_openai import MockOpenAI

TEAM_A_KEY = "sk-e2e-team-a-" + secrets.token_hex(12)
TEAM_B_KEY = "sk-e2e-team-b-" + secrets.token_hex(12)
PROVIDER_KEY = "sk-e2e-upstream-" + secrets.token_hex(12)
PROVIDER_KEY_ENV = "E2E_UPSTREAM_API_KEY"

MAX_BODY_BYTES = 1024 * 1024
SLOW_FIRST_BYTE_TIMEOUT = "300ms"

# client-facing model name -> (provider, upstream model)
# Failure-producing tests each get their own deployment (distinct upstream model name; the mock
# ignores a ":tag" suffix), so that health state a gateway keeps per deployment (429 cool-down,
# circuit breaker) cannot leak from one test into another and the tests stay order-independent.
MODELS: dict[str, tuple[str, str]] = {
    "echo-model": ("upstream", "echo"),
    "split-model": ("upstream", "split"),
    "tools-model": ("upstream", "tools"),
    "err400-model": ("upstream", "err400"),
    "err429-model": ("upstream", "err429"),
    "err429-stream-model": ("upstream", "err429:stream"),
    "err429-sse-model": ("upstream", "err429:sse"),
    "err500-model": ("upstream", "err500"),
    "err500-sse-model": ("upstream", "err500:sse"),
    "tgi-model": ("upstream", "tgi-error"),
    "drop-model": ("upstream", "drop-midstream"),
    "drop-wire-model": ("upstream", "drop-midstream:wire"),
    "drop-completions-model": ("upstream", "drop-midstream:completions"),
    "drop-body-model": ("upstream", "drop-midstream:body"),
    "nousage-model": ("upstream", "no-usage"),
    "embed-model": ("upstream", "echo"),
    "slow-model": ("upstream-slow", "slow-first-byte"),
    "slow-stream-model": ("upstream-slow", "slow-first-byte:stream"),
    "refused-model": ("refused", "echo"),
    "refused-stream-model": ("refused", "echo:stream"),
    "mock-model": ("mock", "mock-chat"),
    "mock-embed": ("mock", "mock-embed"),
    # Claude deployments on the Anthropic-dialect mock (tests/e2e/mock_anthropic.py).
    "claude-echo": ("anthropic", "claude-echo"),
    "claude-tools": ("anthropic", "claude-tools"),
    "claude-thinking": ("anthropic", "claude-thinking"),
    "claude-max": ("anthropic", "claude-max"),
    "claude-overloaded": ("anthropic", "claude-overloaded"),
    "claude-overloaded-msg": ("anthropic", "claude-overloaded:msg"),
    "claude-overloaded-sse": ("anthropic", "claude-overloaded-sse"),
    "claude-overloaded-sse-msg": ("anthropic", "claude-overloaded-sse:msg"),
    # Claude Code's default model name (tests/e2e/test_claude_code.py).
    "claude-opus-5-5": ("anthropic", "claude-echo:opus"),
}
TEAM_B_MODELS = ["mock-model"]


@contextmanager
def one_model_gateway(upstream: MockOpenAI, anthropic_base_url: str, name: str, model: str, work: Path) -> Iterator[GatewayProcess]:
    """The suite's gateway config with `name` as its only model, served by the mock upstream's
    scripted `model` (a client's multi-turn conversation), started in `work` and stopped after."""
    from mock_openai import closed_port

    cfg = gateway_config(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1", anthropic_base_url=anthropic_base_url)
    cfg["models"] = {name: {"deployments": [{"provider": "upstream", "model": model}]}}
    proc = GatewayProcess(cfg, work, env={PROVIDER_KEY_ENV: PROVIDER_KEY})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def gateway_config(
    upstream_base_url: str, refused_base_url: str, anthropic_base_url: str = "http://127.0.0.1:9"
) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": MAX_BODY_BYTES, "shutdown_grace": "1s"},
        "keys": [
            {"key": TEAM_A_KEY, "team": "team-a"},
            {"key_sha256": hashlib.sha256(TEAM_B_KEY.encode()).hexdigest(), "team": "team-b", "id": "e2e-b"},
        ],
        "teams": {"team-a": {"models": ["*"]}, "team-b": {"models": list(TEAM_B_MODELS)}},
        "providers": {
            "upstream": {
                "dialect": "openai",
                "base_url": upstream_base_url,
                "api_key_env": PROVIDER_KEY_ENV,
                "stream_usage": "stream_options",
            },
            "upstream-slow": {
                "dialect": "openai",
                "base_url": upstream_base_url,
                "api_key_env": PROVIDER_KEY_ENV,
                "timeouts": {"first_byte": SLOW_FIRST_BYTE_TIMEOUT},
            },
            "refused": {"dialect": "openai", "base_url": refused_base_url, "api_key_env": PROVIDER_KEY_ENV},
            "mock": {"dialect": "mock"},
            # The vendor descriptor (x-api-key, anthropic-version) with the mock's address.
            "anthropic": {"vendor": "anthropic", "base_url": anthropic_base_url, "api_key_env": PROVIDER_KEY_ENV},
        },
        "models": {name: {"deployments": [{"provider": p, "model": m}]} for name, (p, m) in MODELS.items()},
    }


@dataclass
class Gateway:
    proc: GatewayProcess
    upstream: MockOpenAI

    @property
    def addr(self) -> str:
        assert self.proc.addr
        return self.proc.addr

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def base_url(self) -> str:
        return self.proc.base_url

    def client(self, key: str = TEAM_A_KEY, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30.0)
        return openai.OpenAI(base_url=self.base_url, api_key=key, **kw)

    def http(self, **kw: Any) -> httpx.Client:
        return self.proc.http(**kw)

    def request_once(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request on its own fresh connection (keep-alive reuse is tested separately)."""
        with self.proc.http() as h:
            return h.request(method, path, **kw)
