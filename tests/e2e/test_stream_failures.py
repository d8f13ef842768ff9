"""Upstream dies after the stream started: the client sees the chunks, then an SSE error event."""

from __future__ import annotations

import openai
import pytest

import mock_openai as m
from e2e_env import TEAM_A_KEY
from e2e_support import raw_stream
from openai_schemas import assert_valid

MSGS = [{"role": "user", "content": "tell me a long story"}]


def test_midstream_drop_raises_api_error_after_first_chunks(client: openai.OpenAI) -> None:
    received: list[str] = []
    stream = client.chat.completions.create(model="drop-model", messages=MSGS, stream=True)
    with pytest.raises(openai.APIError) as ei:
        for chunk in stream:
            assert chunk.model == "drop-model"
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "".join(m.DROP_PIECES), "chunks sent before the failure must reach the client"
    # the gateway must report the failure in-band (SSE error event), not by cutting the connection
    assert not isinstance(ei.value, openai.APIConnectionError), (
        f"SDK saw a broken connection ({type(ei.value).__name__}) instead of an SSE error event"
    )
    assert type(ei.value) is openai.APIError


def test_midstream_drop_wire_format(http) -> None:
    res = raw_stream(http, "/v1/chat/completions", {"model": "drop-wire-model", "messages": MSGS, "stream": True}, TEAM_A_KEY)
    assert res.status == 200
    res.assert_terminated()
    chunks = res.chunks
    assert len(chunks) == 3, f"expected 2 content chunks and 1 error event, got {res.datas}"
    for c in chunks[:2]:
        assert_valid("CreateChatCompletionStreamResponse", c)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:2]) == "".join(m.DROP_PIECES)
    assert_valid("ErrorResponse", chunks[2])


def test_completions_midstream_drop(http) -> None:
    res = raw_stream(http, "/v1/completions", {"model": "drop-completions-model", "prompt": "x", "stream": True}, TEAM_A_KEY)
    assert res.status == 200
    res.assert_terminated()
    *ok, err = res.chunks
    assert "".join(c["choices"][0]["text"] for c in ok) == "".join(m.DROP_PIECES)
    assert_valid("ErrorResponse", err)


def test_client_disconnect_mid_stream_leaves_gateway_healthy(gateway, client: openai.OpenAI) -> None:
    with gateway.http() as h:
        with h.stream(
            "POST", "/v1/chat/completions",
            json={"model": "split-model", "messages": [{"role": "user", "content": "a b c d e f g h i j k l"}], "stream": True},
            headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
        ) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # read a little, then hang up
    resp = client.chat.completions.create(model="echo-model", messages=[{"role": "user", "content": "still alive?"}])
    assert resp.choices[0].message.content == "Echo: still alive?"


@pytest.mark.parametrize(
    "model,exc,status",
    [
        ("err500-sse-model", openai.InternalServerError, (500, 502)),
        ("tgi-model", openai.UnprocessableEntityError, (422,)),
        ("err429-sse-model", openai.RateLimitError, (429,)),
    ],
)
def test_upstream_error_before_first_chunk_is_an_http_error(client: openai.OpenAI, http, model: str, exc: type, status: tuple) -> None:
    # the upstream failed before streaming anything: the client gets a plain HTTP error, not a 200 SSE stream
    with pytest.raises(exc) as ei:
        list(client.chat.completions.create(model=model, messages=MSGS, stream=True))
    assert ei.value.status_code in status
    assert_valid("ErrorResponse", ei.value.response.json())
