"""Metering of the Anthropic dialect: usage from `message_start` + `message_delta` (and from a
whole Message), cache reads and writes kept as their own token types.

The mock below speaks the Messages API's usage exactly as documented; the mapping itself is
also covered at unit level from recorded fixtures in src/metering/tests.rs."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_support import GatewayProcess
from metering_env import TEAM_A, by_request, config, wait_until
from mock_openai import MockOpenAI
from openmeter_server import OpenMeterServer

USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000}
OUTPUT_TOKENS = 7
EXPECTED = {"input": 12, "cache_write": 100, "cache_read": 2000, "output": OUTPUT_TOKENS}


class _Anthropic(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        message = {
            "id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant", "model": body.get("model"),
            "stop_reason": None, "stop_sequence": None,
        }
        if not body.get("stream"):
            data = json.dumps({
                **message, "content": [{"type": "text", "text": "Cached answer."}], "stop_reason": "end_turn",
                "usage": {**USAGE, "output_tokens": OUTPUT_TOKENS},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        events = [
            ("message_start", {"type": "message_start", "message": {**message, "content": [], "usage": {**USAGE, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Cached "}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "answer."}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": OUTPUT_TOKENS}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        raw = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def anthropic_gateway(upstream: MockOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, OpenMeterServer]]:
    work = tmp_path_factory.mktemp("anthropic")
    mock = ThreadingHTTPServer(("127.0.0.1", 0), _Anthropic)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    om = OpenMeterServer().start()
    cfg = config(upstream.base_url, om.url, work / "outbox")
    cfg["providers"]["claude"] = {"dialect": "anthropic", "base_url": f"http://127.0.0.1:{mock.server_address[1]}"}
    cfg["models"]["claude"] = {"deployments": [{"provider": "claude", "model": "claude-sonnet-5-5"}]}
    proc = GatewayProcess(cfg, work).start()
    yield proc, om
    proc.stop()
    om.stop()
    mock.shutdown()


def _metered(om: OpenMeterServer, rid: str) -> dict[str, int]:
    wait_until(lambda: rid in by_request(om.snapshot()), 15, f"events of {rid}")
    events = by_request(om.snapshot())[rid]
    assert all(len(e) == 1 and e[0]["data"]["estimated"] is False for e in events.values())
    return {t: e[0]["data"]["tokens"] for t, e in events.items()}


@pytest.mark.parametrize("stream", [False, True])
def test_messages_api_usage_is_metered_with_cache_types(anthropic_gateway: tuple[GatewayProcess, OpenMeterServer], stream: bool) -> None:
    import anthropic

    proc, om = anthropic_gateway
    rid = "rq-" + uuid.uuid4().hex
    client = anthropic.Anthropic(base_url=proc.url, api_key=TEAM_A, max_retries=0, default_headers={"x-request-id": rid})
    kwargs: dict[str, Any] = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        with client.messages.stream(**kwargs) as s:
            s.get_final_message()
    else:
        client.messages.create(**kwargs)
    assert _metered(om, rid) == EXPECTED


@pytest.mark.parametrize("stream", [False, True])
def test_openai_clients_on_an_anthropic_deployment_are_metered_the_same(anthropic_gateway: tuple[GatewayProcess, OpenMeterServer], stream: bool) -> None:
    proc, om = anthropic_gateway
    rid = "rq-" + uuid.uuid4().hex
    with proc.http() as c:
        r = c.post(
            "/v1/chat/completions",
            json={"model": "claude", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {TEAM_A}", "x-request-id": rid},
        )
        assert r.status_code == 200
    assert _metered(om, rid) == EXPECTED
