"""Amazon Bedrock Converse end to end: the official SDKs against the real binary, in front of a
mock Bedrock that recomputes each SigV4 signature with botocore's signer and answers streams in
the real event-stream framing; the usage metered exactly; Bedrock's errors as the client's."""

from __future__ import annotations

import json
import secrets
from typing import Iterator

import anthropic
import openai
import pytest

import mock_bedrock as mb
from cloud_env import WEATHER, client, expected_tokens, metered_gateway, metered_tokens, post, rid, stream_text, usage_dict
from e2e_support import GatewayProcess
from metering_env import TEAM_A
from mock_bedrock import MockBedrock
from openmeter_server import OpenMeterServer

REGION = "eu-west-3"
ACCESS_KEY = "AKIAE2E" + secrets.token_hex(6).upper()
SECRET = secrets.token_urlsafe(30)
SESSION_TOKEN = "FwoGZXIvYXdzE" + secrets.token_hex(20)
API_KEY = "ABSKQmVkcm9ja0FQSUtleS" + secrets.token_hex(16)
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture(scope="module")
def bedrock() -> Iterator[MockBedrock]:
    server = MockBedrock({ACCESS_KEY: SECRET}, REGION, API_KEY).start()
    yield server
    server.stop()


def start(bedrock: MockBedrock, openmeter: OpenMeterServer, work, secret: str) -> GatewayProcess:
    # Converse here, Claude ids included (InvokeModel: test_cloud_bedrock_invoke).
    base = {"dialect": "bedrock", "region": REGION, "base_url": bedrock.base_url, "api": "converse"}
    providers = {"bedrock": base, "bedrock-key": {**base, "api_key_env": "E2E_BEDROCK_API_KEY"}}
    models = {
        "claude-bedrock": [{"provider": "bedrock", "model": MODEL}],
        "claude-tools": [{"provider": "bedrock", "model": "anthropic.claude-tools-v1:0"}],
        "claude-corrupt": [{"provider": "bedrock", "model": "anthropic.claude-corrupt-v1:0"}],
        "claude-by-key": [{"provider": "bedrock-key", "model": MODEL}],
        "claude-failover": [
            {"provider": "bedrock", "model": "anthropic.claude-throttle-v1:0", "priority": 0},
            {"provider": "bedrock-key", "model": MODEL, "priority": 1},
        ],
        "claude-throttled": [{"provider": "bedrock", "model": "anthropic.claude-throttle-v2:0"}],
    }
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": SESSION_TOKEN,
           "E2E_BEDROCK_API_KEY": API_KEY, "AWS_BEARER_TOKEN_BEDROCK": ""}
    return metered_gateway(work, openmeter, providers, models, env)


@pytest.fixture(scope="module")
def gateway(bedrock: MockBedrock, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = start(bedrock, openmeter, tmp_path_factory.mktemp("bedrock"), SECRET)
    yield proc
    proc.stop()


def test_converse_signed_with_sigv4_and_metered(gateway: GatewayProcess, bedrock: MockBedrock, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    reply = client(gateway).chat.completions.create(
        model="claude-bedrock",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"hello {marker}"}],
        max_tokens=40,
        extra_headers={"x-request-id": request_id},
    )
    assert reply.choices[0].message.content == f"Echo: hello {marker}" and reply.choices[0].finish_reason == "stop"
    sent = bedrock.find(marker)
    # The model id is one URI label: its colon percent-encoded.
    assert sent.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert sent.headers["x-amz-security-token"] == SESSION_TOKEN
    assert sent.body["system"] == [{"text": "Be terse."}] and sent.body["inferenceConfig"]["maxTokens"] == 40
    want = mb.expected_usage(sent.body, [{"text": f"Echo: hello {marker}"}])
    got = usage_dict(reply.usage)
    assert (got["prompt_tokens"], got["completion_tokens"]) == (want["prompt_tokens"], want["completion_tokens"])
    assert got["prompt_tokens_details"]["cached_tokens"] == mb.CACHE_READ
    metered = metered_tokens(openmeter, request_id)
    assert sum(metered.values()) == want["total_tokens"] and metered["cache_read"] == mb.CACHE_READ


def test_converse_stream_decodes_the_event_stream(gateway: GatewayProcess, bedrock: MockBedrock, openmeter: OpenMeterServer) -> None:
    marker, request_id = secrets.token_hex(4), rid()
    text, calls, finish, usage = stream_text(client(gateway).chat.completions.create(
        model="claude-bedrock", messages=[{"role": "user", "content": f"stream this please {marker}"}],
        stream=True, stream_options={"include_usage": True}, extra_headers={"x-request-id": request_id},
    ))
    assert text == f"Echo: stream this please {marker}" and not calls and finish == "stop"
    sent = bedrock.find(marker)
    assert sent.path.endswith("%3A0/converse-stream")
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    want = mb.expected_usage(sent.body, [{"text": text}])
    assert usage and usage["prompt_tokens"] == want["prompt_tokens"] and usage["completion_tokens"] == want["completion_tokens"]
    assert sum(metered_tokens(openmeter, request_id).values()) == want["total_tokens"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(gateway: GatewayProcess, bedrock: MockBedrock, stream: bool) -> None:
    marker = secrets.token_hex(4)
    messages: list[dict] = [{"role": "user", "content": f"weather in Paris? {marker}"}]
    c = client(gateway)
    if stream:
        _, deltas, finish, _ = stream_text(c.chat.completions.create(model="claude-tools", messages=messages, tools=[WEATHER], stream=True))
        assert finish == "tool_calls"
        call_id, name = deltas[0].id, deltas[0].function.name
        arguments = "".join(d.function.arguments or "" for d in deltas)
    else:
        first = c.chat.completions.create(model="claude-tools", messages=messages, tools=[WEATHER])
        assert first.choices[0].finish_reason == "tool_calls"
        call = first.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert call_id == "tooluse_e2e1" and name == "get_weather" and json.loads(arguments) == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "21 degrees"},
    ]
    final = c.chat.completions.create(model="claude-tools", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "The weather: 21 degrees"
    turns = bedrock.requests[-1].body["messages"]
    assert turns[1]["content"][0]["toolUse"] == {"toolUseId": "tooluse_e2e1", "name": "get_weather", "input": {"city": "Paris"}}
    assert turns[2]["content"][0]["toolResult"]["toolUseId"] == "tooluse_e2e1"


def test_anthropic_sdk_messages_through_converse(gateway: GatewayProcess) -> None:
    marker = secrets.token_hex(4)
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=TEAM_A, max_retries=0, timeout=30.0)
    msg = claude.messages.create(model="claude-bedrock", max_tokens=64, messages=[{"role": "user", "content": f"hi {marker}"}])
    assert msg.content[0].text == f"Echo: hi {marker}" and msg.stop_reason == "end_turn"
    with claude.messages.stream(model="claude-bedrock", max_tokens=64, messages=[{"role": "user", "content": f"s {marker}"}]) as s:
        assert "".join(s.text_stream) == f"Echo: s {marker}"
        assert s.get_final_message().usage.output_tokens > 0


def test_a_bedrock_api_key_goes_as_a_bearer_token(gateway: GatewayProcess, bedrock: MockBedrock) -> None:
    marker = secrets.token_hex(4)
    reply = client(gateway).chat.completions.create(model="claude-by-key", messages=[{"role": "user", "content": marker}])
    assert reply.choices[0].message.content == f"Echo: {marker}"
    assert bedrock.find(marker).headers["authorization"] == f"Bearer {API_KEY}"


def test_throttling_fails_over_and_alone_is_a_429(gateway: GatewayProcess, bedrock: MockBedrock) -> None:
    marker = secrets.token_hex(4)
    reply = client(gateway).chat.completions.create(model="claude-failover", messages=[{"role": "user", "content": marker}])
    assert reply.choices[0].message.content == f"Echo: {marker}"
    with pytest.raises(openai.RateLimitError) as e:
        client(gateway).chat.completions.create(model="claude-throttled", messages=[{"role": "user", "content": "x"}])
    assert "Too many requests" in e.value.message


def test_a_validation_exception_is_the_clients_400(gateway: GatewayProcess) -> None:
    # Converse refuses a conversation that opens with the assistant.
    r = post(gateway, "/v1/chat/completions", {"model": "claude-bedrock", "messages": [{"role": "assistant", "content": "hi"}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "ValidationException" and "must start with a user message" in r.json()["error"]["message"]


def test_a_corrupt_event_stream_is_an_error_not_garbage(gateway: GatewayProcess) -> None:
    r = post(gateway, "/v1/chat/completions", {"model": "claude-corrupt", "stream": True, "messages": [{"role": "user", "content": "one two three four"}]})
    text = r.text
    assert r.status_code == 200 and "corrupt" in text and "error" in text
    # Only what came before the bad message reached the client.
    assert "three four" not in text


def test_a_wrong_secret_gets_a_clear_error(bedrock: MockBedrock, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    proc = start(bedrock, openmeter, tmp_path_factory.mktemp("bedrock-wrong"), "not-the-secret")
    try:
        r = post(proc, "/v1/chat/completions", {"model": "claude-bedrock", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        proc.stop()
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert "Bedrock refused the gateway's AWS credentials (InvalidSignatureException)" in error["message"]
    assert "signature we calculated does not match" in error["message"]


def test_web_identity_credentials_are_refreshed_before_they_expire(bedrock: MockBedrock, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    import time

    lifetime = 6
    work = tmp_path_factory.mktemp("bedrock-irsa")
    web_token = "eyJ.e2e-projected-sa-token." + secrets.token_hex(8)
    (work / "token").write_text(web_token + "\n")
    role = "arn:aws:iam::111122223333:role/llm-gateway"
    sts = mb.MockSTS(bedrock, role, web_token, lifetime)
    providers = {"bedrock": {"dialect": "bedrock", "region": REGION, "base_url": bedrock.base_url}}
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_BEARER_TOKEN_BEDROCK": "", "AWS_ROLE_ARN": role,
           "AWS_WEB_IDENTITY_TOKEN_FILE": str(work / "token"), "AWS_ENDPOINT_URL_STS": sts.url}
    proc = metered_gateway(work, openmeter, providers, {"claude-irsa": [{"provider": "bedrock", "model": MODEL}]}, env)
    try:
        c = client(proc)
        deadline, answers = time.monotonic() + 2.5 * lifetime, 0
        while time.monotonic() < deadline:
            reply = c.chat.completions.create(model="claude-irsa", messages=[{"role": "user", "content": "tick"}])
            assert reply.choices[0].message.content == "Echo: tick"
            answers += 1
            time.sleep(0.25)
    finally:
        proc.stop()
        sts.stop()
    # Each set lived `lifetime` seconds; new ones were fetched before, and no request failed.
    assert len(sts.calls) >= 3 and answers >= 15
    assert all(call["RoleArn"] == role and call["RoleSessionName"] for call in sts.calls)
    assert bedrock.requests[-1].headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIA")
