#!/usr/bin/env python3
"""Two gateway builds side by side: throughput and CPU per request of each, in one run.

Both binaries run at once in front of one mock upstream (the first binary with a `mock`
provider, as in benches/load.py), and wrk loads them in turn — A, B, then B, A, and so on for
--rounds pairs — so that the machine's drift falls on both alike. Each measured run follows a
1 s warm-up; CPU per request is the gateway process's utime+stime over the run divided by the
requests wrk completed. The medians of each build are printed, and their ratio (B / A).

Usage: python3 benches/ab.py A_BINARY B_BINARY [--mode non-stream|stream] [--connections 64]
       [--duration 5] [--rounds 4]
Needs wrk (benches/load.py installs it when missing). A measurement, not a test: it exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (processes, the mock upstream, configs, wrk)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="baseline gateway binary")
    ap.add_argument("b", type=Path, help="gateway binary compared with it")
    ap.add_argument("--mode", choices=("non-stream", "stream"), default="non-stream")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    ap.add_argument("--rounds", type=int, default=4, help="measured runs of each build (default 4)")
    args = ap.parse_args()
    load.ensure_tools()
    return load.run_in_scratch("llm-gateway-ab-", args.a, lambda _binary, work: measure(args, work))


def measure(args, work: Path) -> int:
    _, up_port = load.start_gateway("upstream", args.a.resolve(), work, "  up: { dialect: mock }", {})
    provider = load.upstream_provider(up_port)
    env = {"BENCH_UPSTREAM_KEY": load.KEY}
    builds = {
        "A": load.start_gateway("gateway-a", args.a.resolve(), work, provider, env),
        "B": load.start_gateway("gateway-b", args.b.resolve(), work, provider, env),
    }
    script = work / "load.lua"
    script.write_text(load.WRK_SCRIPT.format(body=load.request_body(args.mode == "stream"), key=load.KEY))
    results: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for round_ in range(args.rounds):
        for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
            proc, port = builds[name]
            load.run_wrk(port, script, args.connections, 1)
            before = sum(load.cpu_split(proc.pid))
            run = load.run_wrk(port, script, args.connections, args.duration)
            ticks = sum(load.cpu_split(proc.pid)) - before
            cpu_us = ticks / 100 / max(run["requests"], 1) * 1e6
            results[name].append((run["rps"], cpu_us))
            load.log(f"{name}: {run['rps']:.0f} req/s, {cpu_us:.1f} µs CPU per request, errors {run['errors']:.0f}")
    medians = {n: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for n, v in results.items()}
    print(f"\n{args.mode}, c={args.connections}, {args.rounds} runs of {args.duration:g} s each (medians):")
    for name, binary in (("A", args.a), ("B", args.b)):
        rps, cpu = medians[name]
        print(f"  {name} {load.binary_label(binary)}: {rps:,.0f} req/s, {cpu:.1f} µs CPU per request")
    print(f"  B / A: req/s {medians['B'][0] / medians['A'][0]:.2f}, CPU per request {medians['B'][1] / medians['A'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
