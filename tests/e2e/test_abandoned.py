"""Requests the client abandons — an SDK timeout on a slow upstream, a killed process — are
finished all the same: the concurrency lease is released (the team is not locked out), the
in-flight gauge comes back down, and each is logged and metered once as 499 `client_gone`. And a
stream whose upstream never reports usage is charged by the limits what it relayed — the same
tokens metering reports — not the reservation's estimate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from e2e_support import GatewayProcess, _field
from metering_env import TEAM_A, by_request, config, wait_until
from mock_openai import MockOpenAI
from openmeter_server import OpenMeterServer

MAX_CONCURRENT = 2
ABANDONED = 5


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[MockOpenAI]:
    mock = MockOpenAI().start()
    mock.slow_first_byte_seconds = 1.0
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def gateway(slow_upstream: MockOpenAI, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    dirs = tmp_path_factory.mktemp("abandoned")
    cfg = config(slow_upstream.url + "/v1", openmeter.url, dirs / "outbox")
    cfg["keys"][0]["limits"] = {"max_concurrent": MAX_CONCURRENT, "daily_tokens": 10_000_000}
    cfg["models"]["slow"] = {"deployments": [{"provider": "upstream", "model": "slow-first-byte"}]}
    gw = GatewayProcess(cfg, dirs)
    gw.start()
    yield gw
    gw.stop()


def in_flight(gw: GatewayProcess) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    line = next(l for l in text.splitlines() if l.startswith("llm_gateway_in_flight_requests "))
    return float(line.split()[1])


def request_lines(gw: GatewayProcess) -> dict[str, dict]:
    out = {}
    for line in gw.stdout_lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and _field(obj, "message") == "request":
            out[_field(obj, "request_id")] = {k: _field(obj, k) for k in ("status", "error")}
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_abandoned_requests_release_their_lease_and_are_reported_once(
    gateway: GatewayProcess, openmeter: OpenMeterServer, stream: bool
) -> None:
    ids = []
    for _ in range(ABANDONED):
        rid = "rq-gone-" + uuid.uuid4().hex
        ids.append(rid)
        body = {"model": "slow", "messages": [{"role": "user", "content": f"slow answer please {rid}"}], "stream": stream}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(5, read=0.15),
                       headers={"Authorization": f"Bearer {TEAM_A}", "x-request-id": rid})

    # More requests were abandoned than the key may run at once: had their leases stayed, every
    # request of this key would now be refused.
    wait_until(lambda: in_flight(gateway) == 0, 10, "the in-flight gauge back at 0")
    ok = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                    json={"model": "echo", "messages": [{"role": "user", "content": "still served?"}]},
                    headers={"Authorization": f"Bearer {TEAM_A}"})
    assert ok.status_code == 200, ok.text

    wait_until(lambda: all(r in request_lines(gateway) for r in ids), 10, "a log line per abandoned request")
    logged = request_lines(gateway)
    assert all(logged[r]["status"] == 499 and logged[r]["error"] == "client_gone" for r in ids), [logged[r] for r in ids]

    # Metered once each: the prompt went upstream (counted here, flagged estimated); no answer came.
    wait_until(lambda: all(r in by_request(openmeter.snapshot()) for r in ids), 10, "usage events")
    events = by_request(openmeter.snapshot())
    for rid in ids:
        types = events[rid]
        assert set(types) == {"input"}, dict(types)
        assert len(types["input"]) == 1 and types["input"][0]["data"]["estimated"] is True
        assert types["input"][0]["data"]["tokens"] > 0


def daily_tokens_used(gw: GatewayProcess) -> int:
    quota = httpx.get(gw.url + "/quota", headers={"Authorization": f"Bearer {TEAM_A}"}, timeout=10).json()
    return next(scope["daily_tokens"]["used"] for scope in quota["limits"].values() if "daily_tokens" in scope)


def test_a_stream_without_usage_is_charged_what_it_relayed_as_metering_counts_it(
    gateway: GatewayProcess, openmeter: OpenMeterServer
) -> None:
    before = daily_tokens_used(gateway)
    rid = "rq-nousage-" + uuid.uuid4().hex
    # Echoed back: about 3,000 tokens of output, no max_tokens (the reservation assumes 1,024),
    # and the upstream reports no usage at all.
    prompt = rid + " " + " ".join(f"word{i}" for i in range(1500))
    body = {"model": "nousage", "messages": [{"role": "user", "content": prompt}], "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {TEAM_A}", "x-request-id": rid}) as r:
        assert r.status_code == 200
        relayed = b"".join(r.iter_bytes())
    assert b"word1499" in relayed

    wait_until(lambda: rid in by_request(openmeter.snapshot()), 10, "the stream's usage events")
    metered = {t: e[0]["data"]["tokens"] for t, e in by_request(openmeter.snapshot())[rid].items()}
    assert set(metered) == {"input", "output"} and metered["output"] > 2 * 1024, metered
    # Settlement is asynchronous (a tokenizer pass off the serving threads).
    wait_until(lambda: daily_tokens_used(gateway) - before == sum(metered.values()), 10,
               f"the limits charging the metered {sum(metered.values())} tokens (charged {daily_tokens_used(gateway) - before})")
