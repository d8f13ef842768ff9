"""Operational surface: /health, /ready, JSON logs without secrets."""

from __future__ import annotations

import json
import time

import httpx

from e2e_env import PROVIDER_KEY, TEAM_A_KEY, TEAM_B_KEY, Gateway


def test_health(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_ready(http: httpx.Client) -> None:
    r = http.get("/ready")
    assert r.status_code == 200


def test_logs_are_json_lines_and_never_contain_keys(gateway: Gateway) -> None:
    prompt_marker = "prompt-text-" + TEAM_A_KEY[-8:]
    msgs = [{"role": "user", "content": f"log me {prompt_marker}"}]
    wrong = TEAM_A_KEY[:-4] + "zzzz"
    calls = [
        ("/v1/chat/completions", {"Authorization": f"Bearer {TEAM_A_KEY}"}, {"model": "echo-model", "messages": msgs}),
        ("/v1/chat/completions", {"x-api-key": TEAM_B_KEY}, {"model": "mock-model", "messages": msgs}),
        ("/v1/chat/completions", {"x-api-key": TEAM_B_KEY}, {"model": "echo-model", "messages": msgs}),  # 403
        ("/v1/chat/completions", {"Authorization": f"Bearer {wrong}"}, {"model": "echo-model", "messages": msgs}),  # 401
        ("/v1/chat/completions", {"Authorization": f"Bearer {TEAM_A_KEY}"}, {"model": "err400-model", "messages": msgs}),
        ("/v1/chat/completions", {"Authorization": f"Bearer {TEAM_A_KEY}"}, {"model": "echo-model", "messages": msgs, "stream": True}),
    ]
    for path, headers, body in calls:
        gateway.request_once("POST", path, json=body, headers=headers)
    time.sleep(0.5)  # let the drain threads catch up

    out = gateway.proc.stdout_lines
    listening = [ln for ln in out if '"listening"' in ln]
    assert listening, "log capture is broken: no 'listening' line seen"
    for ln in out:
        if ln.strip():
            try:
                json.loads(ln)
            except ValueError:
                raise AssertionError(f"stdout log line is not JSON: {ln[:300]!r}") from None
    everything = gateway.proc.all_output()
    for name, secret in (("team-a key", TEAM_A_KEY), ("team-b key", TEAM_B_KEY), ("provider key", PROVIDER_KEY), ("rejected key", wrong)):
        assert secret not in everything, f"{name} appears in the gateway's logs"
    assert prompt_marker not in everything, "prompt text appears in the gateway's logs"
    # One request line per request, with the fields operators filter on.
    lines = [json.loads(ln) for ln in out if '"message":"request"' in ln]
    assert len(lines) >= len(calls)
    for field in ("request_id", "trace_id", "team", "key_id", "model", "deployment", "attempts", "status", "latency_ms"):
        assert all(field in ln for ln in lines), field


def test_a_management_listener_takes_metrics_and_sessions_off_the_api_port(tmp_path) -> None:
    """With `server.management_listen`, what operators read (/metrics, /sessions) is served
    there and not on the API port clients reach; the probes answer on both."""
    from e2e_support import GatewayProcess, _field

    gw = GatewayProcess(
        {
            "server": {"listen": "127.0.0.1:0", "management_listen": "127.0.0.1:0"},
            "keys": [{"key": TEAM_A_KEY, "team": "team-a"}],
            "teams": {"team-a": {"models": ["*"]}},
            "providers": {"mock": {"dialect": "mock"}},
            "models": {"m": {"deployments": [{"provider": "mock", "model": "mock-chat"}]}},
        },
        tmp_path,
    )
    gw.start()
    try:
        lines = [json.loads(ln) for ln in gw.stdout_lines if ln.strip().startswith("{")]
        management = next(_field(ln, "addr") for ln in lines if _field(ln, "message") == "management listening")
        with httpx.Client(base_url=gw.url, timeout=10) as api, httpx.Client(base_url=f"http://{management}", timeout=10) as ops:
            assert api.get("/metrics").status_code == 404
            assert api.get("/sessions").status_code == 404
            assert ops.get("/metrics").status_code == 200 and "llm_requests_total" in ops.get("/metrics").text
            assert ops.get("/sessions").status_code == 200
            for probe in ("/health", "/ready"):
                assert api.get(probe).status_code == 200 and ops.get(probe).status_code == 200, probe
    finally:
        gw.stop()
