"""Metering of the Anthropic dialect: usage from `message_start` + `message_delta` (and from a
whole Message), cache reads and writes kept as their own token types; and a stream that ends
before `message_delta` (the upstream dies, or the client hangs up) billed for its input exactly
and for its output as the gateway counts what was sent, flagged estimated.

The mock below speaks the Messages API's usage exactly as documented; the mapping itself is
also covered at unit level from recorded fixtures in src/metering/tests.rs."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from e2e_support import GatewayProcess
from metering_env import TEAM_A, by_request, config, wait_until
from mock_openai import MockOpenAI
from openmeter_server import OpenMeterServer

USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000}
OUTPUT_TOKENS = 7
EXPECTED = {"input": 12, "cache_write": 100, "cache_read": 2000, "output": OUTPUT_TOKENS}
# The upstream models that stream PIECES as text deltas and never get to message_delta:
# `claude-cut` dies after CUT_AFTER of them (no terminating chunk), `claude-slow` sends one every
# SLOW_GAP seconds (the tests hang up first).
PIECES = (
    "Grüße", " aus Zürich:", " the quick", " brown fox", " jumps over", " the lazy", " dog —", " naïve café",
    " 日本語", " 🌍🚀", " résumé", " 0xDEADBEEF",
)
CUT_AFTER = 5
SLOW_GAP = 0.3


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


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
        if body.get("model") in ("claude-cut", "claude-slow"):
            self._unfinished_stream(message, body["model"])
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

    def _unfinished_stream(self, message: dict, model: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        try:
            write(_event("message_start", {"type": "message_start", "message": {**message, "content": [], "usage": {**USAGE, "output_tokens": 1}}}))
            write(_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
            for n, piece in enumerate(PIECES):
                if model == "claude-cut" and n == CUT_AFTER:
                    time.sleep(0.1)
                    break
                if model == "claude-slow" and n > 0:
                    time.sleep(SLOW_GAP)
                write(_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the upstream dies: no message_delta, no end
        except OSError:
            pass  # the gateway hung up first


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture(scope="module")
def anthropic_gateway(upstream: MockOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, OpenMeterServer]]:
    work = tmp_path_factory.mktemp("anthropic")
    mock = _Server(("127.0.0.1", 0), _Anthropic)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    om = OpenMeterServer().start()
    cfg = config(upstream.base_url, om.url, work / "outbox", tokenizers={m: "cl100k_base" for m in ("claude-cut", "claude-slow", "drop-midstream")})
    cfg["providers"]["claude"] = {"dialect": "anthropic", "base_url": f"http://127.0.0.1:{mock.server_address[1]}"}
    for name in ("claude", "claude-cut", "claude-slow"):
        upstream_model = "claude-sonnet-5-5" if name == "claude" else name
        cfg["models"][name] = {"deployments": [{"provider": "claude", "model": upstream_model}]}
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


def _stream_text(proc: GatewayProcess, api: str, model: str, rid: str, hang_up_after: int | None = None) -> str:
    """Streams a request as an OpenAI (`openai`) or Anthropic (`anthropic`) client and returns the
    text the client received; with `hang_up_after`, it disconnects after that many text pieces."""
    messages = [{"role": "user", "content": "Tell me about the fox."}]
    if api == "openai":
        path, body = "/v1/chat/completions", {"model": model, "stream": True, "messages": messages}
        headers = {"Authorization": f"Bearer {TEAM_A}"}
    else:
        path, body = "/v1/messages", {"model": model, "stream": True, "max_tokens": 64, "messages": messages}
        headers = {"x-api-key": TEAM_A, "anthropic-version": "2023-06-01"}
    pieces: list[str] = []
    with proc.http() as c:
        with c.stream("POST", path, json=body, headers={**headers, "x-request-id": rid}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                data = json.loads(line[6:])
                if api == "openai":
                    piece = ((data.get("choices") or [{}])[0].get("delta") or {}).get("content")
                else:
                    piece = (data.get("delta") or {}).get("text") if data.get("type") == "content_block_delta" else None
                if piece:
                    pieces.append(piece)
                if hang_up_after is not None and len(pieces) >= hang_up_after:
                    break  # leaving the block closes the connection mid-stream
    return "".join(pieces)


def _events_of(om: OpenMeterServer, rid: str, types: set[str]) -> dict[str, dict]:
    wait_until(lambda: set(by_request(om.snapshot()).get(rid, {})) >= types, 15, f"events of {rid}")
    events = by_request(om.snapshot())[rid]
    assert set(events) == types and all(len(e) == 1 for e in events.values()), events
    return {t: e[0]["data"] for t, e in events.items()}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("how", ["upstream_cut", "client_gone"])
def test_a_stream_cut_before_message_delta_bills_the_input_exactly_and_the_sent_output_estimated(
    anthropic_gateway: tuple[GatewayProcess, OpenMeterServer], tiktoken_encodings: dict, api: str, how: str,
) -> None:
    proc, om = anthropic_gateway
    rid = "rq-" + uuid.uuid4().hex
    if how == "upstream_cut":
        sent = _stream_text(proc, api, "claude-cut", rid)
        assert sent == "".join(PIECES[:CUT_AFTER])
    else:
        sent = _stream_text(proc, api, "claude-slow", rid, hang_up_after=3)
        assert sent == "".join(PIECES[:3])
    data = _events_of(om, rid, {"input", "cache_read", "cache_write", "output"})
    # message_start's counts, exactly as the upstream reported them.
    exact = {t: d["tokens"] for t, d in data.items() if t != "output"}
    assert exact == {"input": USAGE["input_tokens"], "cache_read": USAGE["cache_read_input_tokens"], "cache_write": USAGE["cache_creation_input_tokens"]}
    assert all(d["estimated"] is False for t, d in data.items() if t != "output")
    # The output: what was sent, counted with the deployment's tokenizer, flagged as the gateway's count.
    want = len(tiktoken_encodings["cl100k_base"].encode_ordinary(sent))
    assert want > 1
    assert (data["output"]["tokens"], data["output"]["estimated"]) == (want, True), f"{how}/{api}: sent {sent!r}"


def test_an_anthropic_client_on_an_openai_upstream_that_drops_is_counted_from_what_was_sent(
    anthropic_gateway: tuple[GatewayProcess, OpenMeterServer], tiktoken_encodings: dict,
) -> None:
    proc, om = anthropic_gateway
    rid = "rq-" + uuid.uuid4().hex
    sent = _stream_text(proc, "anthropic", "drop", rid)
    assert sent == "Partial answer"
    data = _events_of(om, rid, {"input", "output"})
    assert all(d["estimated"] is True for d in data.values()), "no usage at all: everything is the gateway's count"
    assert data["output"]["tokens"] == len(tiktoken_encodings["cl100k_base"].encode_ordinary(sent))
    assert data["input"]["tokens"] > 0
