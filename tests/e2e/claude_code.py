"""The real Claude Code CLI for the end-to-end tests, and a tool-using OpenAI-compatible model.

`tests/run.sh` installs a pinned `@anthropic-ai/claude-code` from npm (its Linux binary ships
inside the package) and exports its path as ``CLAUDE_BIN`` and its version as
``CLAUDE_CODE_VERSION``. ``run_claude`` runs ``claude -p`` the way a user scripts it, with a
temporary ``HOME``, no telemetry and no non-essential traffic; as root it cannot skip
permissions, so tools are allowed by name.

``AgentModel`` is an OpenAI chat-completions server that behaves like a tool-using model and
checks what it receives as OpenAI does: roles, tool definitions, and that every tool message
answers a tool call of an earlier assistant message.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# The version the golden fixtures were captured from (tests/run.sh installs it unless
# CLAUDE_CODE_VERSION names another).
PINNED_VERSION = "2.1.328"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"
# One session id for every run, so that two runs of one prompt send identical requests.
SESSION_ID = "5b0c8a61-7d4e-4f43-9a3c-2e6f0d9b1c74"
TIMEOUT_S = 120


def claude_bin() -> str:
    path = os.environ.get("CLAUDE_BIN", "")
    if not (path and os.access(path, os.X_OK)):
        pytest.fail("CLAUDE_BIN does not name the Claude Code binary: run the suite through tests/run.sh", pytrace=False)
    return path


def claude_version() -> str:
    out = subprocess.run([claude_bin(), "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    return out.split()[0]


@dataclass
class ClaudeRun:
    returncode: int
    result: dict[str, Any]
    stdout: str
    stderr: str


def run_claude(
    base_url: str, api_key: str, prompt: str, *, home: Path, cwd: Path, model: str, args: tuple[str, ...] = ()
) -> ClaudeRun:
    """``claude -p PROMPT --output-format json`` against ``base_url`` (the gateway's root URL)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    command = [
        claude_bin(), "-p", prompt, "--model", model, "--output-format", "json",
        "--session-id", SESSION_ID, "--no-session-persistence", *args,
    ]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    except ValueError:
        result = {}
    return ClaudeRun(done.returncode, result, done.stdout, done.stderr)


def structure(body: dict) -> dict:
    """What a translation depends on in a Claude Code request, without its text: top-level
    fields, each turn's role and block types, tool names and fields, thinking and effort."""
    def blocks(content: Any) -> list[str]:
        return ["string"] if isinstance(content, str) else [b.get("type", "?") for b in content]

    return {
        "fields": sorted(body),
        "turns": [[m["role"], blocks(m["content"])] for m in body["messages"]],
        "system": blocks(body.get("system", [])),
        "tools": sorted((t["name"], tuple(sorted(t))) for t in body.get("tools", [])),
        "thinking": body.get("thinking"),
        "output_config": body.get("output_config"),
        "context_management": body.get("context_management"),
        "stream": body.get("stream"),
    }


# ------------------------------------------------------------------ a tool-using model

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ROLES = {"system", "developer", "user", "assistant", "tool"}
COMMAND = re.compile(r"RUN<<(.+?)>>")


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def openai_problem(body: Any) -> str | None:
    """OpenAI's 400 for a chat request it would refuse, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "'model' is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    calls: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            return f"Invalid value for 'messages[{i}].role': {role!r}"
        if role == "assistant":
            for call in m.get("tool_calls") or []:
                if call.get("type") != "function" or not TOOL_NAME.match(call["function"]["name"]):
                    return f"messages[{i}].tool_calls: invalid tool call {call!r}"
                json.loads(call["function"]["arguments"])
                calls.add(call["id"])
        if role == "tool" and m.get("tool_call_id") not in calls:
            return f"messages[{i}]: a tool message must answer an earlier tool call"
    for i, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") or {}
        if tool.get("type") != "function" or not TOOL_NAME.match(fn.get("name", "")):
            return f"tools[{i}]: invalid function tool"
        if not isinstance(fn.get("parameters", {}), dict):
            return f"tools[{i}].function.parameters must be an object"
    if body.get("stream_options") is not None and body.get("stream") is not True:
        return "'stream_options' is only allowed when 'stream' is true"
    return None


@dataclass
class Turn:
    body: dict
    usage: dict


@dataclass
class AgentModel:
    """Answers like a model with one tool: a user turn naming ``RUN<<command>>`` gets a streamed
    call to ``Bash`` with that command; a turn that ends with the tool's result gets the text
    ``The command printed: <result>``."""

    api_key: str
    turns: list[Turn] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def start(self) -> "AgentModel":
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                model.answer(self, raw)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def answer(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        def reply(status: int, obj: Any, content_type: str = "application/json") -> None:
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            h.send_response(status)
            h.send_header("content-type", content_type)
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        if h.headers.get("authorization") != f"Bearer {self.api_key}":
            reply(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        if h.path != "/v1/chat/completions":
            reply(404, {"error": {"message": f"Unknown request URL: {h.path}", "type": "invalid_request_error"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problem = openai_problem(body)
        if problem:
            self.problems.append(problem)
            reply(400, {"error": {"message": problem, "type": "invalid_request_error", "param": None, "code": None}})
            return
        messages = body["messages"]
        prompt_tokens = len(json.dumps(messages)) // 4
        last = messages[-1]
        user_text = next((text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
        command = COMMAND.search(user_text)
        chunks: list[dict]
        if last["role"] != "tool" and command:
            arguments = json.dumps({"command": command.group(1), "description": "Run the requested command"})
            pieces = [arguments[:10], arguments[10:25], arguments[25:]]
            chunks = [{"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": f"call_{len(self.turns)}", "type": "function", "function": {"name": "Bash", "arguments": ""}}]}]
            chunks += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
            finish, completion_tokens = "tool_calls", 17
        else:
            text = "The command printed: " + text_of(last.get("content")).strip() if last["role"] == "tool" else "No command."
            words = re.findall(r"\s*\S+", text)
            chunks = [{"role": "assistant", "content": ""}] + [{"content": w} for w in words]
            finish, completion_tokens = "stop", len(words)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        self.turns.append(Turn(body, usage))
        if not body.get("stream"):
            reply(400, {"error": {"message": "this model only streams", "type": "invalid_request_error"}})
            return
        base = {"id": f"chatcmpl-agent{len(self.turns)}", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": body["model"]}
        events = [dict(base, choices=[{"index": 0, "delta": c, "finish_reason": None}]) for c in chunks]
        events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": finish}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(dict(base, choices=[], usage=usage))
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        reply(200, data, "text/event-stream")


class RecordingProxy:
    """A pass-through HTTP proxy in front of the gateway that keeps every request Claude Code
    sends (path, headers, JSON body) and relays the answer as it arrives."""

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("http://")
        self.requests: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.requests.append({"path": self.path, "headers": headers, "body": json.loads(raw)})
                upstream = http.client.HTTPConnection(proxy.target, timeout=TIMEOUT_S)
                forward = {k: v for k, v in headers.items() if k not in ("host", "accept-encoding", "connection")}
                upstream.request("POST", self.path, body=raw, headers=forward)
                answer = upstream.getresponse()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                while piece := answer.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                upstream.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def golden(name: str, request: dict, version: str) -> dict | None:
    """The golden capture `name` of the pinned version (written when absent or with
    UPDATE_GOLDEN=1); None when the CLI under test is another version."""
    path = FIXTURES / f"{name}.json"
    keep = {"path": request["path"], "version": version,
            "headers": {k: v for k, v in request["headers"].items() if k.startswith("anthropic-")},
            "body": request["body"]}
    if version != PINNED_VERSION:
        return None
    if os.environ.get("UPDATE_GOLDEN") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(keep, indent=1, ensure_ascii=False) + "\n")
    return json.loads(path.read_text())
