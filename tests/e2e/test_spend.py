"""What requests cost, end to end: the real gateway binary with a priced deployment, the mock
upstream and the test OpenMeter. The `x-llm-gateway-cost` header of a whole answer, the
metering events' `data.cost` (which add up to it), a stream's cost in its events only, and
`llm_gateway_spend_total` per team and model — each equal to the cost worked out here by hand
from the usage the client saw, in integer micro-dollars."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from e2e_support import GatewayProcess
from metering_env import TEAM_A, TEAM_B, by_request, chat, config, wait_until
from mock_openai import MockOpenAI
from openmeter_server import OpenMeterServer, validate_event

# Per million tokens, as the config writes them; in micro-dollars per million tokens below.
PRICE = {"input": "2.50", "output": "10", "cached_input": "1.25"}
MICROS = {"input": 2_500_000, "output": 10_000_000, "cache_read": 1_250_000}
# The deployment whose streams the mock cuts before any usage: $1.25 in, $3.30 out per Mtok.
CUT_PRICE = {"input": "1.25", "output": "3.3"}


def cost(usage: dict) -> int:
    """Micro-dollars, rounded half up, from integers only."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    picos = (usage["prompt_tokens"] - cached) * MICROS["input"] + cached * MICROS["cache_read"]
    picos += usage["completion_tokens"] * MICROS["output"]
    return (picos + 500_000) // 1_000_000


@pytest.fixture(scope="module")
def gateway(upstream: MockOpenAI, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work: Path = tmp_path_factory.mktemp("spend")
    cfg = config(upstream.base_url, openmeter.url, work / "outbox")
    cfg["models"]["echo"]["deployments"][0]["price"] = PRICE
    cfg["models"]["split"]["deployments"][0]["free"] = True
    cfg["models"]["drop"]["deployments"][0]["price"] = CUT_PRICE
    cfg["teams"]["team-b"]["limits"] = {"daily_spend": "1"}
    proc = GatewayProcess(cfg, work)
    proc.start()
    yield proc
    proc.stop()


def spend(gateway: GatewayProcess, team: str, model: str) -> int:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    match = re.search(rf'^llm_gateway_spend_total{{team="{team}",model="{model}"}} (\d+)$', text, re.M)
    return int(match.group(1)) if match else 0


def test_whole_and_streamed_answers_cost_what_their_usage_says(gateway: GatewayProcess, openmeter: OpenMeterServer) -> None:
    expected_total = 0
    rids: dict[str, int] = {}
    with gateway.http() as c:
        for i, stream in enumerate([False, True, False]):
            text = "what does this cost " * (i * 7 + 1)
            rid, usage, r = chat(c, TEAM_A, "echo", text, stream=stream, **({"stream_options": {"include_usage": True}} if stream else {}))
            assert r.status_code == 200 and usage is not None, r
            want = cost(usage)
            assert want > 0
            if stream:
                assert "x-llm-gateway-cost" not in r.headers, "a stream's headers leave before its usage"
            else:
                assert r.headers["x-llm-gateway-cost"] == str(want), (usage, r.headers)
                assert r.headers["x-llm-gateway-cost-currency"] == "USD"
            rids[rid] = want
            expected_total += want
        # A free deployment costs nothing, and says so.
        _, _, r = chat(c, TEAM_B, "split", "free of charge")
        assert r.status_code == 200 and r.headers["x-llm-gateway-cost"] == "0"
    wait_until(lambda: set(rids) <= set(by_request(openmeter.snapshot())), 15, "the events")
    grouped = by_request(openmeter.snapshot())
    for rid, want in rids.items():
        events = [e for evs in grouped[rid].values() for e in evs]
        assert sum(e["data"]["cost"] for e in events) == want, events
        assert all(e["data"]["currency"] == "USD" for e in events)
    wait_until(lambda: spend(gateway, "team-a", "echo") == expected_total, 5, f"spend {expected_total} in /metrics")
    assert spend(gateway, "team-b", "split") == 0
    assert not openmeter.rejections, openmeter.rejections[:3]


def quota_spent(gateway: GatewayProcess, key: str) -> int:
    r = httpx.get(gateway.url + "/quota", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return r.json()["limits"]["team team-b"]["daily_spend"]["used"]


def test_a_stream_cut_before_its_usage_is_charged_from_the_local_count(gateway: GatewayProcess, openmeter: OpenMeterServer) -> None:
    before = quota_spent(gateway, TEAM_B)
    with gateway.http() as c:
        rid, usage, r = chat(c, TEAM_B, "drop", "cut me off", stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and usage is None, "the mock cuts the stream before any usage"
    # Counted here, o200k_base: the prompt is the reply primer 3 + one message (3 + "user" 1 +
    # "cut me off" 3) = 10 tokens; the output what was relayed, "Partial answer" = 2 tokens.
    # 10 × 1.25 + 2 × 3.3 = 12.5 + 6.6 = 19.1 µ$ → 19.
    want = 19
    wait_until(lambda: rid in by_request(openmeter.snapshot()), 15, "the cut stream's events")
    events = by_request(openmeter.snapshot())[rid]
    assert {t: (e[0]["data"]["tokens"], e[0]["data"]["estimated"]) for t, e in events.items()} == {
        "input": (10, True),
        "output": (2, True),
    }, events
    assert sum(e[0]["data"]["cost"] for e in events.values()) == want, events
    assert {e[0]["data"]["currency"] for e in events.values()} == {"USD"}
    # The team's money budget is charged the same amount.
    wait_until(lambda: quota_spent(gateway, TEAM_B) - before == want, 5, f"{want} µ$ charged to the budget")
    wait_until(lambda: spend(gateway, "team-b", "drop") == want, 5, f"spend {want} in /metrics")


def test_events_with_cost_validate_against_the_openmeter_event_schema(gateway: GatewayProcess, openmeter: OpenMeterServer) -> None:
    with gateway.http() as c:
        rid, usage, r = chat(c, TEAM_A, "echo", "schema of a cost")
    assert r.status_code == 200
    wait_until(lambda: rid in by_request(openmeter.snapshot()), 15, "the events")
    events = [e for evs in by_request(openmeter.snapshot())[rid].values() for e in evs]
    for event in events:
        # The same check the test OpenMeter applied when it accepted them (400 otherwise).
        assert validate_event(event, "event") == [], event
        data = event["data"]
        assert isinstance(data["cost"], int) and isinstance(data["cost_nanos"], int) and data["currency"] == "USD"
    assert not openmeter.rejections, openmeter.rejections[:3]
    # The check has teeth: what a meter could not sum, or a cost without its currency, is refused.
    good = events[0]
    for broken in ({"cost": 1.5}, {"cost": "12"}, {"cost_nanos": -1}, {"currency": None}, {"currency": "usd"}):
        bad = {**good, "data": {**good["data"], **broken}}
        assert validate_event(bad, "event"), broken
