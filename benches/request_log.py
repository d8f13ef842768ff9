#!/usr/bin/env python3
"""Load benchmark of the request log: saturated throughput with the log to PostgreSQL on, as a
ratio to the same gateway with it off, measured in the same run.

Starts a PostgreSQL server (Debian's package, as the e2e tests do: tests/e2e/postgres_env.py),
then runs the gateway against its built-in mock backend with wrk driving 64 connections, in
alternating rounds: log off, log on, off, on... (alternating spreads the machine's drift over
both). After the last round it waits until every logged request is a row in PostgreSQL and
checks the row count against the requests the gateway answered (nothing lost on the way).

    python3 benches/request_log.py [--duration 10] [--rounds 2] [--connections 64] [--bin PATH] [--no-build]

Needs wrk and PostgreSQL (`apt-get install postgresql`; PG_BIN to choose the version).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "benches"))

from limits import cpu_seconds, start_gateway, wrk  # noqa: E402
from postgres_env import Postgres  # noqa: E402

KEY = "sk-bench-request-log"
BODY = '{"model":"m","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'


def config(log_on: bool, outbox: pathlib.Path) -> str:
    text = (
        'server: { listen: "127.0.0.1:0", log_level: "warn,llm_gateway=info,llm_gateway::request=warn" }\n'
        "providers: { mock: { dialect: mock } }\n"
        "models: { m: { deployments: [{ provider: mock }] } }\n"
        "teams: { t: { models: ['*'] } }\n"
        f"keys: [{{ key: {KEY}, team: t, id: bench }}]\n"
    )
    if log_on:
        text += f"request_log: {{ postgres: {{ url_env: BENCH_PG_URL, outbox_dir: '{outbox}' }} }}\n"
    return text


def answered(addr: str) -> int:
    """Requests the gateway answered 200, from its own counter."""
    text = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
    return sum(int(float(v)) for v in re.findall(r'^llm_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', text, re.M))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bin", default=str(ROOT / "target" / "release" / "llm-gateway"))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is required")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "llm-gateway"], cwd=ROOT, check=True)
    pg = Postgres().start()
    work = pathlib.Path(tempfile.mkdtemp(prefix="llm-gateway-bench-request-log-"))
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    import os

    os.environ["BENCH_PG_URL"] = pg.url
    results: dict[str, list[dict]] = {"off": [], "on": []}
    logged = 0
    try:
        for round_ in range(args.rounds):
            for name in ("off", "on"):
                run_dir = work / f"{name}-{round_}"
                run_dir.mkdir()
                proc, addr = start_gateway(args.bin, config(name == "on", work / "outbox"), run_dir)
                try:
                    wrk(addr, args.connections, 2, script)  # warm-up
                    cpu0 = cpu_seconds(proc.pid)
                    before = answered(addr)
                    r = wrk(addr, args.connections, args.duration, script)
                    r["cpu_us_per_request"] = (cpu_seconds(proc.pid) - cpu0) / max(1, answered(addr) - before) * 1e6
                    results[name].append(r)
                    if name == "on":
                        logged += answered(addr)
                        print(f"round {round_}: waiting for the outbox to drain into PostgreSQL", flush=True)
                        deadline = time.monotonic() + 300
                        while pg.count() < logged and time.monotonic() < deadline:
                            time.sleep(0.5)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                print(f"round {round_} log {name}: {r['rps']:.0f} req/s, p99 {r.get('p99_ms', 0):.2f} ms, "
                      f"{r['cpu_us_per_request']:.1f} µs CPU/request", flush=True)
        rows = pg.count()
        dupes = int(pg.sql("SELECT count(*) - count(DISTINCT request_id) FROM llm_gateway.requests")[0][0])
    finally:
        pg.destroy()
    off = statistics.median(r["rps"] for r in results["off"])
    on = statistics.median(r["rps"] for r in results["on"])
    summary = {
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "binary": args.bin,
        "rps_off": off,
        "rps_on": on,
        "ratio_on_off": on / off if off else 0.0,
        "cpu_us_per_request_off": statistics.median(r["cpu_us_per_request"] for r in results["off"]),
        "cpu_us_per_request_on": statistics.median(r["cpu_us_per_request"] for r in results["on"]),
        "p99_ms_off": statistics.median(r.get("p99_ms", 0) for r in results["off"]),
        "p99_ms_on": statistics.median(r.get("p99_ms", 0) for r in results["on"]),
        "requests_logged": logged,
        "rows_in_postgres": rows,
        "duplicate_rows": dupes,
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "request_log.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
