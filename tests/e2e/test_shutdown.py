"""Graceful shutdown: on SIGTERM the gateway stops accepting connections, lets the request in
flight finish, then exits cleanly; a request still running at the deadline is cut."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, gateway_config
from e2e_support import GatewayProcess
from mock_openai import MockOpenAI, closed_port


def _start(tmp_path, grace: str, threads: int | None = None) -> tuple[MockOpenAI, GatewayProcess]:
    upstream = MockOpenAI()
    upstream.slow_first_byte_seconds = 1.5
    upstream.start()
    cfg = gateway_config(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1")
    cfg["server"]["shutdown_grace"] = grace
    if threads is not None:
        cfg["server"]["threads"] = threads
    cfg["providers"]["upstream-slow"]["timeouts"] = {"first_byte": "10s"}
    return upstream, GatewayProcess(cfg, tmp_path, env={PROVIDER_KEY_ENV: PROVIDER_KEY}).start()


def _slow_stream(proc: GatewayProcess, result: dict) -> None:
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            r = http.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
                json={"model": "slow-stream-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
            result["status"] = r.status_code
            result["body"] = r.content
    except Exception as e:  # noqa: BLE001 - the test inspects what happened
        result["error"] = repr(e)


def _wait_for_upstream_call(upstream: MockOpenAI) -> None:
    deadline = time.monotonic() + 10
    while not upstream.find(lambda r: r.model and str(r.model).startswith("slow-first-byte")):
        assert time.monotonic() < deadline, "the request never reached the upstream"
        time.sleep(0.02)


def test_sigterm_drains_the_stream_in_flight_and_refuses_new_connections(tmp_path) -> None:
    upstream, proc = _start(tmp_path, grace="10s")
    try:
        result: dict = {}
        t = threading.Thread(target=_slow_stream, args=(proc, result))
        t.start()
        _wait_for_upstream_call(upstream)
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        host, port = proc.addr.rsplit(":", 1)
        refused = False
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            refused = True
        assert refused, "the listener still accepts connections after SIGTERM"
        t.join(timeout=20)
        assert result.get("status") == 200, result
        assert result["body"].rstrip().endswith(b"data: [DONE]"), "the in-flight stream finished whole"
        assert proc.proc.wait(timeout=10) == 0
    finally:
        proc.stop()
        upstream.stop()


def test_requests_outliving_the_grace_period_are_cut(tmp_path) -> None:
    upstream, proc = _start(tmp_path, grace="200ms")
    try:
        result: dict = {}
        t = threading.Thread(target=_slow_stream, args=(proc, result))
        t.start()
        _wait_for_upstream_call(upstream)
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 1.4, "the gateway exits at the deadline, not when the upstream answers"
        t.join(timeout=20)
        assert result.get("status") != 200 or not result.get("body", b"").rstrip().endswith(b"[DONE]")
    finally:
        proc.stop()
        upstream.stop()


def test_every_serving_thread_drains_its_streams(tmp_path) -> None:
    """With several serving threads (each with connections of its own), SIGTERM lets every
    stream in flight finish, on whichever thread it is, before the gateway exits."""
    upstream, proc = _start(tmp_path, grace="10s", threads=4)
    try:
        assert any('"threads":4' in line for line in proc.stdout_lines), proc.output_tail()
        results: list[dict] = [{} for _ in range(8)]
        threads = [threading.Thread(target=_slow_stream, args=(proc, r)) for r in results]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(upstream.find(lambda r: r.model and str(r.model).startswith("slow-first-byte"))) < 8:
            assert time.monotonic() < deadline, "the requests never all reached the upstream"
            time.sleep(0.02)
        proc.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=20)
        assert [r.get("status") for r in results] == [200] * 8, results
        assert all(r["body"].rstrip().endswith(b"data: [DONE]") for r in results), "every stream finished whole"
        assert proc.proc.wait(timeout=10) == 0
    finally:
        proc.stop()
        upstream.stop()
