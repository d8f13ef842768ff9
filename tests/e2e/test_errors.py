"""Every error class surfaces as the openai SDK's exception, with an OpenAI-shaped body."""

from __future__ import annotations

import json
import time

import openai
import pytest

import mock_openai as m
from e2e_env import MAX_BODY_BYTES, TEAM_A_KEY, Gateway
from e2e_support import check_error

MSGS = [{"role": "user", "content": "hi"}]
AUTH_A = {"Authorization": f"Bearer {TEAM_A_KEY}"}


# ---------------------------------------------------------------- 400


def test_malformed_json_is_400(http) -> None:
    r = http.post(
        "/v1/chat/completions",
        content=b'{"model": "echo-model", "messages": [{"role": "user", "content": "hi"}',
        headers={**AUTH_A, "Content-Type": "application/json"},
    )
    check_error(r, 400, type="invalid_request_error")


@pytest.mark.parametrize("body", [
    '{"model": "echo-model", "messages": [{"role": "user", "content": "a\tb"}]}',
    '{"model": "echo-model", "messages": [{"role": "user", "content": "hi"}], "user": "line\nbreak"}',
])
def test_raw_control_character_in_a_string_is_400(http, body: str) -> None:
    # JSON wants control characters escaped: a body with one raw is not JSON, wherever it is.
    r = http.post("/v1/chat/completions", content=body.encode(), headers={**AUTH_A, "Content-Type": "application/json"})
    err = check_error(r, 400, type="invalid_request_error")
    assert "not valid JSON" in err["message"] and "control character" in err["message"], err


def test_messages_as_string_is_400_naming_messages(client: openai.OpenAI, http) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="echo-model", messages="hello")  # type: ignore[arg-type]
    check_error(ei.value, 400, type="invalid_request_error", param="messages")
    r = http.post("/v1/chat/completions", json={"model": "echo-model", "messages": "hello"}, headers=AUTH_A)
    err = check_error(r, 400, type="invalid_request_error", param="messages")
    assert "messages" in err["message"]


def test_model_of_wrong_type_is_400_naming_model(http) -> None:
    r = http.post("/v1/chat/completions", json={"model": 42, "messages": MSGS}, headers=AUTH_A)
    check_error(r, 400, type="invalid_request_error", param="model")


def test_stream_of_wrong_type_is_400_naming_stream(http) -> None:
    r = http.post("/v1/chat/completions", json={"model": "echo-model", "messages": MSGS, "stream": "yes"}, headers=AUTH_A)
    check_error(r, 400, type="invalid_request_error", param="stream")


def test_upstream_400_passed_through(gateway: Gateway, client: openai.OpenAI, marker: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="err400-model", messages=[{"role": "user", "content": marker}])
    check_error(ei.value, 400, type="invalid_request_error", param="messages", message_contains=m.ERR400_MESSAGE)
    assert len(gateway.upstream.with_marker(marker)) == 1, "a 4xx from upstream must not be retried"


def test_upstream_400_on_stream_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="err400-model", messages=MSGS, stream=True)
    check_error(ei.value, 400, param="messages", message_contains=m.ERR400_MESSAGE)


# ---------------------------------------------------------------- 401


def test_missing_key_is_401(gateway: Gateway) -> None:
    r = gateway.request_once("POST", "/v1/chat/completions", json={"model": "echo-model", "messages": MSGS})
    check_error(r, 401, code="invalid_api_key")
    r = gateway.request_once("GET", "/v1/models")
    check_error(r, 401, code="invalid_api_key")
    for auth in ("Bearer", "Basic dXNlcjpwYXNz"):  # empty bearer / another scheme
        r = gateway.request_once("POST", "/v1/chat/completions", json={"model": "echo-model", "messages": MSGS}, headers={"Authorization": auth})
        check_error(r, 401, code="invalid_api_key")


def test_wrong_key_is_401(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as ei:
        gateway.client("sk-e2e-not-a-real-key").chat.completions.create(model="echo-model", messages=MSGS)
    check_error(ei.value, 401, code="invalid_api_key")
    r = gateway.request_once("POST", "/v1/chat/completions", json={"model": "echo-model", "messages": MSGS}, headers={"x-api-key": "sk-e2e-wrong"})
    check_error(r, 401, code="invalid_api_key")
    # a prefix / suffix of a valid key is not a valid key
    for bad in (TEAM_A_KEY[:-1], TEAM_A_KEY + "x", TEAM_A_KEY.upper()):
        r = gateway.request_once("POST", "/v1/chat/completions", json={"model": "echo-model", "messages": MSGS}, headers={"Authorization": f"Bearer {bad}"})
        check_error(r, 401, code="invalid_api_key")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {TEAM_A_KEY}"},
        {"x-api-key": TEAM_A_KEY},
    ],
    ids=["bearer", "x-api-key"],
)
def test_valid_key_accepted_in_both_headers(http, headers: dict) -> None:
    r = http.post("/v1/chat/completions", json={"model": "echo-model", "messages": MSGS}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Echo: hi"


def test_hashed_key_accepted(client_b: openai.OpenAI) -> None:
    resp = client_b.chat.completions.create(model="mock-model", messages=MSGS)
    assert resp.choices[0].message.content == "Mock response to: hi"


# ---------------------------------------------------------------- 403 / 404


def test_team_b_disallowed_model_is_403(gateway: Gateway, client_b: openai.OpenAI, marker: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as ei:
        client_b.chat.completions.create(model="echo-model", messages=[{"role": "user", "content": marker}])
    check_error(ei.value, 403, code="model_not_allowed")
    with pytest.raises(openai.PermissionDeniedError) as ei:
        client_b.embeddings.create(model="mock-embed", input="x")
    check_error(ei.value, 403, code="model_not_allowed")
    assert gateway.upstream.with_marker(marker) == [], "a forbidden request reached the upstream"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="no-such-model", messages=MSGS)
    check_error(ei.value, 404, code="model_not_found")
    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(model="no-such-model", input="x")
    check_error(ei.value, 404, code="model_not_found")


# ---------------------------------------------------------------- 413


def test_oversized_body_is_413(gateway: Gateway, http) -> None:
    big = "x" * (MAX_BODY_BYTES + 1024)
    marker = "mk-oversized-413"
    body = json.dumps({"model": "echo-model", "messages": [{"role": "user", "content": marker + big}]}).encode()
    r = http.post("/v1/chat/completions", content=body, headers={**AUTH_A, "Content-Type": "application/json"})
    check_error(r, 413)
    assert gateway.upstream.with_marker(marker) == []


def test_body_just_under_limit_is_accepted(http) -> None:
    filler = "y" * (MAX_BODY_BYTES - 4096)
    r = http.post("/v1/chat/completions", json={"model": "echo-model", "messages": [{"role": "user", "content": filler}]}, headers=AUTH_A)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["choices"][0]["message"]["content"] == "Echo: " + filler


# ---------------------------------------------------------------- upstream statuses


@pytest.mark.parametrize("model,stream", [("err429-model", False), ("err429-stream-model", True)], ids=["non-stream", "stream"])
def test_upstream_429_passed_through_with_retry_after(client: openai.OpenAI, model: str, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model=model, messages=MSGS, stream=stream)
    check_error(ei.value, 429, code="rate_limit_exceeded", message_contains=m.ERR429_MESSAGE)
    assert ei.value.response.headers.get("retry-after") == m.ERR429_RETRY_AFTER


def test_upstream_500_is_server_error(client: openai.OpenAI) -> None:
    # SPEC fixes the status only for 4xx, unreachable (502) and timeout (504); an upstream 500
    # must still be a 5xx with an OpenAI-shaped body.
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="err500-model", messages=MSGS)
    check_error(ei.value, (500, 502))


def test_tgi_error_normalised_to_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as ei:
        client.chat.completions.create(model="tgi-model", messages=MSGS)
    err = check_error(ei.value, 422, message_contains=m.TGI_ERROR_MESSAGE)
    assert err["type"], "error.type must be a non-empty string"


@pytest.mark.parametrize("model,stream", [("refused-model", False), ("refused-stream-model", True)], ids=["non-stream", "stream"])
def test_connection_refused_is_502(client: openai.OpenAI, model: str, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model=model, messages=MSGS, stream=stream)
    check_error(ei.value, 502, type="upstream_error")


@pytest.mark.parametrize("model,stream", [("slow-model", False), ("slow-stream-model", True)], ids=["non-stream", "stream"])
def test_first_byte_timeout_is_504(gateway: Gateway, client: openai.OpenAI, model: str, stream: bool) -> None:
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model=model, messages=MSGS, stream=stream)
    elapsed = time.monotonic() - t0
    check_error(ei.value, 504)
    assert isinstance(ei.value, openai.InternalServerError)
    assert elapsed < gateway.upstream.slow_first_byte_seconds - 1, (
        f"took {elapsed:.2f}s: the 300ms first_byte timeout was not applied"
    )


def test_upstream_body_cut_short_non_stream_is_502(client: openai.OpenAI) -> None:
    # the upstream announces Content-Length 4096 then closes after a few bytes
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="drop-body-model", messages=MSGS)
    check_error(ei.value, 502)
