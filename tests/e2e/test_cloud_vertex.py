"""Vertex AI end to end: Gemini models under a project and location, with an OAuth2 access
token the gateway gets for a service account (an RS256 JWT assertion, verified by the mock token
endpoint against the account's public key), cached and refreshed before it expires."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import anthropic
import pytest

import mock_gemini as mg
from cloud_env import WEATHER, client, expected_tokens, metered_gateway, metered_tokens, post, rid, stream_text, usage_dict
from e2e_support import GatewayProcess
from metering_env import TEAM_A
from mock_gemini import MockGemini
from mock_google_oauth import MockOAuth
from openmeter_server import OpenMeterServer

LIFETIME = 4  # seconds: the gateway fetches a new token once half of it has passed
PREFIX = "/v1/projects/e2e-project/locations/us-central1/publishers/google/models"


@pytest.fixture(scope="module")
def oauth() -> Iterator[MockOAuth]:
    server = MockOAuth("gateway@e2e-project.iam.gserviceaccount.com", lifetime=LIFETIME).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vertex(oauth: MockOAuth) -> Iterator[MockGemini]:
    server = MockGemini(api_key="unused", token_ok=oauth.valid).start()
    yield server
    server.stop()


def start(vertex: MockGemini, openmeter: OpenMeterServer, work: Path, account_json: str) -> GatewayProcess:
    (work / "sa.json").write_text(account_json)
    providers = {"vertex": {"dialect": "vertex", "project": "e2e-project", "location": "us-central1", "base_url": vertex.base_url}}
    models = {"gemini-2.5-pro": [{"provider": "vertex", "model": "gemini-echo"}], "gemini-tools": [{"provider": "vertex", "model": "gemini-tools"}],
              "claude-vertex": [{"provider": "vertex", "model": "claude-sonnet-4-5@20250929"}]}
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(work / "sa.json")}
    return metered_gateway(work, openmeter, providers, models, env)


@pytest.fixture(scope="module")
def gateway(vertex: MockGemini, oauth: MockOAuth, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = start(vertex, openmeter, tmp_path_factory.mktemp("vertex"), oauth.service_account_json())
    yield proc
    proc.stop()


def test_generate_content_with_a_service_account_token_and_metered(gateway: GatewayProcess, vertex: MockGemini, oauth: MockOAuth, openmeter: OpenMeterServer) -> None:
    marker, request_id = "m" + rid()[3:11], rid()
    reply = client(gateway).chat.completions.create(
        model="gemini-2.5-pro", messages=[{"role": "user", "content": f"hello {marker}"}], extra_headers={"x-request-id": request_id}
    )
    assert reply.choices[0].message.content == f"Echo: hello {marker}"
    sent = vertex.find(marker)
    assert sent.path == f"{PREFIX}/gemini-echo:generateContent"
    assert sent.headers["authorization"].startswith("Bearer ya29.e2e-") and "x-goog-api-key" not in sent.headers
    assert oauth.assertions and oauth.assertions[-1]["iss"] == oauth.client_email
    want = mg.expected_usage(sent.body, [{"text": f"Echo: hello {marker}"}])
    got = usage_dict(reply.usage)
    assert (got["prompt_tokens"], got["completion_tokens"]) == (want["prompt_tokens"], want["completion_tokens"])
    assert metered_tokens(openmeter, request_id) == expected_tokens(want)


def test_stream_generate_content_over_sse(gateway: GatewayProcess, vertex: MockGemini, openmeter: OpenMeterServer) -> None:
    marker, request_id = "m" + rid()[3:11], rid()
    text, _, finish, usage = stream_text(client(gateway).chat.completions.create(
        model="gemini-2.5-pro", messages=[{"role": "user", "content": f"streamed {marker}"}], stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-request-id": request_id},
    ))
    assert text == f"Echo: streamed {marker}" and finish == "stop"
    sent = vertex.find(marker)
    assert sent.path == f"{PREFIX}/gemini-echo:streamGenerateContent" and sent.query == "alt=sse"
    want = mg.expected_usage(sent.body, [{"text": text}])
    assert usage and usage["completion_tokens"] == want["completion_tokens"]
    assert metered_tokens(openmeter, request_id) == expected_tokens(want)


def test_tool_round_trip_and_messages(gateway: GatewayProcess, vertex: MockGemini) -> None:
    c = client(gateway)
    messages: list[dict] = [{"role": "user", "content": "weather in Paris?"}]
    call = c.chat.completions.create(model="gemini-tools", messages=messages, tools=[WEATHER]).choices[0].message.tool_calls[0]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 19})},
    ]
    final = c.chat.completions.create(model="gemini-tools", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == 'The weather: {"temp_c": 19}'
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=TEAM_A, max_retries=0, timeout=30.0)
    msg = claude.messages.create(model="gemini-2.5-pro", max_tokens=32, messages=[{"role": "user", "content": "via messages"}])
    assert msg.content[0].text == "Echo: via messages"


def test_a_token_about_to_expire_is_refreshed_without_a_failed_request(gateway: GatewayProcess, oauth: MockOAuth) -> None:
    c = client(gateway)
    issued, refused = len(oauth.issued), len(oauth.refusals)
    deadline = time.monotonic() + 3 * LIFETIME
    answers = 0
    while time.monotonic() < deadline:
        reply = c.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "tick"}])
        assert reply.choices[0].message.content == "Echo: tick"
        answers += 1
        time.sleep(0.25)
    # Several lifetimes passed: new tokens were fetched, and every request was answered.
    assert len(oauth.issued) >= issued + 2 and answers >= 10
    assert len(oauth.refusals) == refused


def test_a_refused_service_account_is_reported_clearly(vertex: MockGemini, oauth: MockOAuth, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The same account, signed with another key: the token endpoint refuses the assertion.
    other = MockOAuth(oauth.client_email)
    account = json.loads(other.service_account_json())
    account["token_uri"] = oauth.token_uri
    proc = start(vertex, openmeter, tmp_path_factory.mktemp("vertex-wrong"), json.dumps(account))
    try:
        r = post(proc, "/v1/chat/completions", {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        proc.stop()
    assert r.status_code == 502, r.text
    message = r.json()["error"]["message"]
    assert "credentials" in message and "invalid_grant" in message and "Invalid JWT Signature" in message


def test_claude_on_vertex_through_raw_predict(gateway: GatewayProcess, vertex: MockGemini) -> None:
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=TEAM_A, max_retries=0, timeout=30.0)
    msg = claude.messages.create(model="claude-vertex", max_tokens=32, messages=[{"role": "user", "content": "raw one"}])
    assert msg.content[0].text == "Echo: raw one" and msg.model == "claude-vertex"
    sent = vertex.requests[-1]
    assert sent.path == "/v1/projects/e2e-project/locations/us-central1/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    assert sent.body["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent.body
    with claude.messages.stream(model="claude-vertex", max_tokens=32, messages=[{"role": "user", "content": "raw two"}]) as s:
        assert "".join(s.text_stream) == "Echo: raw two"
    assert vertex.requests[-1].path.endswith(":streamRawPredict")
    text, _, finish, usage = stream_text(client(gateway).chat.completions.create(
        model="claude-vertex", messages=[{"role": "user", "content": "raw three"}], stream=True, stream_options={"include_usage": True}
    ))
    assert text == "Echo: raw three" and finish == "stop" and usage and usage["completion_tokens"] == 3
