"""A team's price ceiling, end to end: `limits.max_price_per_mtok` keeps the team off every
deployment whose input + output price per million tokens is above it. With a cheap and a dear
deployment behind one model, the team only ever reaches the cheap upstream (the dear mock sees
no request at all); a model with only the dear deployment is refused with a 403 in the OpenAI
error shape naming the ceiling, while a team without a ceiling is served by it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from e2e_support import GatewayProcess
from mock_openai import MockOpenAI

CAPPED = "sk-e2e-ceiling-" + secrets.token_hex(12)
FREE = "sk-e2e-no-ceiling-" + secrets.token_hex(12)
CHEAP = {"input": "0.15", "output": "0.60"}  # 0.75 per Mtok in + out
DEAR = {"input": "3", "output": "15"}  # 18


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[MockOpenAI, MockOpenAI]]:
    cheap, dear = MockOpenAI().start(), MockOpenAI().start()
    yield cheap, dear
    cheap.stop()
    dear.stop()


@pytest.fixture(scope="module")
def gateway(upstreams: tuple[MockOpenAI, MockOpenAI], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    cheap, dear = upstreams
    cfg = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "keys": [{"key": CAPPED, "team": "frugal"}, {"key": FREE, "team": "lavish"}],
        "teams": {"frugal": {"models": ["*"], "limits": {"max_price_per_mtok": "1.00"}}, "lavish": {"models": ["*"]}},
        "providers": {
            "cheap": {"dialect": "openai", "base_url": cheap.base_url},
            "dear": {"dialect": "openai", "base_url": dear.base_url},
        },
        "models": {
            "both": {"deployments": [{"provider": "dear", "model": "echo", "price": DEAR}, {"provider": "cheap", "model": "echo", "price": CHEAP}]},
            "dear-only": {"deployments": [{"provider": "dear", "model": "echo", "price": DEAR}]},
        },
    }
    proc = GatewayProcess(cfg, tmp_path_factory.mktemp("ceiling"))
    proc.start()
    yield proc
    proc.stop()


def ask(gw: GatewayProcess, key: str, model: str, marker: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": f"ceiling {marker}"}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_team_with_a_ceiling_only_reaches_the_cheap_deployment(gateway: GatewayProcess, upstreams: tuple[MockOpenAI, MockOpenAI]) -> None:
    cheap, dear = upstreams
    marker = secrets.token_hex(6)
    for i in range(20):
        r = ask(gateway, CAPPED, "both", f"{marker}-{i}")
        assert r.status_code == 200, r.text
        assert r.headers["x-llm-gateway-deployment"] == "cheap/echo", r.headers
    assert len(cheap.with_marker(marker)) == 20
    assert dear.with_marker(marker) == [], "the dear upstream never hears from the capped team"
    # Without a ceiling both deployments take a share.
    other = secrets.token_hex(6)
    seen = {ask(gateway, FREE, "both", f"{other}-{i}").headers["x-llm-gateway-deployment"] for i in range(30)}
    assert seen == {"cheap/echo", "dear/echo"}, seen


def test_only_dear_deployments_get_a_clear_refusal_naming_the_ceiling(gateway: GatewayProcess, upstreams: tuple[MockOpenAI, MockOpenAI]) -> None:
    _, dear = upstreams
    marker = secrets.token_hex(6)
    r = ask(gateway, CAPPED, "dear-only", marker)
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "model_not_allowed", error
    assert "max_price_per_mtok is 1.000000 USD per million tokens" in error["message"], error
    assert "the cheapest: 18.000000 USD" in error["message"], error
    assert dear.with_marker(marker) == []
    served = ask(gateway, FREE, "dear-only", marker)
    assert served.status_code == 200 and served.headers["x-llm-gateway-deployment"] == "dear/echo"
