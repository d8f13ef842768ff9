"""The OpenAI Responses API through the gateway, with the official ``openai`` SDK.

The native tests use an upstream that serves ``/responses`` itself (passed through). Each other
test runs on three kinds of bridged deployment: an OpenAI-compatible chat-only upstream
(tests/e2e/mock_openai.py, which checks the chat requests it gets), the built-in mock backend,
and Claude (tests/e2e/mock_anthropic.py). Response objects and every stream event are validated
against the published OpenAPI schema copy in tests/fixtures/responses/.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, TEAM_B_KEY, gateway_config
from e2e_support import GatewayProcess
from mock_anthropic import MockAnthropic
from mock_openai import MockOpenAI, closed_port

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "responses" / "openapi_responses.schema.json").read_text()
)

# backend -> (text model, tool-calling model); the tool model answers with the tools' results
# once they are sent back.
BACKENDS = {
    "chat": ("resp-chat", "resp-chat-tools"),
    "mock": ("resp-mock", None),
    "claude": ("resp-claude", "resp-claude-tools"),
}
MODELS = {
    "resp-chat": ("upstream", "echo"),
    "resp-chat-tools": ("upstream", "tools-once"),
    "resp-mock": ("mock", "mock-chat"),
    "resp-claude": ("anthropic", "claude-echo"),
    "resp-claude-tools": ("anthropic", "claude-tools"),
    "resp-native": ("native", "responses-native"),
}

WEATHER_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}},
    },
    {
        "type": "function",
        "name": "get_time",
        "description": "The time in a time zone.",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
]


def validator(name: str) -> Draft202012Validator:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **SCHEMA, "$ref": f"#/components/schemas/{name}"}
    return Draft202012Validator(schema)


def event_schema(event_type: str) -> str:
    components = SCHEMA["components"]["schemas"]
    for member in components["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[-1]
        if components[name]["properties"]["type"].get("enum") == [event_type]:
            return name
    raise AssertionError(f"{event_type} is not a ResponseStreamEvent type")


def assert_valid(name: str, obj: object) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator(name).iter_errors(obj)]
    assert not errors, f"not a valid {name}: {errors[:5]}"


@pytest.fixture(scope="module")
def gw(
    upstream: MockOpenAI, anthropic_upstream: MockAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    cfg = gateway_config(
        upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1", anthropic_base_url=anthropic_upstream.base_url
    )
    cfg["models"] = {name: {"deployments": [{"provider": p, "model": m}]} for name, (p, m) in MODELS.items()}
    cfg["teams"]["team-b"]["models"] = ["*"]
    # An upstream that serves /responses itself (as OpenAI's and Azure's descriptors declare).
    cfg["providers"]["native"] = {
        "dialect": "openai",
        "base_url": upstream.base_url,
        "api_key_env": PROVIDER_KEY_ENV,
        "responses_api": True,
    }
    proc = GatewayProcess(cfg, tmp_path_factory.mktemp("responses"), env={PROVIDER_KEY_ENV: PROVIDER_KEY})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def client(gw: GatewayProcess, key: str = TEAM_A_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30.0)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def raw_events(gw: GatewayProcess, body: dict) -> list[dict]:
    """The stream's events as sent (each `event:` line checked against its data's type)."""
    events = []
    with httpx.Client(timeout=30.0) as h:
        with h.stream(
            "POST", gw.base_url + "/responses", json={**body, "stream": True}, headers={"authorization": f"Bearer {TEAM_A_KEY}"}
        ) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            text = r.read().decode()
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"], frame
        events.append(data)
    return events


def test_create_text_with_instructions(gw: GatewayProcess, backend: str, upstream: MockOpenAI) -> None:
    model = BACKENDS[backend][0]
    marker = uuid.uuid4().hex[:8]
    raw = client(gw).responses.with_raw_response.create(model=model, input=f"Hello {marker}", instructions="Be brief.")
    body = raw.http_response.json()
    assert_valid("Response", body)
    response = raw.parse()
    assert response.status == "completed" and response.model == model
    assert response.id.startswith("resp_")
    assert f"Hello {marker}" in response.output_text
    assert response.instructions == "Be brief."
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    if backend == "chat":
        sent = upstream.with_marker(marker)[-1].body
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["model"] == "echo"


def test_create_with_a_json_schema(gw: GatewayProcess, upstream: MockOpenAI) -> None:
    marker = uuid.uuid4().hex[:8]
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    response = client(gw).responses.create(
        model="resp-chat",
        input=f"Where? {marker}",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
    )
    assert response.text.format.type == "json_schema"
    sent = upstream.with_marker(marker)[-1].body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }


TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def collapse(types: list[str]) -> list[str]:
    """Consecutive repeats of one type as one."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def test_stream_every_event_in_order_and_valid(gw: GatewayProcess, backend: str) -> None:
    model = BACKENDS[backend][0]
    events = raw_events(gw, {"model": model, "input": "Stream me please"})
    assert collapse([e["type"] for e in events]) == TEXT_EVENTS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert_valid(event_schema(event["type"]), event)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    completed = events[-1]["response"]
    assert completed["output"][0]["content"][0]["text"] == deltas
    assert "Stream me please" in deltas
    assert completed["usage"]["total_tokens"] > 0

    # The SDK's stream helper assembles the same answer.
    with client(gw).responses.stream(model=model, input="Stream me please") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert collapse(types) == TEXT_EVENTS
    assert final.output_text == deltas and final.status == "completed"


def test_stream_of_function_calls(gw: GatewayProcess) -> None:
    events = raw_events(gw, {"model": "resp-chat-tools", "input": "Weather and time?", "tools": WEATHER_TOOLS})
    for event in events:
        assert_valid(event_schema(event["type"]), event)
    types = collapse([e["type"] for e in events])
    call = ["response.output_item.added", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done"]
    assert types == ["response.created", "response.in_progress", *call, *call, "response.completed"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(i["name"], json.loads(i["arguments"])) for i in done] == [
        ("get_weather", {"city": "Paris", "unit": "c"}),
        ("get_time", {"tz": "Europe/Paris"}),
    ]


@pytest.mark.parametrize("backend_name", ["chat", "claude"])
def test_function_tool_round_trip_over_two_turns(gw: GatewayProcess, backend_name: str) -> None:
    sdk = client(gw)
    model = BACKENDS[backend_name][1]
    first = sdk.responses.create(model=model, input="What is the weather and the time in Paris?", tools=WEATHER_TOOLS)
    assert_valid("Response", first.model_dump(mode="json", exclude_unset=True))
    calls = [item for item in first.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert all(c.call_id for c in calls)
    outputs = {"get_weather": "sunny, 21 C", "get_time": "14:05"}
    second = sdk.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": outputs[c.name]} for c in calls],
        tools=WEATHER_TOOLS,
    )
    assert second.previous_response_id == first.id
    assert second.output_text == "Tool results: sunny, 21 C; 14:05"


def test_retrieve_input_items_and_delete(gw: GatewayProcess, backend: str) -> None:
    sdk = client(gw)
    model = BACKENDS[backend][0]
    created = sdk.responses.create(model=model, input=[{"role": "user", "content": "Keep this"}], instructions="x")
    again = sdk.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == created.output_text
    assert_valid("Response", client(gw).responses.with_raw_response.retrieve(created.id).http_response.json())

    items = sdk.responses.input_items.list(created.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "Keep this")]

    # Another team does not see it, and cannot delete it.
    other = client(gw, TEAM_B_KEY)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(created.id)

    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model=model, input="more", previous_response_id=created.id)
    assert e.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize("model", ["resp-chat", "resp-mock", "resp-claude", "resp-native"])
def test_retrieve_with_stream_replays_the_events(gw: GatewayProcess, model: str) -> None:
    sdk = client(gw)
    created = sdk.responses.create(model=model, input="Replay me later")
    with httpx.Client(timeout=10.0) as h:
        r = h.get(
            f"{gw.base_url}/responses/{created.id}",
            params={"stream": "true"},
            headers={"authorization": f"Bearer {TEAM_A_KEY}"},
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    raw = [json.loads(f.split("data: ", 1)[1]) for f in r.text.split("\n\n") if f.strip()]
    for event in raw:
        assert_valid(event_schema(event["type"]), event)
    # The official SDK's `retrieve(stream=True)` reads the same events, and its final response is
    # the stored one.
    events = list(sdk.responses.retrieve(created.id, stream=True))
    assert [e.type for e in events] == [e["type"] for e in raw] == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(TEXT_EVENTS)))
    final = events[-1].response
    assert final.id == created.id and final.output_text == created.output_text and final.status == "completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == created.output_text
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    # `starting_after`: only the events numbered after it (a client resuming a stream).
    rest = list(sdk.responses.retrieve(created.id, stream=True, starting_after=5))
    assert [e.sequence_number for e in rest] == [6, 7, 8] and rest[-1].type == "response.completed"
    with pytest.raises(openai.NotFoundError):
        list(client(gw, TEAM_B_KEY).responses.retrieve(created.id, stream=True))
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.retrieve(created.id, stream=True, starting_after=-1)
    assert e.value.body["param"] == "starting_after"


def test_input_items_are_paginated(gw: GatewayProcess) -> None:
    sdk = client(gw)
    turns = [{"role": "user", "content": f"turn {i}"} for i in range(5)]
    created = sdk.responses.create(model="resp-mock", input=turns)
    first = sdk.responses.input_items.list(created.id, limit=2, order="asc")
    assert [i.content[0].text for i in first.data] == ["turn 0", "turn 1"] and first.has_more
    every = [i.content[0].text for i in sdk.responses.input_items.list(created.id, limit=2, order="asc")]
    assert every == [t["content"] for t in turns], "the SDK pages through with `after`"
    newest = sdk.responses.input_items.list(created.id, limit=1)
    assert newest.data[0].content[0].text == "turn 4", "newest first by default"


def test_store_false_keeps_nothing(gw: GatewayProcess) -> None:
    sdk = client(gw)
    created = sdk.responses.create(model="resp-mock", input="forget me", store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)


def test_what_cannot_be_bridged_is_a_400_naming_the_field(gw: GatewayProcess, backend: str) -> None:
    sdk = client(gw)
    model = BACKENDS[backend][0]
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model=model, input="search", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model=model, input="later", background=True)
    assert e.value.body["param"] == "background"


def test_input_tokens_estimate(gw: GatewayProcess) -> None:
    with httpx.Client(timeout=10.0) as h:
        headers = {"authorization": f"Bearer {TEAM_A_KEY}"}
        short = h.post(gw.base_url + "/responses/input_tokens", json={"model": "resp-chat", "input": "hi"}, headers=headers)
        long = h.post(gw.base_url + "/responses/input_tokens", json={"model": "resp-chat", "input": "hi " * 200}, headers=headers)
        unknown = h.post(gw.base_url + "/responses/input_tokens", json={"model": "nope", "input": "hi"}, headers=headers)
    assert short.status_code == 200 and short.json()["object"] == "response.input_tokens"
    assert long.json()["input_tokens"] > short.json()["input_tokens"] > 0
    assert unknown.status_code == 404


def test_native_upstream_gets_the_body_verbatim_but_the_model(gw: GatewayProcess, upstream: MockOpenAI) -> None:
    sdk = client(gw)
    marker = uuid.uuid4().hex[:8]
    raw = sdk.responses.with_raw_response.create(
        model="resp-native",
        input=f"hi {marker}",
        instructions="Be brief.",
        metadata={"k": marker},
        include=["reasoning.encrypted_content"],
    )
    body = raw.http_response.json()
    assert_valid("Response", body)
    assert body["model"] == "resp-native" and body["output"][0]["content"][0]["text"] == f"Echo: hi {marker}"
    sent = upstream.with_marker(marker)[-1]
    assert sent.path == "/v1/responses"
    assert sent.body == {
        "model": "responses-native",
        "input": f"hi {marker}",
        "instructions": "Be brief.",
        "metadata": {"k": marker},
        "include": ["reasoning.encrypted_content"],
    }
    # Kept by the gateway too: retrieve, and a second turn whose id goes upstream as it is.
    assert sdk.responses.retrieve(body["id"]).output_text == f"Echo: hi {marker}"
    second = sdk.responses.create(model="resp-native", input=f"again {marker}", previous_response_id=body["id"])
    assert second.output_text == f"Echo: again {marker}"
    sent = upstream.with_marker(f"again {marker}")[-1].body
    assert sent["previous_response_id"] == body["id"] and sent["input"] == f"again {marker}", "no history replayed"


def test_native_stream_is_relayed_with_the_clients_model(gw: GatewayProcess) -> None:
    events = raw_events(gw, {"model": "resp-native", "input": "stream natively"})
    assert collapse([e["type"] for e in events]) == TEXT_EVENTS
    for event in events:
        assert_valid(event_schema(event["type"]), event)
    assert {e["response"]["model"] for e in events if "response" in e} == {"resp-native"}
    assert events[-1]["response"]["usage"]["total_tokens"] > 0


def token_counts(gw: GatewayProcess, model: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with httpx.Client(timeout=10.0) as h:
        text = h.get(gw.url + "/metrics").text
    counts = {"input": 0.0, "output": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "llm_gateway_tokens_total" and s.labels.get("model") == model:
                counts[s.labels["type"]] = counts.get(s.labels["type"], 0.0) + s.value
    return counts["input"], counts["output"]


@pytest.mark.parametrize("model", ["resp-chat", "resp-claude", "resp-native"])
def test_usage_is_counted_once(gw: GatewayProcess, model: str) -> None:
    sdk = client(gw)
    before = token_counts(gw, model)
    whole = sdk.responses.create(model=model, input="count me once")
    with sdk.responses.stream(model=model, input="count me once too") as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_response()
    after = token_counts(gw, model)
    assert whole.usage is not None and streamed.usage is not None
    assert after[0] - before[0] == whole.usage.input_tokens + streamed.usage.input_tokens
    assert after[1] - before[1] == whole.usage.output_tokens + streamed.usage.output_tokens
