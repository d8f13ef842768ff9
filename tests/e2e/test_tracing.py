"""Traces: a streamed request through two attempts exports one span tree over OTLP/HTTP with
GenAI attributes, continues the client's W3C trace, and propagates it to the upstream."""

from __future__ import annotations

import secrets
from typing import Iterator

import pytest

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, Gateway, gateway_config
from e2e_support import GatewayProcess
from mock_openai import MockOpenAI, closed_port
from otlp_receiver import OtlpReceiver

SERVER, CLIENT = 2, 3


@pytest.fixture()
def traced(upstream: MockOpenAI, tmp_path) -> Iterator[tuple[Gateway, OtlpReceiver]]:
    receiver = OtlpReceiver().start()
    cfg = gateway_config(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1")
    cfg["models"]["flaky-model"] = {
        "strategy": "priority",
        "deployments": [
            {"provider": "upstream", "model": "err500:trace"},
            {"provider": "upstream", "model": "echo:trace"},
        ],
    }
    cfg["retry"] = {"backoff": "1ms"}
    cfg["telemetry"] = {"otlp": {"endpoint": receiver.endpoint, "protocol": "http", "batch_delay": "100ms", "service_name": "gw-under-test"}}
    proc = GatewayProcess(cfg, tmp_path, env={PROVIDER_KEY_ENV: PROVIDER_KEY}).start()
    try:
        yield Gateway(proc=proc, upstream=upstream), receiver
    finally:
        proc.stop()
        receiver.stop()


def test_streamed_request_through_two_attempts_exports_a_genai_span_tree(traced, marker: str) -> None:
    gw, receiver = traced
    trace_id = secrets.token_hex(16)
    client_span_id = secrets.token_hex(8)
    prompt = f"secret prompt {marker}"
    with gw.http() as http:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {TEAM_A_KEY}", "traceparent": f"00-{trace_id}-{client_span_id}-01"},
            json={"model": "flaky-model", "stream": True, "messages": [{"role": "user", "content": prompt}]},
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["x-llm-gateway-attempts"] == "2"
            body = b"".join(resp.iter_bytes())
    assert body.rstrip().endswith(b"data: [DONE]")

    spans = receiver.wait_for(trace_id, count=6)
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    server = by_name["chat flaky-model"][0]
    assert server.kind == SERVER
    assert server.parent_span_id == client_span_id, "the client's trace is continued"
    assert server.service_name == "gw-under-test"
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "flaky-model"
    assert a["gen_ai.response.model"] == "flaky-model"
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == '["stop"]'
    assert a["http.response.status_code"] == 200
    assert a["llm_gateway.attempts"] == 2

    attempts = sorted(by_name["chat err500:trace"] + by_name["chat echo:trace"], key=lambda s: s.attributes["llm_gateway.attempt"])
    assert [s.kind for s in attempts] == [CLIENT, CLIENT]
    assert all(s.parent_span_id == server.span_id for s in attempts)
    failed, served = attempts
    assert failed.attributes["error.type"] == "upstream_status"
    assert "error.type" not in served.attributes
    for s in attempts:
        assert s.attributes["gen_ai.operation.name"] == "chat"
        assert s.attributes["gen_ai.provider.name"] == "upstream"
        assert s.attributes["server.address"].startswith("127.0.0.1:")
    assert by_name["auth"][0].parent_span_id == server.span_id
    assert by_name["route"][0].parent_span_id == server.span_id
    assert by_name["stream completion"][0].parent_span_id == server.span_id

    # Each upstream attempt carried the trace, with its own attempt span as the parent.
    sent = gw.upstream.find(lambda r: r.contains(marker))
    assert len(sent) == 2
    for request, attempt in zip(sorted(sent, key=lambda r: r.received_at), attempts):
        version, tid, parent, flags = request.headers["traceparent"].split("-")
        assert (tid, parent) == (trace_id, attempt.span_id)

    # No prompt text in any span.
    for s in spans:
        assert marker not in repr(s.attributes)
    assert all(ct == "application/x-protobuf" for ct in receiver.content_types)
