"""The first seconds of a fresh server on a wide-input model: this checkout against a baseline
checkout, arms alternating, a fresh server per run.

    python -m bench.first_seconds --baseline-dir /work/wt/base [--model heavy_cnn] [--repeats 4]

A version's input statistics freeze their quantile bin edges once its first ``warmup_rows``
rows are in: for ``heavy_cnn``'s 4,096 features a sort of 4 M values. Where that runs on the
execution thread, every request queued behind that batch waits for it, which shows in the
first seconds' tail latency (p99.9, max), not in a warmed-up run. Each run starts a server
from ``--baseline-dir`` or from this checkout (both with kernels built in place: ``python
setup.py build_ext --inplace``), loads it at once (no warm-up) in a closed loop for
``--seconds``, and stops it. The last stdout line is one JSON summary: per arm, the medians of
req/s, p50, p99, p99.9 and max, and new / baseline ratios.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

from bench.driver import one_line, run_load
from bench.models import write_repository
from bench.run_serving import Server, cpu_set

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Runs ``python -m gateway`` from another checkout: its directory first on sys.path, as -m would.
_FROM = ("import os, runpy, sys; root = sys.argv.pop(1); os.chdir(root); sys.path.insert(0, root); "
         "runpy.run_module('gateway', run_name='__main__', alter_sys=True)")
KEYS = ("rps", "p50_ms", "p99_ms", "p999_ms", "max_ms")


def log(msg: str) -> None:
    print(f"[first_seconds {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def one_run(label: str, root: pathlib.Path, repo: pathlib.Path, logdir: pathlib.Path, a: argparse.Namespace) -> dict:
    argv = [sys.executable, "-c", _FROM, str(root), "serve", "--port", "{port}", "--model-repository", str(repo)]
    server = Server(label, argv, {"GATEWAY_GRACE_PERIOD_S": "1"}, logdir, cpu_set(a.server_cpus))
    server.start()
    try:
        server.wait_serving()
        assert server.proc is not None
        res = run_load(address=server.address, method="predict", model=a.model, concurrency=a.concurrency,
                       duration_s=a.seconds, warmup_s=0.0, processes=a.processes, client_cpus=a.client_cpus,
                       server_pid=server.proc.pid, quiet=True, label=f"{label} {a.model}")
        time.sleep(1.5)  # the drift monitor's next tick: has the warm-up frozen?
        reference = drift_reference(server.address, a.model)
    finally:
        server.stop()
    row = {k: res.get(k) for k in KEYS + ("requests", "errors")}
    row["drift_reference"] = reference
    log(f"{label}: " + ", ".join(f"{k} {row[k]}" for k in KEYS) + f", reference {reference}")
    return row


def drift_reference(address: str, model: str) -> str:
    """The version's drift reference after the run (``captured (N rows)``: its edges froze;
    ``capturing``: not yet)."""
    import grpc

    from gateway._proto import gateway_pb2 as pb
    from gateway._proto import gateway_pb2_grpc as pb_grpc
    try:
        with grpc.insecure_channel(address) as ch:
            stats = pb_grpc.GatewayStub(ch).GetStats(pb.GetStatsRequest(model=model, window_s=5), timeout=5)
    except grpc.RpcError as exc:
        return f"error {exc.code().name}"
    for m in stats.models:
        if m.model == model:
            d = m.drift
            return f"{d.reference} ({d.reference_rows} rows)" if d.reference_rows else d.reference
    return "no stats"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-dir", required=True, type=pathlib.Path,
                   help="another checkout of the gateway, kernels built in place")
    p.add_argument("--model", default="heavy_cnn")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--server-cpus", default=None)
    p.add_argument("--client-cpus", default=None)
    p.add_argument("--out", type=pathlib.Path, default=None)
    a = p.parse_args(argv)
    if not (1 <= a.repeats <= 50 and 0 < a.seconds <= 60):
        raise SystemExit("first_seconds: --repeats 1..50, --seconds in (0, 60]")
    out = a.out or pathlib.Path(tempfile.mkdtemp(prefix="bench-first-seconds-"))
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    repo = write_repository(out / "repository", models=(a.model,))
    arms = {"new": ROOT, "baseline": a.baseline_dir.resolve()}
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    for r in range(a.repeats):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for label in order:
            runs[label].append(one_run(f"{label}-{r + 1}", arms[label], repo, logdir, a))
    med = {label: {k: statistics.median(x[k] for x in rs if x.get(k) is not None) for k in KEYS}
           for label, rs in runs.items()}
    ratio = {k: round(med["new"][k] / med["baseline"][k], 3) if med["baseline"][k] else None for k in KEYS}
    summary = {"command": "first_seconds", "model": a.model, "concurrency": a.concurrency, "seconds": a.seconds,
               "repeats": a.repeats, "baseline_dir": str(arms["baseline"]), "medians": med, "new_over_baseline": ratio,
               "runs": runs, "out": str(out), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(one_line({k: summary[k] for k in ("command", "model", "medians", "new_over_baseline", "out")})),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
