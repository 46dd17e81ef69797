"""What a dead OTLP collector costs serving: gateway throughput with the OTLP endpoint on a
loopback port where nothing listens, against no endpoint at all.

    python bench/dead_collector.py [--repeats 5] [--duration-s 8] [--warmup-s 2] [--concurrency 16]

A fresh gateway process per run on the demo models, measured with ``bench/run_serving.py``'s
machinery (a fresh ``bench/load.py`` per run, after ``--settle-s`` of unmeasured load on the
same process), classifier, batch 1, ``--concurrency`` unary calls in flight:

  none        no OTEL_EXPORTER_OTLP_ENDPOINT (the default: nothing exported)
  none_again  the same again: how far two like arms differ here (the noise floor)
  dead        OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<a port nothing listens on>,
              default sampler (parentbased_traceidratio 0.01), metrics every 60 s
  dead_busy   as dead, with OTEL_TRACES_SAMPLER=always_on and OTEL_METRIC_EXPORT_INTERVAL=1000

Each repeat runs the four in the next of eight orders (rotations of none, none_again, dead, dead_busy,
then the same reversed), so each arm runs in each place equally often.
Target (issue 11): median throughput of dead and of dead_busy >= 0.97 x none, over at least five
repeats. The last stdout line is one JSON summary: every run, medians, ratios, server CPU per
request.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run_serving  # noqa: E402  (bench/ is not a package)

TARGET = 0.97


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--duration-s", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--settle-s", type=float, default=6.0,
                   help="unmeasured load on each fresh process before its measured run")
    p.add_argument("--server-cpus", help="pin each gateway process to these CPUs (e.g. 0): with "
                   "--client-cpus, takes the scheduler's placement out of the comparison")
    p.add_argument("--client-cpus", help="pin each load.py process to these CPUs (e.g. 1)")
    p.add_argument("--json-out", help="also write the summary (indented) to this file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("dead_collector.py: --repeats >= 1")
    from gateway.demo import demo_repository

    logdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-dead-collector-"))
    bench = run_serving.Bench(args, logdir, demo_repository())
    dead = f"http://127.0.0.1:{run_serving.free_port()}"   # bound and closed again: nothing listens
    envs = {"none": {},
            "none_again": {},   # a second process like the first: the spread between processes
            "dead": {"OTEL_EXPORTER_OTLP_ENDPOINT": dead},
            "dead_busy": {"OTEL_EXPORTER_OTLP_ENDPOINT": dead, "OTEL_TRACES_SAMPLER": "always_on",
                          "OTEL_METRIC_EXPORT_INTERVAL": "1000"}}
    load = dict(model="classifier", concurrency=args.concurrency)
    t0 = time.monotonic()
    # unmeasured settle: the first failed export (its retries take ~7 s) pauses sampling
    runs = bench.fresh_runs({k: (env, None) for k, env in envs.items()}, load, args.repeats, args.settle_s)
    med = {k: statistics.median(x["rps"] for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x.get("server_cpu_us_per_request", float("nan")) for x in v)
           for k, v in runs.items()}
    ratios = {k: round(med[k] / med["none"], 3) for k in ("none_again", "dead", "dead_busy")}
    summary = {"bench": "dead_collector", "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats,
               "duration_s": args.duration_s, "concurrency": args.concurrency,
               "server_cpus": args.server_cpus, "client_cpus": args.client_cpus, "endpoint": dead,
               "median_rps": {k: round(v, 1) for k, v in med.items()},
               "median_server_cpu_us_per_request": {k: round(v, 1) for k, v in cpu.items()},
               "ratio_over_none": ratios, "target": TARGET,
               "met": {k: v >= TARGET for k, v in ratios.items() if k != "none_again"},
               "pairwise_over_none": {k: [round(a["rps"] / b["rps"], 3) for a, b in zip(runs[k], runs["none"])]
                                      for k in ("none_again", "dead", "dead_busy")},
               "runs": {k: [round(x["rps"], 1) for x in v] for k, v in runs.items()},
               "errors": {k: sum(x["error_count"] for x in v) for k, v in runs.items()},
               "server_logs": str(logdir), "elapsed_s": round(time.monotonic() - t0, 1)}
    run_serving.log(f"dead / none {ratios['dead']}, dead_busy / none {ratios['dead_busy']} (target >= {TARGET}); "
                    f"none_again / none {ratios['none_again']} (the spread between two like processes)")
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
