#!/usr/bin/env python3
"""Memory per stream: many concurrent slow SSE streams through the gateway and through nginx, same run.

A slow plain-HTTP upstream (this script, `--role upstream`: a few processes sharing one port with
SO_REUSEPORT) answers every streaming chat completion with --events OpenAI chunk events (default
400: a 20 s answer at 20 events/s), one every --interval seconds, chunked, then `[DONE]`. The
same streams go, one target after the other, through

  nginx    proxy_pass to the upstream, `proxy_buffering off`, upstream keepalive (as benches/load.py)
  gateway  the release binary with an `openai` provider on the upstream (the plain-HTTP client)

opened by client processes (this script, `--role client`: raw non-blocking HTTP/1.1 sockets on
epoll, a few hundred bytes of state per stream) that ramp up to --streams (default 8,000), read
every event and close once a stream has ended. While the streams run the script samples each
target's resident set (VmRSS of the gateway; of nginx's master and workers, summed) every 0.2 s.

Reported per target: idle RSS (before the streams), peak RSS, RSS per stream above idle
((peak - idle) / streams), RSS after the streams ended and --settle seconds passed (memory given
back after a burst, or not), how long a stream took against its nominal length (longer: the
machine could not keep up with the nominal event rate), and the gateway's figures as ratios to
nginx's. The default interval is 250 ms, not the 50 ms of a fast model: 8,000 streams at 20
events/s are 160,000 events/s, which the load generator, the upstream and the proxy together
cannot reach on 2 cores (streams then take longer and memory is measured under saturation);
what a stream holds between two events is the same at either rate.

It is a measurement, not a test: it exits 0 once it has measured. Everything listens on
127.0.0.1; every process the script started is stopped when it exits; the clients stop by
themselves (at the latest three times the streams' nominal length plus a margin).

Usage: python3 benches/streams_memory.py [--streams 8000] [--events 400] [--interval 0.25]
       [--settle 10] [--targets nginx,gateway] [--bin PATH] [--gateway-config-extra YAML]
Needs nginx (installed with apt-get when missing, as root, by benches/load.py's helper) and the
release binary (built when missing or older than the sources). Report: target/bench/streams_memory.md
(raw figures in streams_memory.json).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import errno
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (processes, nginx, the gateway's config, /proc helpers)

SCRIPT = Path(__file__).resolve()
TARGETS = ("nginx", "gateway")

# One realistic OpenAI chunk (about 200 bytes on the wire): what a self-hosted server streams per token.
EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench-model","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}\n\n'
)
LAST = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
)


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


EVENT_CHUNK = chunk(EVENT)
END_CHUNKS = chunk(LAST) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
HEALTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

# nginx for many long streams: the load benchmark's proxy (proxy_pass, buffering off, upstream
# keepalive) with room for every stream's two connections per worker.
NGINX_STREAMS_CONF = load.NGINX_CONF.replace(
    "worker_processes auto;", "worker_processes auto;\nworker_rlimit_nofile {nofile};"
).replace("worker_connections 4096;", "worker_connections {nofile};")


def log(msg: str) -> None:
    load.log(msg)


# --------------------------------------------------------------------------- the slow upstream


class UpConn:
    """One upstream connection: the request being read, what could not be written yet."""

    __slots__ = ("sock", "inbuf", "out", "left", "slot")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.out = bytearray()
        self.left = 0
        self.slot = -1


def serve_upstream(port: int, interval: float, slots: int) -> int:
    """Serves slow streams on `port` until killed. Streams are spread over `slots` phases of the
    interval, so the events of 8,000 streams do not all leave in the same millisecond."""
    sel = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    phases: list[set[UpConn]] = [set() for _ in range(slots)]
    next_slot = 0
    tick = interval / slots
    due = time.monotonic() + tick
    phase = 0

    def close(c: UpConn) -> None:
        if c.slot >= 0:
            phases[c.slot].discard(c)
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def send(c: UpConn, data: bytes) -> None:
        if c.out:
            c.out += data
            return
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            close(c)
            return
        if n < len(data):
            c.out += data[n:]
            sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def requests(c: UpConn) -> None:
        nonlocal next_slot
        while True:
            end = c.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(c.inbuf[:end]).lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15:].split(b"\r\n", 1)[0].strip() or b"0")
            if len(c.inbuf) < end + 4 + length:
                return
            body = bytes(c.inbuf[end + 4:end + 4 + length])
            del c.inbuf[:end + 4 + length]
            if head.startswith(b"get"):
                send(c, HEALTH)
                continue
            # The request's max_tokens is the number of events (the clients set it).
            events = 20
            at = body.find(b'"max_tokens":')
            if at >= 0:
                digits = body[at + 13:].lstrip()
                n = 0
                while n < len(digits) and digits[n:n + 1].isdigit():
                    n += 1
                events = max(1, int(digits[:n] or b"20"))
            send(c, STREAM_HEAD + EVENT_CHUNK)
            c.left = events - 1
            c.slot = next_slot
            next_slot = (next_slot + 1) % slots
            phases[c.slot].add(c)

    while True:
        timeout = max(0.0, due - time.monotonic())
        for key, mask in sel.select(timeout):
            c = key.data
            if c is None:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, selectors.EVENT_READ, UpConn(sock))
                continue
            if mask & selectors.EVENT_WRITE and c.out:
                try:
                    n = c.sock.send(c.out)
                    del c.out[:n]
                except BlockingIOError:
                    pass
                except OSError:
                    close(c)
                    continue
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    close(c)
                    continue
                c.inbuf += data
                requests(c)
        now = time.monotonic()
        if now >= due:
            for c in list(phases[phase]):
                c.left -= 1
                if c.left <= 0:
                    phases[phase].discard(c)
                    c.slot = -1
                    send(c, EVENT_CHUNK + END_CHUNKS if c.left == 0 else END_CHUNKS)
                else:
                    send(c, EVENT_CHUNK)
            phase = (phase + 1) % slots
            # Behind (the machine is saturated): streams slow down rather than bunch up.
            due = max(due + tick, now)


# --------------------------------------------------------------------------- the clients


class ClientConn:
    __slots__ = ("sock", "state", "head", "tail", "status", "events", "opened")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.opened = time.monotonic()
        self.state = "connecting"
        self.head = b""
        self.tail = b""
        self.status = 0
        self.events = 0


def run_client(port: int, streams: int, events: int, ramp_per_s: float, stop_after: float) -> int:
    """Opens `streams` streams (at `ramp_per_s`), reads them to their end, prints a JSON summary."""
    body = json.dumps(
        {
            "model": load.MODEL,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": events,
            "stream": True,
        },
        separators=(",", ":"),
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + load.KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    deadline = started + stop_after
    opened = completed = failed = refused = 0
    received_events = 0
    statuses: dict[str, int] = {}
    live = 0
    live_max = 0
    all_open_at = None
    stream_seconds = 0.0

    def done(c: ClientConn, ok: bool) -> None:
        nonlocal completed, failed, live, received_events, stream_seconds
        if ok:
            completed += 1
            stream_seconds += time.monotonic() - c.opened
        elif c.status in (0, 200):
            failed += 1
        received_events += c.events
        live -= 1
        sel.unregister(c.sock)
        c.sock.close()

    while True:
        now = time.monotonic()
        if now > deadline:
            break
        want = min(streams, int((now - started) * ramp_per_s) + 1)
        while opened < want:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                statuses[f"connect:{errno.errorcode.get(err, err)}"] = statuses.get(f"connect:{errno.errorcode.get(err, err)}", 0) + 1
                opened += 1
                continue
            c = ClientConn(s)
            sel.register(s, selectors.EVENT_WRITE, c)
            opened += 1
            live += 1
            live_max = max(live_max, live)
        if opened >= streams and all_open_at is None:
            all_open_at = time.monotonic() - started
        if live == 0 and opened >= streams:
            break
        for key, mask in sel.select(0.01):
            c: ClientConn = key.data
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    statuses[f"connect:{errno.errorcode.get(err, err)}"] = statuses.get(f"connect:{errno.errorcode.get(err, err)}", 0) + 1
                    done(c, False)
                    continue
                c.sock.send(request)  # a few hundred bytes: a fresh socket takes them at once
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                done(c, False)
                continue
            if not c.status:
                c.head += data
                end = c.head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                try:
                    c.status = int(c.head.split(b" ", 2)[1])
                except (IndexError, ValueError):
                    c.status = -1
                statuses[str(c.status)] = statuses.get(str(c.status), 0) + 1
                if c.status != 200:
                    refused += 1
                    done(c, False)
                    continue
                data = c.head[end + 4:]
                c.head = b""
            joined = c.tail + data
            # An event ends with a blank line; the stream with chunked encoding's last chunk.
            c.events += joined.count(b"\n\n") - c.tail.count(b"\n\n")
            c.tail = joined[-7:]
            if c.tail == b"\r\n0\r\n\r\n":
                done(c, True)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    print(
        json.dumps(
            {
                "opened": opened,
                "completed": completed,
                "failed": failed,
                "refused": refused,
                "cut_at_deadline": live,
                "events": received_events,
                "statuses": statuses,
                "live_max": live_max,
                "all_open_at_s": all_open_at,
                "elapsed_s": time.monotonic() - started,
                "stream_seconds": stream_seconds,
            }
        ),
        flush=True,
    )
    return 0


# --------------------------------------------------------------------------- the measurement


def raise_nofile(needed: int) -> int:
    """Raises this process's (and so its children's) open-file limit to `needed` if it can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    for new_hard in (max(hard, want), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pids: list[int]) -> int:
    return sum(load.status_kb(p, "VmRSS") or 0 for p in pids)


def start_upstreams(args, work: Path) -> int:
    for attempt in range(3):
        port = load.free_port()
        procs = []
        for i in range(args.upstreams):
            argv = [sys.executable, str(SCRIPT), "--role", "upstream", "--port", str(port), "--interval", str(args.interval)]
            procs.append(load.PROCS.start(f"slow-upstream-{i}", argv, load.BENCH_DIR / f"slow-upstream-{i}.log"))
        ok = True
        for p in procs:
            ok = ok and load.wait_http_ok(f"http://127.0.0.1:{port}/health", p)
        if ok:
            return port
        for p in procs:
            load.PROCS.stop(p)
        log(f"the slow upstream did not come up on port {port} (attempt {attempt + 1})")
    sys.exit("[bench] could not start the slow upstream")


def gateway_extra_yaml(args) -> str:
    return args.gateway_config_extra.replace("\\n", "\n") if args.gateway_config_extra else ""


def start_gateway(args, binary: Path, work: Path, up_port: int):
    extra = gateway_extra_yaml(args)
    # Environment for the gateway alone (an allocator's options, a heap profiler's preload).
    added = dict(kv.split("=", 1) for kv in args.gateway_env)
    if not extra:
        env = {"BENCH_UPSTREAM_KEY": load.KEY, **added}
        return load.start_gateway("gateway", binary, work, load.upstream_provider(up_port), env)
    # The same gateway with `server:` settings added (e.g. `max_in_flight: 4000`).
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    env["BENCH_UPSTREAM_KEY"] = load.KEY
    env.update(added)
    for attempt in range(3):
        port = load.free_port()
        cfg = work / "gateway.yaml"
        text = load.gateway_yaml(port, load.upstream_provider(up_port))
        text = text.replace("server:\n", "server:\n" + "".join(f"  {line}\n" for line in extra.splitlines()), 1)
        cfg.write_text(text)
        proc = load.PROCS.start("gateway", [str(binary), "--config", str(cfg)], load.BENCH_DIR / "gateway.log", env)
        if load.wait_http_ok(f"http://127.0.0.1:{port}/health", proc):
            return proc, port
        load.PROCS.stop(proc)
    sys.exit("[bench] could not start the gateway")


def run_streams(args, target: str, port: int, pids: list[int], events: int) -> dict:
    """One burst of streams through `port`; samples the RSS of `pids` meanwhile."""
    per_client = [args.streams // args.clients + (1 if i < args.streams % args.clients else 0) for i in range(args.clients)]
    ramp = args.ramp / args.clients
    stop_after = args.events * args.interval * 3 + args.streams / args.ramp + 30
    clients = []
    cpu0 = load.cpu_ticks(pids)
    t0 = time.monotonic()
    for i, n in enumerate(per_client):
        argv = [
            sys.executable, str(SCRIPT), "--role", "client", "--port", str(port), "--streams", str(n),
            "--events", str(events), "--ramp", str(ramp), "--stop-after", str(stop_after),
        ]
        clients.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(load.ROOT), start_new_session=True))
    peak = 0
    samples = []
    while any(c.poll() is None for c in clients):
        rss = rss_kb(pids)
        peak = max(peak, rss)
        samples.append((round(time.monotonic() - t0, 2), rss))
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    cpu_s = (load.cpu_ticks(pids) - cpu0) / load.CLK_TCK
    results = []
    for c in clients:
        out, err = c.communicate()
        line = out.decode().strip().splitlines()[-1:] if out else []
        if not line:
            sys.exit(f"[bench] a client process gave no result (exit {c.returncode}): {err.decode()[-2000:]}")
        results.append(json.loads(line[0]))
    total = {k: sum(r[k] for r in results) for k in ("opened", "completed", "failed", "refused", "cut_at_deadline", "events", "live_max", "stream_seconds")}
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    total["statuses"] = statuses
    total["all_open_at_s"] = max((r["all_open_at_s"] or 0) for r in results)
    total["elapsed_s"] = elapsed
    total["cpu_s"] = cpu_s
    total["peak_kb"] = peak
    total["samples"] = samples
    return total


def measure(args, binary: Path, work: Path) -> int:
    up_port = start_upstreams(args, work)
    upstream_pids = [p.pid for _, p, _ in load.PROCS.procs if p.args[3:4] == ["upstream"]]
    events = args.events
    results: dict[str, dict] = {}
    caveats: list[str] = []
    load_start = os.getloadavg()
    for target in args.targets:
        if target == "nginx":
            template = NGINX_STREAMS_CONF.replace("{nofile}", str(args.streams * 2 + 1024))
            proc, port = load.start_nginx(work, up_port, template)
            time.sleep(0.5)
            pids = [proc.pid, *load.proc_children(proc.pid)]
        else:
            proc, port = start_gateway(args, binary, work, up_port)
            pids = [proc.pid]
        # One short stream first: the hop works, and its first-use allocations are in the idle figure.
        check = subprocess.run(
            [sys.executable, str(SCRIPT), "--role", "client", "--port", str(port), "--streams", "1", "--events", "3",
             "--ramp", "100", "--stop-after", "10"],
            capture_output=True, text=True,
        )
        summary = json.loads(check.stdout.strip().splitlines()[-1]) if check.stdout.strip() else {}
        if summary.get("completed") != 1 or summary.get("events", 0) < 4:
            sys.exit(f"[bench] {target}: a test stream failed: {check.stdout} {check.stderr[-1000:]} (see {load.BENCH_DIR})")
        time.sleep(1.0)
        if not load.wait_for_quiet_machine(args.max_wait, pids + upstream_pids):
            caveats.append(f"the machine was busy with other work when the {target} run started")
        idle = rss_kb(pids)
        log(f"{target}: idle RSS {idle / 1024:.1f} MB; opening {args.streams} streams of {events} events, one every {args.interval * 1000:g} ms")
        up_cpu0 = load.cpu_ticks(upstream_pids)
        r = run_streams(args, target, port, pids, events)
        r["upstream_cpu_s"] = (load.cpu_ticks(upstream_pids) - up_cpu0) / load.CLK_TCK
        ended = rss_kb(pids)
        time.sleep(args.settle)
        after = rss_kb(pids)
        r.update(idle_kb=idle, ended_kb=ended, after_kb=after, hwm_kb=sum(load.status_kb(p, "VmHWM") or 0 for p in pids))
        r["per_stream_kb"] = (r["peak_kb"] - idle) / max(1, args.streams)
        # Each stream also carries a last chunk event and [DONE], counted too.
        r["events_share"] = r["events"] / max(1, args.streams * (events + 2))
        r["event_rate"] = r["events"] / max(1e-3, r["elapsed_s"])
        # How long a stream took, against its nominal length: longer when the machine could not
        # keep up with the nominal event rate.
        r["mean_stream_s"] = r["stream_seconds"] / max(1, r["completed"])
        results[target] = r
        log(
            f"{target}: peak {r['peak_kb'] / 1024:.1f} MB ({r['per_stream_kb']:.1f} KB per stream above idle), "
            f"{after / 1024:.1f} MB {args.settle:g} s after the streams ended; completed {r['completed']}/{args.streams}, "
            f"refused {r['refused']}, failed {r['failed']}, streams took {r['mean_stream_s']:.0f} s "
            f"(nominal {events * args.interval:g} s), {r['cpu_s']:.0f} CPU s"
        )
        load.PROCS.stop(proc)
    load_end = os.getloadavg()
    report(args, binary, results, caveats, events, load_start, load_end)
    return 0


def report(args, binary: Path, results: dict, caveats: list[str], events: int, load_start, load_end) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=load.ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=load.ROOT, capture_output=True, text=True).stdout.strip()

    def mb(kb: float) -> str:
        return f"{kb / 1024:.1f}"

    lines = ["## Memory per stream: gateway vs nginx", ""]
    lines.append(
        f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, commit {commit or '?'}{' (dirty)' if dirty else ''}, "
        f"{('binary ' + load.binary_label(binary) + ', ') if 'gateway' in results else ''}{os.cpu_count()} cores, load average {load_start[0]:.2f} before / {load_end[0]:.2f} after. "
        f"{args.streams} concurrent streams of {events} events, one every {args.interval * 1000:g} ms "
        f"({events * args.interval:g} s; nominal {args.streams / args.interval:,.0f} events/s), plain-HTTP upstream; "
        f"RSS {args.settle:g} s after the streams ended."
    )
    lines.append("")
    lines.append(
        "| target | idle MB | peak MB | KB per stream | after MB | after − idle MB | completed | refused | failed "
        "| stream s | CPU s |"
    )
    lines.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for target, r in results.items():
        lines.append(
            f"| {target} | {mb(r['idle_kb'])} | {mb(r['peak_kb'])} | {r['per_stream_kb']:.1f} | {mb(r['after_kb'])} | "
            f"{mb(r['after_kb'] - r['idle_kb'])} | {r['completed']} | {r['refused']} | {r['failed'] + r['cut_at_deadline']} | "
            f"{r['mean_stream_s']:.0f} | {r['cpu_s']:.0f} |"
        )
    if "gateway" in results and "nginx" in results:
        g, n = results["gateway"], results["nginx"]
        lines.append("")
        lines.append(
            f"Gateway / nginx: peak RSS {g['peak_kb'] / max(1, n['peak_kb']):.2f}×, per stream "
            f"{g['per_stream_kb'] / max(1e-9, n['per_stream_kb']):.2f}×, after the burst "
            f"{g['after_kb'] / max(1, n['after_kb']):.2f}×."
        )
    for target, r in results.items():
        if r["mean_stream_s"] > 1.2 * events * args.interval:
            caveats.append(
                f"{target}: streams took {r['mean_stream_s']:.0f} s where {events * args.interval:g} s was nominal "
                f"({r['event_rate']:,.0f} events/s): the machine could not keep up with the nominal rate"
            )
        if r["events_share"] < 0.99:
            caveats.append(f"{target}: the clients received {100 * r['events_share']:.0f}% of the events sent")
        if r["refused"]:
            caveats.append(f"{target}: {r['refused']} streams were refused ({r['statuses']})")
    if caveats:
        lines.append("")
        lines.extend(f"- caveat: {c}" for c in caveats)
    text = "\n".join(lines) + "\n"
    print()
    print(text, end="", flush=True)
    (load.BENCH_DIR / "streams_memory.md").write_text(text)
    raw = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "commit": commit, "results": results}
    (load.BENCH_DIR / "streams_memory.json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"[bench] written to {load.BENCH_DIR / 'streams_memory.md'} (raw: streams_memory.json)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("bench", "upstream", "client"), default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stop-after", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--streams", type=int, default=8000, help="concurrent streams (default 8000)")
    ap.add_argument("--events", type=int, default=400, help="events per stream (default 400: a 20 s answer at 20 events/s)")
    ap.add_argument("--interval", type=float, default=0.25, help="seconds between a stream's events (default 0.25)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds after the streams end before the after-burst RSS (default 10)")
    ap.add_argument("--ramp", type=float, default=4000.0, help="streams opened per second (default 4000)")
    ap.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    ap.add_argument("--upstreams", type=int, default=2, help="upstream processes (default 2)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of nginx,gateway (in that order)")
    ap.add_argument("--bin", type=Path, default=None, help="gateway binary (default target/release/llm-gateway, built when stale)")
    ap.add_argument("--gateway-config-extra", default="", help="YAML lines added under the gateway's `server:` (\\n-separated)")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE", help="environment for the gateway only (repeatable)")
    ap.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for a quiet machine before each target (default 300)")
    args = ap.parse_args()

    if args.role == "upstream":
        return serve_upstream(args.port, args.interval, slots=10)
    if args.role == "client":
        raise_nofile(args.streams + 64)
        return run_client(args.port, args.streams, args.events, args.ramp, args.stop_after)

    args.targets = [t for t in args.targets.split(",") if t]
    if not args.targets or any(t not in TARGETS for t in args.targets):
        sys.exit(f"[bench] --targets: a comma-separated subset of {','.join(TARGETS)}")
    signal.signal(signal.SIGTERM, load._on_signal)
    signal.signal(signal.SIGHUP, load._on_signal)
    atexit.register(load.PROCS.stop_all)
    # Each stream is two sockets in the proxy, one in a client and one in the upstream.
    nofile = raise_nofile(args.streams * 2 + 1024)
    if nofile < args.streams * 2 + 256:
        sys.exit(f"[bench] the open-file limit is {nofile}: {args.streams} streams need about {args.streams * 2 + 256}")
    if "nginx" in args.targets:
        load.ensure_tools()
    load.BENCH_DIR.mkdir(parents=True, exist_ok=True)
    binary = (args.bin or load.DEFAULT_BIN).resolve()
    if "gateway" in args.targets:
        load.ensure_binary(binary, explicit=args.bin is not None)
    work = Path(tempfile.mkdtemp(prefix="llm-gateway-streams-"))
    try:
        return measure(args, binary, work)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        load.PROCS.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
