"""What the gateway sends upstream, and the headers it returns."""

from __future__ import annotations

import uuid

import openai

import mock_openai as m
from e2e_env import PROVIDER_KEY, TEAM_A_KEY, TEAM_B_KEY, Gateway
from e2e_support import raw_stream

MSGS = [{"role": "user", "content": "hi"}]


def _upstream_request(gateway: Gateway, marker: str) -> m.RecordedRequest:
    recs = gateway.upstream.with_marker(marker)
    assert len(recs) == 1, f"expected exactly one upstream request carrying {marker}, got {len(recs)}"
    return recs[0]


def test_unknown_fields_forwarded_verbatim(gateway: Gateway, client: openai.OpenAI, marker: str) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False},
        },
    }
    tools = [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object", "properties": {}}}}]
    vendor = {"nested": [1, 2.5, "x", None, True, {"deep": {"k": "v"}}], "empty": {}, "unicode": "日本 ✓"}
    client.chat.completions.create(
        model="echo-model",
        messages=[{"role": "user", "content": f"verbatim {marker}"}],
        seed=9007199254740993,  # 2**53 + 1: must survive without float rounding
        temperature=0.25,
        top_p=0.9,
        max_tokens=17,
        stop=["\n\n", "END"],
        logit_bias={"50256": -100},
        user="e2e-user",
        response_format=response_format,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        tool_choice="none",
        extra_body={"top_k": 40, "repetition_penalty": 1.1, "min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False}, "x_vendor": vendor},
    )
    rec = _upstream_request(gateway, marker)
    body = rec.body
    assert rec.path == "/v1/chat/completions"
    assert body["model"] == "echo", "model must be rewritten to the deployment's upstream model"
    expected = {
        "messages": [{"role": "user", "content": f"verbatim {marker}"}],
        "seed": 9007199254740993,
        "temperature": 0.25,
        "top_p": 0.9,
        "max_tokens": 17,
        "stop": ["\n\n", "END"],
        "logit_bias": {"50256": -100},
        "user": "e2e-user",
        "response_format": response_format,
        "tools": tools,
        "tool_choice": "none",
        "top_k": 40,
        "repetition_penalty": 1.1,
        "min_p": 0.05,
        "chat_template_kwargs": {"enable_thinking": False},
        "x_vendor": vendor,
    }
    for k, v in expected.items():
        assert k in body, f"field {k!r} was dropped"
        assert body[k] == v, f"field {k!r} changed: sent {v!r}, upstream got {body[k]!r}"
        assert type(body[k]) is type(v), f"field {k!r} changed type: {type(v).__name__} -> {type(body[k]).__name__}"
    assert b"9007199254740993" in rec.raw_body
    assert "stream_options" not in body, "stream_options must not be added to a non-streaming request"
    assert body.get("stream") in (None, False)


def test_request_body_forwarded_byte_for_byte_but_the_model(gateway: Gateway, http, marker: str) -> None:
    # Spacing, key order, escapes and number spellings as the client wrote them; only the
    # model's value differs, and for a stream the usage request is appended before the brace.
    sent = (
        '{ "messages" : [ {"role":"user", "content":"%s \\u00e9\\n"} ],\n'
        '  "model": "echo-model", "temperature":1.50, "x_vendor":{"b":[1e2, -0]} }' % marker
    )
    r = http.post("/v1/chat/completions", content=sent.encode(), headers={"Authorization": f"Bearer {TEAM_A_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert _upstream_request(gateway, marker).raw_body == sent.replace('"echo-model"', '"echo"').encode()

    streamed = sent.replace(marker, marker + "-s").replace('"model"', '"stream":true, "model"')
    with http.stream("POST", "/v1/chat/completions", content=streamed.encode(), headers={"Authorization": f"Bearer {TEAM_A_KEY}", "Content-Type": "application/json"}) as res:
        assert res.status_code == 200
        assert b"data: [DONE]" in b"".join(res.iter_bytes())
    got = _upstream_request(gateway, marker + "-s").raw_body
    expected = streamed.replace('"echo-model"', '"echo"').replace(" }", ' ,"stream_options":{"include_usage":true}}')
    assert got == expected.encode(), got


def test_stream_flag_and_injected_usage_option(gateway: Gateway, client: openai.OpenAI, marker: str) -> None:
    list(client.chat.completions.create(
        model="echo-model", messages=[{"role": "user", "content": marker}], stream=True,
        stream_options={"include_usage": True},
    ))
    body = _upstream_request(gateway, marker).body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_upstream_auth_uses_provider_key_not_client_key(gateway: Gateway, http, marker: str) -> None:
    for i, headers in enumerate(({"Authorization": f"Bearer {TEAM_A_KEY}"}, {"x-api-key": TEAM_A_KEY})):
        mk = f"{marker}-{i}"
        r = http.post("/v1/chat/completions", json={"model": "echo-model", "messages": [{"role": "user", "content": mk}]}, headers=headers)
        assert r.status_code == 200, r.text
        rec = _upstream_request(gateway, mk)
        assert rec.headers.get("authorization") == f"Bearer {PROVIDER_KEY}"
        for name, value in rec.headers.items():
            assert TEAM_A_KEY not in value, f"client key leaked upstream in header {name!r}"
        assert TEAM_A_KEY.encode() not in rec.raw_body


def test_x_request_id_echoed(client: openai.OpenAI, http) -> None:
    rid = "e2e-" + uuid.uuid4().hex
    raw = client.chat.completions.with_raw_response.create(model="echo-model", messages=MSGS, extra_headers={"x-request-id": rid})
    assert raw.headers.get("x-request-id") == rid
    assert raw.parse().choices[0].message.content == "Echo: hi"

    res = raw_stream(http, "/v1/chat/completions", {"model": "echo-model", "messages": MSGS, "stream": True}, TEAM_A_KEY, headers={"x-request-id": rid + "-s"})
    assert res.headers.get("x-request-id") == rid + "-s"

    r = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": MSGS}, headers={"Authorization": f"Bearer {TEAM_A_KEY}", "x-request-id": rid + "-e"})
    assert r.status_code == 404
    assert r.headers.get("x-request-id") == rid + "-e"


def test_x_request_id_travels_to_the_upstream(gateway: Gateway, http, marker: str) -> None:
    rid = "e2e-up-" + uuid.uuid4().hex
    r = http.post(
        "/v1/chat/completions",
        json={"model": "echo-model", "messages": [{"role": "user", "content": marker}]},
        headers={"Authorization": f"Bearer {TEAM_A_KEY}", "x-request-id": rid},
    )
    assert r.status_code == 200, r.text
    sent = _upstream_request(gateway, marker)
    assert sent.headers.get("x-request-id") == rid, "the upstream's logs can be joined with the gateway's"
    assert "traceparent" not in sent.headers, "an untraced request without a client trace sends none"


def test_x_request_id_generated(client: openai.OpenAI, http) -> None:
    ids = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="echo-model", messages=MSGS)
        ids.append(raw.headers.get("x-request-id"))
    r = http.post("/v1/chat/completions", json={"model": "echo-model", "messages": MSGS})  # 401, no upstream
    assert r.status_code == 401
    ids.append(r.headers.get("x-request-id"))
    # Every response carries one: probes and paths the gateway does not serve too.
    for path, status in (("/health", 200), ("/no-such-path", 404)):
        r = http.get(path)
        assert r.status_code == status
        ids.append(r.headers.get("x-request-id"))
    assert all(ids), f"missing x-request-id: {ids}"
    assert len(set(ids)) == 5, f"generated request ids are not unique: {ids}"


def test_deployment_header(client: openai.OpenAI, client_b: openai.OpenAI, http) -> None:
    raw = client.chat.completions.with_raw_response.create(model="echo-model", messages=MSGS)
    assert raw.headers.get("x-llm-gateway-deployment") == "upstream/echo"
    raw = client.embeddings.with_raw_response.create(model="embed-model", input="x")
    assert raw.headers.get("x-llm-gateway-deployment") == "upstream/echo"
    raw = client.completions.with_raw_response.create(model="split-model", prompt="x")
    assert raw.headers.get("x-llm-gateway-deployment") == "upstream/split"
    raw = client_b.chat.completions.with_raw_response.create(model="mock-model", messages=MSGS)
    assert raw.headers.get("x-llm-gateway-deployment") == "mock/mock-chat"
    res = raw_stream(http, "/v1/chat/completions", {"model": "tools-model", "messages": MSGS, "stream": True}, TEAM_A_KEY)
    assert res.headers.get("x-llm-gateway-deployment") == "upstream/tools"
    res = raw_stream(http, "/v1/chat/completions", {"model": "mock-model", "messages": MSGS, "stream": True}, TEAM_B_KEY)
    assert res.headers.get("x-llm-gateway-deployment") == "mock/mock-chat"
