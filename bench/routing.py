"""What routing costs per request, in-process: ``ModelRegistry.resolve`` for a model that names
no version, without a traffic split (the latest version: today's default), with a 90/10 split
(a random draw), and with the split and a routing key (a BLAKE2b hash of the key: sticky).

    python bench/routing.py [--repeats 7] [--calls 200000]

Arms alternate within each repeat; the medians over repeats are reported, with the split's
extra cost over the default. Target (issue 14): routing < 1 us per request. The last stdout
line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from gateway.core.registry import ModelEntry, ModelRegistry, ModelVersion


def _registry(split: bool) -> ModelRegistry:
    reg = ModelRegistry()
    reg.put(ModelEntry("m", {v: ModelVersion("m", v, None, None, None)  # type: ignore[arg-type]
                             for v in ("1", "2")}))
    if split:
        reg.set_weights("m", {"1": 90, "2": 10})
    return reg


def _ns_per_call(reg: ModelRegistry, calls: int, key: str) -> float:
    resolve = reg.resolve
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        resolve("m", "", key)
    return (time.perf_counter_ns() - t0) / calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=200_000)
    args = p.parse_args(argv)
    arms = {"latest": (_registry(False), ""), "split": (_registry(True), ""),
            "split_keyed": (_registry(True), "user-0123456789")}
    runs: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(args.repeats):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for name in order:
            reg, key = arms[name]
            runs[name].append(_ns_per_call(reg, args.calls, key))
    med = {k: round(statistics.median(v), 1) for k, v in runs.items()}
    summary = {"bench": "routing", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
               "python": platform.python_version(), "repeats": args.repeats, "calls": args.calls,
               "median_ns_per_resolve": med,
               "split_extra_ns": round(med["split"] - med["latest"], 1),
               "split_keyed_extra_ns": round(med["split_keyed"] - med["latest"], 1),
               "target_ns": 1000, "met": max(med["split"], med["split_keyed"]) < 1000}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
