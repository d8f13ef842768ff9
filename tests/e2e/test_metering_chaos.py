"""Metering under chaos: OpenMeter failing for a while, OpenMeter down while the gateway is
SIGKILLed and restarted, a SIGKILL in the middle of a delivery. Across 1,000 requests the test
OpenMeter must end up with exactly one event per (request, token type) after its dedup on
(source, id) — none missing, none extra.

`METERING_OUTAGE_SECONDS` sets the length of the 503 outage (default 30, as in the issue)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from e2e_support import GatewayProcess
from metering_env import assert_exactly_once, config, load, metric, wait_until
from mock_openai import MockOpenAI
from openmeter_server import OpenMeterServer

OUTAGE = float(os.environ.get("METERING_OUTAGE_SECONDS", "30"))


def start(upstream: MockOpenAI, om: OpenMeterServer, work: Path) -> GatewayProcess:
    cfg = config(upstream.base_url, om.url, work / "outbox", batch={"max_events": 100, "max_wait": "100ms"})
    return GatewayProcess(cfg, work).start()


def kill9(proc: GatewayProcess) -> None:
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(timeout=10)
    for t in proc._threads:
        t.join(timeout=2)


def test_openmeter_503_for_a_while_then_recovers(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    om.fail(503, seconds=OUTAGE, retry_after="1")
    proc = start(upstream, om, tmp_path)
    try:
        outage_ends = time.monotonic() + OUTAGE
        rids = load(proc, 300)
        assert time.monotonic() < outage_ends, "the requests should all have been served during the outage"
        wait_until(lambda: metric(proc, "llm_gateway_metering_events_retried_total") > 0, 10, "a retry")
        assert om.count() == 0
        assert metric(proc, "llm_gateway_metering_oldest_undelivered_age_seconds") > 0
        om.wait_for(600, OUTAGE + 30)
        assert_exactly_once(om, rids)
        wait_until(lambda: metric(proc, "llm_gateway_metering_undelivered_events") == 0, 10, "an empty outbox")
        assert metric(proc, "llm_gateway_metering_oldest_undelivered_age_seconds") == 0
        assert any(r.status == 503 for r in om.received) and any(r.status == 204 for r in om.received)
    finally:
        proc.stop()
        om.stop()


def test_sigkill_and_restart_while_openmeter_is_down_loses_and_duplicates_nothing(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    om.stop()  # OpenMeter is down
    rids: list[str] = []

    # 1. 400 requests with OpenMeter down, then kill -9 once their events are on disk.
    gw = start(upstream, om, tmp_path)
    rids += load(gw, 400)
    wait_until(lambda: metric(gw, "llm_gateway_metering_undelivered_events") == 800, 10, "800 events in the outbox")
    kill9(gw)

    # 2. Restart on the same outbox; 300 more requests, still with OpenMeter down.
    gw = start(upstream, om, tmp_path)
    try:
        assert metric(gw, "llm_gateway_metering_undelivered_events") >= 800, "the outbox is replayed on start"
        rids += load(gw, 300)
        wait_until(lambda: metric(gw, "llm_gateway_metering_undelivered_events") == 1400, 10, "1400 events in the outbox")

        # 3. OpenMeter comes back, slow: kill -9 the gateway while batches are in flight, so
        #    some accepted batches were never acknowledged in the cursor and will be re-sent.
        om.slow(0.2)
        om.start()
        wait_until(lambda: om.count() >= 200, 30, "delivery to start")
        kill9(gw)
        delivered_before_kill = om.count()
        assert delivered_before_kill < 1400, "the kill should land mid-delivery"
    finally:
        gw.stop()

    # 4. Restart; 300 more requests while the rest is replayed.
    om.slow(0.0)
    gw = start(upstream, om, tmp_path)
    try:
        rids += load(gw, 300)
        assert len(rids) == 1000
        om.wait_for(2000, 60)
        wait_until(lambda: metric(gw, "llm_gateway_metering_undelivered_events") == 0, 20, "an empty outbox")
        assert_exactly_once(om, rids)
    finally:
        gw.stop()
        om.stop()


def test_requests_keep_flowing_while_the_meter_flaps(upstream: MockOpenAI, tmp_path: Path) -> None:
    """OpenMeter alternates between 429 (with Retry-After), 500 and success while load runs."""
    om = OpenMeterServer().start()
    proc = start(upstream, om, tmp_path)
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            om.fail(429, seconds=0.3, retry_after="1")
            time.sleep(0.6)
            om.fail(500, seconds=0.3)
            time.sleep(0.6)

    flapper = threading.Thread(target=flap, daemon=True)
    flapper.start()
    try:
        rids = load(proc, 200)
    finally:
        stop.set()
        flapper.join()
    try:
        om.wait_for(400, 30)
        assert_exactly_once(om, rids)
    finally:
        proc.stop()
        om.stop()
