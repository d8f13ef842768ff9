"""The exact cache on `/v1/responses`, keyed like chat (the model group and the whole body but
how it is delivered), with the official ``openai`` SDK: a repeated request is served without
calling the upstream, as a new response (its own id, kept, so a chain can continue from it),
whole or streamed whatever the first one was, with its tokens not counted again; chains and
`no-cache` go upstream."""

from __future__ import annotations

import json
import time
import uuid
from typing import Iterator

import httpx
import openai
import pytest

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, gateway_config
from e2e_support import GatewayProcess
from mock_openai import MockOpenAI, closed_port
from test_responses import TEXT_EVENTS, assert_valid, event_schema, token_counts


@pytest.fixture(scope="module")
def gw(upstream: MockOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1")
    cfg["providers"]["native"] = {
        "dialect": "openai", "base_url": upstream.base_url, "api_key_env": PROVIDER_KEY_ENV, "responses_api": True,
    }
    cfg["models"] = {
        "cached-chat": {"deployments": [{"provider": "upstream", "model": "echo"}]},
        "cached-native": {"deployments": [{"provider": "native", "model": "responses-native"}]},
    }
    cfg["cache"] = {"exact": {"ttl": "1h"}}
    proc = GatewayProcess(cfg, tmp_path_factory.mktemp("responses-cache"), env={PROVIDER_KEY_ENV: PROVIDER_KEY})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30.0)


def stored(gw: GatewayProcess) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('llm_gateway_cache_stores_total{outcome="stored"} '):
            return float(line.split()[-1])
    return 0.0


def wait_stored(gw: GatewayProcess, before: float) -> None:
    deadline = time.monotonic() + 5
    while stored(gw) <= before:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.02)


def create(gw: GatewayProcess, **kw):
    raw = sdk(gw).responses.with_raw_response.create(**kw)
    return raw.headers.get("x-llm-gateway-cache"), raw.parse()


@pytest.mark.parametrize("model", ["cached-chat", "cached-native"])
def test_a_repeated_request_is_a_new_response_without_the_upstream(gw, upstream: MockOpenAI, model: str) -> None:
    marker = uuid.uuid4().hex[:8]
    request = {"model": model, "input": f"Cache me {marker}", "instructions": "Be brief."}
    before = stored(gw)
    status, first = create(gw, **request)
    assert status == "miss"
    wait_stored(gw, before)
    tokens = token_counts(gw, model)
    status, second = create(gw, **request)
    assert status == "hit" and len(upstream.with_marker(marker)) == 1
    assert second.id != first.id and second.id.startswith("resp_")
    assert (second.output_text, second.model, second.status) == (first.output_text, model, "completed")
    assert second.usage.total_tokens == first.usage.total_tokens
    assert token_counts(gw, model) == tokens, "a hit's tokens are not counted again"
    # Kept like any response: retrieved, and continued (a chain goes upstream, with the history).
    assert sdk(gw).responses.retrieve(second.id).output_text == second.output_text
    status, third = create(gw, model=model, input=f"More {marker}", previous_response_id=second.id)
    assert status == "bypass" and third.previous_response_id == second.id
    assert len(upstream.with_marker(f"More {marker}")) == 1
    # Something else in the body is another entry.
    status, _ = create(gw, **{**request, "instructions": "Be long."})
    assert status == "miss"


def test_a_stream_is_stored_and_served_again_streamed_or_whole(gw, upstream: MockOpenAI) -> None:
    marker = uuid.uuid4().hex[:8]
    request = {"model": "cached-chat", "input": f"Stream and cache {marker}"}
    before = stored(gw)
    with sdk(gw).responses.stream(**request) as stream:
        for _ in stream:
            pass
        first = stream.get_final_response()
    wait_stored(gw, before)
    with httpx.stream("POST", gw.base_url + "/responses", json={**request, "stream": True}, timeout=30,
                      headers={"authorization": f"Bearer {TEAM_A_KEY}"}) as r:
        assert r.headers["x-llm-gateway-cache"] == "hit"
        events = [json.loads(f.split("data: ", 1)[1]) for f in r.read().decode().split("\n\n") if f.strip()]
    assert [e["type"] for e in events] == TEXT_EVENTS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert_valid(event_schema(event["type"]), event)
    final = events[-1]["response"]
    assert final["id"] != first.id and final["output"][0]["content"][0]["text"] == first.output_text
    status, whole = create(gw, **request)
    assert status == "hit" and whole.output_text == first.output_text
    assert len(upstream.with_marker(marker)) == 1


def test_cache_controls_and_chains_go_upstream(gw, upstream: MockOpenAI) -> None:
    marker = uuid.uuid4().hex[:8]
    request = {"model": "cached-chat", "input": f"Fresh please {marker}"}
    before = stored(gw)
    _, first = create(gw, **request)
    wait_stored(gw, before)
    raw = sdk(gw).responses.with_raw_response.create(**request, extra_headers={"cache-control": "no-cache"})
    assert raw.headers["x-llm-gateway-cache"] == "bypass"
    raw = sdk(gw).responses.with_raw_response.create(**request, extra_headers={"x-llm-gateway-cache-control": "no-store"})
    assert raw.headers["x-llm-gateway-cache"] == "bypass"
    assert len(upstream.with_marker(marker)) == 3
    # The same turn continuing the same response twice: both upstream (the key does not see the
    # stored history).
    for _ in range(2):
        status, _ = create(gw, model="cached-chat", input=f"Again {marker}", previous_response_id=first.id)
        assert status == "bypass"
    assert len(upstream.with_marker(f"Again {marker}")) == 2
