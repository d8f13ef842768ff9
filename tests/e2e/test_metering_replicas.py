"""Several gateway processes and one metering outbox volume (issue #26, item 3 and part of 13).

Replicas that share a volume (the chart's `outbox.type: pvc` with more than one pod) each write
`<outbox_dir>/<POD_NAME or hostname>` and hold an exclusive lock on it for their lifetime: a
second live process on the same directory refuses to start, naming the directory and the
holder. The directory of a replica that is gone (SIGKILL, a deleted pod) is adopted by another
replica — at its start, then every `adopt_interval` — whose outbox takes over the backlog, so it
is delivered once and the directory removed. Also: the directory is fsynced after segments are
created, renamed or removed (checked under strace), and the dead-letter file is bounded.

All real processes and files: the gateway binary ($LLM_GATEWAY_BIN), the mock upstream, the test
OpenMeter (de-duplicating on (source, id); `duplicates` counts the copies it dropped)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from e2e_support import GatewayProcess, gateway_bin
from metering_env import assert_exactly_once, config, load, metric, wait_until
from mock_openai import MockOpenAI
from openmeter_server import OpenMeterServer


def replica(upstream: MockOpenAI, om: OpenMeterServer, work: Path, pod: str, root: Path, **metering: object) -> GatewayProcess:
    """A gateway as one pod of the chart: POD_NAME set, the outbox root shared."""
    metering.setdefault("batch", {"max_events": 100, "max_wait": "100ms"})
    cfg = config(upstream.base_url, om.url, root, **metering)
    return GatewayProcess(cfg, work / pod, env={"POD_NAME": pod})


def kill9(proc: GatewayProcess) -> None:
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(timeout=10)
    for t in proc._threads:
        t.join(timeout=2)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.ndjson"))


def down_openmeter() -> OpenMeterServer:
    om = OpenMeterServer().start()
    om.stop()  # connection refused until start(), same port
    return om


def test_a_second_gateway_on_the_same_outbox_directory_refuses_to_start(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    root = tmp_path / "outbox"
    first = replica(upstream, om, tmp_path / "1", "gw-same", root).start()
    second = replica(upstream, om, tmp_path / "2", "gw-same", root)
    try:
        try:
            second.start()
        except RuntimeError:
            pass
        else:
            pytest.fail(f"a second gateway started on {root / 'gw-same'}, which another live process holds")
        assert second.proc is not None and second.proc.wait(timeout=10) != 0
        out = second.all_output()
        assert str(root / "gw-same") in out and "in use by another live gateway process" in out, second.output_tail()
        assert first.proc is not None and f"pid {first.proc.pid}" in out, second.output_tail()
        # The first one was not disturbed: everything it meters arrives, once.
        rids = load(first, 50)
        om.wait_for(100, 20)
        assert_exactly_once(om, rids)
        assert om.duplicates == 0
    finally:
        second.stop()
        first.stop()
        om.stop()


def test_replicas_sharing_one_volume_each_own_a_directory_and_lose_nothing(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    root = tmp_path / "outbox"
    a = replica(upstream, om, tmp_path, "gw-a", root).start()
    b = replica(upstream, om, tmp_path, "gw-b", root).start()
    try:
        rids: list[str] = []
        for _ in range(3):
            rids += load(a, 40)
            rids += load(b, 40)
        om.wait_for(2 * len(rids), 30)
        assert_exactly_once(om, rids)
        assert (root / "gw-a" / "lock").exists() and (root / "gw-b" / "lock").exists()
        assert not segments(root), "nothing is written to the shared root itself"
        assert metric(a, "llm_gateway_metering_undelivered_events") == 0
        assert metric(b, "llm_gateway_metering_undelivered_events") == 0
    finally:
        a.stop()
        b.stop()
        om.stop()


def test_the_backlog_of_a_sigkilled_replica_is_delivered_once_by_another(upstream: MockOpenAI, tmp_path: Path) -> None:
    """OpenMeter is down; replica A is SIGKILLed with 600 events on disk. A new pod (another
    name, as a Deployment's replacement pod has) adopts A's directory when it starts; B's own
    backlog stays B's. When OpenMeter is back every event arrives exactly once."""
    om = down_openmeter()
    root = tmp_path / "outbox"
    a = replica(upstream, om, tmp_path, "gw-a", root).start()
    b = replica(upstream, om, tmp_path, "gw-b", root).start()
    c = replica(upstream, om, tmp_path, "gw-c", root)
    try:
        rids_a = load(a, 300)
        rids_b = load(b, 100)
        wait_until(lambda: metric(a, "llm_gateway_metering_undelivered_events") == 600, 10, "600 events in A's outbox")
        kill9(a)
        assert segments(root / "gw-a"), "A's backlog is on disk"
        c.start()
        adopted = lambda: metric(b, "llm_gateway_metering_events_adopted_total") + metric(c, "llm_gateway_metering_events_adopted_total")  # noqa: E731
        wait_until(lambda: adopted() == 600, 20, "A's 600 events adopted")
        wait_until(lambda: not (root / "gw-a").exists(), 5, "the adopted directory to be removed once its backlog moved")
        rids_c = load(c, 50)
        om.start()
        om.wait_for(2 * (300 + 100 + 50), 60)
        assert_exactly_once(om, rids_a + rids_b + rids_c)
        assert om.duplicates == 0, f"{om.duplicates} events were sent twice"
        assert "adopting the metering outbox" in b.all_output() + c.all_output()
    finally:
        c.stop()
        b.stop()
        a.stop()
        om.stop()


def test_a_running_replica_adopts_a_vanished_replicas_backlog_within_adopt_interval(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = down_openmeter()
    root = tmp_path / "outbox"
    a = replica(upstream, om, tmp_path, "gw-a", root, adopt_interval="500ms").start()
    b = replica(upstream, om, tmp_path, "gw-b", root, adopt_interval="500ms").start()
    try:
        rids = load(a, 200)
        wait_until(lambda: metric(a, "llm_gateway_metering_undelivered_events") == 400, 10, "400 events in A's outbox")
        kill9(a)
        wait_until(lambda: metric(b, "llm_gateway_metering_events_adopted_total") == 400, 10, "B to adopt A's backlog")
        assert metric(b, "llm_gateway_metering_undelivered_events") == 400
        om.start()
        om.wait_for(400, 30)
        assert_exactly_once(om, rids)
        assert om.duplicates == 0
        wait_until(lambda: metric(b, "llm_gateway_metering_undelivered_events") == 0, 10, "B's outbox to drain")
        wait_until(lambda: not (root / "gw-a").exists(), 5, "A's directory to be removed")
    finally:
        b.stop()
        a.stop()
        om.stop()


def test_an_outbox_left_in_the_root_by_an_earlier_release_is_delivered(upstream: MockOpenAI, tmp_path: Path) -> None:
    """Upgrade path: releases before per-replica directories wrote segments into outbox_dir
    itself. They are delivered by the first replica that finds them quiet."""
    om = down_openmeter()
    root = tmp_path / "outbox"
    old = replica(upstream, om, tmp_path, "gw-old", root).start()
    rids = load(old, 30)
    wait_until(lambda: metric(old, "llm_gateway_metering_undelivered_events") == 60, 10, "60 events on disk")
    kill9(old)
    # Lay its files out as the earlier release did, last written two minutes ago.
    for f in (root / "gw-old").iterdir():
        if f.name.startswith("segment-") or f.name == "cursor":
            target = root / f.name
            shutil.move(str(f), target)
            os.utime(target, (time.time() - 120, time.time() - 120))
    shutil.rmtree(root / "gw-old")
    om.start()
    new = replica(upstream, om, tmp_path, "gw-new", root).start()
    try:
        om.wait_for(60, 20)
        wait_until(lambda: metric(new, "llm_gateway_metering_undelivered_events") == 0, 10, "an empty outbox")
        assert_exactly_once(om, rids)
        new.stop()
        # A restart finds nothing more to send from the root.
        new = replica(upstream, om, tmp_path, "gw-new", root).start()
        time.sleep(1.5)
        assert om.duplicates == 0 and om.count() == 60
    finally:
        new.stop()
        om.stop()


def test_the_dead_letter_file_is_bounded_and_what_it_drops_is_counted(upstream: MockOpenAI, tmp_path: Path) -> None:
    om = OpenMeterServer().start()
    om.fail(400, seconds=3600)
    root = tmp_path / "outbox"
    cap = 8192
    gw = replica(upstream, om, tmp_path, "gw-dl", root, dead_letter_max_bytes=cap).start()
    try:
        load(gw, 60)
        wait_until(lambda: metric(gw, "llm_gateway_metering_events_dead_lettered_total") == 120, 30, "120 dead letters")
        files = [root / "gw-dl" / "dead-letter.ndjson", root / "gw-dl" / "dead-letter.ndjson.1"]
        sizes = [f.stat().st_size if f.exists() else 0 for f in files]
        assert sum(sizes) <= cap, f"dead-letter files hold {sizes} bytes, over the {cap} cap"
        kept = sum(len(f.read_text().splitlines()) for f in files if f.exists())
        dropped = metric(gw, "llm_gateway_metering_dead_letters_dropped_total")
        assert dropped > 0 and kept + dropped == 120, (kept, dropped)
        assert "dead-letter files reached dead_letter_max_bytes" in gw.all_output()
        # What is kept is the newest.
        newest = json.loads(files[0].read_text().splitlines()[-1])
        assert newest["status"] == 400
    finally:
        gw.stop()
        om.stop()


# --------------------------------------------------------------------------
# Directory fsync, observed with strace on the real binary
# --------------------------------------------------------------------------

TRACED = "openat,fsync,fdatasync,unlink,unlinkat,rename,renameat,renameat2"


def traced_gateway(tmp_path: Path, upstream: MockOpenAI, om: OpenMeterServer, root: Path, trace: Path, monkeypatch: pytest.MonkeyPatch) -> GatewayProcess:
    real = gateway_bin()
    wrapper = tmp_path / "traced-gateway"
    wrapper.write_text(f'#!/bin/sh\nexec strace -f -qq -y -o "{trace}" -e trace={TRACED} "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("LLM_GATEWAY_BIN", str(wrapper))
    gw = replica(upstream, om, tmp_path, "gw-s", root, fsync="always", segment_bytes=4096)
    gw.start()
    return gw


def stop_traced(gw: GatewayProcess) -> None:
    """SIGTERM the gateway under strace (strace itself would detach and leave it running)."""
    assert gw.proc is not None
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGTERM)
    gw.proc.wait(timeout=30)
    gw.stop()


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_the_outbox_directory_is_fsynced_after_segments_are_created_renamed_or_removed(
    upstream: MockOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `fsync: always` an acknowledged write must survive a power cut: its segment's
    directory entry has to be durable too, so every segment created (and every cursor rename and
    segment removal) is followed by an fsync of the directory before the data is synced."""
    om = OpenMeterServer().start()
    root = tmp_path / "outbox"
    trace = tmp_path / "strace.txt"
    gw = traced_gateway(tmp_path, upstream, om, root, trace, monkeypatch)
    try:
        rids = load(gw, 40, workers=4)  # 80 events of ~600 bytes: several 4 KiB segments
        om.wait_for(80, 30)
        assert_exactly_once(om, rids)
        time.sleep(0.5)
    finally:
        stop_traced(gw)
        om.stop()
    lines = trace.read_text().splitlines()
    created = [
        (i, m.group(1))
        for i, l in enumerate(lines)
        if (m := re.search(rf'openat\([^"]*"({re.escape(str(root))}[^"]*/segment-\d+\.ndjson)"[^)]*O_CREAT', l))
    ]
    assert len(created) >= 3, f"expected several segments to be created: {created}"
    directory = os.path.dirname(created[0][1])
    dir_syncs = [i for i, l in enumerate(lines) if re.search(rf"\bfsync\(\d+<{re.escape(directory)}>", l)]
    for i, path in created:
        first_data_sync = next((j for j, l in enumerate(lines) if j > i and re.search(rf"fdatasync\(\d+<{re.escape(path)}>", l)), len(lines))
        assert any(i < j < first_data_sync for j in dir_syncs), (
            f"segment {path} (trace line {i + 1}) was created and its data synced (line {first_data_sync + 1}) "
            f"without an fsync of {directory} in between; directory fsyncs at lines {[j + 1 for j in dir_syncs][:10]}"
        )
    removed = [i for i, l in enumerate(lines) if re.search(rf'unlink(at)?\([^"]*"{re.escape(directory)}/segment-', l)]
    renamed = [i for i, l in enumerate(lines) if re.search(rf'rename(at2?)?\(.*"{re.escape(directory)}/cursor"', l)]
    assert removed and renamed, "delivered segments are removed and the cursor renamed into place"
    for i in removed + renamed:
        assert any(j > i for j in dir_syncs), f"trace line {i + 1} ({lines[i][:160]}) is not followed by an fsync of {directory}"
    assert directory == str(root / "gw-s"), "the replica writes its own directory in the root"
    # The replica's directory itself was made durable in the root.
    assert any(re.search(rf"\bfsync\(\d+<{re.escape(str(root))}>", l) for l in lines), f"no fsync of {root}"
