"""Shared by the cloud platform suites: a metered gateway in front of the platform mocks, and
what a test checks the metered tokens against."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import openai

from e2e_support import GatewayProcess
from metering_env import EVENT_TYPE, SOURCE, TEAM_A, by_request, wait_until
from openmeter_server import OpenMeterServer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def metered_gateway(work: Path, openmeter: OpenMeterServer, providers: dict, models: dict, env: dict[str, str]) -> GatewayProcess:
    cfg = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "keys": [{"key": TEAM_A, "team": "team-a", "id": "key-a"}],
        "teams": {"team-a": {"models": ["*"]}},
        "providers": providers,
        "models": {name: {"deployments": deployments} for name, deployments in models.items()},
        "metering": {
            "openmeter": {"url": openmeter.url, "timeout": "5s"},
            "event_type": EVENT_TYPE,
            "source": SOURCE,
            "outbox_dir": str(work / "outbox"),
            "batch": {"max_events": 200, "max_wait": "100ms"},
            "retry": {"initial_backoff": "100ms", "max_backoff": "1s"},
            "flush_timeout": "5s",
        },
    }
    return GatewayProcess(cfg, work, env=env).start()


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=TEAM_A, max_retries=0, timeout=30.0)


def rid() -> str:
    return "rq-" + uuid.uuid4().hex


def metered_tokens(openmeter: OpenMeterServer, request_id: str, timeout: float = 15.0) -> dict[str, int]:
    """The tokens metered for one request, by type (each type sent once)."""
    wait_until(lambda: request_id in by_request(openmeter.snapshot()), timeout, f"events for {request_id}")
    grouped = by_request(openmeter.snapshot())[request_id]
    assert all(len(events) == 1 for events in grouped.values()), grouped
    return {t: events[0]["data"]["tokens"] for t, events in grouped.items()}


def expected_tokens(usage: dict) -> dict[str, int]:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0) or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) or 0
    parts = {
        "input": usage["prompt_tokens"] - cached,
        "cache_read": cached,
        "output": usage["completion_tokens"] - reasoning,
        "reasoning": reasoning,
    }
    return {k: v for k, v in parts.items() if v > 0}


def usage_dict(usage: Any) -> dict:
    return usage.model_dump(exclude_none=True) if hasattr(usage, "model_dump") else dict(usage)


def stream_text(stream: Any) -> tuple[str, list, str | None, dict | None]:
    """Text, tool-call deltas, finish reason and usage of an openai SDK chat stream."""
    text, calls, finish, usage = "", [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = usage_dict(chunk.usage)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    return text, calls, finish, usage


def post(gateway: GatewayProcess, path: str, body: dict, **headers: str) -> httpx.Response:
    with gateway.http() as h:
        return h.post(path, json=body, headers={"Authorization": f"Bearer {TEAM_A}", **headers})
