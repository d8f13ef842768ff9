"""Token accounting to OpenMeter, end to end: the real gateway binary, the mock upstream, and a
test OpenMeter that enforces the published ingest rules and de-duplicates on (source, id)."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from e2e_support import GatewayProcess
from metering_env import (
    EVENT_TYPE,
    SOURCE,
    TEAM_A,
    TEAM_B,
    assert_exactly_once,
    by_request,
    chat,
    config,
    load,
    metric,
    wait_until,
)
from mock_openai import MockOpenAI, chat_usage, completion_usage, echo_answer
from openmeter_server import CONTENT_BATCH, RFC3339, OpenMeterServer

DATA_KEYS = {
    "tokens", "type", "model", "deployment", "provider", "key_id", "team", "cached", "estimated", "cost_nanos", "cost",
    "currency", "request_id",
}


@pytest.fixture(scope="module")
def metered(upstream: MockOpenAI, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("metered")
    cfg = config(upstream.base_url, openmeter.url, work / "outbox", tokenizers={"no-usage": "cl100k_base", "slow-stream": "cl100k_base"})
    proc = GatewayProcess(cfg, work)
    proc.start()
    yield proc
    proc.stop()


def events_for(server: OpenMeterServer, rids: list[str], timeout: float = 15.0) -> dict[str, dict[str, list[dict]]]:
    wait_until(lambda: set(rids) <= set(by_request(server.snapshot())), timeout, f"events for {len(rids)} requests")
    # Every type of a request is written together; give a straggling batch a moment anyway.
    return by_request(server.snapshot())


def tokens(grouped: dict[str, list[dict]]) -> dict[str, int]:
    return {t: sum(e["data"]["tokens"] for e in evs) for t, evs in grouped.items()}


def expected(usage: dict) -> dict[str, int]:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    parts = {
        "input": usage["prompt_tokens"] - cached,
        "cache_read": cached,
        "output": usage["completion_tokens"] - reasoning,
        "reasoning": reasoning,
    }
    return {k: v for k, v in parts.items() if v > 0}


def test_every_request_path_meters_exactly_the_upstream_usage(metered: GatewayProcess, openmeter: OpenMeterServer) -> None:
    usages: dict[str, tuple[str, dict]] = {}  # rid -> (team, usage)
    with metered.http() as c:
        for key, team in ((TEAM_A, "team-a"), (TEAM_B, "team-b")):
            text = f"count my tokens {uuid.uuid4().hex[:6]} please"
            messages = [{"role": "user", "content": text}]
            rid, usage, r = chat(c, key, "echo", text)
            assert r.status_code == 200 and usage
            usages[rid] = (team, usage)
            # Streams: asked for usage (the client sees it) and not asked (the gateway asks).
            rid, usage, r = chat(c, key, "echo", text, stream=True, stream_options={"include_usage": True})
            assert usage == chat_usage(messages, echo_answer(messages))
            usages[rid] = (team, usage)
            for model in ("echo", "split"):
                rid, usage, r = chat(c, key, model, text, stream=True)
                assert r.status_code == 200 and usage is None, "the usage chunk reached a client that did not ask"
                usages[rid] = (team, chat_usage(messages, echo_answer(messages)))
            # The built-in mock dialect, both ways.
            rid, usage, r = chat(c, key, "mock", text)
            usages[rid] = (team, usage)
            rid, usage, r = chat(c, key, "mock", text, stream=True, stream_options={"include_usage": True})
            assert usage
            usages[rid] = (team, usage)
            # Legacy completions and embeddings.
            rid = "rq-" + uuid.uuid4().hex
            r = c.post("/v1/completions", json={"model": "echo", "prompt": text}, headers={"Authorization": f"Bearer {key}", "x-request-id": rid})
            assert r.status_code == 200
            usages[rid] = (team, r.json()["usage"])
            rid = "rq-" + uuid.uuid4().hex
            with c.stream("POST", "/v1/completions", json={"model": "echo", "prompt": text, "stream": True}, headers={"Authorization": f"Bearer {key}", "x-request-id": rid}) as s:
                b"".join(s.iter_bytes())
            usages[rid] = (team, completion_usage(text, "Echo: " + text))
            rid = "rq-" + uuid.uuid4().hex
            r = c.post("/v1/embeddings", json={"model": "embed", "input": [text, "two words"]}, headers={"Authorization": f"Bearer {key}", "x-request-id": rid})
            assert r.status_code == 200
            usages[rid] = (team, {"prompt_tokens": r.json()["usage"]["prompt_tokens"], "completion_tokens": 0})

    grouped = events_for(openmeter, list(usages))
    team_sums: dict[str, int] = defaultdict(int)
    team_expected: dict[str, int] = defaultdict(int)
    for rid, (team, usage) in usages.items():
        got = tokens(grouped[rid])
        assert got == expected(usage), f"{rid}: metered {got}, upstream usage {usage}"
        for evs in grouped[rid].values():
            assert len(evs) == 1
            e = evs[0]
            assert e["subject"] == team and e["data"]["team"] == team
            assert e["data"]["estimated"] is False and e["data"]["cached"] is False
            team_sums[team] += e["data"]["tokens"]
        team_expected[team] += usage["prompt_tokens"] + usage["completion_tokens"]
    assert team_sums == team_expected
    assert not openmeter.rejections, openmeter.rejections[:3]


def test_events_follow_the_cloudevents_and_openmeter_rules(metered: GatewayProcess, openmeter: OpenMeterServer) -> None:
    with metered.http() as c:
        rid, usage, r = chat(c, TEAM_B, "echo", "shape check")
    grouped = events_for(openmeter, [rid])[rid]
    uid = None
    for token_type, (event,) in grouped.items():
        assert event["specversion"] == "1.0"
        assert event["type"] == EVENT_TYPE
        assert event["source"] == SOURCE
        assert event["subject"] == "team-b"
        assert RFC3339.match(event["time"])
        assert set(event) == {"specversion", "id", "source", "type", "subject", "time", "data"}
        data = event["data"]
        assert set(data) == DATA_KEYS
        assert data["type"] == token_type
        assert data["model"] == "echo" and data["deployment"] == "upstream/echo" and data["provider"] == "upstream"
        assert data["key_id"] == "key-b" and data["request_id"] == rid
        assert isinstance(data["tokens"], int) and isinstance(data["cost_nanos"], int)
        assert isinstance(data["cost"], int) and data["currency"] == "USD"
        prefix, _, suffix = event["id"].rpartition(":")
        assert suffix == token_type and re.fullmatch(r"[0-9a-f]{32}", prefix)
        uid = uid or prefix
        assert prefix == uid, "one request, one id prefix"
    assert all(rec.content_type == CONTENT_BATCH for rec in openmeter.received)


def test_a_client_controlled_request_id_cannot_erase_usage(metered: GatewayProcess, openmeter: OpenMeterServer) -> None:
    """Two requests sending the same x-request-id are two billable facts, not one."""
    rid = "rq-reused-" + uuid.uuid4().hex
    with metered.http() as c:
        for _ in range(2):
            r = c.post(
                "/v1/chat/completions",
                json={"model": "echo", "messages": [{"role": "user", "content": "twice"}]},
                headers={"Authorization": f"Bearer {TEAM_A}", "x-request-id": rid},
            )
            assert r.status_code == 200
    wait_until(lambda: len(by_request(openmeter.snapshot()).get(rid, {}).get("input", [])) == 2, 15, "both requests' events")


def test_without_upstream_usage_the_local_count_is_flagged_estimated(metered: GatewayProcess, openmeter: OpenMeterServer) -> None:
    rids = {}
    with metered.http() as c:
        for stream in (False, True):
            rid, usage, r = chat(c, TEAM_A, "nousage", "no usage from this upstream", stream=stream)
            assert r.status_code == 200 and usage is None
            rids[rid] = {"input", "output"}
        rid = "rq-" + uuid.uuid4().hex
        r = c.post("/v1/embeddings", json={"model": "embed-nousage", "input": "embed me"}, headers={"Authorization": f"Bearer {TEAM_A}", "x-request-id": rid})
        assert r.status_code == 200 and "usage" not in r.json()
        rids[rid] = {"input"}
    grouped = events_for(openmeter, list(rids))
    for rid, types in rids.items():
        assert set(grouped[rid]) == types
        for evs in grouped[rid].values():
            assert evs[0]["data"]["estimated"] is True and evs[0]["data"]["tokens"] > 0


def test_a_client_gone_mid_stream_is_billed_for_what_was_generated(metered: GatewayProcess, openmeter: OpenMeterServer, upstream: MockOpenAI) -> None:
    words = " ".join(f"word{i}" for i in range(60))
    rid = "rq-" + uuid.uuid4().hex
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": words}]}
    with metered.http() as c:
        with c.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TEAM_A}", "x-request-id": rid}) as r:
            got = 0
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    got += 1
                if got >= 4:
                    break  # hang up after a few chunks; the answer has 62
    grouped = events_for(openmeter, [rid])[rid]
    out = grouped["output"][0]["data"]
    assert out["estimated"] is True
    full_answer_pieces = len(echo_answer(body["messages"]).split())
    assert 1 <= out["tokens"] < full_answer_pieces, f"{out['tokens']} tokens metered for a stream cut after ~4 of {full_answer_pieces} pieces"
    assert grouped["input"][0]["data"]["tokens"] >= 60


def test_a_dropped_upstream_stream_is_counted_locally(metered: GatewayProcess, openmeter: OpenMeterServer) -> None:
    with metered.http() as c:
        rid, usage, r = chat(c, TEAM_A, "drop", "cut me off", stream=True)
    assert r.status_code == 200 and usage is None
    grouped = events_for(openmeter, [rid])[rid]
    assert {t: e[0]["data"]["estimated"] for t, e in grouped.items()} == {"input": True, "output": True}
    assert grouped["output"][0]["data"]["tokens"] >= 2  # "Partial answer"


def test_metering_metrics_are_exported(metered: GatewayProcess, openmeter: OpenMeterServer) -> None:
    load(metered, 4)
    wait_until(lambda: metric(metered, "llm_gateway_metering_undelivered_events") == 0, 15, "delivery")
    assert metric(metered, "llm_gateway_metering_events_sent_total") >= 8
    assert metric(metered, "llm_gateway_metering_events_persisted_total") >= metric(metered, "llm_gateway_metering_events_sent_total")
    assert metric(metered, "llm_gateway_metering_oldest_undelivered_age_seconds") == 0
    for name in ("events_retried_total", "events_dead_lettered_total", "outbox_bytes", "queue_depth", "outbox_full"):
        metric(metered, "llm_gateway_metering_" + name)


# --------------------------------------------------------------------------
# Outbox cap policies and SIGTERM
# --------------------------------------------------------------------------


def _gateway(upstream: MockOpenAI, om_url: str, work: Path, **metering: object) -> GatewayProcess:
    proc = GatewayProcess(config(upstream.base_url, om_url, work / "outbox", **metering), work)
    proc.start()
    return proc


def test_a_full_outbox_refuses_requests_with_503_until_it_drains(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer()  # not listening yet: OpenMeter is down
    om.start()
    om.stop()
    proc = _gateway(upstream, om.url, tmp_path, segment_bytes=4096, max_outbox_bytes=8192)
    try:
        served, refused = [], 0
        with proc.http() as c:
            for i in range(40):
                rid, usage, r = chat(c, TEAM_A, "echo", f"fill the outbox {i}")
                if r.status_code == 200:
                    served.append(rid)
                else:
                    assert r.status_code == 503, r.text
                    assert r.json()["error"]["code"] == "metering_backlog"
                    assert r.headers.get("retry-after")
                    refused += 1
        assert refused > 0 and served, (len(served), refused)
        assert metric(proc, "llm_gateway_metering_outbox_full") == 1
        assert metric(proc, "llm_gateway_metering_rejected_requests_total") == refused
        om.start()
        wait_until(lambda: metric(proc, "llm_gateway_metering_outbox_full") == 0, 20, "the outbox to drain")
        with proc.http() as c:
            rid, usage, r = chat(c, TEAM_A, "echo", "room again")
        assert r.status_code == 200
        served.append(rid)
        om.wait_for(2 * len(served), 20)
        assert_exactly_once(om, served)
    finally:
        proc.stop()
        om.stop()


def test_a_full_outbox_under_the_drop_policy_serves_and_counts_the_loss(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer()
    om.start()
    om.stop()
    proc = _gateway(upstream, om.url, tmp_path, segment_bytes=4096, max_outbox_bytes=8192, when_full="drop")
    try:
        load(proc, 30)
        wait_until(lambda: metric(proc, 'llm_gateway_metering_events_dropped_total{reason="outbox_full"}') > 0, 10, "drops to be counted")
        assert "events are being DROPPED" in proc.all_output()
    finally:
        proc.stop()


def test_sigterm_flushes_the_queue_and_delivers_before_exiting(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    # A long batch wait: without the flush the events would sit in the batcher for a minute.
    proc = _gateway(upstream, om.url, tmp_path, batch={"max_events": 10000, "max_wait": "60s"})
    try:
        rids = load(proc, 20)
        assert om.count() == 0
        started = time.monotonic()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(timeout=20)
        assert time.monotonic() - started < 10
        assert proc.proc.returncode == 0, proc.output_tail()
        assert_exactly_once(om, rids)
        assert "metering: flushed" in proc.all_output()
    finally:
        proc.stop()
        om.stop()


def test_refused_events_go_to_the_dead_letter_file_with_the_reason(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    om.fail(400, seconds=3600)
    proc = _gateway(upstream, om.url, tmp_path)
    try:
        rids = load(proc, 2)
        # In this replica's own directory (named by POD_NAME, else the hostname).
        (replica_dir,) = [d for d in (tmp_path / "outbox").iterdir() if d.is_dir()]
        dead = replica_dir / "dead-letter.ndjson"
        wait_until(lambda: dead.exists() and len(dead.read_text().splitlines()) == 4, 15, "4 dead letters")
        entries = [json.loads(line) for line in dead.read_text().splitlines()]
        assert {e["event"]["data"]["request_id"] for e in entries} == set(rids)
        assert all(e["status"] == 400 and "injected fault" in e["reason"] for e in entries)
        assert metric(proc, "llm_gateway_metering_events_dead_lettered_total") == 4
        assert metric(proc, "llm_gateway_metering_undelivered_events") == 0
    finally:
        proc.stop()
        om.stop()


def test_metering_never_slows_requests_while_openmeter_is_down(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    om.stop()
    proc = _gateway(upstream, om.url, tmp_path)
    try:
        with httpx.Client(base_url=proc.url, timeout=5) as c:
            for i in range(20):
                t = time.monotonic()
                _, usage, r = chat(c, TEAM_A, "echo", f"fast {i}")
                assert r.status_code == 200 and time.monotonic() - t < 1.0
        wait_until(lambda: metric(proc, "llm_gateway_metering_undelivered_events") == 40, 10, "40 events in the outbox")
    finally:
        proc.stop()
