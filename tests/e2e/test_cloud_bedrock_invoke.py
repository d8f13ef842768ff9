"""Claude on Amazon Bedrock through InvokeModel / InvokeModelWithResponseStream: the anthropic
SDK's Messages body reaches Bedrock untouched (cache_control, thinking, tools) but for
``anthropic_version: bedrock-2023-05-31`` in place of ``model`` and ``stream``; each request
SigV4-signed (the mock recomputes the signature with botocore); the stream's base64 ``chunk``
events come back as Anthropic's SSE; OpenAI chat clients go through the Anthropic translation;
the usage is metered exactly."""

from __future__ import annotations

import json
import secrets
from typing import Iterator

import anthropic
import pytest

from cloud_env import WEATHER, client, metered_gateway, metered_tokens, post, rid, stream_text
from e2e_support import GatewayProcess
from metering_env import TEAM_A
from mock_bedrock import MockBedrock
from openmeter_server import OpenMeterServer

REGION = "us-west-2"
ACCESS_KEY = "AKIAE2E" + secrets.token_hex(6).upper()
SECRET = secrets.token_urlsafe(30)
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
TOOL = {"name": "get_weather", "description": "Current weather in a city", "cache_control": {"type": "ephemeral"},
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SYSTEM = [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}]


@pytest.fixture(scope="module")
def bedrock() -> Iterator[MockBedrock]:
    server = MockBedrock({ACCESS_KEY: SECRET}, REGION, "unused").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(bedrock: MockBedrock, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = {"dialect": "bedrock", "region": REGION, "base_url": bedrock.base_url}
    providers = {"bedrock": base, "bedrock-invoke": {**base, "api": "invoke"}}
    models = {
        "claude": [{"provider": "bedrock", "model": MODEL}],
        "claude-tools": [{"provider": "bedrock", "model": "anthropic.claude-tools-v1:0"}],
        "claude-midstream": [{"provider": "bedrock", "model": "anthropic.claude-midstream-v1:0"}],
        "claude-corrupt": [{"provider": "bedrock", "model": "anthropic.claude-corrupt-v1:0"}],
        "claude-profile": [{"provider": "bedrock-invoke", "model": "arn:aws:bedrock:us-west-2:111122223333:application-inference-profile/a1b2"}],
    }
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": "", "AWS_BEARER_TOKEN_BEDROCK": ""}
    proc = metered_gateway(tmp_path_factory.mktemp("bedrock-invoke"), openmeter, providers, models, env)
    yield proc
    proc.stop()


def claude(gateway: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=TEAM_A, max_retries=0, timeout=30.0)


def metered_as_anthropic(usage: anthropic.types.Usage) -> dict[str, int]:
    parts = {"input": usage.input_tokens, "output": usage.output_tokens,
             "cache_read": usage.cache_read_input_tokens or 0, "cache_write": usage.cache_creation_input_tokens or 0}
    return {k: v for k, v in parts.items() if v}


def test_messages_reach_invoke_model_untouched_signed_and_metered(gateway: GatewayProcess, bedrock: MockBedrock, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    msg = claude(gateway).messages.create(
        model="claude", max_tokens=2048, system=SYSTEM, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": f"hello {marker}"}], extra_headers={"x-request-id": request_id},
    )
    assert [b.type for b in msg.content] == ["thinking", "text"] and msg.content[1].text == f"Echo: hello {marker}"
    assert msg.content[0].signature == "e2e-sig" and msg.model == "claude" and msg.stop_reason == "end_turn"
    sent = bedrock.find(marker)
    assert sent.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert sent.body == {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 2048, "system": SYSTEM,
                         "thinking": {"type": "enabled", "budget_tokens": 1024},
                         "messages": [{"role": "user", "content": f"hello {marker}"}]}
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (2, 1)
    assert metered_tokens(openmeter, request_id) == metered_as_anthropic(msg.usage)


def test_messages_stream_decodes_the_chunks(gateway: GatewayProcess, bedrock: MockBedrock, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    betas = {"x-request-id": request_id, "anthropic-beta": "interleaved-thinking-2025-05-14,context-1m-2025-08-07"}
    with claude(gateway).messages.stream(model="claude", max_tokens=64, system=SYSTEM, extra_headers=betas,
                                         messages=[{"role": "user", "content": f"stream this please {marker}"}]) as s:
        assert "".join(s.text_stream) == f"Echo: stream this please {marker}"
        final = s.get_final_message()
    sent = bedrock.find(marker)
    assert sent.path.endswith("%3A0/invoke-with-response-stream") and "stream" not in sent.body and "model" not in sent.body
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    # Claude's betas go in the body on Bedrock, not as a header.
    assert sent.body["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
    assert "anthropic-beta" not in sent.headers and "anthropic-version" not in sent.headers
    assert final.usage.output_tokens == 5 and final.usage.cache_read_input_tokens == 2
    assert metered_tokens(openmeter, request_id) == metered_as_anthropic(final.usage)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip_keeps_cache_control(gateway: GatewayProcess, bedrock: MockBedrock, stream: bool) -> None:
    marker = secrets.token_hex(4)
    c = claude(gateway)
    messages: list[dict] = [{"role": "user", "content": f"weather in Paris? {marker}"}]
    if stream:
        with c.messages.stream(model="claude-tools", max_tokens=256, tools=[TOOL], messages=messages) as s:
            first = s.get_final_message()
    else:
        first = c.messages.create(model="claude-tools", max_tokens=256, tools=[TOOL], messages=messages)
    use = first.content[0]
    assert first.stop_reason == "tool_use" and use.type == "tool_use"
    assert (use.id, use.name, use.input) == ("toolu_bdrk_e2e1", "get_weather", {"city": "Paris"})
    assert bedrock.find(marker).body["tools"] == [TOOL]
    messages += [{"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 degrees",
                                               "cache_control": {"type": "ephemeral"}}]}]
    final = c.messages.create(model="claude-tools", max_tokens=256, tools=[TOOL], messages=messages)
    assert final.content[0].text == "The weather: 21 degrees"
    turns = bedrock.requests[-1].body["messages"]
    assert turns[2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_bdrk_e2e1", "content": "21 degrees",
                                      "cache_control": {"type": "ephemeral"}}


def test_chat_completions_go_through_the_anthropic_translation(gateway: GatewayProcess, bedrock: MockBedrock, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    reply = client(gateway).chat.completions.create(
        model="claude", max_tokens=40, extra_headers={"x-request-id": request_id},
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"hi {marker}"}],
    )
    assert reply.choices[0].message.content == f"Echo: hi {marker}" and reply.choices[0].finish_reason == "stop"
    sent = bedrock.find(marker)
    assert sent.path.endswith("/invoke") and sent.body["anthropic_version"] == "bedrock-2023-05-31" and "model" not in sent.body
    assert reply.usage.completion_tokens == 3 and reply.usage.prompt_tokens == 4
    assert sum(metered_tokens(openmeter, request_id).values()) == reply.usage.total_tokens
    text, calls, finish, usage = stream_text(client(gateway).chat.completions.create(
        model="claude-tools", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], stream=True,
        stream_options={"include_usage": True},
    ))
    assert finish == "tool_calls" and calls[0].function.name == "get_weather" and usage and usage["completion_tokens"] == 3
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Paris"}


def test_an_explicit_invoke_api_serves_an_application_profile(gateway: GatewayProcess, bedrock: MockBedrock) -> None:
    marker = secrets.token_hex(4)
    msg = claude(gateway).messages.create(model="claude-profile", max_tokens=32, messages=[{"role": "user", "content": marker}])
    assert msg.content[0].text == f"Echo: {marker}"
    assert bedrock.find(marker).path == "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A111122223333%3Aapplication-inference-profile%2Fa1b2/invoke"


def test_an_exception_mid_stream_is_an_error_event(gateway: GatewayProcess) -> None:
    r = post(gateway, "/v1/messages", {"model": "claude-midstream", "max_tokens": 32, "stream": True,
                                       "messages": [{"role": "user", "content": "one two three four five six seven"}]})
    assert r.status_code == 200
    events = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[-1] == "error" and "rate_limit_error" in r.text and "Too many tokens" in r.text
    r = post(gateway, "/v1/messages", {"model": "claude-corrupt", "max_tokens": 32, "stream": True,
                                       "messages": [{"role": "user", "content": "one two three four"}]})
    assert "corrupt" in r.text and "event: error" in r.text and "three four" not in r.text


def test_responses_api_through_invoke_model(gateway: GatewayProcess, bedrock: MockBedrock) -> None:
    marker = secrets.token_hex(4)
    response = client(gateway).responses.create(model="claude", input=f"via responses {marker}", max_output_tokens=64)
    assert response.output_text == f"Echo: via responses {marker}" and response.status == "completed"
    sent = bedrock.find(marker)
    assert sent.path.endswith("/invoke") and sent.body["anthropic_version"] == "bedrock-2023-05-31"
    with client(gateway).responses.stream(model="claude", input=f"streamed {marker}") as s:
        final = s.get_final_response()
    assert final.output_text == f"Echo: streamed {marker}" and final.usage.output_tokens == 3


def test_a_validation_exception_is_the_anthropic_clients_400(gateway: GatewayProcess) -> None:
    # A Messages field Bedrock does not take: its ValidationException, in Anthropic's error shape.
    r = post(gateway, "/v1/messages", {"model": "claude", "max_tokens": 16, "mcp_servers": [],
                                       "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "extraneous key [mcp_servers] is not permitted" in body["error"]["message"]
