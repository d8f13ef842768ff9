"""HTTP/1.1 keep-alive after an early error response.

SDKs (openai/httpx) pool connections and write a request's headers and body in
separate writes. When the gateway answers before reading the body (401, 413) it
must either consume the body and keep the connection usable, or say
`Connection: close`. Closing silently makes the client's *next* request on that
pooled socket fail intermittently with "Server disconnected without sending a
response" (openai SDK: APIConnectionError).

These tests drive a raw socket so the timing is deterministic: send headers, pause,
send body, read the response, then reuse the socket.
"""

from __future__ import annotations

import json
import socket
import time

from e2e_env import MAX_BODY_BYTES, TEAM_A_KEY, Gateway

SMALL = json.dumps({"model": "echo-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
FOLLOW_UP = json.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "again"}]}).encode()


def _request_head(key: str, length: int) -> bytes:
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: e2e\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes] | None:
    """Read one Content-Length framed response; None if the server closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        buf += data
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return status, headers, body


def _early_error_then_reuse(gateway: Gateway, key: str, body: bytes, pause: float, expected_status: int) -> None:
    host, port = gateway.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(_request_head(key, len(body)))
        time.sleep(pause)
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already answered; the response is still readable
        first = _read_response(sock)
        assert first is not None, "no response to the first request"
        status, headers, _ = first
        assert status == expected_status
        if "close" in headers.get("connection", "").lower():
            return  # the server announced the close: a pooled client will not reuse this socket
        time.sleep(0.3)  # what a pooled client does between two calls
        try:
            sock.sendall(_request_head(TEAM_A_KEY, len(FOLLOW_UP)) + FOLLOW_UP)
        except (BrokenPipeError, ConnectionResetError):
            raise AssertionError(
                f"after the {expected_status} the gateway closed the connection without `Connection: close`"
            ) from None
        second = _read_response(sock)
        assert second is not None, (
            f"after the {expected_status} the gateway closed the keep-alive connection without sending "
            "`Connection: close`; a pooled client's next request fails (APIConnectionError)"
        )
        assert second[0] == 200, second


def test_connection_after_401_with_body_is_reusable_or_closed_explicitly(gateway: Gateway) -> None:
    _early_error_then_reuse(gateway, "sk-e2e-bad-key", SMALL, pause=0.05, expected_status=401)


def test_connection_after_413_is_reusable_or_closed_explicitly(gateway: Gateway) -> None:
    big = json.dumps({"model": "echo-model", "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 16)}]}).encode()
    _early_error_then_reuse(gateway, TEAM_A_KEY, big, pause=0.0, expected_status=413)


def test_connection_after_200_is_reused(gateway: Gateway) -> None:
    # control: a normal exchange keeps the connection open for the next request
    _early_error_then_reuse(gateway, TEAM_A_KEY, SMALL, pause=0.05, expected_status=200)
