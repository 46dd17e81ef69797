"""PNG plots of load results (matplotlib, the ``bench`` extra): throughput against latency, the
latency CDF, and the per-second time series with the run's events marked."""
from __future__ import annotations

import pathlib
from typing import Any

from bench.histogram import Histogram


def available() -> str | None:
    """None when matplotlib can be imported, else why the plots are left out."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "no plots: matplotlib is not installed (pip install -e .[bench])"
    return None


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label(r: dict) -> str:
    return r.get("label") or f"{r.get('server', '')} {r['method']}".strip()


def throughput_latency(results: list[dict], path: pathlib.Path) -> pathlib.Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict]] = {}
    for r in results:
        if "requests" in r:
            groups.setdefault(_label(r), []).append(r)
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["rps"])
        ax.plot([r["rps"] for r in rs], [r["p50_ms"] for r in rs], "o-", label=f"{label} p50")
        ax.plot([r["rps"] for r in rs], [r["p99_ms"] for r in rs], "s--", label=f"{label} p99")
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_cdf(results: list[dict], path: pathlib.Path) -> pathlib.Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if not r.get("histogram") or not r["histogram"]["count"]:
            continue
        xs, ys = Histogram.from_json(r["histogram"]).cdf()
        extra = f" c{r['concurrency']}" if r.get("mode") == "closed" else f" {r.get('rate')}/s"
        ax.plot(xs, ys, label=_label(r) + extra)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of requests at or below")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_series(result: dict, path: pathlib.Path, events: list[tuple[float, str]] | None = None) -> pathlib.Path:
    """Per-second req/s, errors and degraded answers (left axis) and p50/p99 (right), events as
    vertical lines (seconds from the start of the measured window; negative: warm-up)."""
    plt = _pyplot()
    series = result["series"]
    t = [s["t_s"] for s in series]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(t, [s["ok"] for s in series], label="ok / s")
    ax.plot(t, [s["errors"] for s in series], label="errors / s")
    ax.plot(t, [s["degraded"] for s in series], label="degraded / s")
    ax.set_xlabel("s from the start of the measured window")
    ax.set_ylabel("answers per second")
    ax2 = ax.twinx()
    ax2.plot(t, [s["p50_ms"] for s in series], ":", color="grey", label="p50 ms")
    ax2.plot(t, [s["p99_ms"] for s in series], "--", color="black", label="p99 ms")
    ax2.set_ylabel("latency (ms)")
    for at, name in events or []:
        ax.axvline(at, color="red", alpha=0.5)
        ax.annotate(name, (at, ax.get_ylim()[1] * 0.95), fontsize=7, color="red", rotation=90, va="top")
    ax.axvline(0, color="grey", alpha=0.3)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="lower left")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
