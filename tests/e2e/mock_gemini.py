"""A mock of Google's Gemini ``generateContent`` API (stdlib only): the Gemini API
(``/v1beta/models/{m}:generateContent``, ``:streamGenerateContent?alt=sse``, key in
``x-goog-api-key``) and Vertex AI (``/v1/projects/{p}/locations/{l}/publishers/google/models/{m}``,
an OAuth2 bearer token). It checks what the real service checks: the credential (a wrong key
gets Google's real ``API_KEY_INVALID`` answer, a wrong token ``UNAUTHENTICATED``) and the body's
shape (``contents`` with ``user``/``model`` roles, one datum per part, no OpenAI fields).

Behaviour by model: ``gemini-echo`` answers ``Echo: <last user text>``; ``gemini-tools`` calls
``get_weather`` until the last turn carries its ``functionResponse``, then reports it. Usage:
prompt = words of every text part, output = words of the answer, 3 thought tokens, 2 cached.

Embeddings: ``:batchEmbedContents`` (Gemini API: each request names ``models/{m}`` of the path)
and Vertex's ``:predict`` (``instances`` of ``content``; one only for ``gemini-embedding-*``), on
a model whose name holds ``embedding``; the vector is a function of the text (768 values, or
``outputDimensionality``); Vertex counts each instance's words as its ``token_count``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import urlsplit

from loopback import LoopbackServer, QuietHandler

GEMINI_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|batchEmbedContents)$")
VERTEX_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/models/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent|predict)$"
)
CLAUDE_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/anthropic/models/(?P<model>[^/:]+)"
    r":(?P<method>rawPredict|streamRawPredict)$"
)
PART_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult"}
PART_EXTRA = {"thought", "thoughtSignature"}
BODY_FIELDS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent", "labels"}
THOUGHTS = 3
CACHED = 2


@dataclass
class Recorded:
    path: str
    query: str
    headers: dict[str, str]
    body: Any


def words(text: str) -> int:
    return len(text.split())


def invalid(message: str) -> tuple[int, dict]:
    return 400, {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


def check_body(body: Any) -> str | None:
    """What Gemini would refuse in the body, or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    for key in body:
        if key not in BODY_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for part in parts:
            data = [k for k in part if k in PART_FIELDS]
            if len(data) != 1 or any(k not in PART_FIELDS | PART_EXTRA for k in part):
                return f"Invalid value at 'contents[{i}].parts' (oneof field 'data' must hold exactly one value)"
    for tool in body.get("tools") or []:
        for decl in tool.get("functionDeclarations") or []:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}", decl.get("name", "")):
                return "* GenerateContentRequest.tools[0].function_declarations[0].name: Invalid function name."
    return None


def all_text(body: dict) -> str:
    texts = []
    for content in ([body["systemInstruction"]] if body.get("systemInstruction") else []) + body["contents"]:
        for part in content.get("parts", []):
            if "text" in part:
                texts.append(part["text"])
            if "functionResponse" in part:
                texts.append(json.dumps(part["functionResponse"].get("response")))
            if "functionCall" in part:
                texts.append(json.dumps(part["functionCall"].get("args")))
    return " ".join(texts)


def answer_parts(model: str, body: dict) -> list[dict]:
    last = body["contents"][-1]["parts"]
    if model.startswith("gemini-tools"):
        responses = [p["functionResponse"] for p in last if "functionResponse" in p]
        if responses:
            return [{"text": f"The weather: {json.dumps(responses[0]['response'], sort_keys=True)}"}]
        return [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"}]
    text = " ".join(p["text"] for p in last if "text" in p)
    return [{"text": f"Echo: {text}"}]


def usage(body: dict, parts: list[dict]) -> dict:
    prompt = words(all_text(body))
    out = sum(words(p.get("text", "")) for p in parts) + sum(3 for p in parts if "functionCall" in p)
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": out,
        "thoughtsTokenCount": THOUGHTS,
        "cachedContentTokenCount": CACHED,
        "totalTokenCount": prompt + out + THOUGHTS,
    }


def expected_usage(body: dict, parts: list[dict]) -> dict:
    """The OpenAI usage the gateway must report for this exchange."""
    u = usage(body, parts)
    completion = u["candidatesTokenCount"] + THOUGHTS
    return {
        "prompt_tokens": u["promptTokenCount"],
        "completion_tokens": completion,
        "total_tokens": u["promptTokenCount"] + completion,
        "prompt_tokens_details": {"cached_tokens": CACHED},
        "completion_tokens_details": {"reasoning_tokens": THOUGHTS},
    }


def vector(text: str, dims: int) -> list[float]:
    seed = sum(text.encode()) % 89
    return [((seed + i) % 11) / 11.0 for i in range(dims)]


def embed(model: str, method: str, body: Any) -> tuple[int, Any]:
    """The Gemini API's ``batchEmbedContents`` or Vertex's ``predict`` for an embedding model."""
    if "embedding" not in model:
        return 404, {"error": {"code": 404, "message": f"models/{model} is not found for API version v1beta, or is not supported for embedContent.", "status": "NOT_FOUND"}}
    if method == "batchEmbedContents":
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests or set(body) != {"requests"}:
            return invalid("Invalid JSON payload received. Unknown name or missing \"requests\".")
        out = []
        for i, one in enumerate(requests):
            if one.get("model") != f"models/{model}":
                return invalid(f"requests[{i}].model: the model of each request must be the model of the batch (models/{model})")
            parts = (one.get("content") or {}).get("parts") or []
            if len(parts) != 1 or not isinstance(parts[0].get("text"), str) or set(one) - {"model", "content", "taskType", "title", "outputDimensionality"}:
                return invalid(f"requests[{i}].content: one text part expected")
            out.append({"values": vector(parts[0]["text"], one.get("outputDimensionality", 768))})
        return 200, {"embeddings": out}
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not instances or set(body) - {"instances", "parameters"}:
        return invalid("instances: a non-empty list is required")
    if model.startswith("gemini-embedding") and len(instances) > 1:
        return invalid("Only one instance per request is supported for gemini-embedding-001.")
    dims = (body.get("parameters") or {}).get("outputDimensionality", 768)
    if any(not isinstance(i.get("content"), str) or set(i) - {"content", "task_type", "title"} for i in instances):
        return invalid("instances[]: content (a string) is required")
    return 200, {"predictions": [{"embeddings": {"values": vector(i["content"], dims), "statistics": {"truncated": False, "token_count": words(i["content"])}}}
                                 for i in instances], "metadata": {"billableCharacterCount": sum(len(i["content"]) for i in instances)}}


class MockGemini(LoopbackServer):
    """The Gemini API (``api_key``) and Vertex AI (``token_ok(bearer)``) on one port."""

    def __init__(self, api_key: str, token_ok: Callable[[str], bool] | None = None) -> None:
        self.api_key = api_key
        self.token_ok = token_ok or (lambda _t: False)
        super().__init__(self._handler())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(QuietHandler):

            def do_POST(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with mock.lock:
                    mock.requests.append(Recorded(url.path, url.query, headers, body))
                status, answer = mock.answer(url.path, url.query, headers, body)
                if status != 200 or not isinstance(answer, list):
                    return self.send_json(status, answer)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for event in answer:
                    self.chunk(event if isinstance(event, bytes) else b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
                self.chunk(b"")

            def chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def send_json(self, status: int, obj: Any) -> None:
                self.reply(status, json.dumps(obj).encode(), "application/json; charset=UTF-8")

        return Handler

    def claude(self, model: str, stream: bool, body: Any) -> tuple[int, Any]:
        """Claude on Vertex (``rawPredict``): the Messages API, ``model`` in the path only."""
        if not isinstance(body, dict) or body.get("anthropic_version") != "vertex-2023-10-16" or "model" in body \
                or not isinstance(body.get("messages"), list) or not isinstance(body.get("max_tokens"), int):
            return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic_version: vertex-2023-10-16 required; model must not be in the body"}}
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last)
        answer = f"Echo: {text}"
        usage = {"input_tokens": words(json.dumps(body["messages"])), "output_tokens": words(answer)}
        message = {"id": "msg_vrtx_e2e", "type": "message", "role": "assistant", "model": model, "content": [{"type": "text", "text": answer}],
                   "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}
        if not stream:
            return 200, message

        def event(name: str, data: dict) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events = [event("message_start", {"message": start}), event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
        events += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": answer[i : i + 5]}}) for i in range(0, len(answer), 5)]
        events += [event("content_block_stop", {"index": 0}), event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": usage["output_tokens"]}}),
                   event("message_stop", {})]
        return 200, events

    def answer(self, path: str, query: str, headers: dict, body: Any) -> tuple[int, Any]:
        claude = CLAUDE_PATH.match(path)
        if claude:
            auth = headers.get("authorization", "")
            if not (auth.startswith("Bearer ") and self.token_ok(auth[7:])):
                return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}
            return self.claude(claude["model"], claude["method"] == "streamRawPredict", body)
        vertex = VERTEX_PATH.match(path)
        match = vertex or GEMINI_PATH.match(path)
        if not match:
            return 404, {"error": {"code": 404, "message": f"{path} not found", "status": "NOT_FOUND"}}
        if vertex:
            auth = headers.get("authorization", "")
            if not (auth.startswith("Bearer ") and self.token_ok(auth[7:])):
                return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "status": "UNAUTHENTICATED"}}
        elif headers.get("x-goog-api-key") != self.api_key:
            return 400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}
        if match["method"] in ("batchEmbedContents", "predict"):
            return embed(match["model"], match["method"], body)
        stream = match["method"] == "streamGenerateContent"
        if stream and query != "alt=sse":
            return invalid("this mock streams only with ?alt=sse")
        problem = check_body(body)
        if problem:
            return invalid(problem)
        parts = answer_parts(match["model"], body)
        meta = usage(body, parts)
        response_id = f"resp-{len(self.requests)}"
        if not stream:
            return 200, {
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": meta,
                "modelVersion": match["model"],
                "responseId": response_id,
            }
        events = []
        for part in parts:
            if "text" in part:
                text = part["text"]
                pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
                events += [{"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}], "responseId": response_id} for p in pieces]
            else:
                events.append({"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}], "responseId": response_id})
        events[-1]["candidates"][0]["finishReason"] = "STOP"
        events[-1]["usageMetadata"] = meta
        events[-1]["modelVersion"] = match["model"]
        return 200, events
