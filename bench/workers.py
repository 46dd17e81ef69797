"""Throughput of ``gateway serve --workers N`` against N, with a multi-process client.

    python bench/workers.py [--workers 1,2,4] [--clients 4] [--concurrency 8] [--channels 4]
                            [--duration-s 8] [--warmup-s 2] [--settle-s 3] [--repeats 3]

Each run is a fresh ``gateway serve`` (``GATEWAY_WORKERS=N``, otherwise defaults; ready when its
supervisor logs that every worker is) loaded by ``--clients`` concurrent ``bench/load.py``
processes, each with ``--concurrency`` requests in flight over ``--channels`` connections (the
kernel hands each connection to one worker, so a client needs several). An unmeasured
``--settle-s`` load precedes the measured one. Arms rotate across repeats (1 2 4 / 2 4 1 / ...
and reversed); reported: the median total req/s per N and its ratio to N = 1. The issue's
target (``--workers 4`` >= 3 x ``--workers 1``) holds for machines of 8 cores and more; on
fewer the figure is reported only. The last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from run_serving import BENCH, Bench, Server, ServerStartError, log  # noqa: E402


def wait_all_ready(server: Server, workers: int, timeout_s: float = 180.0) -> None:
    """``--workers 1`` is ready when health says SERVING; more when the supervisor says all are."""
    server.wait_serving(timeout_s)
    if workers == 1:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f"ready: {workers} workers serving" in server.log_path.read_text(errors="replace"):
            return
        if not server.alive():
            raise ServerStartError(f"{server.label} exited: {server.log_tail()}")
        time.sleep(0.2)
    raise ServerStartError(f"{server.label}: not all {workers} workers ready: {server.log_tail()}")


def load(args: argparse.Namespace, server: Server, duration_s: float) -> dict:
    """``--clients`` load.py processes at once; their req/s add."""
    argv = [sys.executable, str(BENCH / "load.py"), "--address", server.address, "--model", args.model,
            "--concurrency", str(args.concurrency), "--channels", str(args.channels), "--batch-size", "1",
            "--duration-s", str(duration_s), "--warmup-s", str(args.warmup_s), "--quiet"]
    procs = [subprocess.Popen(argv + ["--seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(args.clients)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=duration_s + args.warmup_s + 60)
        if p.returncode != 0 or not out.strip():
            raise RuntimeError(f"load.py failed (rc {p.returncode}): {err.strip()[-800:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    if not server.alive():
        raise RuntimeError(f"{server.label} died during the run: {server.log_tail()}")
    return {"rps": sum(r["rps"] for r in results), "errors": sum(r["error_count"] for r in results),
            "p99_ms_max": max(r["p99_ms"] for r in results), "p50_ms": [r["p50_ms"] for r in results]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--clients", type=int, default=4, help="load.py processes")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight per client")
    p.add_argument("--channels", type=int, default=4, help="connections per client")
    p.add_argument("--model", default="classifier")
    p.add_argument("--duration-s", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--settle-s", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]

    from gateway.demo import demo_repository

    logdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-workers-"))
    bench = Bench(args, logdir, demo_repository())
    orders = [counts[i:] + counts[:i] for i in range(len(counts))]
    orders += [o[::-1] for o in orders]
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    try:
        for r in range(args.repeats):
            for n in orders[r % len(orders)]:
                server = bench.gateway(f"workers-{n}-{r + 1}", {"GATEWAY_WORKERS": str(n),
                                                                "GATEWAY_ADMIN_PORT": "0"})
                server.start()
                try:
                    wait_all_ready(server, n)
                    load(args, server, args.settle_s)  # unmeasured
                    res = load(args, server, args.duration_s)
                finally:
                    server.stop()
                runs[n].append(res)
                log(f"repeat {r + 1}/{args.repeats} workers {n}: {res['rps']:8.1f} req/s, "
                    f"worst client p99 {res['p99_ms_max']:.2f} ms, errors {res['errors']}")
    finally:
        bench.stop_all()
    medians = {n: statistics.median(x["rps"] for x in rs) for n, rs in runs.items()}
    base = medians.get(1)
    summary = {"cores": os.cpu_count(), "clients": args.clients, "concurrency_per_client": args.concurrency,
               "channels_per_client": args.channels, "model": args.model,
               "median_rps": {str(n): round(v, 1) for n, v in medians.items()},
               "ratio_to_1": {str(n): round(v / base, 3) for n, v in medians.items()} if base else {},
               "runs_rps": {str(n): [round(x["rps"], 1) for x in rs] for n, rs in runs.items()},
               "errors": {str(n): sum(x["errors"] for x in rs) for n, rs in runs.items()}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
