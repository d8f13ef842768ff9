"""The request log in PostgreSQL: every request one row with its fields, answered by the admin
API; none lost or doubled when PostgreSQL stops mid-run or the gateway is SIGKILLed mid-batch;
redaction under ``capture: full``; two replicas migrating one empty database at once.

A real PostgreSQL (Debian's package) is started for each test (``postgres_env``)."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from e2e_support import GatewayProcess
from metering_env import chat, wait_until
from mock_openai import MockOpenAI
from postgres_env import Postgres, wait_rows

KEY_A = "sk-rl-a-" + uuid.uuid4().hex
KEY_B = "sk-rl-b-" + uuid.uuid4().hex
ADMIN = "sk-rl-admin-" + uuid.uuid4().hex
URL_ENV = "E2E_REQUEST_LOG_URL"
# USD per million tokens: 1,000 and 3,000 nano-dollars a token.
SLOW_PRICE = {"input": "1", "output": "3"}


@pytest.fixture()
def pg() -> Iterator[Postgres]:
    server = Postgres().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockOpenAI]:
    mock = MockOpenAI().start()
    try:
        yield mock
    finally:
        mock.stop()


def config(upstream_url: str, outbox: Path, **postgres: Any) -> dict:
    rl = {"url_env": URL_ENV, "outbox_dir": str(outbox), "batch_max": 50, "flush_interval": "50ms", **postgres}
    return {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace": "1s"},
        "keys": [{"key": KEY_A, "team": "team-a", "id": "key-a"}, {"key": KEY_B, "team": "team-b", "id": "key-b"}],
        "teams": {"team-a": {"models": ["*"]}, "team-b": {"models": ["*"]}},
        "providers": {"upstream": {"dialect": "openai", "base_url": upstream_url, "stream_usage": "stream_options"}},
        "models": {
            m: {"deployments": [{"provider": "upstream", "model": u, **({"price": SLOW_PRICE} if m == "slow" else {})}]}
            for m, u in {"echo": "echo", "slow": "slow-stream", "broken": "err500", "nousage": "no-usage"}.items()
        },
        "cache": {"exact": {"ttl": "1h"}},
        "admin": {"key": ADMIN},
        "request_log": {"postgres": rl},
    }


def gateway(pg: Postgres, cfg: dict, workdir: Path) -> GatewayProcess:
    proc = GatewayProcess(cfg, workdir, env={URL_ENV: pg.url})
    try:
        return proc.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def admin(gw: GatewayProcess, path: str, **params: Any) -> dict:
    r = httpx.get(gw.url + path, params=params, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def ids_in_db(pg: Postgres) -> list[str]:
    return [row[0] for row in pg.sql("SELECT request_id FROM llm_gateway.requests")]


def test_every_request_of_a_mixed_run_is_one_row_with_its_fields(pg: Postgres, upstream: MockOpenAI, tmp_path: Path) -> None:
    gw = gateway(pg, config(upstream.base_url, tmp_path / "outbox"), tmp_path / "gw")
    try:
        with httpx.Client(base_url=gw.url, timeout=30, headers={"User-Agent": "request-log-test/1.0"}) as c:
            plain, _, r1 = chat(c, KEY_A, "echo", "hello plain " + uuid.uuid4().hex)
            streamed, _, r2 = chat(c, KEY_A, "echo", "hello stream " + uuid.uuid4().hex, stream=True)
            failed, _, r3 = chat(c, KEY_B, "broken", "this fails")
            text = "cache me " + uuid.uuid4().hex
            _, _, r4 = chat(c, KEY_A, "echo", text)
            hit, _, r5 = chat(c, KEY_A, "echo", text)
            assert [r.status_code for r in (r1, r2, r4, r5)] == [200] * 4 and r3.status_code >= 500
            assert r5.headers["x-llm-gateway-cache"] == "hit"
            # A client that goes away after the first chunk of a slow stream.
            gone = "rq-" + uuid.uuid4().hex
            body = {"model": "slow", "messages": [{"role": "user", "content": "a b c d e f g h"}], "stream": True}
            headers = {"Authorization": f"Bearer {KEY_A}", "x-request-id": gone}
            with c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                next(r.iter_bytes())
        assert wait_rows(pg, 6) == 6
        rows = {r["request_id"]: r for r in admin(gw, "/admin/requests", limit=100)["data"]}
        assert len(rows) == 6 and set(rows) >= {plain, streamed, failed, hit, gone}
        p = rows[plain]
        assert (p["team"], p["key_id"], p["model"], p["deployment"], p["status"]) == ("team-a", "key-a", "echo", "upstream/echo", 200)
        assert p["endpoint"] == "/v1/chat/completions" and p["stream"] is False and p["cache"] == "miss"
        assert p["input_tokens"] > 0 and p["output_tokens"] > 0 and p["latency_ms"] > 0 and p["attempts"] == 1
        # A provider with no vendor is the operator's own server: it costs nothing, and says so.
        assert p["cost_nanodollars"] == 0 and p["request_body"] is None
        assert (p["client_addr"], p["user_agent"]) == ("127.0.0.1", "request-log-test/1.0")
        s = rows[streamed]
        assert s["stream"] is True and s["output_tokens"] > 0 and s["ttft_ms"] is not None and s["ttft_ms"] <= s["latency_ms"]
        f = rows[failed]
        assert (f["team"], f["key_id"], f["model"]) == ("team-b", "key-b", "broken") and f["status"] >= 500 and f["error"]
        h = rows[hit]
        assert h["cache"] == "hit" and h["status"] == 200 and h["deployment"] is None
        g = rows[gone]
        assert g["error"] == "client_gone" and g["stream"] is True
        # Cut before its usage: the tokens counted locally (the prompt, what was relayed), as its
        # budget was charged and its metering events counted, and their cost at the price.
        assert g["input_tokens"] > 0 and g["output_tokens"] is not None, g
        assert g["cost_nanodollars"] == g["input_tokens"] * 1_000 + g["output_tokens"] * 3_000 > 0, g
        # Filters, keyset pages and the usage roll-up.
        assert [r["request_id"] for r in admin(gw, "/admin/requests", team="team-b")["data"]] == [failed]
        seen, cursor = [], None
        while True:
            page = admin(gw, "/admin/requests", team="team-a", limit=2, **({"cursor": cursor} if cursor else {}))
            assert len(page["data"]) <= 2
            seen += [r["request_id"] for r in page["data"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        assert len(seen) == 5 == len(set(seen)), seen
        usage = admin(gw, "/admin/usage", group_by="team,model,day")["data"]
        by = {(u["team"], u["model"]): u for u in usage}
        assert by[("team-b", "broken")]["errors"] == 1 and by[("team-a", "echo")]["requests"] == 4
        assert by[("team-a", "echo")]["input_tokens"] == sum(rows[i]["input_tokens"] for i in rows if rows[i]["model"] == "echo")
        r = httpx.get(gw.url + "/admin/requests", headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert r.status_code == 401
    finally:
        gw.stop()


def test_postgres_stopped_mid_run_loses_and_doubles_nothing(pg: Postgres, upstream: MockOpenAI, tmp_path: Path) -> None:
    gw = gateway(pg, config(upstream.base_url, tmp_path / "outbox"), tmp_path / "gw")
    sent: list[str] = []
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            for phase in range(3):
                if phase == 1:
                    pg.stop()
                if phase == 2:
                    pg.start()
                for i in range(60):
                    rid, _, r = chat(c, KEY_A, "echo", f"phase {phase} request {i} {uuid.uuid4().hex}")
                    assert r.status_code == 200, "the request path never waits on PostgreSQL"
                    sent.append(rid)
        assert wait_rows(pg, len(sent), timeout=60) == len(sent)
        ids = ids_in_db(pg)
        assert sorted(ids) == sorted(sent), "every request once, none twice"
    finally:
        gw.stop()


def test_gateway_sigkilled_mid_batch_delivers_every_row_once_after_restart(pg: Postgres, upstream: MockOpenAI, tmp_path: Path) -> None:
    cfg = config(upstream.base_url, tmp_path / "outbox", batch_max=20)
    gw = gateway(pg, cfg, tmp_path / "gw1")
    sent: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    rid, _, r = chat(c, KEY_A, "echo", "kill me " + uuid.uuid4().hex)
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    sent.append(rid)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    wait_until(lambda: pg.count() >= 100, 60, "deliveries under way")
    # Inserts wait on a lock from here on, so the kill lands while a batch is being written and
    # more rows wait in the outbox.
    with pg.writes_blocked():
        blocked_at = pg.count()
        wait_until(lambda: len(sent) >= blocked_at + 60, 60, "requests answered while PostgreSQL waits")
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(timeout=10)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    delivered_before = pg.count()
    assert delivered_before < len(sent), "the kill should leave rows undelivered"
    gw2 = gateway(pg, cfg, tmp_path / "gw2")
    try:
        assert wait_rows(pg, len(sent), timeout=60) >= len(sent)
        ids = ids_in_db(pg)
        assert len(ids) == len(set(ids)), "no row twice"
        assert set(sent) <= set(ids), f"{len(set(sent) - set(ids))} answered requests have no row"
    finally:
        gw2.stop()


def test_capture_full_stores_no_text_matching_a_redaction_pattern(pg: Postgres, upstream: MockOpenAI, tmp_path: Path) -> None:
    cfg = config(upstream.base_url, tmp_path / "outbox", capture="full", redact=[r"secret-[0-9a-f]{16}"], max_body_bytes=4096)
    gw = gateway(pg, cfg, tmp_path / "gw")
    secret = "secret-" + uuid.uuid4().hex[:16]
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            rid, _, r = chat(c, KEY_A, "echo", f"my password is {secret} ok " + "x" * 9000)
            rid2, _, r2 = chat(c, KEY_A, "echo", f"streamed {secret}", stream=True)
            rid3, _, r3 = chat(c, KEY_A, "nousage", f"echo this back: {secret}")
            assert r.status_code == r2.status_code == r3.status_code == 200 and secret in r.text, "the client still gets its answer"
        assert wait_rows(pg, 3) == 3
        rows = {r["request_id"]: r for r in admin(gw, "/admin/requests")["data"]}
        for request_id in (rid, rid2):
            assert "[REDACTED]" in rows[request_id]["request_body"], rows[request_id]["request_body"][:200]
        # The generated text reaches the log only when the gateway kept it (no upstream usage):
        # wherever it is, it is redacted too (checked over every row below).
        assert all(rows[i]["response_body"] is None or secret not in rows[i]["response_body"] for i in (rid, rid2))
        assert secret in r3.text and "[REDACTED]" in rows[rid3]["response_body"], rows[rid3]["response_body"]
        assert len(rows[rid]["request_body"].encode()) <= 4096
        assert not pg.sql(f"SELECT 1 FROM llm_gateway.requests WHERE request_body LIKE '%{secret}%' OR response_body LIKE '%{secret}%'")
        on_disk = b"".join(p.read_bytes() for p in (tmp_path / "outbox").rglob("*") if p.is_file())
        assert secret.encode() not in on_disk, "nothing unredacted is written to the outbox either"
    finally:
        gw.stop()


def test_two_gateways_starting_at_once_on_an_empty_database_both_come_up(pg: Postgres, upstream: MockOpenAI, tmp_path: Path) -> None:
    procs = [GatewayProcess(config(upstream.base_url, tmp_path / "outbox"), tmp_path / f"gw{i}", env={URL_ENV: pg.url, "POD_NAME": f"gw-{i}"}) for i in range(2)]
    starters = [threading.Thread(target=p.start) for p in procs]
    for t in starters:
        t.start()
    for t in starters:
        t.join(timeout=60)
    try:
        assert all(p.addr for p in procs), [p.output_tail() for p in procs]
        sent = []
        for p in procs:
            with httpx.Client(base_url=p.url, timeout=30) as c:
                for _ in range(5):
                    rid, _, r = chat(c, KEY_A, "echo", "replica " + uuid.uuid4().hex)
                    assert r.status_code == 200
                    sent.append(rid)
        assert wait_rows(pg, 10) == 10
        assert sorted(ids_in_db(pg)) == sorted(sent)
        assert pg.sql("SELECT version FROM llm_gateway.schema_migrations") == [("1",)]
        errors = [line for p in procs for line in p.stdout_lines if "cannot deliver" in line]
        assert not errors, errors[:3]
    finally:
        for p in procs:
            p.stop()
