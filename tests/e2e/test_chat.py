"""Chat completions through the gateway: non-stream, stream, usage, split upstream, tool calls, mock dialect."""

from __future__ import annotations

import json
import math

import openai

import mock_openai as m
from e2e_env import TEAM_A_KEY, TEAM_B_KEY, Gateway
from e2e_support import raw_stream
from openai_schemas import assert_valid

UNICODE_TEXT = "héllo wörld ✓ 日本語 — ünïcödé split test"


def msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def chat_body(model: str, text: str, **extra: object) -> dict:
    return {"model": model, "messages": msgs(text), **extra}


# ---------------------------------------------------------------- non-stream


def test_chat_non_stream(gateway: Gateway, client: openai.OpenAI, http, marker: str) -> None:
    text = f"hello there {marker}"
    resp = client.chat.completions.create(model="echo-model", messages=msgs(text))
    assert resp.model == "echo-model"
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == f"Echo: {text}"
    assert resp.choices[0].finish_reason == "stop"
    expected = m.chat_usage(msgs(text), f"Echo: {text}")
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        expected["prompt_tokens"], expected["completion_tokens"], expected["total_tokens"]
    )

    r = http.post("/v1/chat/completions", json=chat_body("echo-model", text), headers={"Authorization": f"Bearer {TEAM_A_KEY}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert_valid("CreateChatCompletionResponse", body)
    assert body["model"] == "echo-model"


# ---------------------------------------------------------------- stream


def _sdk_stream(client: openai.OpenAI, model: str, text: str, **kw: object) -> list:
    return list(client.chat.completions.create(model=model, messages=msgs(text), stream=True, **kw))


def _content(chunks: list) -> str:
    return "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)


def _finish(chunks: list) -> str | None:
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(reasons) == 1, f"expected exactly one finish_reason, got {reasons}"
    return reasons[0]


def test_chat_stream_sdk(client: openai.OpenAI, marker: str) -> None:
    text = f"stream me please {marker}"
    chunks = _sdk_stream(client, "echo-model", text)
    assert _content(chunks) == f"Echo: {text}"
    assert _finish(chunks) == "stop"
    assert all(c.model == "echo-model" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "all chunks of one completion share the same id"


def test_chat_stream_wire_every_chunk_valid(gateway: Gateway, http, marker: str) -> None:
    text = f"wire check {marker}"
    res = raw_stream(http, "/v1/chat/completions", chat_body("echo-model", text, stream=True), TEAM_A_KEY)
    assert res.status == 200, res.raw[:500]
    assert res.headers["content-type"].startswith("text/event-stream")
    res.assert_terminated()
    chunks = res.chunks
    assert chunks, "no chunks before [DONE]"
    for c in chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
        assert c["model"] == "echo-model"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == f"Echo: {text}"


def test_stream_include_usage_single_usage_chunk(gateway: Gateway, client: openai.OpenAI, http, marker: str) -> None:
    text = f"count my tokens {marker}"
    expected = m.chat_usage(msgs(text), f"Echo: {text}")

    chunks = _sdk_stream(client, "echo-model", text, stream_options={"include_usage": True})
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1, f"expected one usage chunk, got {len(usage_chunks)}"
    u = usage_chunks[0]
    assert chunks[-1] is u, "the usage chunk must be the last chunk"
    assert u.choices == []
    assert (u.usage.prompt_tokens, u.usage.completion_tokens, u.usage.total_tokens) == (
        expected["prompt_tokens"], expected["completion_tokens"], expected["total_tokens"]
    )
    assert _content(chunks) == f"Echo: {text}"

    res = raw_stream(
        http, "/v1/chat/completions",
        chat_body("echo-model", text, stream=True, stream_options={"include_usage": True}), TEAM_A_KEY,
    )
    res.assert_terminated()
    wire = res.chunks
    for c in wire:
        assert_valid("CreateChatCompletionStreamResponse", c)
    assert wire[-1]["choices"] == [] and wire[-1]["usage"]["total_tokens"] == expected["total_tokens"]
    assert all(c.get("usage") is None for c in wire[:-1]), "only the final chunk may carry usage"


def test_stream_without_include_usage_forwards_no_usage_chunk(gateway: Gateway, client: openai.OpenAI, http, marker: str) -> None:
    text = f"no usage please {marker}"
    chunks = _sdk_stream(client, "echo-model", text)
    assert _content(chunks) == f"Echo: {text}"
    assert all(c.choices for c in chunks), "a chunk with empty choices (usage-only) was forwarded"
    assert all(c.usage is None for c in chunks)

    # the gateway asked upstream for usage anyway (provider stream_usage: stream_options)
    recs = gateway.upstream.with_marker(marker)
    assert recs, "upstream never received the request"
    for rec in recs:
        assert rec.body["stream"] is True
        assert rec.body.get("stream_options", {}).get("include_usage") is True, rec.body

    res = raw_stream(http, "/v1/chat/completions", chat_body("echo-model", text, stream=True), TEAM_A_KEY)
    res.assert_terminated()
    assert all(c["choices"] for c in res.chunks), "usage-only chunk present on the wire"
    assert all(c.get("usage") is None for c in res.chunks), "usage leaked into a chunk the client did not ask for"


def test_stream_options_other_fields_preserved_when_usage_injected(gateway: Gateway, client: openai.OpenAI, marker: str) -> None:
    text = f"obfuscation off {marker}"
    chunks = _sdk_stream(client, "echo-model", text, stream_options={"include_obfuscation": False})
    assert all(c.choices for c in chunks)
    (rec,) = gateway.upstream.with_marker(marker)
    assert rec.body["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_split_upstream_stream_reassembles_identically(gateway: Gateway, client: openai.OpenAI, http) -> None:
    kw = {"stream_options": {"include_usage": True}}
    plain = _sdk_stream(client, "echo-model", UNICODE_TEXT, **kw)
    split = _sdk_stream(client, "split-model", UNICODE_TEXT, **kw)
    assert _content(split) == _content(plain) == f"Echo: {UNICODE_TEXT}"
    deltas = lambda cs: [c.choices[0].delta.content for c in cs if c.choices]  # noqa: E731
    assert deltas(split) == deltas(plain), "split stream produced different deltas"
    assert _finish(split) == _finish(plain) == "stop"
    assert split[-1].usage is not None and plain[-1].usage is not None
    assert split[-1].usage.total_tokens == plain[-1].usage.total_tokens

    res = raw_stream(http, "/v1/chat/completions", chat_body("split-model", UNICODE_TEXT, stream=True), TEAM_A_KEY)
    res.assert_terminated()
    for c in res.chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
        assert c["model"] == "split-model"
    # SPEC: events are `data: <json>\n\n`
    assert b"\r" not in res.raw, "gateway re-emitted CR line endings; events must be `data: <json>\\n\\n`"


def test_tool_call_streaming_reassembly(gateway: Gateway, client: openai.OpenAI, marker: str) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
    ]
    stream = client.chat.completions.create(
        model="tools-model", messages=msgs(f"weather and time {marker}"), tools=tools,
        tool_choice="auto", parallel_tool_calls=True, stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for c in stream:
        assert c.model == "tools-model"
        if not c.choices:
            continue
        ch = c.choices[0]
        finish = ch.finish_reason or finish
        for tc in ch.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "type": None, "name": None, "arguments": ""})
            slot["id"] = tc.id or slot["id"]
            slot["type"] = tc.type or slot["type"]
            if tc.function is not None:
                slot["name"] = tc.function.name or slot["name"]
                slot["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1]
    assert [(calls[i]["id"], calls[i]["type"], calls[i]["name"]) for i in (0, 1)] == [
        ("call_mock_weather", "function", "get_weather"),
        ("call_mock_time", "function", "get_time"),
    ]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "c"}
    assert json.loads(calls[1]["arguments"]) == {"tz": "Europe/Paris"}
    (rec,) = gateway.upstream.with_marker(marker)
    assert rec.body["tools"] == tools and rec.body["tool_choice"] == "auto" and rec.body["parallel_tool_calls"] is True


def test_tool_call_non_stream(client: openai.OpenAI, http) -> None:
    resp = client.chat.completions.create(model="tools-model", messages=msgs("tools please"))
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls"
    assert [(t.id, t.function.name) for t in msg.tool_calls] == [("call_mock_weather", "get_weather"), ("call_mock_time", "get_time")]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris", "unit": "c"}
    r = http.post("/v1/chat/completions", json=chat_body("tools-model", "tools please"), headers={"Authorization": f"Bearer {TEAM_A_KEY}"})
    assert_valid("CreateChatCompletionResponse", r.json())


def test_upstream_without_usage_still_streams_cleanly(gateway: Gateway, client: openai.OpenAI, http, marker: str) -> None:
    text = f"no usage upstream {marker}"
    chunks = _sdk_stream(client, "nousage-model", text, stream_options={"include_usage": True})
    assert _content(chunks) == f"Echo: {text}"
    assert _finish(chunks) == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) <= 1
    if usage_chunks:  # a gateway may synthesise usage; if it does it must be well-formed and last
        assert chunks[-1] is usage_chunks[0] and chunks[-1].choices == []
    res = raw_stream(http, "/v1/chat/completions", chat_body("nousage-model", text, stream=True), TEAM_A_KEY)
    res.assert_terminated()
    for c in res.chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
    resp = client.chat.completions.create(model="nousage-model", messages=msgs(text))
    assert resp.choices[0].message.content == f"Echo: {text}"


# ---------------------------------------------------------------- mock dialect

# every message text has a length divisible by 4, so "ceil(chars/4)" is unambiguous
MOCK_MSGS = [
    {"role": "system", "content": "Answer in brief."},  # 16 chars
    {"role": "user", "content": "What is the capital of Peru?"},  # 28 chars
]


def _mock_expected_usage(messages: list[dict], answer: str) -> tuple[int, int]:
    for mm in messages:
        assert len(mm["content"]) % 4 == 0, "test data must keep per-message length divisible by 4"
    prompt = math.ceil(sum(len(mm["content"]) for mm in messages) / 4) + 3 * len(messages)
    return prompt, math.ceil(len(answer) / 4)


def test_mock_dialect_non_stream(client_b: openai.OpenAI, http) -> None:
    resp = client_b.chat.completions.create(model="mock-model", messages=MOCK_MSGS)
    answer = "Mock response to: " + MOCK_MSGS[-1]["content"]
    assert resp.model == "mock-model"
    assert resp.choices[0].message.content == answer
    assert resp.choices[0].finish_reason == "stop"
    prompt, completion = _mock_expected_usage(MOCK_MSGS, answer)
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (prompt, completion, prompt + completion)
    r = http.post("/v1/chat/completions", json={"model": "mock-model", "messages": MOCK_MSGS}, headers={"Authorization": f"Bearer {TEAM_B_KEY}"})
    assert r.status_code == 200
    assert_valid("CreateChatCompletionResponse", r.json())


def test_mock_dialect_no_user_message(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="mock-model", messages=[{"role": "system", "content": "only system"}])
    assert resp.choices[0].message.content == "Mock response."


def test_mock_dialect_stream(client_b: openai.OpenAI, http) -> None:
    answer = "Mock response to: " + MOCK_MSGS[-1]["content"]
    chunks = list(client_b.chat.completions.create(
        model="mock-model", messages=MOCK_MSGS, stream=True, stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert _content(chunks) == answer
    content_deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content and c.choices[0].delta.content.strip()]
    assert len(content_deltas) == len(answer.split()), f"expected one delta per word, got {content_deltas}"
    assert _finish(chunks) == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    prompt, completion = _mock_expected_usage(MOCK_MSGS, answer)
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (prompt, completion)
    res = raw_stream(http, "/v1/chat/completions", {"model": "mock-model", "messages": MOCK_MSGS, "stream": True}, TEAM_B_KEY)
    res.assert_terminated()
    for c in res.chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
        assert c["model"] == "mock-model"
        assert c["choices"], "usage-only chunk without include_usage"
