"""Anthropic both ways, with the official SDKs against the real binary.

The ``anthropic`` SDK on ``/v1/messages`` (stream, non-stream, tool use, errors, count_tokens)
against an Anthropic-dialect upstream (passed through) and an OpenAI-dialect one (translated);
the ``openai`` SDK on a Claude-backed model (stream, tools, usage, overload).
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

import mock_anthropic as ma
import mock_openai as mo
from e2e_env import PROVIDER_KEY, TEAM_A_KEY, TEAM_B_KEY, Gateway
from e2e_support import raw_stream
from mock_anthropic import MockAnthropic

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME_TOOL = {"name": "get_time", "description": "Local time", "input_schema": {"type": "object", "properties": {}}}


def claude_client(gateway: Gateway, key: str = TEAM_A_KEY, **kw) -> anthropic.Anthropic:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 30.0)
    # As Claude Code does with ANTHROPIC_BASE_URL: the gateway's root, no /v1.
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, **kw)


# ------------------------------------------------ anthropic SDK, Anthropic upstream (passthrough)


def test_messages_non_stream_passthrough(gateway: Gateway, anthropic_upstream: MockAnthropic, marker: str) -> None:
    msg = claude_client(gateway).messages.create(
        model="claude-echo", max_tokens=100, system="Be terse.", messages=[{"role": "user", "content": f"hi {marker}"}]
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-echo"
    assert msg.content[0].type == "text" and msg.content[0].text == f"Echo: hi {marker}"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.cache_read_input_tokens == 10 and msg.usage.output_tokens > 0

    rec = anthropic_upstream.find(marker)
    assert rec.path == "/v1/messages"
    assert rec.headers["x-api-key"] == PROVIDER_KEY, "the upstream gets the provider's key, never the team's"
    # The API version the client writes its body in goes along (the provider's is the default).
    assert rec.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert "authorization" not in rec.headers
    assert rec.body["model"] == "claude-echo"
    assert rec.body["system"] == "Be terse."


def test_messages_stream_passthrough(gateway: Gateway, marker: str) -> None:
    with claude_client(gateway).messages.stream(
        model="claude-echo", max_tokens=100, messages=[{"role": "user", "content": f"stream {marker} ünïcödé ✓"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"Echo: stream {marker} ünïcödé ✓"
    assert final.model == "claude-echo"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens == len(text.split()) + 1


def test_messages_tool_use_round_trip_passthrough(gateway: Gateway, anthropic_upstream: MockAnthropic, marker: str) -> None:
    client = claude_client(gateway)
    question = {"role": "user", "content": f"Weather and time in Paris? {marker}"}
    with client.messages.stream(
        model="claude-tools", max_tokens=200, tools=[WEATHER_TOOL, TIME_TOOL], messages=[question]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        ("toolu_mock_weather", "get_weather", {"city": "Paris"}),
        ("toolu_mock_time", "get_time", {}),
    ]
    follow_up = [
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_mock_weather", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_mock_time", "content": "14:05"},
        ]},
    ]
    answer = client.messages.create(model="claude-tools", max_tokens=200, tools=[WEATHER_TOOL, TIME_TOOL], messages=follow_up)
    assert answer.content[0].text == "Tool results: 18C; 14:05"


def test_messages_thinking_and_max_tokens(gateway: Gateway) -> None:
    client = claude_client(gateway)
    msg = client.messages.create(model="claude-thinking", max_tokens=2000, messages=[{"role": "user", "content": "27*453?"}])
    assert msg.content[0].type == "thinking" and msg.content[0].signature == ma.SIGNATURE
    with client.messages.stream(model="claude-thinking", max_tokens=2000, messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_message()
    assert final.content[0].thinking == ma.THINKING and final.content[0].signature == ma.SIGNATURE
    cut = client.messages.create(model="claude-max", max_tokens=2, messages=[{"role": "user", "content": "a long story"}])
    assert cut.stop_reason == "max_tokens"


def test_messages_bearer_auth_and_count_tokens(gateway: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, auth_token=TEAM_A_KEY, max_retries=0)
    msg = client.messages.create(model="claude-echo", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "Echo: hi"
    counted = claude_client(gateway).messages.count_tokens(
        model="claude-echo", system="Be terse.", messages=[{"role": "user", "content": "Hello there, how are you?"}]
    )
    assert 5 <= counted.input_tokens <= 30


def test_messages_overload_is_529(gateway: Gateway) -> None:
    with pytest.raises(anthropic.OverloadedError) as e:
        claude_client(gateway).messages.create(
            model="claude-overloaded-msg", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"


def test_messages_overload_mid_stream_is_an_error_event(gateway: Gateway) -> None:
    with pytest.raises(anthropic.APIStatusError) as e:
        with claude_client(gateway).messages.stream(
            model="claude-overloaded-sse-msg", max_tokens=10, messages=[{"role": "user", "content": "one two three"}]
        ) as stream:
            for _ in stream:
                pass
    assert "Overloaded" in str(e.value)


# ------------------------------------------------ anthropic SDK, OpenAI-dialect upstream (translated)


def test_messages_on_openai_upstream_non_stream(gateway: Gateway, marker: str) -> None:
    text = f"translate me {marker}"
    msg = claude_client(gateway).messages.create(
        model="echo-model", max_tokens=50, system="Be terse.", messages=[{"role": "user", "content": text}]
    )
    assert msg.model == "echo-model"
    assert msg.content[0].text == f"Echo: {text}"
    assert msg.stop_reason == "end_turn"
    expected = mo.chat_usage([{"role": "system", "content": "Be terse."}, {"role": "user", "content": text}], f"Echo: {text}")
    assert msg.usage.input_tokens == expected["prompt_tokens"]
    assert msg.usage.output_tokens == expected["completion_tokens"]
    rec = next(r for r in reversed(gateway.upstream.requests) if r.contains(marker))
    assert rec.path == "/v1/chat/completions"
    assert rec.body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert rec.body["max_tokens"] == 50


def test_messages_on_openai_upstream_stream(gateway: Gateway, marker: str) -> None:
    text = f"stream translate {marker} ✓"
    with claude_client(gateway).messages.stream(
        model="split-model", max_tokens=50, messages=[{"role": "user", "content": text}]
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == f"Echo: {text}"
    expected = mo.chat_usage([{"role": "user", "content": text}], f"Echo: {text}")
    assert final.usage.input_tokens == expected["prompt_tokens"]
    assert final.usage.output_tokens == expected["completion_tokens"]
    assert final.stop_reason == "end_turn"
    rec = next(r for r in reversed(gateway.upstream.requests) if r.contains(marker))
    assert rec.body["stream_options"] == {"include_usage": True}, "usage is always asked for, to meter the stream"


def test_messages_tool_use_on_openai_upstream(gateway: Gateway) -> None:
    client = claude_client(gateway)
    for stream in (False, True):
        if stream:
            with client.messages.stream(
                model="tools-model", max_tokens=100, tools=[WEATHER_TOOL, TIME_TOOL],
                messages=[{"role": "user", "content": "Weather and time?"}],
            ) as s:
                msg = s.get_final_message()
        else:
            msg = client.messages.create(
                model="tools-model", max_tokens=100, tools=[WEATHER_TOOL, TIME_TOOL],
                messages=[{"role": "user", "content": "Weather and time?"}],
            )
        assert msg.stop_reason == "tool_use", stream
        uses = [(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"]
        expected = [(i, n, json.loads("".join(f))) for i, n, f in mo.TOOL_CALLS]
        assert uses == expected, stream


def test_messages_on_mock_dialect(gateway: Gateway) -> None:
    msg = claude_client(gateway).messages.create(model="mock-model", max_tokens=50, messages=[{"role": "user", "content": "Hello"}])
    assert msg.content[0].text == "Mock response to: Hello"


# ------------------------------------------------ errors in Anthropic's shape


@pytest.mark.parametrize(
    "key,body,exc,status,kind",
    [
        ("sk-wrong", {"model": "claude-echo"}, anthropic.AuthenticationError, 401, "authentication_error"),
        (TEAM_B_KEY, {"model": "claude-echo"}, anthropic.PermissionDeniedError, 403, "permission_error"),
        (TEAM_A_KEY, {"model": "no-such-model"}, anthropic.NotFoundError, 404, "not_found_error"),
        (TEAM_A_KEY, {"model": "claude-echo", "extra_body": {"temperature": 1.5}}, anthropic.BadRequestError, 400, "invalid_request_error"),
    ],
)
def test_messages_errors(gateway: Gateway, key: str, body: dict, exc: type, status: int, kind: str) -> None:
    request = {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], **body}
    with pytest.raises(exc) as e:
        claude_client(gateway, key).messages.create(**request)
    assert e.value.status_code == status
    assert e.value.body == {"type": "error", "error": {"type": kind, "message": e.value.body["error"]["message"]}}


def test_messages_missing_max_tokens_is_a_400_in_anthropic_shape(gateway: Gateway) -> None:
    r = gateway.request_once(
        "POST", "/v1/messages", headers={"x-api-key": TEAM_A_KEY},
        json={"model": "claude-echo", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]


# ------------------------------------------------ openai SDK on a Claude-backed model


def test_openai_sdk_on_claude(client: openai.OpenAI, anthropic_upstream: MockAnthropic, marker: str) -> None:
    resp = client.chat.completions.create(
        model="claude-echo",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"hello {marker}"}],
        temperature=1.8,
        stop=["END"],
    )
    assert resp.model == "claude-echo"
    assert resp.choices[0].message.content == f"Echo: hello {marker}"
    assert resp.choices[0].finish_reason == "stop"
    u = resp.usage
    assert u.prompt_tokens == u.total_tokens - u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == 10
    rec = anthropic_upstream.find(marker)
    assert rec.body["system"] == "Be terse."
    assert rec.body["temperature"] == 1.0, "OpenAI's 0..2 temperature is clamped to Anthropic's 0..1"
    assert rec.body["stop_sequences"] == ["END"]
    assert rec.body["max_tokens"] > 0, "Anthropic requires max_tokens; the gateway supplies one"


def test_openai_sdk_stream_on_claude(client: openai.OpenAI, marker: str) -> None:
    chunks = list(client.chat.completions.create(
        model="claude-echo", messages=[{"role": "user", "content": f"stream {marker}"}],
        stream=True, stream_options={"include_usage": True},
    ))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Echo: stream {marker}"
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_openai_sdk_tools_stream_on_claude(client: openai.OpenAI, gateway: Gateway) -> None:
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}
             for t in (WEATHER_TOOL, TIME_TOOL)]
    chunks = list(client.chat.completions.create(
        model="claude-tools", messages=[{"role": "user", "content": "Weather and time?"}], tools=tools, stream=True,
    ))
    calls: dict[int, dict] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if tc.index not in calls:
                assert tc.id and tc.function.name, "the first chunk of a call carries its id and name"
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            calls[tc.index]["arguments"] += tc.function.arguments or ""
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("toolu_mock_weather", "get_weather", {"city": "Paris"}),
        ("toolu_mock_time", "get_time", {}),
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # The tool results go back as tool messages; Claude gets tool_result blocks with the ids.
    resp = client.chat.completions.create(
        model="claude-tools", tools=tools,
        messages=[
            {"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()]},
            {"role": "tool", "tool_call_id": "toolu_mock_weather", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_mock_time", "content": "14:05"},
        ],
    )
    assert resp.choices[0].message.content == "Tool results: 18C; 14:05"


def test_openai_sdk_reasoning_on_claude(gateway: Gateway) -> None:
    r = gateway.request_once(
        "POST", "/v1/chat/completions", headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
        json={"model": "claude-thinking", "messages": [{"role": "user", "content": "27*453?"}]},
    )
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"] == ma.THINKING
    assert message["thinking_blocks"] == [{"type": "thinking", "thinking": ma.THINKING, "signature": ma.SIGNATURE}]


def test_openai_sdk_overload_on_claude(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="claude-overloaded", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503
    assert e.value.body["type"] == "overloaded_error"

    res = raw_stream(
        http, "/v1/chat/completions",
        {"model": "claude-overloaded-sse", "stream": True, "messages": [{"role": "user", "content": "one two"}]}, TEAM_A_KEY,
    )
    res.assert_terminated()
    assert res.chunks[-1]["error"]["type"] == "overloaded_error"
