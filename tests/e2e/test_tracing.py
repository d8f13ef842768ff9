"""Traces: a streamed request through two attempts exports one span tree over OTLP/HTTP with
GenAI attributes, continues the client's W3C trace, and propagates it to the upstream."""

from __future__ import annotations

import secrets
import time
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, Gateway, gateway_config
from e2e_support import GatewayProcess
from mock_openai import MockOpenAI, closed_port
from otlp_receiver import OtlpGrpcReceiver, OtlpReceiver

SERVER, CLIENT = 2, 3


def start_traced(
    upstream: MockOpenAI,
    tmp_path,
    otlp_extra: dict | None = None,
    env: dict | None = None,
    threads: int | None = None,
    rpm: int = 100_000,
) -> tuple[GatewayProcess, OtlpReceiver]:
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
    # Limits to check, so requests have a `limits` span (a team with none has nothing to check).
    cfg["teams"]["team-a"]["limits"] = {"rpm": rpm}
    otlp = {"endpoint": receiver.endpoint, "protocol": "http", "batch_delay": "100ms", "service_name": "gw-under-test"}
    cfg["telemetry"] = {"otlp": otlp | (otlp_extra or {})}
    if threads:
        cfg["server"]["threads"] = threads
    proc = GatewayProcess(cfg, tmp_path, env={PROVIDER_KEY_ENV: PROVIDER_KEY} | (env or {})).start()
    return proc, receiver


@pytest.fixture()
def traced(upstream: MockOpenAI, tmp_path) -> Iterator[tuple[Gateway, OtlpReceiver]]:
    proc, receiver = start_traced(upstream, tmp_path)
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
    sent_at_ns = time.time_ns()
    with gw.http() as http:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            headers={
                "Authorization": f"Bearer {TEAM_A_KEY}",
                "traceparent": f"00-{trace_id}-{client_span_id}-01",
                "tracestate": "vendor=opaque-1",
            },
            json={"model": "flaky-model", "stream": True, "messages": [{"role": "user", "content": prompt}]},
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["x-llm-gateway-attempts"] == "2"
            body = b"".join(resp.iter_bytes())
    assert body.rstrip().endswith(b"data: [DONE]")
    answered_at_ns = time.time_ns()

    spans = receiver.wait_for(trace_id, count=6)
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert sorted(s.name for s in spans) == sorted(
        ["chat flaky-model", "auth", "limits", "chat err500:trace", "chat echo:trace", "stream completion"]
    ), "a trace's spans are exported together: one per stage that waits on something, one per attempt"
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
    assert a["gen_ai.response.finish_reasons"] == ["stop"], "a string array, as the conventions define it"
    assert a["http.response.status_code"] == 200
    assert a["llm_gateway.attempts"] == 2
    assert server.status_code == 0, "a served request is not marked failed"
    # Wall-clock times within the request, children inside their parent.
    for s in spans:
        assert sent_at_ns - 50_000_000 <= s.start_ns <= s.end_ns <= answered_at_ns + 50_000_000, s
        assert server.start_ns <= s.start_ns and s.end_ns <= server.end_ns, s
        assert s.trace_state == "vendor=opaque-1", "the client's tracestate stays on its trace"

    attempts = sorted(by_name["chat err500:trace"] + by_name["chat echo:trace"], key=lambda s: s.attributes["llm_gateway.attempt"])
    assert [s.kind for s in attempts] == [CLIENT, CLIENT]
    assert all(s.parent_span_id == server.span_id for s in attempts)
    failed, served = attempts
    assert failed.attributes["error.type"] == "upstream_status"
    assert "error.type" not in served.attributes
    for s in attempts:
        assert s.attributes["gen_ai.operation.name"] == "chat"
        assert s.attributes["gen_ai.provider.name"] == "upstream"
        assert s.attributes["server.address"] == "127.0.0.1"
        assert s.attributes["server.port"] == gw.upstream.port
    assert by_name["auth"][0].parent_span_id == server.span_id
    assert by_name["limits"][0].parent_span_id == server.span_id
    assert by_name["stream completion"][0].parent_span_id == server.span_id

    # Each upstream attempt carried the trace, with its own attempt span as the parent.
    sent = gw.upstream.find(lambda r: r.contains(marker))
    assert len(sent) == 2
    for request, attempt in zip(sorted(sent, key=lambda r: r.received_at), attempts):
        version, tid, parent, flags = request.headers["traceparent"].split("-")
        assert (tid, parent) == (trace_id, attempt.span_id)
        assert flags == "01"
        assert request.headers["tracestate"] == "vendor=opaque-1"

    # No prompt text in any span.
    for s in spans:
        assert marker not in repr(s.attributes)
    assert all(ct == "application/x-protobuf" for ct in receiver.content_types)


def post_in_new_trace(gw: Gateway, model: str, content: str, status: int = 200) -> str:
    """One chat completion sent as part of a new, sampled client trace; returns the trace id."""
    trace_id = secrets.token_hex(16)
    with gw.http() as http:
        resp = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {TEAM_A_KEY}", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            json={"model": model, "messages": [{"role": "user", "content": content}]},
        )
        assert resp.status_code == status, resp.text
    return trace_id


def test_a_refused_request_is_a_failed_server_span(traced) -> None:
    gw, receiver = traced
    trace_id = post_in_new_trace(gw, "no-such-model", "hi", status=404)
    spans = receiver.wait_for(trace_id, count=3)
    server = next(s for s in spans if s.kind == SERVER)
    assert server.name == "chat no-such-model"
    assert server.status_code == 2, "STATUS_CODE_ERROR"
    assert server.attributes["error.type"] == "model_not_found"
    assert server.attributes["http.response.status_code"] == 404
    assert "gen_ai.response.model" not in server.attributes
    assert sorted(s.name for s in spans) == ["auth", "chat no-such-model", "limits"]


def test_a_rate_limited_request_span_still_names_its_request(upstream: MockOpenAI, tmp_path) -> None:
    # Refused by the limits before any upstream was chosen: the server span still says which
    # model and team, with which request id, and why it failed.
    proc, receiver = start_traced(upstream, tmp_path, rpm=1)
    try:
        gw = Gateway(proc=proc, upstream=upstream)
        post_in_new_trace(gw, "echo-model", "the minute's one request")
        trace_id = secrets.token_hex(16)
        with gw.http() as http:
            resp = http.post(
                "/v1/chat/completions",
                headers={
                    "Authorization": f"Bearer {TEAM_A_KEY}",
                    "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                    "x-request-id": "rid-over-the-limit",
                },
                json={"model": "echo-model", "stream": True, "messages": [{"role": "user", "content": "one more"}]},
            )
            assert resp.status_code == 429, resp.text
        spans = receiver.wait_for(trace_id, count=3)
        assert sorted(s.name for s in spans) == ["auth", "chat echo-model", "limits"]
        server = next(s for s in spans if s.kind == SERVER)
        assert server.status_code == 2, "STATUS_CODE_ERROR"
        a = server.attributes
        assert a["http.response.status_code"] == 429
        assert a["error.type"] == "rate_limited"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "echo-model"
        assert a["gen_ai.request.stream"] is True
        assert a["llm_gateway.team"] == "team-a"
        assert a["llm_gateway.request_id"] == "rid-over-the-limit"
        assert a["llm_gateway.attempts"] == 0
        assert "gen_ai.response.model" not in a and "llm_gateway.deployment" not in a
    finally:
        proc.stop()
        receiver.stop()


def test_traces_still_batched_are_exported_at_shutdown(upstream: MockOpenAI, tmp_path) -> None:
    proc, receiver = start_traced(upstream, tmp_path, {"batch_delay": "10m"})
    try:
        trace_id = post_in_new_trace(Gateway(proc=proc, upstream=upstream), "echo-model", "hi")
        assert receiver.wait_for(trace_id, count=1, timeout=0.5) == [], "held for the batch delay"
        proc.stop()
        assert proc.proc is not None and proc.proc.returncode == 0
        assert len(receiver.wait_for(trace_id, count=4, timeout=5)) == 4, "the whole trace: server, auth, limits, attempt"
    finally:
        proc.stop()
        receiver.stop()


def test_a_batch_goes_once_it_holds_max_export_batch_size_spans_with_the_resource_attributes(
    upstream: MockOpenAI, tmp_path
) -> None:
    # What the Helm chart sets (the namespace, percent-encoded values), and the config's own.
    env = {"OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=ai-gateway,deployment.environment.name=prod%2Ceu"}
    extra = {"batch_delay": "10m", "max_export_batch_size": 6, "resource_attributes": {"team.owner": "platform"}}
    proc, receiver = start_traced(upstream, tmp_path, extra, env, threads=2)
    try:
        gw = Gateway(proc=proc, upstream=upstream)
        first = post_in_new_trace(gw, "echo-model", "hi")
        assert receiver.wait_for(first, count=1, timeout=0.5) == [], "4 spans: the batch waits for more"
        # Each serving thread (two, configured) has its own batch: of three traces of four spans, two
        # land in one batch, which then holds 8 >= 6 spans and goes without waiting 10 minutes.
        traces = [first] + [post_in_new_trace(gw, "echo-model", f"hi {n}") for n in range(2)]
        deadline = time.monotonic() + 5
        while not receiver.export_sizes and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert receiver.export_sizes == [8], "one export: two whole traces, the third still batched"
        spans = [s for s in receiver.spans if s.trace_id in traces]
        assert len(spans) == 8
        for span in spans:
            assert span.resource == {
                "service.name": "gw-under-test",
                "deployment.environment.name": "prod,eu",
                "k8s.namespace.name": "ai-gateway",
                "team.owner": "platform",
            }
    finally:
        proc.stop()
        receiver.stop()


def span_counts(gw: Gateway) -> tuple[float, float, float]:
    """The exporter's span counters: (exported, dropped as export_failed, dropped as queue_full)."""
    resp = gw.request_once("GET", "/metrics")
    assert resp.status_code == 200
    counts = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            counts[(s.name, s.labels.get("reason", ""))] = s.value
    return (
        counts[("llm_gateway_trace_spans_exported_total", "")],
        counts[("llm_gateway_trace_spans_dropped_total", "export_failed")],
        counts[("llm_gateway_trace_spans_dropped_total", "queue_full")],
    )


def wait_for_counts(gw: Gateway, expected: tuple[float, float, float], timeout: float = 10.0) -> tuple[float, float, float]:
    deadline = time.monotonic() + timeout
    while (counts := span_counts(gw)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return counts


def test_spans_a_collector_refuses_are_counted_and_later_exports_go_through(upstream: MockOpenAI, tmp_path) -> None:
    proc, receiver = start_traced(upstream, tmp_path)
    gw = Gateway(proc=proc, upstream=upstream)
    try:
        assert span_counts(gw) == (0, 0, 0)
        receiver.refusing = True
        refused = [post_in_new_trace(gw, "echo-model", f"down {i}") for i in range(3)]
        # Three traces of four spans (server, auth, limits, attempt), each export answered 503.
        assert wait_for_counts(gw, (0, 12, 0)) == (0, 12, 0)
        assert sorted({s.trace_id for s in receiver.refused}) == sorted(refused), "the exports were whole and valid"
        assert len(receiver.refused) == 12

        receiver.refusing = False
        served = [post_in_new_trace(gw, "echo-model", f"up {i}") for i in range(2)]
        assert wait_for_counts(gw, (8, 12, 0)) == (8, 12, 0), "a failed export does not hold up the next"
        assert all(len(receiver.wait_for(t, count=4)) == 4 for t in served)
        assert not any(s.trace_id in refused for s in receiver.spans), "a refused export is not retried"
    finally:
        proc.stop()
        receiver.stop()


def test_sampling_follows_the_client_decision_then_the_configured_ratio(upstream: MockOpenAI, tmp_path, marker: str) -> None:
    proc, receiver = start_traced(upstream, tmp_path, {"sample_ratio": 0.0})
    gw = Gateway(proc=proc, upstream=upstream)
    try:
        sampled_id, unsampled_id, parent = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(8)
        with gw.http() as http:
            for traceparent, tag in [
                (None, "none"),
                (f"00-{unsampled_id}-{parent}-00", "unsampled"),
                (f"00-{sampled_id}-{parent}-01", "sampled"),
            ]:
                headers = {"Authorization": f"Bearer {TEAM_A_KEY}"} | ({"traceparent": traceparent} if traceparent else {})
                resp = http.post(
                    "/v1/chat/completions",
                    headers=headers,
                    json={"model": "echo-model", "messages": [{"role": "user", "content": f"{tag} {marker}"}]},
                )
                assert resp.status_code == 200, resp.text

        # A sampled parent is continued even at ratio 0: the whole tree arrives.
        spans = receiver.wait_for(sampled_id, count=4)
        assert {s.name for s in spans} == {"chat echo-model", "auth", "limits", "chat echo"}
        # Nothing else was traced: no root of its own, nothing of the unsampled parent's trace.
        time.sleep(0.5)
        assert {s.trace_id for s in receiver.spans} == {sampled_id}

        # The untraced requests still carry the client's context upstream, unchanged.
        (unsampled,) = gw.upstream.find(lambda r: r.contains(f"unsampled {marker}"))
        assert unsampled.headers["traceparent"] == f"00-{unsampled_id}-{parent}-00"
        (plain,) = gw.upstream.find(lambda r: r.contains(f"none {marker}"))
        assert "traceparent" not in plain.headers
        (traced_request,) = gw.upstream.find(lambda r: r.contains(f"sampled {marker}") and not r.contains("unsampled"))
        assert traced_request.headers["traceparent"].split("-")[1] == sampled_id
    finally:
        proc.stop()
        receiver.stop()


def test_traces_are_exported_over_grpc_too(upstream: MockOpenAI, tmp_path) -> None:
    receiver = OtlpGrpcReceiver().start()
    cfg = gateway_config(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1")
    cfg["telemetry"] = {
        "otlp": {
            "endpoint": receiver.endpoint,
            "protocol": "grpc",
            "batch_delay": "100ms",
            "service_name": "gw-grpc",
            "headers": {"x-collector-token": "t0ken"},
        }
    }
    proc = GatewayProcess(cfg, tmp_path, env={PROVIDER_KEY_ENV: PROVIDER_KEY}).start()
    gw = Gateway(proc=proc, upstream=upstream)
    try:
        trace_id = post_in_new_trace(gw, "echo-model", "over grpc")
        spans = receiver.wait_for(trace_id, count=3)
        names = {s.name for s in spans}
        # (This gateway's teams have no limits: nothing is checked, so there is no limits span.)
        assert names == {"chat echo-model", "auth", "chat echo"}, names
        server = next(s for s in spans if s.name == "chat echo-model")
        assert server.kind == SERVER and server.service_name == "gw-grpc"
        assert server.attributes["gen_ai.usage.input_tokens"] > 0
        assert any(m.get("x-collector-token") == "t0ken" for m in receiver.metadata), "configured headers travel as gRPC metadata"
    finally:
        proc.stop()
        receiver.stop()
