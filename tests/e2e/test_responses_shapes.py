"""The Responses bridge's golden outputs, checked against what clients rely on.

No gateway runs here: the files under tests/fixtures/responses/ that the Rust unit tests compare
the translation with (``src/adapter/responses/tests.rs``) are validated against OpenAI's
published schema (a copy of the relevant component schemas, see the fixtures' README), and the
golden event streams are fed to the official ``openai`` SDK's stream helper, which must
assemble the same response the whole-answer translation gives.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "responses"

RESPONSES = sorted(p.name for p in FIXTURES.glob("*.response.json"))
STREAMS = sorted(p.name for p in FIXTURES.glob("*.responses.sse"))
# The golden stream, the request it answers, and the golden whole answer it must end as.
STREAM_AND_WHOLE = [
    ("chat_stream_text.responses.sse", "openai_python_create.json", "completion_text.response.json"),
    ("chat_stream_tools.responses.sse", "custom_tool.json", "completion_tools.response.json"),
    ("chat_stream_length.responses.sse", "openai_python_create.json", "completion_length.response.json"),
]


@cache
def schemas() -> dict:
    return json.loads((FIXTURES / "openapi_responses.schema.json").read_text())


@cache
def event_schema(event_type: str) -> str:
    """The name of the `ResponseStreamEvent` member whose `type` is `event_type`."""
    components = schemas()["components"]["schemas"]
    for member in components["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[-1]
        if components[name]["properties"]["type"].get("enum") == [event_type]:
            return name
    raise AssertionError(f"{event_type} is not a ResponseStreamEvent type")


@cache
def validator(name: str) -> Draft202012Validator:
    document = schemas()
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **document,
        "$ref": f"#/components/schemas/{name}",
    }
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def assert_valid(name: str, obj: object, where: str) -> None:
    errors = sorted(validator(name).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    shown = [f"at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors[:5]]
    assert not errors, f"{where} is not a valid {name}:\n  " + "\n  ".join(shown)


def events(name: str) -> list[tuple[str, dict]]:
    out = []
    for frame in (FIXTURES / name).read_text().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), frame
        out.append((event_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return out


def test_the_fixtures_are_there():
    assert len(RESPONSES) >= 3 and len(STREAMS) >= 4


@pytest.mark.parametrize("name", RESPONSES)
def test_whole_answers_are_valid_responses(name):
    response = json.loads((FIXTURES / name).read_text())
    assert_valid("Response", response, name)
    # The SDK's own model accepts it too.
    parsed = openai.types.responses.Response.model_validate(response)
    assert parsed.id == response["id"]


@pytest.mark.parametrize("name", STREAMS)
def test_stream_events_are_valid_and_numbered(name):
    stream = events(name)
    assert stream[0][0] == "response.created" and stream[1][0] == "response.in_progress"
    assert stream[-1][0] in {"response.completed", "response.incomplete", "response.failed"}
    for i, (event, data) in enumerate(stream):
        assert data["type"] == event
        assert data["sequence_number"] == i
        # Against its own member of the union, for errors that say what is wrong.
        assert_valid(event_schema(event), data, f"{name} event {i} ({event})")
        # openai-python raises on any event with a truthy top-level `error` but `error` itself.
        assert event == "error" or "error" not in data


def sdk_client(stream_name: str) -> openai.OpenAI:
    """An SDK client whose every request is answered with the golden stream."""
    body = (FIXTURES / stream_name).read_bytes()
    headers = {"content-type": "text/event-stream"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, headers=headers, content=body))
    http_client = httpx.Client(transport=transport)
    return openai.OpenAI(base_url="http://gateway.invalid/v1", api_key="sk-test", http_client=http_client)


@pytest.mark.parametrize("stream_name,request_name,whole_name", STREAM_AND_WHOLE)
def test_the_sdk_stream_helper_assembles_the_whole_answer(stream_name, request_name, whole_name):
    request = json.loads((FIXTURES / request_name).read_text())
    request.pop("stream", None)
    whole = json.loads((FIXTURES / whole_name).read_text())
    deltas, last = [], None
    with sdk_client(stream_name).responses.stream(**request) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            last = event
    # The helper's final response is only for `response.completed`; an incomplete one ends the
    # stream as its own event.
    assert last.type == ("response.completed" if whole["status"] == "completed" else "response.incomplete")
    final = last.response
    output = [item.model_dump(mode="json", exclude_none=True) for item in final.output]
    for item in output:
        for part in item.get("content", []):
            part.pop("parsed", None)
    assert output == whole["output"]
    message_text = "".join(
        part["text"]
        for item in whole["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )
    assert "".join(deltas) == message_text
    assert final.output_text == message_text
    assert (final.status, final.usage.total_tokens) == (whole["status"], whole["usage"]["total_tokens"])


def test_a_failed_stream_tells_the_sdk_why():
    seen = []
    with sdk_client("chat_stream_error.responses.sse").responses.stream(model="m", input="hi") as stream:
        for event in stream:
            seen.append(event)
    assert [e.type for e in seen[-2:]] == ["error", "response.failed"]
    assert seen[-2].message == "The server had an error while processing your request."
    assert seen[-1].response.status == "failed" and seen[-1].response.error.code == "server_error"
