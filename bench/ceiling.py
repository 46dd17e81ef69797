"""The ceiling: raw onnxruntime in one process, no server, at the batch sizes a gateway formed.

    python -m bench.ceiling --model-path DIR/wide_mlp/1/model.onnx --mean-batch 21.4 --seconds 3

One CPU session with one intra-op thread (the gateway's default). A mean batch size ``m`` is run
as batches of ``floor(m)`` and ``ceil(m)`` rows mixed so that their mean is ``m``; the input
rows are random float32, drawn once. Prints one JSON line: rows/s, CPU per row (this process's
CPU time: comparable with a server's CPU per request on a machine where the CPU is shared),
runs, mean batch.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np


def measure(model_path: str, mean_batch: float, seconds: float, seed: int = 0, arena: bool = True) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena  # on: onnxruntime's default; the gateway turns it off
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    width = [1 if not isinstance(d, int) or d < 0 else d for d in inp.shape[1:]]
    lo, hi = max(1, math.floor(mean_batch)), max(1, math.ceil(mean_batch))
    share_hi = 0.0 if hi == lo else (mean_batch - lo) / (hi - lo)
    rng = np.random.default_rng(seed)
    feeds = {b: {inp.name: rng.standard_normal([b, *width]).astype(np.float32)} for b in {lo, hi}}
    for b in feeds:  # warm up both shapes
        session.run(None, feeds[b])
    rows = runs = 0
    credit = 0.0
    t_end = time.perf_counter() + min(seconds, 60.0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() < t_end:
        credit += share_hi
        b = hi if credit >= 1.0 else lo
        if b == hi and hi != lo:
            credit -= 1.0
        session.run(None, feeds[b])
        rows += b
        runs += 1
    elapsed, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    return {"arena": arena, "rows_per_s": round(rows / elapsed, 1), "cpu_us_per_row": round(cpu_s / rows * 1e6, 1),
            "runs": runs, "mean_batch": round(rows / runs, 3),
            "batch_sizes": sorted(feeds), "seconds": round(elapsed, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", required=True)
    p.add_argument("--mean-batch", type=float, required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--no-arena", action="store_true", help="without onnxruntime's CPU arena, as the gateway runs")
    a = p.parse_args(argv)
    if a.mean_batch < 1:
        raise SystemExit("bench.ceiling: --mean-batch must be >= 1")
    print(json.dumps(measure(a.model_path, a.mean_batch, a.seconds, arena=not a.no_arena)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
