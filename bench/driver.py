"""Runs one load (closed or open loop) over several client processes and merges their reports.

:func:`run_load` splits the concurrency (or the rate) over ``processes`` ``bench.worker``
processes, pinned with ``taskset`` when ``client_cpus`` is given, all starting their clock at the
same wall-clock instant. While they run it prints one progress line a second on stderr (req/s,
rows/s, p50/p99 of that second, errors, degraded), merged over the processes. When a server pid
is given it reads the server's CPU time (its whole process group: tritonserver's stubs count too)
at the start and end of the measured window. The result is one dict: requests, rows, throughput,
percentiles within bench.histogram's stated relative error, error and degraded shares, server CPU
per request, the merged histogram and the per-second series.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from bench.histogram import RELATIVE_ERROR, Histogram
from bench.wire import METHODS, check_loopback

MAX_DURATION_S = 600.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (Linux /proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _split(total: float, parts: int, integer: bool) -> list[float]:
    if integer:
        base, extra = divmod(int(total), parts)
        return [base + (1 if i < extra else 0) for i in range(parts)]
    return [total / parts] * parts


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_load(*, address: str, method: str, model: str, batch: int = 1, mode: str = "closed",
             concurrency: int = 16, rate: float = 0.0, arrival: str = "constant", duration_s: float = 10.0,
             warmup_s: float = 2.0, processes: int = 2, client_cpus: str | None = None,
             server_pid: int | None = None, timeout_s: float = 10.0, spike: dict | None = None,
             drift: dict | None = None, channels: int = 1, streams: int = 4, seed: int = 0,
             max_requests: int = 50_000_000, max_outstanding: int = 20_000, quiet: bool = False,
             distinct: int = 0, label: str = "", python: str | None = None) -> dict[str, Any]:
    check_loopback(address)
    if method not in METHODS:
        raise SystemExit(f"bench: unknown method {method!r} (choose from {', '.join(METHODS)})")
    if mode == "closed" and concurrency < 1 or mode == "open" and rate <= 0 or batch < 1:
        raise SystemExit("bench: concurrency >= 1 (closed loop), rate > 0 (open loop) and batch >= 1")
    duration_s = min(float(duration_s), MAX_DURATION_S)
    processes = max(1, min(processes, concurrency if mode == "closed" else processes))
    conc = _split(concurrency, processes, True)
    rates = _split(rate, processes, False)
    start_at = time.time() + 2.0 + 0.3 * processes  # every client's clock starts together
    procs = []
    for i in range(processes):
        spec = dict(address=address, method=method, model=model, batch=batch, mode=mode,
                    concurrency=int(conc[i]), rate=rates[i], arrival=arrival, duration_s=duration_s,
                    warmup_s=warmup_s, start_at=start_at, timeout_s=timeout_s, spike=spike, drift=drift,
                    channels=channels, streams=streams, seed=seed + i, distinct=distinct, max_requests=max_requests // processes,
                    max_outstanding=max(1, max_outstanding // processes))
        argv = [python or sys.executable, "-m", "bench.worker", json.dumps(spec)]
        if client_cpus:
            argv = ["taskset", "-c", client_cpus, *argv]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                      env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                          [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}))
    finals: list[dict | None] = [None] * processes
    seconds: dict[int, list[dict]] = {}
    lock = threading.Lock()

    def reader(i: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "final" in msg:
                finals[i] = msg["final"]
            elif "progress" in msg:
                with lock:
                    seconds.setdefault(msg["progress"]["sec"], []).append(msg["progress"])

    threads = [threading.Thread(target=reader, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    cpu: dict[str, float] = {}
    try:
        t_measure = start_at + warmup_s
        t_end = t_measure + duration_s
        shown = 0
        hard_stop = t_end + timeout_s + 30
        while time.time() < hard_stop and any(p.poll() is None for p in procs):
            now = time.time()
            if server_pid and "start" not in cpu and now >= t_measure:
                cpu["start"] = group_cpu_s(server_pid)
            if server_pid and "end" not in cpu and now >= t_end:
                cpu["end"] = group_cpu_s(server_pid)
            with lock:
                ready = sorted(s for s, parts in seconds.items() if s >= shown and len(parts) == processes)
            for s in ready:
                if not quiet:
                    _progress(label or f"{method} {model}", s, warmup_s, seconds[s], batch)
                shown = s + 1
            time.sleep(0.05)
        if server_pid and "end" not in cpu:
            cpu["end"] = group_cpu_s(server_pid)
        for t in threads:
            t.join(5)
        if not quiet:
            for s in sorted(s for s in seconds if s >= shown and len(seconds[s]) == processes):
                _progress(label or f"{method} {model}", s, warmup_s, seconds[s], batch)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait(10)
        for t in threads:
            t.join(5)
    errors_text = [p.stderr.read().strip()[-1500:] if p.stderr else "" for p in procs]
    if any(f is None for f in finals):
        bad = next(i for i, f in enumerate(finals) if f is None)
        raise RuntimeError(f"client process {bad} ended without a result (rc {procs[bad].returncode}): "
                           f"{errors_text[bad]}")
    skipped = [f["skipped"] for f in finals if f and "skipped" in f]
    if skipped:
        return {"address": address, "method": method, "model": model, "skipped": skipped[0]}
    return summarize([f for f in finals if f is not None], address=address, method=method, model=model, batch=batch, mode=mode,
                     concurrency=concurrency if mode == "closed" else None,
                     rate=rate if mode == "open" else None, arrival=arrival if mode == "open" else None,
                     processes=processes,
                     cpu=cpu if "start" in cpu else None, spike=spike, drift=drift, warmup_s=warmup_s,
                     measure_start_unix=round(start_at + warmup_s, 3))


def _progress(label: str, s: int, warmup_s: float, parts: list[dict], batch: int) -> None:
    ok = sum(p["ok"] for p in parts)
    h = Histogram.merged(Histogram.from_json(p["hist"]) for p in parts if p["hist"])
    phase = "warmup" if s < warmup_s else "measure"
    _log(f"{label} [{s + 1:4d}s {phase:>7}] {ok:8d} req/s {ok * batch:9d} rows/s  "
         f"p50 {h.quantile_ns(0.5) / 1e6:7.3f}  p99 {h.quantile_ns(0.99) / 1e6:7.3f} ms  "
         f"errors {sum(p['errors'] for p in parts)}  degraded {sum(p['degraded'] for p in parts)}")


def summarize(finals: list[dict], *, cpu: dict | None, warmup_s: float, **info: Any) -> dict[str, Any]:
    hist = Histogram.merged(Histogram.from_json(f["hist"]) for f in finals)
    errors: dict[str, int] = {}
    for f in finals:
        for k, v in f["errors"].items():
            errors[k] = errors.get(k, 0) + v
    duration = max(1e-9, max(f["duration_s"] for f in finals))
    n, n_err = hist.count, sum(errors.values())
    degraded = sum(f["degraded"] for f in finals)
    series: dict[int, dict[str, Any]] = {}
    for f in finals:
        for s, v in f["seconds"].items():
            cur = series.setdefault(int(s), {"ok": 0, "errors": 0, "degraded": 0, "hist": Histogram()})
            cur["ok"] += v["ok"]
            cur["errors"] += v["errors"]
            cur["degraded"] += v["degraded"]
            cur["hist"].merge(Histogram.from_json(v["hist"]))
    out: dict[str, Any] = {
        **{k: v for k, v in info.items() if v is not None}, "requests": n, "rows": n * info["batch"],
        "rps": round(n / duration, 1), "rows_per_s": round(n * info["batch"] / duration, 1),
        **hist.summary_ms(), "percentile_relative_error": RELATIVE_ERROR,
        "errors": errors, "error_count": n_err,
        "error_share": round(n_err / (n + n_err), 5) if n + n_err else 0.0,
        "degraded_share": round(degraded / n, 5) if n else 0.0, "duration_s": round(duration, 3),
    }
    if cpu is not None and n:
        cpu_s = cpu["end"] - cpu["start"]
        out["server_cpu_s"] = round(cpu_s, 3)
        out["server_cpu_us_per_request"] = round(cpu_s / n * 1e6, 1)
    out["series"] = [{"t_s": round(s - warmup_s + 1, 3), "ok": v["ok"], "errors": v["errors"],
                      "degraded": v["degraded"], "p50_ms": round(v["hist"].quantile_ns(0.5) / 1e6, 4),
                      "p99_ms": round(v["hist"].quantile_ns(0.99) / 1e6, 4)} for s, v in sorted(series.items())
                     if s < warmup_s + duration]  # seconds that begin after the window: the drain
    out["histogram"] = hist.to_json()
    return out


def one_line(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its bulky parts (series, histogram): for the final summary line."""
    return {k: v for k, v in result.items() if k not in ("series", "histogram")}
