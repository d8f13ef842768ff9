"""Sanity checks of the mock upstream itself (no gateway involved).

If these fail, gateway test failures are not trustworthy: the mock must speak
the OpenAI wire protocol exactly.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

import mock_openai as m
from e2e_support import parse_sse
from openai_schemas import assert_valid

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo wörld ✓ 日本 end"}]


@pytest.fixture(scope="module")
def direct(upstream: m.MockOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.base_url, api_key="sk-direct", max_retries=0, timeout=10)


def _raw(upstream: m.MockOpenAI, path: str, body: dict) -> httpx.Response:
    return httpx.post(upstream.base_url + path, json=body, timeout=10)


def test_chat_non_stream(direct: openai.OpenAI, upstream: m.MockOpenAI) -> None:
    r = _raw(upstream, "/chat/completions", {"model": "echo", "messages": MSGS})
    assert r.status_code == 200
    assert_valid("CreateChatCompletionResponse", r.json())
    resp = direct.chat.completions.create(model="echo", messages=MSGS)
    assert resp.choices[0].message.content == "Echo: héllo wörld ✓ 日本 end"
    assert resp.usage is not None and resp.usage.total_tokens == m.chat_usage(MSGS, m.echo_answer(MSGS))["total_tokens"]


@pytest.mark.parametrize("model", ["echo", "split"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_wire(upstream: m.MockOpenAI, model: str, include_usage: bool) -> None:
    body = {"model": model, "messages": MSGS, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    r = _raw(upstream, "/chat/completions", body)
    assert r.headers["content-type"].startswith("text/event-stream")
    events, comments = parse_sse(r.content)
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    for c in chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == m.echo_answer(MSGS)
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    else:
        assert all("usage" not in c for c in chunks)
    if model == "split":
        assert b"\r\n" in r.content and "keep-alive" in comments
    else:
        assert b"\r" not in r.content and not comments


def test_split_equals_echo_via_sdk(direct: openai.OpenAI) -> None:
    def run(model: str) -> tuple[list[str], str | None]:
        stream = direct.chat.completions.create(model=model, messages=MSGS, stream=True)
        deltas, finish = [], None
        for c in stream:
            deltas.append(c.choices[0].delta.content or "")
            finish = c.choices[0].finish_reason or finish
        return deltas, finish

    assert run("split") == run("echo")


def test_tools_stream(direct: openai.OpenAI) -> None:
    calls: dict[int, dict] = {}
    finish = None
    for c in direct.chat.completions.create(model="tools", messages=MSGS, stream=True):
        ch = c.choices[0]
        finish = ch.finish_reason or finish
        for tc in ch.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
            slot["id"] = tc.id or slot["id"]
            if tc.function:
                slot["name"] = tc.function.name or slot["name"]
                slot["args"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert [calls[i]["id"] for i in sorted(calls)] == [t[0] for t in m.TOOL_CALLS]
    assert json.loads(calls[0]["args"]) == {"city": "Paris", "unit": "c"}


def test_completions_and_embeddings_and_models(direct: openai.OpenAI, upstream: m.MockOpenAI) -> None:
    r = _raw(upstream, "/completions", {"model": "echo", "prompt": "say hi"})
    assert_valid("CreateCompletionResponse", r.json())
    text = "".join(c.choices[0].text for c in direct.completions.create(model="echo", prompt="say hi", stream=True) if c.choices)
    assert text == "Echo: say hi"
    r = _raw(upstream, "/embeddings", {"model": "echo", "input": ["a", "b"], "encoding_format": "float"})
    assert_valid("CreateEmbeddingResponse", r.json())
    e = direct.embeddings.create(model="echo", input=["a", "b"])  # SDK asks base64
    assert e.data[0].embedding == pytest.approx(m.embedding_vector("a"))
    assert_valid("ListModelsResponse", httpx.get(upstream.base_url + "/models").json())


@pytest.mark.parametrize(
    "model,exc,status",
    [
        ("err400", openai.BadRequestError, 400),
        ("err429", openai.RateLimitError, 429),
        ("err500", openai.InternalServerError, 500),
        ("tgi-error", openai.UnprocessableEntityError, 422),
    ],
)
def test_error_modes(direct: openai.OpenAI, model: str, exc: type, status: int) -> None:
    with pytest.raises(exc) as ei:
        direct.chat.completions.create(model=model, messages=MSGS)
    assert ei.value.status_code == status
    if model == "err429":
        assert ei.value.response.headers["retry-after"] == m.ERR429_RETRY_AFTER
    if model == "tgi-error":
        assert ei.value.response.json() == {"error": m.TGI_ERROR_MESSAGE, "error_type": "validation"}
    else:
        assert_valid("ErrorResponse", ei.value.response.json())


def test_drop_midstream_breaks_the_connection(direct: openai.OpenAI) -> None:
    got = []
    # openai>=2 wraps the transport error in APIConnectionError; older releases let httpx's error through
    with pytest.raises((openai.APIConnectionError, httpx.TransportError)):
        for c in direct.chat.completions.create(model="drop-midstream", messages=MSGS, stream=True):
            got.append(c.choices[0].delta.content)
    assert "".join(got) == "".join(m.DROP_PIECES)


def test_slow_first_byte_and_recording() -> None:
    with m.MockOpenAI() as mock:
        mock.slow_first_byte_seconds = 0.5
        t0 = time.monotonic()
        r = httpx.post(
            mock.base_url + "/chat/completions",
            json={"model": "slow-first-byte", "messages": MSGS, "seed": 7},
            headers={"Authorization": "Bearer sk-x"},
            timeout=10,
        )
        assert time.monotonic() - t0 >= 0.5
        assert r.status_code == 200
        (rec,) = mock.requests
        assert rec.path == "/v1/chat/completions"
        assert rec.headers["authorization"] == "Bearer sk-x"
        assert rec.body["seed"] == 7 and rec.model == "slow-first-byte"


def test_tag_suffix_selects_the_same_behaviour(direct: openai.OpenAI) -> None:
    resp = direct.chat.completions.create(model="echo:tagged", messages=MSGS)
    assert resp.model == "echo:tagged"
    assert resp.choices[0].message.content == m.echo_answer(MSGS)
    with pytest.raises(openai.RateLimitError):
        direct.chat.completions.create(model="err429:other", messages=MSGS)
    with pytest.raises(openai.NotFoundError):
        direct.chat.completions.create(model="nonexistent", messages=MSGS)
