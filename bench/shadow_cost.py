"""What shadow traffic costs the primary: throughput and p99 of the clients' requests with 100 %
of them mirrored to a second version (an identical copy of the demo classifier) against no
shadow, a second no-shadow arm as the noise floor, a fresh process per run, arms rotating.

    python bench/shadow_cost.py [--repeats 6] [--duration-s 6] [--server-cpus 0 --client-cpus 1]

Target (issue 14): primary p99 with 100 % shadow <= 1.1 x without "where cores allow". Here the
shadow's executions share the one pinned core with the primary's, so the shadow's own work (a
second model execution per request) is paid from the primary's CPU: the figure is reported, and
the server CPU per request beside it says how much of the difference that is. The last stdout
line is one JSON summary.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run_serving  # noqa: E402  (bench/ is not a package)

TARGET_P99_RATIO = 1.1


def _repositories(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    from gateway.demo import write_demo_repository

    off = write_demo_repository(root / "off")
    shutil.copytree(off / "classifier" / "1", off / "classifier" / "2")
    labels = "labels: [approve, review, decline]\n"
    (off / "classifier" / "config.yaml").write_text(labels + "traffic:\n  weights: {'1': 1}\n")
    on = root / "on"
    shutil.copytree(off, on)
    (on / "classifier" / "config.yaml").write_text(labels + "traffic:\n  weights: {'1': 1}\n  shadow: {'2': 1.0}\n")
    return on, off


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--duration-s", type=float, default=6.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--settle-s", type=float, default=3.0)
    p.add_argument("--server-cpus", help="pin each gateway process to these CPUs (e.g. 0)")
    p.add_argument("--client-cpus", help="pin each load.py process to these CPUs (e.g. 1)")
    p.add_argument("--json-out", help="also write the summary (indented) to this file")
    args = p.parse_args(argv)
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-shadow-cost-"))
    on, off = _repositories(logdir)
    bench = run_serving.Bench(args, logdir, off)
    t0 = time.monotonic()
    runs = bench.fresh_runs({"shadow": ({}, on), "off": ({}, off), "off_again": ({}, off)},
                            dict(model="classifier", concurrency=args.concurrency), args.repeats, args.settle_s)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p99_ms")} for k, v in runs.items()}
    cpu = {k: statistics.median(x.get("server_cpu_us_per_request", float("nan")) for x in v) for k, v in runs.items()}
    summary = {"bench": "shadow_cost", "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats,
               "duration_s": args.duration_s, "concurrency": args.concurrency,
               "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
               "median_rps": {k: round(v["rps"], 1) for k, v in med.items()},
               "median_p99_ms": {k: round(v["p99_ms"], 2) for k, v in med.items()},
               "median_server_cpu_us_per_request": {k: round(v, 1) for k, v in cpu.items()},
               "p99_ratio_shadow_over_off": round(med["shadow"]["p99_ms"] / med["off"]["p99_ms"], 3),
               "p99_ratio_off_again_over_off": round(med["off_again"]["p99_ms"] / med["off"]["p99_ms"], 3),
               "rps_ratio_shadow_over_off": round(med["shadow"]["rps"] / med["off"]["rps"], 3),
               "target_p99_ratio": TARGET_P99_RATIO,
               "errors": {k: sum(x["error_count"] for x in v) for k, v in runs.items()},
               "server_logs": str(logdir), "elapsed_s": round(time.monotonic() - t0, 1)}
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
