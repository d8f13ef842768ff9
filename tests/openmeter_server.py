"""A test OpenMeter ingest server (stdlib only) that enforces OpenMeter's published ingest rules.

The rules below are transcribed from OpenMeter's published API description (operation
``ingestEvents`` on ``POST /api/v1/events``, schema ``Event``) and its CloudEvents JSON schema:

* The request ``Content-Type`` must be *exactly* one of ``application/cloudevents+json`` (one
  event), ``application/cloudevents-batch+json`` (an array of events) or ``application/json``
  (either). The v1 handler compares the raw header, so parameters (``; charset=utf-8``) are a 400.
* Every event is a JSON object with the required string members ``id``, ``source``,
  ``specversion``, ``type`` and ``subject``, each at least one character long.
* ``source`` is a URI reference; ``dataschema`` (optional, nullable) is a URI.
* ``time`` (optional, nullable) is an RFC 3339 ``date-time``.
* ``datacontenttype`` (optional, nullable) may only be ``application/json``.
* ``data`` (optional, nullable) must be a JSON object — not an array, string or number.
* The values meters read from ``data`` (``Meter.valueProperty``: "for SUM, AVG, MIN, and MAX
  aggregations a number or a string that can be parsed to a number"; ``groupBy`` values as
  strings): ``tokens``, ``requests``, ``cost`` and ``cost_nanos`` when present are numbers —
  here, as the gateway's contract, non-negative integers (money in integer micro-/nano-units) —
  and ``cost`` comes with its ``currency``, an ISO 4217 code; ``type``, ``model``, ``team`` and
  ``currency`` (group-by keys) are strings.
* A violation is a 400 ``application/problem+json``; success is 204 with an empty body.
* Events are de-duplicated on (``source``, ``id``): the first one wins, later ones are dropped
  silently (still 2xx).

Tests drive faults through the Python API: ``fail(status, seconds=..., retry_after=...)`` answers
every request with ``status`` for a while, ``stop()``/``start()`` take the server off the network
(connection refused) and back on the same port. Run ``python openmeter_server.py --port N`` to
serve standalone.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTENT_SINGLE = "application/cloudevents+json"
CONTENT_BATCH = "application/cloudevents-batch+json"
CONTENT_JSON = "application/json"
REQUIRED = ("id", "source", "specversion", "type", "subject")

# RFC 3339 date-time (full-date "T" full-time), as JSON Schema's `date-time` format requires.
RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
# A URI reference has no spaces or control characters; a URI also has a scheme.
URI_REFERENCE = re.compile(r"^[^\s\x00-\x1f\x7f]*$")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]*$")


def validate_event(event: Any, where: str) -> list[str]:
    """The reasons `event` breaks OpenMeter's `Event` schema (empty when it is valid)."""
    if not isinstance(event, dict):
        return [f"{where}: must be an object"]
    errors = []
    for name in REQUIRED:
        value = event.get(name)
        if not isinstance(value, str) or len(value) < 1:
            errors.append(f"{where}.{name}: required non-empty string")
    source = event.get("source")
    if isinstance(source, str) and not URI_REFERENCE.match(source):
        errors.append(f"{where}.source: not a URI reference")
    if "time" in event and event["time"] is not None:
        if not isinstance(event["time"], str) or not RFC3339.match(event["time"]):
            errors.append(f"{where}.time: not an RFC 3339 date-time")
    if "datacontenttype" in event and event["datacontenttype"] not in (None, "application/json"):
        errors.append(f"{where}.datacontenttype: must be application/json")
    if "dataschema" in event and event["dataschema"] is not None:
        if not isinstance(event["dataschema"], str) or not URI.match(event["dataschema"]):
            errors.append(f"{where}.dataschema: not a URI")
    if "data" in event and event["data"] is not None and not isinstance(event["data"], dict):
        errors.append(f"{where}.data: must be an object")
    if isinstance(event.get("data"), dict):
        errors.extend(validate_meter_values(event["data"], f"{where}.data"))
    return errors


# What the meters on these events sum (valueProperty) and group by.
METER_VALUES = ("tokens", "requests", "cost", "cost_nanos")
GROUP_BY = ("type", "model", "team", "currency")
CURRENCY = re.compile(r"^[A-Z]{3}$")


def validate_meter_values(data: dict, where: str) -> list[str]:
    """The reasons a SUM meter or a group-by could not read `data` (empty when it can)."""
    errors = []
    for name in METER_VALUES:
        if name in data and not (isinstance(data[name], int) and not isinstance(data[name], bool) and data[name] >= 0):
            errors.append(f"{where}.{name}: a meter value must be a non-negative integer, got {data[name]!r}")
    for name in GROUP_BY:
        if name in data and not isinstance(data[name], str):
            errors.append(f"{where}.{name}: a group-by value must be a string, got {data[name]!r}")
    if "cost" in data and not (isinstance(data.get("currency"), str) and CURRENCY.match(data["currency"])):
        errors.append(f"{where}.currency: a cost needs its ISO 4217 currency, got {data.get('currency')!r}")
    return errors


@dataclass
class Received:
    """One request as it arrived."""

    content_type: str
    authorization: str | None
    status: int
    events: int
    at: float = field(default_factory=time.monotonic)


class OpenMeterServer:
    """A threaded test ingest server on 127.0.0.1."""

    def __init__(self, port: int = 0, path: str = "/api/v1/events", token: str | None = None) -> None:
        self.path = path
        self.token = token
        self._lock = threading.Lock()
        self.events: dict[tuple[str, str], dict] = {}  # (source, id) -> first event
        self.duplicates = 0
        self.received: list[Received] = []
        self.rejections: list[str] = []
        self._fail_status = 0
        self._fail_until = 0.0
        self._fail_retry_after: str | None = None
        self._delay = 0.0
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------- lifecycle ----------------

    def start(self) -> "OpenMeterServer":
        server = self

        class Handler(_Handler):
            om = server

        httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        httpd.daemon_threads = True
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="openmeter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (clients then get connection refused). `start()` resumes, same port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # ---------------- faults ----------------

    def fail(self, status: int, seconds: float, retry_after: str | None = None) -> None:
        with self._lock:
            self._fail_status = status
            self._fail_until = time.monotonic() + seconds
            self._fail_retry_after = retry_after

    def slow(self, seconds: float) -> None:
        """Delay every answer (accepted or not) by this long."""
        self._delay = seconds

    def _fault(self) -> tuple[int, str | None] | None:
        with self._lock:
            if self._fail_status and time.monotonic() < self._fail_until:
                return self._fail_status, self._fail_retry_after
        return None

    # ---------------- results ----------------

    def _accept(self, events: list[dict], request: Received) -> None:
        with self._lock:
            self.received.append(request)
            for e in events:
                key = (e["source"], e["id"])
                if key in self.events:
                    self.duplicates += 1
                else:
                    self.events[key] = e

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events.values())

    def count(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_for(self, n: int, timeout: float) -> list[dict]:
        """Until at least `n` distinct events are in, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.count() < n:
            time.sleep(0.05)
        return self.snapshot()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    om: OpenMeterServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _reply(self, status: int, problem: str | None = None, headers: dict[str, str] | None = None) -> None:
        body = b""
        if problem is not None:
            body = json.dumps(
                {"type": "about:blank", "title": "Bad Request" if status == 400 else "Error", "status": status, "detail": problem}
            ).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body:
            self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(405, "only POST is served here")

    def do_POST(self) -> None:  # noqa: N802
        om = self.om
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if om._delay:
            time.sleep(om._delay)
        content_type = self.headers.get("Content-Type") or ""
        auth = self.headers.get("Authorization")
        record = Received(content_type=content_type, authorization=auth, status=0, events=0)
        if self.path != om.path:
            self._reply(404, f"no route {self.path}")
            return
        fault = om._fault()
        if fault is not None:
            status, retry_after = fault
            record.status = status
            om.received.append(record)
            self._reply(status, "injected fault", {"Retry-After": retry_after} if retry_after else None)
            return
        if om.token is not None and auth != f"Bearer {om.token}":
            self._reply(401, "missing or wrong bearer token")
            return
        problem, events = self._parse(content_type, raw)
        if problem is not None:
            om.rejections.append(problem)
            record.status = 400
            om.received.append(record)
            self._reply(400, problem)
            return
        record.status = 204
        record.events = len(events)
        om._accept(events, record)
        self._reply(204)

    @staticmethod
    def _parse(content_type: str, raw: bytes) -> tuple[str | None, list[dict]]:
        if content_type not in (CONTENT_SINGLE, CONTENT_BATCH, CONTENT_JSON):
            return f"invalid content type: {content_type!r}", []
        try:
            body = json.loads(raw)
        except ValueError as e:
            return f"invalid JSON: {e}", []
        if content_type == CONTENT_SINGLE:
            events = [body] if isinstance(body, dict) else None
        elif content_type == CONTENT_BATCH:
            events = body if isinstance(body, list) else None
        else:
            events = [body] if isinstance(body, dict) else body if isinstance(body, list) and body else None
        if events is None:
            return f"body does not match {content_type}", []
        errors = [e for i, event in enumerate(events) for e in validate_event(event, f"[{i}]")]
        if errors:
            return "; ".join(errors), []
        return None, events


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args()
    server = OpenMeterServer(port=args.port).start()
    print(f"test OpenMeter on {server.url}/api/v1/events", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
