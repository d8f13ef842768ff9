#!/usr/bin/env python3
"""Instructions the gateway executes per request, counted by valgrind's callgrind: exact and
repeatable whatever else the machine is doing (the instruction figures in benches/README.md).

A mock upstream (the release binary with a `mock` provider) and the gateway under
`valgrind --tool=callgrind --instr-atstart=no`. After a warm-up (connections, pools, the
allocator), counting is switched on for --requests chat completions sent one after another on
one keep-alive connection, then switched off, and the counts are dumped. They cover the
gateway's whole process: every thread, the trace exporter included. --traced adds
`telemetry.otlp` exporting to an nginx sink over OTLP/HTTP (--sample-ratio, default 1: every
request traced).

Usage: python3 benches/instructions.py [--mode non-stream|stream] [--requests 2000] [--traced]
       [--sample-ratio 1.0] [--bin PATH] [--keep-profile FILE]
Needs valgrind (installed with apt-get when missing, as root), and nginx for --traced (as for
benches/load.py). It is a measurement, not a test: it prints the figure and exits 0.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (processes, the mock upstream, configs, the request body)
import overhead  # noqa: E402  (the nginx OTLP sink)

WARMUP_REQUESTS = 200


def ensure_valgrind() -> None:
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return
    if os.geteuid() != 0:
        sys.exit("[bench] valgrind missing and not root: install valgrind first")
    load.log("installing valgrind with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for updated in (False, True):
        if updated:
            subprocess.run(["apt-get", "update"], env=env, check=False)
        if subprocess.run(["apt-get", "install", "-y", "valgrind"], env=env, check=False).returncode == 0:
            return
    sys.exit("[bench] could not install valgrind")


def send(conn: http.client.HTTPConnection, body: bytes, stream: bool) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {load.KEY}"}
    conn.request("POST", "/v1/chat/completions", body, headers)
    resp = conn.getresponse()
    text = resp.read()
    if resp.status != 200 or (stream and not text.rstrip().endswith(b"data: [DONE]")):
        sys.exit(f"[bench] unexpected answer {resp.status}: {text[:300]!r}")


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_dump(out: Path, timeout: float = 60.0) -> None:
    """Callgrind writes a requested dump (`<out>.1`) on its own time."""
    dump = out.with_name(out.name + ".1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dump.exists() and "totals:" in dump.read_text(errors="replace"):
            return
        time.sleep(0.2)
    sys.exit(f"[bench] callgrind wrote no dump to {dump}")


def counted_instructions(out: Path) -> int:
    """The instructions of the dump taken while counting was on (the largest total)."""
    totals = [0]
    for f in out.parent.glob(out.name + "*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                totals.append(int(line.split()[1]))
    return max(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=load.MODES, default="non-stream")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--traced", action="store_true")
    parser.add_argument("--sample-ratio", type=float, default=1.0)
    parser.add_argument("--bin", type=Path)
    parser.add_argument("--keep-profile", type=Path, help="copy the callgrind profile here (for callgrind_annotate)")
    args = parser.parse_args()

    ensure_valgrind()
    if args.traced:
        load.ensure_tools()
    return load.run_in_scratch("llm-gateway-instructions-", args.bin, lambda binary, work: measure(args, binary, work))


def measure(args, binary: Path, work: Path) -> int:
    _, up_port = load.start_gateway("upstream", binary, work, "  up: { dialect: mock }", {})
    port = load.free_port()
    config = load.gateway_yaml(port, load.upstream_provider(up_port))
    if args.traced:
        _, sink_port, _ = overhead.start_sink(work)
        config += f"""telemetry:
  otlp: {{ endpoint: "http://127.0.0.1:{sink_port}", protocol: http, batch_delay: 1s, sample_ratio: {args.sample_ratio} }}
"""
    cfg = work / "gateway.yaml"
    cfg.write_text(config)
    out = work / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", str(binary), "--config", str(cfg)]
    env = dict(os.environ, BENCH_UPSTREAM_KEY=load.KEY)
    env.pop("RUST_LOG", None)
    gateway = load.PROCS.start("gateway-callgrind", argv, load.BENCH_DIR / "gateway-callgrind.log", env)
    if not load.wait_http_ok(f"http://127.0.0.1:{port}/health", gateway, timeout=120.0):
        sys.exit(f"[bench] the gateway did not come up under valgrind; see {load.BENCH_DIR / 'gateway-callgrind.log'}")

    stream = args.mode == "stream"
    body = load.request_body(stream).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(WARMUP_REQUESTS):
        send(conn, body, stream)
    if args.traced:
        time.sleep(1.5)  # the warm-up's traces are exported before counting starts
    callgrind_control("-i", "on", str(gateway.pid))
    started = time.monotonic()
    for _ in range(args.requests):
        send(conn, body, stream)
    if args.traced:
        time.sleep(1.5)  # and the counted requests' last batch (1 s window) while it is on
    callgrind_control("-i", "off", str(gateway.pid))
    callgrind_control("-d", str(gateway.pid))
    wait_for_dump(out)
    elapsed = time.monotonic() - started
    conn.close()
    load.PROCS.stop(gateway)

    total = counted_instructions(out)
    if args.keep_profile:
        shutil.copyfile(out.with_name(out.name + ".1"), args.keep_profile)
    what = f"{args.mode}, " + (f"traced (sample_ratio {args.sample_ratio:g})" if args.traced else "untraced")
    print(
        f"{what}: {total / args.requests:,.0f} instructions per request "
        f"({total:,} over {args.requests} requests, {elapsed:.0f} s under valgrind; {load.binary_label(binary)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
