"""The Gemini API end to end: the official SDKs against the real binary, in front of a mock
Gemini that checks the API key and the body's shape; the usage it reports metered exactly."""

from __future__ import annotations

import json
import secrets
from typing import Iterator

import anthropic
import pytest

import mock_gemini as mg
from cloud_env import WEATHER, client, expected_tokens, metered_gateway, metered_tokens, post, rid, stream_text, usage_dict
from e2e_support import GatewayProcess
from metering_env import TEAM_A
from mock_gemini import MockGemini
from openmeter_server import OpenMeterServer

KEY = "AIza-e2e-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def gemini() -> Iterator[MockGemini]:
    server = MockGemini(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(gemini: MockGemini, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    providers = {
        "gemini": {"dialect": "gemini", "base_url": gemini.base_url},
        "gemini-badkey": {"dialect": "gemini", "base_url": gemini.base_url, "api_key_env": "E2E_WRONG_GEMINI_KEY"},
    }
    models = {
        "gemini-2.5-pro": [{"provider": "gemini", "model": "gemini-echo"}],
        "gemini-tools": [{"provider": "gemini", "model": "gemini-tools"}],
        "gemini-badkey": [{"provider": "gemini-badkey", "model": "gemini-echo"}],
    }
    env = {"GEMINI_API_KEY": KEY, "E2E_WRONG_GEMINI_KEY": "AIza-wrong"}
    proc = metered_gateway(tmp_path_factory.mktemp("gemini"), openmeter, providers, models, env)
    yield proc
    proc.stop()


def test_chat_non_stream_reaches_gemini_with_its_key_and_is_metered(gateway: GatewayProcess, gemini: MockGemini, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"hello {marker}"}]
    reply = client(gateway).chat.completions.create(
        model="gemini-2.5-pro", messages=messages, temperature=0.2, max_tokens=50, extra_headers={"x-request-id": request_id}
    )
    assert reply.choices[0].message.content == f"Echo: hello {marker}"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "gemini-2.5-pro"
    sent = gemini.find(marker)
    assert sent.path == "/v1beta/models/gemini-echo:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "authorization" not in sent.headers
    assert sent.body["systemInstruction"]["parts"] == [{"text": "Be terse."}]
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": f"hello {marker}"}]}]
    assert sent.body["generationConfig"]["maxOutputTokens"] == 50
    want = mg.expected_usage(sent.body, [{"text": f"Echo: hello {marker}"}])
    got = usage_dict(reply.usage)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert got[key] == want[key], (got, want)
    assert got["prompt_tokens_details"]["cached_tokens"] == mg.CACHED
    assert got["completion_tokens_details"]["reasoning_tokens"] == mg.THOUGHTS
    assert metered_tokens(openmeter, request_id) == expected_tokens(want)


def test_chat_stream_via_sse_with_usage_metered_once(gateway: GatewayProcess, gemini: MockGemini, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    stream = client(gateway).chat.completions.create(
        model="gemini-2.5-pro",
        messages=[{"role": "user", "content": f"a longer streamed question {marker}"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": request_id},
    )
    text, calls, finish, usage = stream_text(stream)
    assert text == f"Echo: a longer streamed question {marker}" and not calls and finish == "stop"
    sent = gemini.find(marker)
    assert sent.path == "/v1beta/models/gemini-echo:streamGenerateContent" and sent.query == "alt=sse"
    want = mg.expected_usage(sent.body, [{"text": text}])
    assert usage and usage["prompt_tokens"] == want["prompt_tokens"] and usage["completion_tokens"] == want["completion_tokens"]
    assert metered_tokens(openmeter, request_id) == expected_tokens(want)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(gateway: GatewayProcess, gemini: MockGemini, stream: bool) -> None:
    marker = secrets.token_hex(4)
    messages: list[dict] = [{"role": "user", "content": f"weather in Paris? {marker}"}]
    c = client(gateway)
    if stream:
        _, deltas, finish, _ = stream_text(c.chat.completions.create(model="gemini-tools", messages=messages, tools=[WEATHER], stream=True))
        assert finish == "tool_calls" and len(deltas) == 1
        call_id, name, arguments = deltas[0].id, deltas[0].function.name, deltas[0].function.arguments
    else:
        first = c.chat.completions.create(model="gemini-tools", messages=messages, tools=[WEATHER])
        assert first.choices[0].finish_reason == "tool_calls"
        call = first.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"} and call_id.startswith("call_")
    sent = gemini.find(marker)
    assert sent.body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temp_c": 21})},
    ]
    final = c.chat.completions.create(model="gemini-tools", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == 'The weather: {"temp_c": 21}'
    turns = gemini.requests[-1].body["contents"]
    assert [t["role"] for t in turns] == ["user", "model", "user"]
    # The call goes back with the thought signature Gemini gave it, the result under its name.
    assert turns[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert turns[1]["parts"][0]["thoughtSignature"] == "c2lnbmF0dXJl"
    assert turns[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_anthropic_sdk_messages_through_gemini(gateway: GatewayProcess, gemini: MockGemini, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=TEAM_A, max_retries=0, timeout=30.0)
    msg = claude.messages.create(
        model="gemini-2.5-pro", max_tokens=64, messages=[{"role": "user", "content": f"hi {marker}"}],
        extra_headers={"x-request-id": request_id},
    )
    assert msg.content[0].text == f"Echo: hi {marker}" and msg.stop_reason == "end_turn"
    sent = gemini.find(marker)
    want = mg.expected_usage(sent.body, [{"text": msg.content[0].text}])
    assert metered_tokens(openmeter, request_id) == expected_tokens(want)
    marker = secrets.token_hex(4)
    with claude.messages.stream(model="gemini-2.5-pro", max_tokens=64, messages=[{"role": "user", "content": f"streamed {marker}"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == f"Echo: streamed {marker}" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_a_refused_key_is_the_gateways_fault_said_clearly(gateway: GatewayProcess) -> None:
    r = post(gateway, "/v1/chat/completions", {"model": "gemini-badkey", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert "refused the gateway's credentials" in error["message"] and "API key not valid" in error["message"]


def test_embeddings_on_a_generation_model_is_gemini_s_clear_error(gateway: GatewayProcess) -> None:
    # (Embedding models: test_cloud_embeddings.)
    r = post(gateway, "/v1/embeddings", {"model": "gemini-2.5-pro", "input": "x"})
    assert r.status_code == 404 and "not supported for embedContent" in r.json()["error"]["message"]


def test_responses_api_through_gemini_stream_and_not(gateway: GatewayProcess, gemini: MockGemini, openmeter: OpenMeterServer) -> None:
    """`/v1/responses` on a cloud platform: bridged through chat both ways, usage metered once."""
    marker, request_id = secrets.token_hex(4), rid()
    c = client(gateway)
    reply = c.responses.create(
        model="gemini-2.5-pro", instructions="Be terse.", input=f"hello {marker}", max_output_tokens=40,
        extra_headers={"x-request-id": request_id},
    )
    assert reply.status == "completed" and reply.output_text == f"Echo: hello {marker}" and reply.model == "gemini-2.5-pro"
    sent = gemini.find(marker)
    assert sent.path == "/v1beta/models/gemini-echo:generateContent"
    assert sent.body["systemInstruction"]["parts"] == [{"text": "Be terse."}]
    assert sent.body["generationConfig"]["maxOutputTokens"] == 40
    want = mg.expected_usage(sent.body, [{"text": f"Echo: hello {marker}"}])
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (want["prompt_tokens"], want["completion_tokens"])
    assert metered_tokens(openmeter, request_id) == expected_tokens(want)

    marker = secrets.token_hex(4)
    with c.responses.stream(model="gemini-2.5-pro", input=f"a streamed question {marker}") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert final.output_text == f"Echo: a streamed question {marker}"
    assert gemini.find(marker).path == "/v1beta/models/gemini-echo:streamGenerateContent"
