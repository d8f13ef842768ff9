"""Shared helpers for the end-to-end suite: gateway process harness, SSE parsing, error checks."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import httpx
import yaml

from openai_schemas import assert_valid

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "llm-gateway"
STARTUP_TIMEOUT = float(os.environ.get("E2E_STARTUP_TIMEOUT", "60"))

# Environment variables of the gateway that must not leak in from the developer's shell.
_GATEWAY_ENV_OVERRIDES = (
    "LLM_BACKEND",
    "LLM_REQUEST_TIMEOUT",
    "LLM_GATEWAY_LISTEN",
    "LLM_GATEWAY_CONFIG",
    "PORT",
    "OPENMETER_URL",
    "OPENMETER_TOKEN",
    "LLM_GATEWAY_OUTBOX_DIR",
)


def gateway_bin() -> str:
    return os.environ.get("LLM_GATEWAY_BIN") or str(DEFAULT_BIN)


def gateway_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GATEWAY_ENV_OVERRIDES}
    env.update(extra or {})
    return env


def _field(obj: dict, name: str) -> Any:
    """A field of a JSON log line, at top level or under tracing's "fields"."""
    if name in obj:
        return obj[name]
    fields = obj.get("fields")
    if isinstance(fields, dict):
        return fields.get(name)
    return None


class GatewayProcess:
    """Runs the gateway binary with a config file and captures its output."""

    def __init__(self, config: dict, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.env = gateway_env(env)
        self.proc: subprocess.Popen | None = None
        self.addr: str | None = None
        self._lock = threading.Lock()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        self._threads: list[threading.Thread] = []

    # ---------------- lifecycle ----------------

    def start(self) -> "GatewayProcess":
        binary = gateway_bin()
        if not os.path.exists(binary):
            raise RuntimeError(f"gateway binary not found at {binary} (build it, or set LLM_GATEWAY_BIN)")
        self.proc = subprocess.Popen(
            [binary, "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.workdir,
        )
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._stdout, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self.addr is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError(f"gateway did not log a 'listening' line within {STARTUP_TIMEOUT}s\n{self.output_tail()}")
            try:
                line = self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    time.sleep(0.2)
                    raise RuntimeError(f"gateway exited with {self.proc.returncode} before listening\n{self.output_tail()}")
                continue
            if line is None:
                time.sleep(0.2)
                raise RuntimeError(f"gateway closed stdout before listening (rc={self.proc.poll()})\n{self.output_tail()}")
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and _field(obj, "message") == "listening" and _field(obj, "addr"):
                self.addr = str(_field(obj, "addr"))
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=2)

    def _drain(self, stream: Any, sink: list[str], is_stdout: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._lock:
                sink.append(line)
            if is_stdout:
                self._lines.put(line)
        if is_stdout:
            self._lines.put(None)

    # ---------------- output ----------------

    @property
    def stdout_lines(self) -> list[str]:
        with self._lock:
            return list(self._stdout)

    @property
    def stderr_lines(self) -> list[str]:
        with self._lock:
            return list(self._stderr)

    def all_output(self) -> str:
        return "\n".join(self.stdout_lines + self.stderr_lines)

    def output_tail(self, n: int = 40) -> str:
        return (
            "--- stdout (tail) ---\n" + "\n".join(self.stdout_lines[-n:]) +
            "\n--- stderr (tail) ---\n" + "\n".join(self.stderr_lines[-n:])
        )

    # ---------------- clients ----------------

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def base_url(self) -> str:
        return f"http://{self.addr}/v1"

    def http(self, **kw: Any) -> httpx.Client:
        kw.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, **kw)


# --------------------------------------------------------------------------
# SSE
# --------------------------------------------------------------------------


@dataclass
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None


def parse_sse(body: bytes) -> tuple[list[SSEEvent], list[str]]:
    """Parse a complete text/event-stream body per the WHATWG rules. Returns (events, comments)."""
    text = body.decode("utf-8")
    events: list[SSEEvent] = []
    comments: list[str] = []
    data: list[str] = []
    event: str | None = None
    ev_id: str | None = None
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if data:
                events.append(SSEEvent(data="\n".join(data), event=event, id=ev_id))
            data, event = [], None
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            ev_id = value
    if data:  # unterminated final event: keep it visible to assertions
        events.append(SSEEvent(data="\n".join(data) + "\x00<unterminated>", event=event, id=ev_id))
    return events, comments


@dataclass
class StreamResult:
    status: int
    headers: httpx.Headers
    raw: bytes
    events: list[SSEEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def datas(self) -> list[str]:
        return [e.data for e in self.events]

    @property
    def chunks(self) -> list[dict]:
        """JSON payloads of every event except [DONE] (includes error events)."""
        return [json.loads(d) for d in self.datas if d != "[DONE]"]

    def assert_terminated(self) -> None:
        assert self.datas, f"empty stream: {self.raw[:500]!r}"
        assert self.datas[-1] == "[DONE]", f"stream does not end with [DONE]; last events: {self.datas[-3:]}"
        assert self.datas.count("[DONE]") == 1, f"[DONE] sent {self.datas.count('[DONE]')} times"


def raw_stream(http: httpx.Client, path: str, body: dict, key: str, headers: dict | None = None) -> StreamResult:
    h = {"Authorization": f"Bearer {key}", **(headers or {})}
    with http.stream("POST", path, json=body, headers=h) as r:
        raw = b"".join(r.iter_bytes())
        res = StreamResult(status=r.status_code, headers=r.headers, raw=raw)
    if res.status == 200 and res.headers.get("content-type", "").startswith("text/event-stream"):
        res.events, res.comments = parse_sse(raw)
    return res


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

_UNSET = object()


def error_body(resp: httpx.Response) -> dict:
    try:
        body = resp.json()
    except ValueError as e:
        raise AssertionError(f"error response is not JSON (status {resp.status_code}): {resp.text[:500]!r}") from e
    assert_valid("ErrorResponse", body)
    return body["error"]


def check_error(
    resp_or_exc: Any,
    status: int | Iterable[int],
    *,
    type: str | None = None,  # noqa: A002
    code: Any = _UNSET,
    param: Any = _UNSET,
    message_contains: str | None = None,
) -> dict:
    """Assert an error response (httpx.Response or an openai APIStatusError); returns the `error` object."""
    resp = getattr(resp_or_exc, "response", resp_or_exc)
    statuses = {status} if isinstance(status, int) else set(status)
    assert resp.status_code in statuses, (
        f"expected HTTP {sorted(statuses)}, got {resp.status_code}: {resp.text[:500]!r}"
    )
    assert resp.headers.get("content-type", "").startswith("application/json"), (
        f"error content-type is {resp.headers.get('content-type')!r}"
    )
    err = error_body(resp)
    if type is not None:
        assert err["type"] == type, f"error.type {err['type']!r} != {type!r}: {err}"
    if code is not _UNSET:
        assert err["code"] == code, f"error.code {err['code']!r} != {code!r}: {err}"
    if param is not _UNSET:
        assert err["param"] == param, f"error.param {err['param']!r} != {param!r}: {err}"
    if message_contains is not None:
        assert message_contains in err["message"], f"{message_contains!r} not in error.message {err['message']!r}"
    return err
