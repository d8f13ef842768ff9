"""What every mock service of the end-to-end suites shares: a server on a free loopback port
whose requests each run on a thread, and a handler that logs nothing and answers whole bodies."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackServer:
    """Serves `handler` on 127.0.0.1 (a free port) from `start` until `stop`. Subclasses keep what
    their handler received in `requests` (objects with a JSON `body`), under `lock`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.requests: list[Any] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):  # noqa: ANN201 - returns the subclass
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def find(self, marker: str) -> Any:
        """The last request whose body carries `marker`."""
        with self.lock:
            found = [r for r in self.requests if marker in json.dumps(r.body)]
        assert found, f"no upstream request carried {marker!r}"
        return found[-1]


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        """A whole answer with its length."""
        self.send_response(status)
        self.send_header("content-type", content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
