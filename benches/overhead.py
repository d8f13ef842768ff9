#!/usr/bin/env python3
"""What metering and tracing cost a request: the gateway with each switched on vs off, same run.

Five gateways (the release binary) proxy to one mock upstream (the binary with a `mock`
provider), all on 127.0.0.1:

  off        no metering, no traces
  off again  the same as off: the control, whose ratio to off is the run's noise floor
  metering   every request metered: CloudEvents through the on-disk outbox to an OpenMeter sink
  telemetry  every request traced (server span + children) and exported over OTLP/HTTP
  traces-10% the same with `sample_ratio: 0.1` (head sampling; untraced requests create no span)
  batches-512 every request traced, exported in batches of 512 spans (the OpenTelemetry SDK's
             default) instead of the gateway's 2,048: what an export's fixed cost adds

The sinks are nginx answering `204` to OpenMeter's ingest path and `200` to OTLP's `/v1/traces`
(a native sink: a Python receiver would steal the CPU being measured). nginx logs each POST it
receives, so the report can show that events and spans really left the gateway.

wrk drives 64 connections, non-streaming and streaming chat completions. The variants take
turns in every round (order rotated), and the report gives each variant's median req/s and p50
as ratios to `off`. Targets (issues #6 and #8): metering on/off latency ratio <= 1.05,
telemetry on/off throughput ratio >= 0.95. With the control running, a traced variant's ratio
is also given to the control and to the mean of the two untraced gateways: how far the verdict
depends on which of two identical baselines it is read against. The paced mode offers a fixed rate (--rate,
below saturation): its p50 ratio is the latency the feature adds to a request. It is a measurement, not a test: it exits 0 either way.

The VM's speed changes from one 2-second run to the next by more than these features cost (two
identical gateways' req/s differ by up to 10%). So the report also says where the machine's time
went per request (every process and the kernel, from /proc), and gives each variant's machine
time per request in units of wrk's time per request (wrk does the same work whatever the
variant): that ratio to `off` is the throughput comparison with the VM's speed divided out. It
would hide a slowdown a feature caused in wrk (through shared caches, say); it is reported beside
the req/s ratio, with wrk's own time ratio and without a verdict, not instead of it.

Every round starts every gateway afresh (--no-fresh keeps the first round's): two identical
gateway processes differ by a few percent for as long as they run (where their code, heap and
threads landed), and a run that kept them would carry that difference as a bias. They are
started in turn too (the order rotated every len(variants) rounds): starting first can favour
a gateway (with `off` always started first, its identical control once read 0.970 over 80 rounds).

Usage: python3 benches/overhead.py [--duration 5] [--warmup 1] [--rounds 5] [--bin PATH] [--no-fresh]
       [--modes non-stream,stream,paced] [--variants off,off again,metering,telemetry,traces-10%,batches-512]
Needs nginx and wrk (installed with apt-get when missing, as root), and the release binary
(built when missing or older than the sources). Report: target/bench/overhead.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load benchmark's process, wrk and /proc helpers)

# "off again": a second gateway configured exactly like "off" — the control. Its ratio to "off"
# is the noise floor of the run (two identical processes differ by a few percent on this VM).
VARIANTS = ("off", "off again", "metering", "telemetry", "traces-10%", "batches-512")
# The traced variants (every request, or 10% of them).
TRACED = ("telemetry", "traces-10%", "batches-512")
# "paced": non-streaming at a fixed offered rate (--rate), below saturation, where latency is
# what the request path costs rather than queueing for a saturated CPU.
MODES = ("non-stream", "stream", "paced")
CONNECTIONS = 64
METERING_TARGET = 1.05
TELEMETRY_TARGET = 0.95

SINK_CONF = """# written by benches/overhead.py
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    log_format sink '$request_uri $status $content_length';
    server {{
        listen 127.0.0.1:{port};
        location = /health {{ return 200 "ok"; }}
        location = /api/v1/events {{ access_log {prefix}/events.log sink; return 204; }}
        location = /v1/traces {{
            # The body is read whole (`mirror_request_body`), in reads as large as what has
            # arrived, as a collector reads it: a `return` would discard it in 4 KB reads, about
            # 38 system calls per export. The answer is 200 with an empty body: the content
            # handler (stub_status, which reads no file) refuses a POST, and that 405 becomes 200.
            mirror /read-body;
            mirror_request_body on;
            stub_status;
            error_page 405 =200 @ok;
        }}
        location = /read-body {{ internal; return 204; }}
        location @ok {{
            access_log {prefix}/traces.log sink;
            default_type application/x-protobuf;
            return 200 "";
        }}
    }}
}}
"""


def start_sink(work: Path) -> tuple[object, int, Path]:
    prefix = work / "sink"
    prefix.mkdir(exist_ok=True)
    for attempt in range(3):
        port = load.free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(SINK_CONF.format(prefix=prefix, port=port))
        argv = [shutil.which("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        proc = load.PROCS.start("sink", argv, load.BENCH_DIR / "sink.log")
        if load.wait_http_ok(f"http://127.0.0.1:{port}/health", proc):
            return proc, port, prefix
        load.PROCS.stop(proc)
        load.log(f"sink did not come up on port {port} (attempt {attempt + 1})")
    sys.exit("[bench] could not start the nginx sink")


def variant_yaml(variant: str, port: int, up_port: int, sink_port: int, work: Path) -> str:
    text = load.gateway_yaml(port, load.upstream_provider(up_port))
    if variant == "metering":
        text += f"""metering:
  openmeter: {{ url: "http://127.0.0.1:{sink_port}" }}
  source: llm-gateway/bench
  outbox_dir: "{work / 'outbox'}"
"""
    if variant in TRACED:
        ratio = 0.1 if variant == "traces-10%" else 1.0
        batch = ", max_export_batch_size: 512" if variant == "batches-512" else ""
        text += f"""telemetry:
  otlp: {{ endpoint: "http://127.0.0.1:{sink_port}", protocol: http, batch_delay: 1s, sample_ratio: {ratio}{batch} }}
"""
    return text


def start_variant(variant: str, binary: Path, work: Path, up_port: int, sink_port: int):
    env = {k: v for k, v in load.os.environ.items() if not k.startswith("OTEL_") and k != "RUST_LOG"}
    env["BENCH_UPSTREAM_KEY"] = load.KEY
    for attempt in range(3):
        port = load.free_port()
        cfg = work / f"{variant.replace(' ', '-')}.yaml"
        cfg.write_text(variant_yaml(variant, port, up_port, sink_port, work))
        proc = load.PROCS.start(variant, [str(binary), "--config", str(cfg)], load.BENCH_DIR / f"{variant}.log", env)
        if load.wait_http_ok(f"http://127.0.0.1:{port}/health", proc):
            return proc, port
        load.PROCS.stop(proc)
        load.log(f"{variant} did not come up on port {port} (attempt {attempt + 1})")
    sys.exit(f"[bench] could not start the {variant} gateway")


def rotated(items: tuple, by: int) -> tuple:
    """`items` rotated left `by` places (modulo their number)."""
    by %= len(items)
    return items[by:] + items[:by]


def machine_ticks() -> tuple[int, int]:
    """The machine's busy and idle CPU ticks so far, all cores (/proc/stat; steal counts as busy:
    time the VM wanted and did not get)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, idle


def children_ticks() -> int:
    """CPU ticks of this script's waited-for children (wrk), user + system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * load.CLK_TCK)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--bin", type=Path)
    parser.add_argument(
        "--no-fresh", dest="fresh", action="store_false", help="keep the gateways of the first round (default: restart every round)"
    )
    parser.add_argument("--rate", type=float, default=8000.0, help="offered req/s of the paced mode")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)} ('off' always runs)"
    )
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    chosen = {v for v in args.variants.split(",") if v} | {"off"}
    if any(v not in VARIANTS for v in chosen):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    args.variants = tuple(v for v in VARIANTS if v in chosen)

    load.ensure_tools()
    return load.run_in_scratch("llm-gateway-overhead-", args.bin, lambda binary, work: measure(args, binary, work))


def measure(args, binary: Path, work: Path) -> int:
    upstream, up_port = load.start_gateway("upstream", binary, work, "  up: { dialect: mock }", {})
    sink, sink_port, sink_prefix = start_sink(work)
    variants = args.variants

    def start_all(order):
        started = {v: start_variant(v, binary, work, up_port, sink_port) for v in order}
        for _, port in started.values():
            load.sanity_check("gateway", port)
        return started

    gateways = start_all(variants)
    scripts = {}
    for mode in args.modes:
        scripts[mode] = work / f"{mode}.lua"
        text = load.WRK_SCRIPT.format(body=load.request_body(mode == "stream"), key=load.KEY)
        if mode == "paced":
            text += f"\nfunction delay() return {CONNECTIONS * 1000 / args.rate:.3f} end\n"
        scripts[mode].write_text(text)
    sink_pids = [sink.pid, *load.proc_children(sink.pid)]
    caveats = []
    runs: dict[tuple[str, str], list[dict]] = {}
    requests_sent = {v: 0 for v in VARIANTS}
    # Warm-ups included: every request whose spans reach the sink.
    served = {v: 0 for v in VARIANTS}
    started = time.monotonic()
    for rnd in range(args.rounds):
        if rnd > 0 and args.fresh:
            # Fresh processes every round: where a process's code, heap and threads land (address
            # randomisation, the scheduler) makes two identical gateways differ by a few percent
            # for as long as they run. Started once, that luck would bias a whole run; restarted,
            # it varies from round to round and the medians and intervals take it in.
            for proc, _ in gateways.values():
                load.PROCS.stop(proc)
            # Started in turn as well, independently of the running order (every pairing of the
            # two within len(variants)² rounds): starting first can favour a gateway. With 'off'
            # always first, its identical control once read 0.970 of it over 80 rounds (and
            # 1.003, 1.004 in other runs); started in turn, 1.012, 1.006 and 0.990.
            gateways = start_all(rotated(variants, rnd // len(variants)))
        pids = [upstream.pid, *sink_pids, *(p.pid for p, _ in gateways.values())]
        order = rotated(variants, rnd)
        for mode in args.modes:
            # Once per round and mode, then the variants back to back: the seconds between
            # the runs compared with each other are as few as they can be.
            if not load.wait_for_quiet_machine(args.max_wait, pids):
                caveats.append("the machine was busy with other work during the measurement")
            for variant in order:
                proc, port = gateways[variant]
                served[variant] += int(load.run_wrk(port, scripts[mode], CONNECTIONS, args.warmup)["requests"])
                (user0, sys0), sink0 = load.cpu_split(proc.pid), load.cpu_ticks(sink_pids)
                up0, wrk0, (busy0, idle0) = load.cpu_ticks([upstream.pid]), children_ticks(), machine_ticks()
                r = load.run_wrk(port, scripts[mode], CONNECTIONS, args.duration)
                (user1, sys1), sink1 = load.cpu_split(proc.pid), load.cpu_ticks(sink_pids)
                up1, wrk1, (busy1, idle1) = load.cpu_ticks([upstream.pid]), children_ticks(), machine_ticks()
                per_request = 1e6 / load.CLK_TCK / max(1.0, r["requests"])
                r["user_us_per_req"] = (user1 - user0) * per_request
                r["sys_us_per_req"] = (sys1 - sys0) * per_request
                r["cpu_us_per_req"] = r["user_us_per_req"] + r["sys_us_per_req"]
                # The sinks' CPU: what receiving the events and spans costs the shared cores.
                r["sink_us_per_req"] = (sink1 - sink0) * per_request
                # Where the whole machine's time went: the upstream, wrk, everything busy, idle.
                r["upstream_us_per_req"] = (up1 - up0) * per_request
                r["wrk_us_per_req"] = (wrk1 - wrk0) * per_request
                r["machine_us_per_req"] = (busy1 - busy0) * per_request
                r["idle_share"] = (idle1 - idle0) / max(1, busy1 - busy0 + idle1 - idle0)
                # The machine's time per request in units of wrk's, which does the same work for
                # every variant (the same requests, the same answers): the VM's speed, which
                # changes from one run to the next by more than the effect measured, divided out.
                # (Not the upstream's: a traced request brings it a `traceparent` header.)
                r["machine_per_yardstick"] = r["machine_us_per_req"] / max(1e-9, r["wrk_us_per_req"])
                runs.setdefault((mode, variant), []).append(r)
                requests_sent[variant] += int(r["requests"])
                served[variant] += int(r["requests"])
                load.log(
                    f"round {rnd + 1}/{args.rounds} {mode:<10} {variant:<9} {r['rps']:>8.0f} req/s  "
                    f"p50 {r['p50'] / 1000:.3f} ms  p99 {r['p99'] / 1000:.3f} ms  {r['cpu_us_per_req']:.1f} µs CPU/req  "
                    f"machine {r['machine_us_per_req']:.1f} µs/req, idle {100 * r['idle_share']:.0f}%"
                )
    elapsed = time.monotonic() - started
    time.sleep(2.5)  # the last batches (1 s batch windows) reach the sink

    def med(mode, variant, key):
        return statistics.median(r[key] for r in runs[(mode, variant)])

    def ratios(mode, variant, key, base="off"):
        # base "both": the mean of the two identical untraced gateways, 'off' and the control.
        if base == "both":
            pairs = zip(runs[(mode, "off")], runs[(mode, "off again")], strict=True)
            bases = [(a[key] + b[key]) / 2 for a, b in pairs]
        else:
            bases = [r[key] for r in runs[(mode, base)]]
        return [r[key] / b for r, b in zip(runs[(mode, variant)], bases, strict=True)]

    def spread(values):
        # The interval the median of the rounds' ratios `values` falls in for 90% of resamplings
        # of the rounds (a bootstrap with a fixed seed): how far this run's noise leaves the figure.
        pick = random.Random(1)
        medians = sorted(statistics.median(pick.choices(values, k=len(values))) for _ in range(2000))
        return medians[100], medians[1899]

    def inverse_ratios(mode, variant, key):
        # A cost's ratio the other way round (off's ÷ the variant's): comparable to req/s ratios.
        return [1 / x for x in ratios(mode, variant, key)]

    def paired(mode, variant, key):
        # Each round's ratio to the same round's 'off' (measured minutes apart at most): slow
        # drifts of the VM's speed cancel out, which a ratio of medians does not do.
        return statistics.median(ratios(mode, variant, key))

    out = [
        "# Metering and tracing overhead (benches/overhead.py)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {load.binary_label(binary)}; {CONNECTIONS} connections, "
        f"wrk -t2, {args.rounds} rounds of {args.duration:g} s per variant and mode (variants take turns, at starting and at running), "
        f"{elapsed / 60:.1f} min. Medians over the rounds; the ratios are the medians of each round's "
        "ratio to that round's `off`.",
        "",
        "| mode | variant | req/s | p50 ms | p99 ms | gateway CPU µs/req (user + sys) | sink CPU µs/req "
        "| req/s ÷ off | p50 ÷ off |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for mode in args.modes:
        for variant in variants:
            rps, p50 = med(mode, variant, "rps"), med(mode, variant, "p50")
            rps_ratio, p50_ratio = paired(mode, variant, "rps"), paired(mode, variant, "p50")
            out.append(
                f"| {mode} | {variant} | {rps:.0f} | {p50 / 1000:.3f} | {med(mode, variant, 'p99') / 1000:.3f} | "
                f"{med(mode, variant, 'cpu_us_per_req'):.1f} ({med(mode, variant, 'user_us_per_req'):.1f} + "
                f"{med(mode, variant, 'sys_us_per_req'):.1f}) | {med(mode, variant, 'sink_us_per_req'):.2f} | "
                f"{rps_ratio:.3f} | {p50_ratio:.3f} |"
            )
            if variant == "metering" and mode != "stream":
                ratio = p50_ratio
                verdicts.append(f"{mode}: metering p50 on/off {ratio:.3f} (target <= {METERING_TARGET}) "
                                f"{'met' if ratio <= METERING_TARGET else 'MISSED'}; req/s on/off {rps_ratio:.3f}")
            if variant == "off":
                continue
            low, high = spread(ratios(mode, variant, "rps"))
            interval = f"(90% bootstrap interval of the rounds' median {low:.3f}–{high:.3f})"
            if variant == "off again":
                verdicts.append(f"{mode}: control (a second, identical 'off' gateway) req/s {rps_ratio:.3f} {interval}, "
                                f"p50 {p50_ratio:.3f}: the noise floor of this run")
            if mode != "paced":
                # The same comparison in machine time per request, with the VM's speed divided
                # out (see machine_per_yardstick). No verdict on it: the yardstick can move with
                # the gateway in front of it, so wrk's own time ratio is given with it.
                values = inverse_ratios(mode, variant, "machine_per_yardstick")
                n_ratio, (n_low, n_high) = statistics.median(values), spread(values)
                verdicts.append(
                    f"{mode}: {variant} machine time per request in wrk's time, off ÷ {variant} {n_ratio:.3f} "
                    f"(90% bootstrap interval {n_low:.3f}–{n_high:.3f}); wrk's own time per request "
                    f"{paired(mode, variant, 'wrk_us_per_req'):.3f} of beside off"
                )
            if variant in TRACED and mode != "paced":
                ratio = rps_ratio
                verdict = "met" if ratio >= TELEMETRY_TARGET else "MISSED"
                if low < TELEMETRY_TARGET <= high:
                    verdict += ", the target inside the interval"
                verdicts.append(f"{mode}: {variant} req/s on/off {ratio:.3f} {interval} (target >= {TELEMETRY_TARGET}) "
                                f"{verdict}")
                if "off again" in variants:
                    # The two untraced gateways differ by the run's noise: the ratio to each, and
                    # to their mean (the better estimate of the untraced rate).
                    others = []
                    for base, label in (("off again", "the control"), ("both", "the mean of off and the control")):
                        value = statistics.median(ratios(mode, variant, "rps", base))
                        b_low, b_high = spread(ratios(mode, variant, "rps", base))
                        others.append(f"to {label} {value:.3f} ({b_low:.3f}–{b_high:.3f})")
                    verdicts.append(f"{mode}: {variant} req/s " + "; ".join(others))
    out += [
        "",
        "Where the machine's time went, in CPU µs per request (medians; all processes and the kernel, "
        "both cores, from /proc; `rest` is what no listed process was charged with, as interrupts):",
        "",
        "| mode | variant | machine busy | gateway | upstream | wrk | sink | rest | idle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in args.modes:
        for variant in variants:
            busy = med(mode, variant, "machine_us_per_req")
            parts = [med(mode, variant, k) for k in ("cpu_us_per_req", "upstream_us_per_req", "wrk_us_per_req",
                                                     "sink_us_per_req")]
            out.append(
                f"| {mode} | {variant} | {busy:.1f} | " + " | ".join(f"{x:.1f}" for x in parts)
                + f" | {busy - sum(parts):.1f} | {100 * med(mode, variant, 'idle_share'):.0f}% |"
            )
    events = lines(sink_prefix / "events.log")
    traces = lines(sink_prefix / "traces.log")
    event_bytes = sum(int(l.split()[2]) for l in events if len(l.split()) == 3)
    trace_bytes = sum(int(l.split()[2]) for l in traces if len(l.split()) == 3)
    out += [
        "",
        f"Delivered to the sink: {len(events)} OpenMeter batches ({event_bytes / 1e6:.1f} MB) for "
        f"{requests_sent['metering']} metered requests (warm-ups not counted); "
        f"{len(traces)} OTLP exports ({trace_bytes / 1e6:.1f} MB) for "
        f"{' + '.join(str(requests_sent[v]) for v in TRACED)} requests of the traced variants ({', '.join(TRACED)}).",
        *(
            [
                f"OTLP bytes per traced request: {trace_bytes / (served['telemetry'] + served['batches-512']):.0f} "
                "(warm-ups included, all modes together)."
            ]
            if served["telemetry"] + served["batches-512"] and not served["traces-10%"]
            else []
        ),
        "",
        *[f"- {v}" for v in verdicts],
    ]
    if caveats:
        out += ["", "Caveats: " + "; ".join(sorted(set(caveats)))]
    report = "\n".join(out) + "\n"
    print("\n" + report)
    (load.BENCH_DIR / "overhead.md").write_text(report)
    (load.BENCH_DIR / "overhead.json").write_text(json.dumps({f"{m}/{v}": rs for (m, v), rs in runs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
