"""What model monitoring costs serving: gateway throughput with monitoring on (the defaults, a
reference profile beside the classifier) against monitoring off for every model.

    python bench/monitoring_cost.py [--repeats 6] [--duration-s 6] [--server-cpus 0 --client-cpus 1]

A fresh gateway process per run on a copy of the demo models, measured with
``bench/run_serving.py``'s machinery (a fresh ``bench/load.py`` per run, after ``--settle-s``
of unmeasured load on the same process), classifier, batch 1, ``--concurrency`` unary calls:

  on        monitoring on (the default): input and confidence statistics, drift against the
            classifier's profile (``gateway profile build`` over 20,000 N(0,1) rows), the
            change detectors, the sampled outlier rate, the alert evaluator
  on_again  the same again: how far two like processes differ here (the noise floor)
  off       ``monitoring: {enabled: false}`` in every model's config.yaml (no profile): only
            latency, throughput and errors recorded

Each repeat runs the three in the next of six orders (rotations, then reversed). Target
(issue 12): median throughput of ``on`` >= 0.97 x ``off``. The last stdout line is one JSON
summary: every run, medians, ratios, server CPU per request.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run_serving  # noqa: E402  (bench/ is not a package)

TARGET = 0.97


def _repositories(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    from gateway.demo import write_demo_repository

    on = write_demo_repository(root / "on")
    ref = root / "reference.npy"
    np.save(ref, np.random.default_rng(0).standard_normal((20_000, 16)).astype(np.float32))
    subprocess.run([sys.executable, "-m", "gateway", "profile", "build", "--model", "classifier", "--data",
                    str(ref), "--model-repository", str(on)], check=True, capture_output=True)
    off = root / "off"
    shutil.copytree(on, off)
    (off / "classifier" / "1" / "profile.npz").unlink()
    for model in off.iterdir():
        if model.is_dir():
            config = model / "config.yaml"
            text = config.read_text() if config.exists() else ""
            config.write_text(text + "\nmonitoring:\n  enabled: false\n")
    return on, off


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--duration-s", type=float, default=6.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--settle-s", type=float, default=4.0,
                   help="unmeasured load on each fresh process before its measured run")
    p.add_argument("--server-cpus", help="pin each gateway process to these CPUs (e.g. 0)")
    p.add_argument("--client-cpus", help="pin each load.py process to these CPUs (e.g. 1)")
    p.add_argument("--json-out", help="also write the summary (indented) to this file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("monitoring_cost.py: --repeats >= 1")
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-monitoring-cost-"))
    on, off = _repositories(logdir)
    bench = run_serving.Bench(args, logdir, on)
    repos = {"on": on, "on_again": on, "off": off}
    load = dict(model="classifier", concurrency=args.concurrency)
    t0 = time.monotonic()
    # unmeasured settle: warm-up rows captured, detectors started
    runs = bench.fresh_runs({k: ({}, repo) for k, repo in repos.items()}, load, args.repeats, args.settle_s)
    med = {k: statistics.median(x["rps"] for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x.get("server_cpu_us_per_request", float("nan")) for x in v)
           for k, v in runs.items()}
    ratios = {k: round(med[k] / med["off"], 3) for k in ("on", "on_again")}
    summary = {"bench": "monitoring_cost", "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats,
               "duration_s": args.duration_s, "concurrency": args.concurrency,
               "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
               "median_rps": {k: round(v, 1) for k, v in med.items()},
               "median_server_cpu_us_per_request": {k: round(v, 1) for k, v in cpu.items()},
               "ratio_over_off": ratios, "on_again_over_on": round(med["on_again"] / med["on"], 3),
               "target": TARGET, "met": ratios["on"] >= TARGET,
               "pairwise_on_over_off": [round(a["rps"] / b["rps"], 3) for a, b in zip(runs["on"], runs["off"])],
               "runs": {k: [round(x["rps"], 1) for x in v] for k, v in runs.items()},
               "errors": {k: sum(x["error_count"] for x in v) for k, v in runs.items()},
               "server_logs": str(logdir), "elapsed_s": round(time.monotonic() - t0, 1)}
    run_serving.log(f"on / off {ratios['on']} (target >= {TARGET}); on_again / off {ratios['on_again']}")
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
