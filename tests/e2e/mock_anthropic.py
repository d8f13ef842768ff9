"""A mock Anthropic Messages upstream (stdlib only) that speaks the API exactly.

``POST /v1/messages`` checks what Anthropic checks (``x-api-key``, ``anthropic-version``,
required ``model`` / ``max_tokens`` / ``messages``, user/assistant roles only, temperature in
0..1, no empty text blocks, every ``tool_result`` answering a ``tool_use`` of the previous turn,
tool-use ids matching ``^[a-zA-Z0-9_-]+$``, no unknown top-level fields) and answers 400
``invalid_request_error`` otherwise. Streams use Anthropic's named SSE events with ``ping``s,
written in small odd-sized writes. The behaviour is chosen by the ``model`` the gateway sends:

``claude-echo``          text "Echo: <last user text>" (or a summary of tool results).
``claude-tools``         two parallel tool calls (``get_weather``, ``get_time``) unless the last
                         user turn holds tool results, then a text answer.
``claude-thinking``      a signed thinking block, then text.
``claude-max``           stops with ``max_tokens``.
``claude-overloaded``    529 ``overloaded_error``.
``claude-overloaded-sse``  starts a stream, then an ``error`` event (``overloaded_error``).

A ``:tag`` suffix on the model is ignored for the choice of behaviour. Every request is recorded
(path, lower-cased headers, parsed body).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSION = "2023-06-01"
KNOWN_FIELDS = {
    "model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "top_k", "stream",
    "tools", "tool_choice", "thinking", "metadata", "service_tier", "output_config", "cache_control", "container",
    "inference_geo", "mcp_servers", "context_management",
}
# Top-level fields the API accepts only with their beta named in `anthropic-beta`.
BETA_FIELDS = {"context_management": "context-management-2025-06-27"}
# The versions the official clients send: Claude Code 2023-06-01, the anthropic SDK 2026-10-21.
API_VERSIONS = {API_VERSION, "2026-10-21"}
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
# (id, name, argument fragments) of the claude-tools behaviour.
TOOL_CALLS = (
    ("toolu_mock_weather", "get_weather", ('{"city": ', '"Par', 'is"}')),
    ("toolu_mock_time", "get_time", ()),
)
THINKING = "The user wants a short answer."
SIGNATURE = "EqQBCgIYAhIMmockSignature"
WRITE_SIZES = (5, 13, 2, 31, 7, 17)


def block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def tool_results(message: dict) -> list[dict]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def answer_for(body: dict) -> str:
    last = body["messages"][-1]
    results = tool_results(last)
    if results:
        texts = [block_text(r.get("content")) if not isinstance(r.get("content"), str) else r["content"] for r in results]
        return "Tool results: " + "; ".join(texts)
    return "Echo: " + block_text(last.get("content"))


def usage_for(body: dict, output_text: str) -> dict:
    words = sum(len(json.dumps(m.get("content"), ensure_ascii=False).split()) for m in body["messages"])
    return {"input_tokens": words + 3, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 10,
            "output_tokens": len(output_text.split()) + 1}


def validate(headers: dict, body: Any, api_key: str) -> str | None:
    """Anthropic's 4xx message for this request, or None when it is acceptable."""
    if headers.get("x-api-key") != api_key:
        return "401:invalid x-api-key"
    if headers.get("anthropic-version") not in API_VERSIONS:
        return "400:anthropic-version: header is required"
    if not isinstance(body, dict):
        return "400:body must be a JSON object"
    extra = set(body) - KNOWN_FIELDS
    if extra:
        return f"400:{sorted(extra)[0]}: Extra inputs are not permitted"
    betas = {b.strip() for b in headers.get("anthropic-beta", "").split(",")}
    for name, beta in BETA_FIELDS.items():
        if name in body and beta not in betas:
            return f"400:{name}: Extra inputs are not permitted (it needs the {beta} beta)"
    if not isinstance(body.get("model"), str):
        return "400:model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "400:max_tokens: Field required"
    t = body.get("temperature")
    if t is not None and not (0 <= t <= 1):
        return "400:temperature: Input should be less than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "400:messages: at least one message is required"
    previous_tool_ids: set[str] = set()
    for i, m in enumerate(messages):
        # System turns mid-conversation are what Claude Code sends today.
        if m.get("role") not in ("user", "assistant", "system"):
            return f"400:messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
        content = m.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        tool_ids = set()
        for j, b in enumerate(blocks):
            kind = b.get("type")
            if kind == "text" and not b.get("text"):
                return f"400:messages.{i}.content.{j}.text: text content blocks must be non-empty"
            if kind == "tool_use":
                if not TOOL_ID.match(b.get("id", "")):
                    return f"400:messages.{i}.content.{j}.tool_use.id: String should match pattern"
                if not isinstance(b.get("input"), dict):
                    return f"400:messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary"
                tool_ids.add(b["id"])
            if kind == "tool_result" and b.get("tool_use_id") not in previous_tool_ids:
                return f"400:messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks"
        previous_tool_ids = tool_ids
    return None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_mock_anthropic")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str) -> None:
        self._send(status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        mock = self.server.mock
        with mock.lock:
            mock.requests.append(Recorded(self.path, headers, body))
        if self.path.split("?")[0] != "/v1/messages":
            self._error(404, "not_found_error", f"Not found: {self.path}")
            return
        problem = validate(headers, body, mock.api_key)
        if problem:
            status, message = problem.split(":", 1)
            kind = "authentication_error" if status == "401" else "invalid_request_error"
            self._error(int(status), kind, message)
            return
        # A ":tag" suffix makes a distinct deployment with the same behaviour.
        model = body["model"].split(":")[0]
        if model == "claude-overloaded":
            self._error(529, "overloaded_error", "Overloaded")
            return
        self._answer(body, model)

    def _answer(self, body: dict, model: str) -> None:
        blocks: list[dict] = []
        stop = "end_turn"
        if model == "claude-thinking":
            blocks.append({"type": "thinking", "thinking": THINKING, "signature": SIGNATURE})
        if model == "claude-tools" and not tool_results(body["messages"][-1]):
            stop = "tool_use"
            blocks.append({"type": "text", "text": "Let me check both."})
            for tool_id, name, fragments in TOOL_CALLS:
                blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": json.loads("".join(fragments) or "{}")})
            text = "Let me check both."
        else:
            text = answer_for(body)
            if model == "claude-max":
                text = " ".join(text.split()[:2])
                stop = "max_tokens"
            blocks.append({"type": "text", "text": text})
        usage = usage_for(body, text)
        message_id = self.server.mock.next_id()
        if not body.get("stream"):
            self._send(200, {"id": message_id, "type": "message", "role": "assistant", "model": model,
                             "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage})
            return
        self._stream(message_id, model, blocks, stop, usage, fail=(model == "claude-overloaded-sse"))

    def _stream(self, message_id: str, model: str, blocks: list[dict], stop: str, usage: dict, fail: bool) -> None:
        def ev(name: str, data: dict) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        start_usage = dict(usage, output_tokens=1)
        out = bytearray(ev("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}))
        out += ev("ping", {"type": "ping"})
        for index, block in enumerate(blocks):
            kind = block["type"]
            if kind == "text":
                out += ev("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
                words = re.findall(r"\s*\S+", block["text"]) or [block["text"]]
                for n, word in enumerate(words):
                    out += ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}})
                    if fail and n == 0:
                        out += ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                        self._write_stream(bytes(out))
                        return
            elif kind == "thinking":
                out += ev("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
                out += ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
                out += ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": block["signature"]}})
            elif kind == "tool_use":
                fragments = next(f for i, n, f in TOOL_CALLS if i == block["id"])
                out += ev("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
                out += ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": ""}})
                for fragment in fragments:
                    out += ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": fragment}})
            out += ev("content_block_stop", {"type": "content_block_stop", "index": index})
            if index == 0:
                out += ev("ping", {"type": "ping"})
        out += ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                    "usage": {"output_tokens": usage["output_tokens"]}})
        out += ev("message_stop", {"type": "message_stop"})
        self._write_stream(bytes(out))

    def _write_stream(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        pos, n = 0, 0
        while pos < len(data):
            piece = data[pos:pos + WRITE_SIZES[n % len(WRITE_SIZES)]]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            pos += len(piece)
            n += 1
            if n % 8 == 0:
                time.sleep(0.001)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    mock: "MockAnthropic"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class MockAnthropic:
    """Threaded mock Messages API on 127.0.0.1, a free port; base URL without ``/v1``."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self._counter = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.mock = self

    def start(self) -> "MockAnthropic":
        threading.Thread(target=self._server.serve_forever, name="mock-anthropic", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def next_id(self) -> str:
        with self.lock:
            self._counter += 1
            return f"msg_mock{self._counter:06d}"

    def find(self, marker: str) -> Recorded:
        with self.lock:
            for rec in reversed(self.requests):
                if marker in json.dumps(rec.body, ensure_ascii=False):
                    return rec
        raise AssertionError(f"no upstream request contains {marker!r}")
