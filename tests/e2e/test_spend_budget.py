"""Money budgets across replicas: two gateway processes on one real Valkey share a team's daily
budget of a few cents under concurrent load. Each request reserves its worst case (prompt plus
max_tokens at the dearest candidate's price) and settles to its real cost: the spend admitted
never passes the budget by more than one request's worst case, the refusal is a 429
`budget_exceeded` naming the budget, what was spent and when it resets, and /quota reads the same
spend on both replicas. An admin-made key carries a money budget of its own."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from e2e_support import GatewayProcess
from mock_openai import MockOpenAI
from test_limits import valkey_url  # noqa: F401  (the module's Valkey fixture)

KEY = "sk-e2e-spend-" + secrets.token_hex(12)
ADMIN = "sk-e2e-spend-admin-" + secrets.token_hex(12)
BUDGET = 20_000  # micro-dollars: "0.02"
PRICE = {"input": "2.5", "output": "100"}  # per Mtok: µ$ per token = 2.5 and 100
MAX_TOKENS = 100


def worst_case(prompt: int) -> int:
    return -(-(prompt * 2_500_000 + MAX_TOKENS * 100_000_000) // 1_000_000)


def replica(upstream: MockOpenAI, valkey: str, work: Path) -> GatewayProcess:
    cfg = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "valkey": {"url": valkey},
        "limits": {"replicas": 2},
        "admin": {"key_env": "E2E_SPEND_ADMIN"},
        "keys": [{"key": KEY, "team": "spenders", "id": "spend-key"}],
        "teams": {"spenders": {"models": ["*"], "limits": {"daily_spend": "0.02"}}, "others": {"models": ["*"]}},
        "providers": {"upstream": {"dialect": "openai", "base_url": upstream.base_url}},
        "models": {"echo": {"deployments": [{"provider": "upstream", "model": "echo", "price": PRICE}]}},
    }
    return GatewayProcess(cfg, work, env={"E2E_SPEND_ADMIN": ADMIN})


@pytest.fixture(scope="module")
def replicas(upstream: MockOpenAI, valkey_url: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    procs = [replica(upstream, valkey_url, tmp_path_factory.mktemp(f"spend{i}")) for i in range(2)]
    for p in procs:
        p.start()
    yield procs
    for p in procs:
        p.stop()


def ask(gw: GatewayProcess, key: str, i: int) -> httpx.Response:
    body = {"model": "echo", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": f"how much is request {i}"}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def quota(gw: GatewayProcess, key: str) -> dict:
    return httpx.get(gw.url + "/quota", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()


def test_two_replicas_share_a_daily_budget_under_concurrent_load(replicas: list[GatewayProcess]) -> None:
    answers: list[httpx.Response] = []
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: ask(replicas[i % 2], KEY, i), range(160)))
    admitted = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(admitted) + len(refused) == len(answers), {r.status_code for r in answers}
    assert admitted and refused, (len(admitted), len(refused))
    spent = sum(int(r.headers["x-llm-gateway-cost"]) for r in admitted)
    worst = max(worst_case(r.json()["usage"]["prompt_tokens"]) for r in admitted)
    # Reservations are worst cases, so the admitted spend stays under the budget outright; the
    # issue's bound (one request's worst case over) holds a fortiori.
    assert spent <= BUDGET + worst, (spent, worst)
    assert spent <= BUDGET, spent
    # Admitting stopped only when a worst case no longer fitted: what is left is less than one.
    assert BUDGET - spent < worst, (spent, worst)
    error = refused[0].json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota", error
    assert "daily spend budget of team spenders" in error["message"], error
    assert "budget 0.020000 USD" in error["message"] and "It resets at " in error["message"], error
    assert refused[0].headers["retry-after"], refused[0].headers

    def both() -> list[dict]:
        return [quota(gw, KEY)["limits"]["team spenders"]["daily_spend"] for gw in replicas]

    deadline = time.monotonic() + 5
    while (views := both()) and not (views[0] == views[1] and views[0]["used"] == spent):
        assert time.monotonic() < deadline, (views, spent)
        time.sleep(0.1)
    assert views[0]["limit"] == BUDGET and views[0]["remaining"] == BUDGET - spent
    assert views[0]["currency"] == "USD" and views[0]["resets_at"].endswith("T00:00:00Z")


def test_an_admin_made_key_has_a_money_budget_of_its_own(replicas: list[GatewayProcess]) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    r = httpx.post(replicas[0].url + "/admin/keys", json={"team": "others", "limits": {"daily_spend": "0.001"}}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["limits"]["daily_spend"] == "0.001000", r.json()
    key = r.json()["key"]
    # 1000 µ$: one worst case (~10 000 µ$) never fits.
    refused = ask(replicas[1], key, 0)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and "budget 0.001000 USD" in error["message"], error
    assert "spent 0.000000 USD" in error["message"], error


def test_an_admin_made_key_can_carry_a_price_ceiling(replicas: list[GatewayProcess]) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    limits = {"max_price_per_mtok": "100"}
    r = httpx.post(replicas[0].url + "/admin/keys", json={"team": "others", "limits": limits}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["limits"]["max_price_per_mtok"] == "100.000000", r.json()
    # echo costs 2.5 + 100 per Mtok: over the key's ceiling, on either replica.
    refused = ask(replicas[1], r.json()["key"], 0)
    assert refused.status_code == 403, refused.text
    assert "max_price_per_mtok is 100.000000 USD per million tokens" in refused.json()["error"]["message"]
