"""Helpers for the metering suites: a gateway with metering on, the test OpenMeter, metrics."""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openmeter_server import CONTENT_BATCH, OpenMeterServer  # noqa: E402

from e2e_support import GatewayProcess  # noqa: E402

TEAM_A = "sk-meter-a-" + uuid.uuid4().hex
TEAM_B = "sk-meter-b-" + uuid.uuid4().hex
EVENT_TYPE = "llm.tokens"
SOURCE = "llm-gateway/e2e"
TOKEN_TYPES = {"input", "output", "cache_read", "cache_write", "reasoning"}

# client model -> (provider, upstream model)
MODELS = {
    "echo": ("upstream", "echo"),
    "split": ("upstream", "split"),
    "nousage": ("upstream", "no-usage"),
    "slow": ("upstream", "slow-stream"),
    "drop": ("upstream", "drop-midstream"),
    "embed": ("upstream", "echo"),
    "embed-nousage": ("upstream", "no-usage"),
    "mock": ("mock", "mock-chat"),
}


def config(upstream_url: str, openmeter_url: str, outbox: Path, **metering: Any) -> dict:
    m: dict[str, Any] = {
        "openmeter": {"url": openmeter_url, "timeout": "5s"},
        "event_type": EVENT_TYPE,
        "source": SOURCE,
        "outbox_dir": str(outbox),
        "batch": {"max_events": 200, "max_wait": "100ms"},
        "retry": {"initial_backoff": "100ms", "max_backoff": "1s"},
        "flush_timeout": "5s",
    }
    m.update(metering)
    return {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "keys": [{"key": TEAM_A, "team": "team-a", "id": "key-a"}, {"key": TEAM_B, "team": "team-b", "id": "key-b"}],
        "teams": {"team-a": {"models": ["*"]}, "team-b": {"models": ["*"]}},
        "providers": {
            "upstream": {"dialect": "openai", "base_url": upstream_url, "stream_usage": "stream_options"},
            "mock": {"dialect": "mock"},
        },
        "models": {name: {"deployments": [{"provider": p, "model": m}]} for name, (p, m) in MODELS.items()},
        "metering": m,
    }


def metric(gateway: GatewayProcess, name: str) -> float:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def chat(client: httpx.Client, key: str, model: str, text: str, stream: bool = False, **extra: Any) -> tuple[str, dict | None, httpx.Response]:
    """One chat request with a fresh request id; returns (request id, usage the client saw, response)."""
    rid = "rq-" + uuid.uuid4().hex
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}
    headers = {"Authorization": f"Bearer {key}", "x-request-id": rid}
    if not stream:
        r = client.post("/v1/chat/completions", json=body, headers=headers)
        return rid, (r.json().get("usage") if r.status_code == 200 else None), r
    usage = None
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        raw = b"".join(r.iter_bytes())
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            import json

            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
    return rid, usage, r


def load(gateway: GatewayProcess, n: int, key: str = TEAM_A, workers: int = 8) -> list[str]:
    """`n` non-stream chat requests, all answered 200; returns their request ids."""

    def one(i: int) -> str:
        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            rid, usage, r = chat(c, key, "echo", f"load request number {i}")
            assert r.status_code == 200, r.text
            assert usage is not None
            return rid

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(n)))


def by_request(events: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """request id -> token type -> events."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        out[e["data"]["request_id"]][e["data"]["type"]].append(e)
    return out


def assert_exactly_once(server: OpenMeterServer, request_ids: list[str], types: set[str] = {"input", "output"}) -> None:
    """Every request has exactly one event per expected type at the server (after dedup on
    (source, id)), and there is nothing else."""
    events = server.snapshot()
    grouped = by_request(events)
    missing = [rid for rid in request_ids if set(grouped.get(rid, {})) != types]
    assert not missing, f"{len(missing)} requests lack events, e.g. {missing[:3]}: {[dict(grouped.get(m, {})) for m in missing[:1]]}"
    extra = set(grouped) - set(request_ids)
    assert not extra, f"events for unknown requests: {list(extra)[:3]}"
    for rid in request_ids:
        for t in types:
            assert len(grouped[rid][t]) == 1, f"{rid} has {len(grouped[rid][t])} {t} events"
    assert len(events) == len(request_ids) * len(types)
    assert all(r.content_type == CONTENT_BATCH for r in server.received), {r.content_type for r in server.received}
    assert not server.rejections, server.rejections[:3]
