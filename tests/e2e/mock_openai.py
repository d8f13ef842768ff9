"""A controllable OpenAI-compatible mock upstream (stdlib only).

The behaviour of every request is selected by the ``model`` field the gateway
sends upstream (the gateway rewrites the client's model name to the
deployment's ``model``). A ``:tag`` suffix is ignored for the choice of behaviour
(``err429:b`` behaves as ``err429``), so tests can create distinct upstream
deployments with the same behaviour:

``echo``             normal answers; the reply echoes the last user message.
``split``            like ``echo`` but streams are written in small odd-sized
                     writes (each its own HTTP chunk, flushed, TCP_NODELAY), with
                     ``: keep-alive`` comments and CRLF line endings in some events.
``tools``            the assistant calls two tools in parallel.
``shell-once``       like ``tools-once`` with one call to Codex's shell tool, ``exec_command``
                     (``{"cmd": "echo Hello from the tool"}``).
``responses-native`` serves ``/responses`` itself (stream and not): "Echo: <last input text>";
                     a request without ``input`` or a string ``input`` that is empty is a 400.
``tools-once``       like ``tools``, but once the conversation ends with the tools' results it
                     answers "Tool results: <outputs>"; a tool result without the assistant
                     call it answers (by ``tool_call_id``) is a 400, as OpenAI's.
``err400``           400 with an OpenAI error body (param "messages").
``err429``           429 with a ``retry-after`` header.
``err500``           500 with an OpenAI error body.
``tgi-error``        422 with a TGI-shaped body ``{"error": "...", "error_type": "validation"}``.
``slow-first-byte``  sleeps ``slow_first_byte_seconds`` before sending headers, then acts as ``echo``.
``drop-midstream``   streams two content chunks, then closes the socket without ``[DONE]``
                     (non-streaming: announces a Content-Length and closes half-way).
``no-usage``         like ``echo`` but never reports usage, even when asked (embeddings too).
``slow-stream``      like ``echo`` but a stream sends one event every ``SLOW_STREAM_GAP`` seconds.

Every request is recorded (method, path, query, headers, parsed JSON body) so
tests can assert what the gateway forwarded.

Run ``python mock_openai.py`` to serve on a free port until interrupted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

BEHAVIOURS = (
    "echo",
    "split",
    "tools",
    "tools-once",
    "shell-once",
    "responses-native",
    "err400",
    "err429",
    "err500",
    "tgi-error",
    "slow-first-byte",
    "drop-midstream",
    "no-usage",
    "slow-stream",
)

CREATED = 1_700_000_000
FINGERPRINT = "fp_mock_e2e"
UPSTREAM_REQUEST_ID_PREFIX = "req_mock_upstream_"

ERR400_MESSAGE = "Invalid 'messages': mock upstream rejects this request (err400)."
ERR429_MESSAGE = "Rate limit reached for requests (mock upstream err429)."
ERR429_RETRY_AFTER = "7"
ERR500_MESSAGE = "The server had an error while processing your request (mock err500)."
TGI_ERROR_MESSAGE = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096 (mock tgi)"

DROP_PIECES = ("Partial ", "answer")
SLOW_STREAM_GAP = 0.05

# Tool calls streamed by the ``tools`` behaviour: (id, name, argument fragments).
TOOL_CALLS = (
    ("call_mock_weather", "get_weather", ('{"city"', ': "Par', 'is", "unit": "c"}')),
    ("call_mock_time", "get_time", ('{"tz": ', '"Europe/Paris"}')),
)

# The call of the ``shell-once`` behaviour: Codex CLI's shell tool.
SHELL_CALLS = (("call_mock_shell", "exec_command", ('{"cmd": ', '"echo Hello from the tool"}')),)

# Odd write sizes used by the ``split`` behaviour (cycled).
SPLIT_WRITE_SIZES = (1, 3, 7, 5, 11, 13, 9, 17)


# --------------------------------------------------------------------------
# Deterministic content helpers (also used by tests to compute expectations)
# --------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """Text of a message ``content`` (string, list of parts, or null)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


def last_user_text(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return None


def tool_pairing_problem(messages: Any) -> str | None:
    """What OpenAI would reject in the tool messages: one answering no earlier assistant call."""
    called: set[str] = set()
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        for call in m.get("tool_calls") or []:
            called.add(call.get("id"))
        if m.get("role") == "tool" and m.get("tool_call_id") not in called:
            return f"Invalid parameter: messages[{i}] with role 'tool' must be a response to a preceding message with 'tool_calls'."
    return None


def trailing_tool_results(messages: Any) -> list[str]:
    """The contents of the tool messages the conversation ends with."""
    out: list[str] = []
    for m in reversed(messages if isinstance(messages, list) else []):
        if m.get("role") != "tool":
            break
        out.insert(0, content_text(m.get("content")))
    return out


def echo_answer(messages: Any) -> str:
    text = last_user_text(messages)
    return "Echo." if text is None else "Echo: " + text


def completion_answer(prompt: Any) -> str:
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    if not isinstance(prompt, str):
        prompt = json.dumps(prompt)
    return "Echo: " + prompt


def pieces(text: str) -> list[str]:
    """Split an answer into stream deltas: words, each with its leading whitespace."""
    out = re.findall(r"\s*\S+", text)
    tail = text[len("".join(out)):]
    if tail:
        if out:
            out[-1] += tail
        else:
            out = [tail]
    return out or [""]


def words(text: str) -> int:
    return len(text.split())


def chat_usage(messages: Any, answer: str) -> dict:
    msgs = messages if isinstance(messages, list) else []
    prompt = sum(words(content_text(m.get("content"))) + 3 for m in msgs if isinstance(m, dict))
    completion = len(pieces(answer))
    return usage_obj(prompt, completion)


def completion_usage(prompt: Any, answer: str) -> dict:
    p = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return usage_obj(words(p), len(pieces(answer)))


def usage_obj(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def embedding_vector(item: Any, dimensions: int = 8) -> list[float]:
    """Deterministic unit vector derived from the input item (float32-exact values)."""
    text = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for i in range(0, len(digest), 2):
            raw.append(int.from_bytes(digest[i:i + 2], "big") / 65535.0 * 2.0 - 1.0)
        counter += 1
    raw = raw[:dimensions]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    # round-trip through float32 so base64 and float encodings carry identical values
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in raw]


def embedding_inputs(inp: Any) -> list[Any]:
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp):
        return [inp]  # a single token array
    if isinstance(inp, list):
        return list(inp)
    return [inp]


def openai_error(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes
    body: Any  # parsed JSON, or None
    received_at: float = field(default_factory=time.time)

    @property
    def model(self) -> Any:
        return self.body.get("model") if isinstance(self.body, dict) else None

    def contains(self, marker: str) -> bool:
        return marker.encode() in self.raw_body or marker in json.dumps(self.body, ensure_ascii=False)


# --------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-openai/1.0"
    sys_version = ""
    server: "_Server"

    # silence default stderr access log
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # ---------------- low level writing ----------------

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as e:
            raise _ClientGone() from e

    def _start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        try:
            self.send_response(status)
            self.send_header("x-request-id", self.server.mock.next_upstream_request_id())
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as e:
            raise _ClientGone() from e

    def send_json(self, status: int, obj: Any, extra_headers: Iterable[tuple[str, str]] = ()) -> None:
        data = json.dumps(obj).encode()
        self._start(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra_headers],
        )
        self._write(data)

    def start_stream(self) -> None:
        self._start(
            200,
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("Transfer-Encoding", "chunked"),
            ],
        )

    def write_chunk(self, data: bytes) -> None:
        if data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def drop_connection(self) -> None:
        """Close the TCP connection abruptly (no terminating chunk)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---------------- request reading ----------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self, raw: bytes) -> RecordedRequest:
        parts = urlsplit(self.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            raw_body=raw,
            body=body,
        )
        self.server.mock._add(rec)
        return rec

    # ---------------- verbs ----------------

    def do_GET(self) -> None:  # noqa: N802
        rec = self._record(b"")
        try:
            if rec.path in ("/v1/models", "/models"):
                self.send_json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": b, "object": "model", "created": CREATED, "owned_by": "mock-upstream"}
                            for b in BEHAVIOURS
                        ],
                    },
                )
            elif rec.path == "/health":
                self.send_json(200, {"status": "ok"})
            else:
                self.send_json(404, openai_error(f"Unknown path {rec.path}", "invalid_request_error"))
        except _ClientGone:
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        raw = self._read_body()
        rec = self._record(raw)
        try:
            self._dispatch(rec)
        except _ClientGone:
            self.close_connection = True

    # ---------------- dispatch ----------------

    def _dispatch(self, rec: RecordedRequest) -> None:
        path = rec.path
        if path.startswith("/v1/"):
            path = path[3:]
        if rec.body is None or not isinstance(rec.body, dict):
            self.send_json(400, openai_error("We could not parse the JSON body of your request.", "invalid_request_error"))
            return
        body = rec.body
        upstream_model = body.get("model")
        model = upstream_model.split(":", 1)[0] if isinstance(upstream_model, str) else upstream_model
        if model not in BEHAVIOURS:
            self.send_json(
                404,
                openai_error(f"The model `{upstream_model}` does not exist.", "invalid_request_error", "model", "model_not_found"),
            )
            return
        if model == "slow-first-byte":
            time.sleep(self.server.mock.slow_first_byte_seconds)
        if model == "err400":
            self.send_json(400, openai_error(ERR400_MESSAGE, "invalid_request_error", "messages", None))
            return
        if model == "err429":
            self.send_json(
                429,
                openai_error(ERR429_MESSAGE, "requests", None, "rate_limit_exceeded"),
                [("retry-after", ERR429_RETRY_AFTER)],
            )
            return
        if model == "err500":
            self.send_json(500, openai_error(ERR500_MESSAGE, "server_error"))
            return
        if model == "tgi-error":
            self.send_json(422, {"error": TGI_ERROR_MESSAGE, "error_type": "validation"})
            return
        if path == "/chat/completions":
            self._chat(body, model)
        elif path == "/completions":
            self._completions(body, model)
        elif path == "/embeddings":
            self._embeddings(body, model)
        elif path == "/responses" and model == "responses-native":
            self._responses(body)
        else:
            self.send_json(404, openai_error(f"Unknown path {rec.path}", "invalid_request_error"))

    # ---------------- chat ----------------

    def _chat(self, body: dict, model: str) -> None:
        mock = self.server.mock
        cid = mock.next_id("chatcmpl-mock")
        messages = body.get("messages")
        stream = body.get("stream") is True
        include_usage = (
            isinstance(body.get("stream_options"), dict)
            and body["stream_options"].get("include_usage") is True
            and model != "no-usage"
        )
        forced = None
        calls = SHELL_CALLS if model == "shell-once" else TOOL_CALLS
        if model in ("tools-once", "shell-once"):
            problem = tool_pairing_problem(messages)
            if problem:
                self.send_json(400, openai_error(problem, "invalid_request_error", "messages"))
                return
            results = trailing_tool_results(messages)
            model, forced = ("echo", "Tool results: " + "; ".join(results)) if results else ("tools", None)
        if model == "tools":
            answer = None
            usage = usage_obj(chat_usage(messages, "")["prompt_tokens"], sum(len(f) for _, _, f in calls))
        else:
            answer = forced if forced is not None else echo_answer(messages)
            usage = chat_usage(messages, answer)

        if not stream:
            if model == "drop-midstream":
                self._drop_non_stream()
                return
            message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None, "annotations": []}
            finish = "stop"
            if model == "tools":
                message["tool_calls"] = [
                    {"id": tid, "type": "function", "function": {"name": name, "arguments": "".join(frags)}}
                    for tid, name, frags in calls
                ]
                finish = "tool_calls"
            resp: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion",
                "created": CREATED,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            }
            if model != "no-usage":
                resp["usage"] = usage
            self.send_json(200, resp)
            return

        def chunk(delta: dict, finish: str | None = None) -> dict:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": body["model"],
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                c["usage"] = None
            return c

        events: list[dict] = []
        if model == "tools":
            for i, (tid, name, frags) in enumerate(calls):
                head: dict[str, Any] = {
                    "tool_calls": [
                        {"index": i, "id": tid, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
                if i == 0:
                    head = {"role": "assistant", "content": None, "refusal": None, **head}
                events.append(chunk(head))
                for frag in frags:
                    events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
            events.append(chunk({}, "tool_calls"))
        elif model == "drop-midstream":
            self.start_stream()
            self.write_chunk(sse(chunk({"role": "assistant", "content": DROP_PIECES[0], "refusal": None})))
            time.sleep(0.05)
            self.write_chunk(sse(chunk({"content": DROP_PIECES[1]})))
            time.sleep(0.1)
            self.drop_connection()
            return
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            for p in pieces(answer or ""):
                events.append(chunk({"content": p}))
            events.append(chunk({}, "stop"))
        if include_usage:
            final = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": body["model"],
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": [],
                "usage": usage,
            }
            events.append(final)
        self._send_events(events, split=(model == "split"), gap=SLOW_STREAM_GAP if model == "slow-stream" else 0.0)

    # ---------------- responses (native) ----------------

    def _responses(self, body: dict) -> None:
        inp = body.get("input")
        if not inp:
            self.send_json(400, openai_error("Missing required parameter: 'input'.", "invalid_request_error", "input"))
            return
        if isinstance(inp, str):
            text = inp
        else:
            last = inp[-1]
            content = last.get("content", last.get("output", ""))
            text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        answer = "Echo: " + text
        rid = self.server.mock.next_id("resp_native")
        msg = {"type": "message", "id": "msg_" + rid, "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": answer, "annotations": [], "logprobs": []}]}
        usage = {"input_tokens": words(json.dumps(inp)), "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                 "output_tokens": words(answer), "output_tokens_details": {"reasoning_tokens": 0}}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]

        def obj(status: str, output: list, with_usage: bool) -> dict:
            o = {"id": rid, "object": "response", "created_at": CREATED, "status": status, "error": None,
                 "incomplete_details": None, "instructions": body.get("instructions"), "model": body["model"],
                 "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                 "previous_response_id": body.get("previous_response_id"), "store": body.get("store", True),
                 "metadata": {}, "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
                 "truncation": "disabled", "background": False}
            if with_usage:
                o["usage"] = usage
            return o

        if body.get("stream") is not True:
            self.send_json(200, obj("completed", [msg], True))
            return
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        added = {**msg, "status": "in_progress", "content": []}
        events = [
            {"type": "response.created", "response": obj("in_progress", [], False)},
            {"type": "response.in_progress", "response": obj("in_progress", [], False)},
            {"type": "response.output_item.added", "output_index": 0, "item": added},
            {"type": "response.content_part.added", "item_id": msg["id"], "output_index": 0, "content_index": 0, "part": part},
        ]
        for p in pieces(answer):
            events.append({"type": "response.output_text.delta", "item_id": msg["id"], "output_index": 0,
                           "content_index": 0, "delta": p, "logprobs": []})
        events += [
            {"type": "response.output_text.done", "item_id": msg["id"], "output_index": 0, "content_index": 0,
             "text": answer, "logprobs": []},
            {"type": "response.content_part.done", "item_id": msg["id"], "output_index": 0, "content_index": 0,
             "part": msg["content"][0]},
            {"type": "response.output_item.done", "output_index": 0, "item": msg},
            {"type": "response.completed", "response": obj("completed", [msg], True)},
        ]
        self.start_stream()
        for seq, event in enumerate(events):
            event["sequence_number"] = seq
            self.write_chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self.end_stream()

    # ---------------- completions ----------------

    def _completions(self, body: dict, model: str) -> None:
        mock = self.server.mock
        cid = mock.next_id("cmpl-mock")
        prompt = body.get("prompt", "")
        answer = completion_answer(prompt)
        usage = completion_usage(prompt, answer)
        stream = body.get("stream") is True
        include_usage = (
            isinstance(body.get("stream_options"), dict)
            and body["stream_options"].get("include_usage") is True
            and model != "no-usage"
        )
        if not stream:
            if model == "drop-midstream":
                self._drop_non_stream()
                return
            resp: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": CREATED,
                "model": body["model"],
                "system_fingerprint": FINGERPRINT,
                "choices": [{"text": answer, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            }
            if model != "no-usage":
                resp["usage"] = usage
            self.send_json(200, resp)
            return

        def chunk(text: str, finish: str | None = None) -> dict:
            c: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": CREATED,
                "model": body["model"],
                "system_fingerprint": FINGERPRINT,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                c["usage"] = None
            return c

        if model == "drop-midstream":
            self.start_stream()
            self.write_chunk(sse(chunk(DROP_PIECES[0])))
            time.sleep(0.05)
            self.write_chunk(sse(chunk(DROP_PIECES[1])))
            time.sleep(0.1)
            self.drop_connection()
            return
        events = [chunk(p) for p in pieces(answer)]
        events.append(chunk("", "stop"))
        if include_usage:
            events.append(
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": CREATED,
                    "model": body["model"],
                    "system_fingerprint": FINGERPRINT,
                    "choices": [],
                    "usage": usage,
                }
            )
        self._send_events(events, split=(model == "split"))

    # ---------------- embeddings ----------------

    def _embeddings(self, body: dict, model: str) -> None:
        inputs = embedding_inputs(body.get("input"))
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 8
        b64 = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            vec = embedding_vector(item, dims)
            emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
            tokens += words(item) if isinstance(item, str) else (len(item) if isinstance(item, list) else 1)
        resp: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if model != "no-usage":
            resp["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        self.send_json(200, resp)

    # ---------------- shared stream writer ----------------

    def _send_events(self, events: list[dict], split: bool, gap: float = 0.0) -> None:
        self.start_stream()
        if not split:
            for ev in events:
                self.write_chunk(sse(ev))
                if gap:
                    time.sleep(gap)
            self.write_chunk(b"data: [DONE]\n\n")
            self.end_stream()
            return
        # split: build the byte stream with comments and mixed line endings,
        # then write it in small odd-sized HTTP chunks, each flushed separately.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        buf = bytearray(b": keep-alive\n\n")
        for i, ev in enumerate(events):
            if i % 3 == 1:
                buf += b": keep-alive\r\n\r\n"
            buf += sse(ev, crlf=(i % 2 == 1))
        buf += b": keep-alive\n\n"
        buf += b"data: [DONE]\r\n\r\n"
        pos = 0
        n = 0
        while pos < len(buf):
            size = SPLIT_WRITE_SIZES[n % len(SPLIT_WRITE_SIZES)]
            self.write_chunk(bytes(buf[pos:pos + size]))
            pos += size
            n += 1
            if n % 4 == 0:
                time.sleep(0.002)
        self.end_stream()

    def _drop_non_stream(self) -> None:
        self._start(200, [("Content-Type", "application/json"), ("Content-Length", "4096")])
        self._write(b'{"id":"chatcmpl-dropped","object":"chat.comp')
        time.sleep(0.05)
        self.drop_connection()


def sse(obj: Any, crlf: bool = False) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + nl + nl


# --------------------------------------------------------------------------
# Server wrapper
# --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    mock: "MockOpenAI"

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, _ClientGone, OSError)):
            return
        super().handle_error(request, client_address)


class MockOpenAI:
    """Threaded mock upstream bound to 127.0.0.1 on a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.slow_first_byte_seconds = float(os.environ.get("MOCK_SLOW_FIRST_BYTE_SECONDS", "5"))
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._counter = 0
        self._server = _Server((host, port), _Handler)
        self._server.mock = self
        self._thread: threading.Thread | None = None

    # ---------------- lifecycle ----------------

    def start(self) -> "MockOpenAI":
        self._thread = threading.Thread(target=self._server.serve_forever, name="mock-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "MockOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # ---------------- ids ----------------

    def next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}-{self._counter:06d}"

    def next_upstream_request_id(self) -> str:
        return self.next_id(UPSTREAM_REQUEST_ID_PREFIX.rstrip("_"))

    # ---------------- recording ----------------

    def _add(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def find(self, pred: Callable[[RecordedRequest], bool]) -> list[RecordedRequest]:
        return [r for r in self.requests if pred(r)]

    def with_marker(self, marker: str) -> list[RecordedRequest]:
        return self.find(lambda r: r.contains(marker))

    def wait_for(self, pred: Callable[[RecordedRequest], bool], timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(pred)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def closed_port() -> int:
    """A localhost port with nothing listening on it (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


if __name__ == "__main__":
    m = MockOpenAI().start()
    print(f"mock OpenAI upstream on {m.base_url} (behaviours: {', '.join(BEHAVIOURS)})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        m.stop()
