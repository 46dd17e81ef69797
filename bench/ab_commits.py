"""Same-run A/B of two installs of the gateway (this checkout vs a baseline commit's install).

    python bench/ab_commits.py --baseline-bin /tmp/base/.venv/bin [--repeats 5] [--duration-s 8]

The baseline is another commit installed into its own virtual environment (``pip install .``
from a clone checked out at that commit); its ``gateway`` console script and ``python`` are
taken from ``--baseline-bin``. Both run ``bench/run_serving.py``'s servers and load (loopback,
one server running at a time, the others frozen, arms alternating AB/BA, a fresh load process
per run), on the classifier at batch 1 and 16 in flight:

  on:  new vs baseline, telemetry on (the gateway arm of run_serving's scenario a)
  off: new vs baseline, ``GATEWAY_TELEMETRY__ENABLED=false`` (with ``on``, scenario d's arms)

and then ``bench/core_path.py`` (in-process µs per request, no gRPC) in each install,
alternating, ``--repeats`` times. The last stdout line is one JSON summary: req/s and server
CPU per request medians and new/baseline ratios, and the core-path medians.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run_serving  # noqa: E402  (bench/ is not a package)


def _gateway(bench: run_serving.Bench, label: str, argv0: list[str], env: dict[str, str]) -> run_serving.Server:
    argv = argv0 + ["serve", "--port", "{port}", "--model-repository", str(bench.repository)]
    return run_serving.Server(label, argv, {"GATEWAY_GRACE_PERIOD_S": "1", **env}, bench.logdir)


def _core_path(python: str, requests: int, cwd: str) -> float:
    proc = subprocess.run([python, str(BENCH / "core_path.py"), "--requests", str(requests)], capture_output=True,
                          text=True, timeout=600, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"core_path.py failed under {python}: {proc.stderr.strip()[-600:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["us_per_request"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-bin", required=True, help="bin/ of the baseline install's virtual environment")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--duration-s", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--core-requests", type=int, default=20000)
    p.add_argument("--floor-mode", default="sync")
    p.add_argument("--skip-serving", action="store_true")
    args = p.parse_args()
    base = pathlib.Path(args.baseline_bin)
    from gateway.demo import demo_repository

    logdir = pathlib.Path(tempfile.mkdtemp(prefix="ab_commits-"))
    bench = run_serving.Bench(args, logdir, demo_repository())
    new = [sys.executable, "-m", "gateway"]
    old = [str(base / "gateway")]  # a console script: the checkout's source tree is not on its path
    summary: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats, "server_logs": str(logdir),
                     "serving": {}}
    t0 = time.monotonic()
    try:
        if not args.skip_serving:
            load = dict(model="classifier", concurrency=16)
            for name, env in (("on", {}), ("off", {"GATEWAY_TELEMETRY__ENABLED": "false"})):
                a = bench.launch(_gateway(bench, f"new-{name}", new, env))
                b = bench.launch(_gateway(bench, f"base-{name}", old, env))
                bench.load(a, **load)  # one warm-up run each, outside the comparison
                bench.load(b, **load)
                summary["serving"][name] = bench.compare(name, "rps", [(f"new_{name}", a, load),
                                                                       (f"base_{name}", b, load)])
                bench.stop_all()
                bench.servers.clear()
    finally:
        bench.stop_all()
    runs: dict[str, list[float]] = {"new": [], "base": []}
    for r in range(args.repeats):
        order = (("new", sys.executable), ("base", str(base / "python")))
        for label, python in (order if r % 2 == 0 else tuple(reversed(order))):
            runs[label].append(_core_path(python, args.core_requests, cwd=tempfile.gettempdir()))
            run_serving.log(f"core path repeat {r + 1}/{args.repeats} {label:<5} {runs[label][-1]:.2f} us/request")
    med = {k: statistics.median(v) for k, v in runs.items()}
    summary["core_path_us_per_request"] = {"runs": runs, "median": med, "ratio_new_over_base": round(med["new"] / med["base"], 3)}
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
