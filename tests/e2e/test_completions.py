"""Legacy /v1/completions through the gateway."""

from __future__ import annotations

import openai

import mock_openai as m
from e2e_env import TEAM_A_KEY, Gateway
from e2e_support import raw_stream
from openai_schemas import assert_valid


def test_completions_non_stream(gateway: Gateway, client: openai.OpenAI, http, marker: str) -> None:
    prompt = f"Once upon a time {marker}"
    resp = client.completions.create(model="echo-model", prompt=prompt, max_tokens=16)
    assert resp.object == "text_completion"
    assert resp.model == "echo-model"
    assert resp.choices[0].text == f"Echo: {prompt}"
    assert resp.choices[0].finish_reason == "stop"
    expected = m.completion_usage(prompt, f"Echo: {prompt}")
    assert resp.usage is not None and resp.usage.total_tokens == expected["total_tokens"]
    recs = gateway.upstream.with_marker(marker)
    assert recs and all(r.path == "/v1/completions" and r.model == "echo" for r in recs)
    assert recs[0].body["max_tokens"] == 16

    r = http.post("/v1/completions", json={"model": "echo-model", "prompt": prompt}, headers={"Authorization": f"Bearer {TEAM_A_KEY}"})
    assert r.status_code == 200
    assert_valid("CreateCompletionResponse", r.json())
    assert r.json()["model"] == "echo-model"


def test_completions_stream(client: openai.OpenAI, http, marker: str) -> None:
    prompt = f"Stream a story {marker}"
    chunks = list(client.completions.create(model="echo-model", prompt=prompt, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == f"Echo: {prompt}"
    assert all(c.model == "echo-model" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert all(c.choices for c in chunks), "usage-only chunk forwarded although the client did not ask"

    res = raw_stream(http, "/v1/completions", {"model": "echo-model", "prompt": prompt, "stream": True}, TEAM_A_KEY)
    assert res.status == 200
    assert res.headers["content-type"].startswith("text/event-stream")
    res.assert_terminated()
    for c in res.chunks:
        assert_valid("CreateCompletionStreamResponse", c)
        assert c["object"] == "text_completion" and c["model"] == "echo-model"


def test_completions_stream_include_usage(client: openai.OpenAI, marker: str) -> None:
    prompt = f"Count these words {marker}"
    chunks = list(client.completions.create(
        model="split-model", prompt=prompt, stream=True, stream_options={"include_usage": True},
    ))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == f"Echo: {prompt}"
    usage = [c for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0] is chunks[-1] and chunks[-1].choices == []
    expected = m.completion_usage(prompt, f"Echo: {prompt}")
    assert (usage[0].usage.prompt_tokens, usage[0].usage.completion_tokens, usage[0].usage.total_tokens) == (
        expected["prompt_tokens"], expected["completion_tokens"], expected["total_tokens"]
    )
