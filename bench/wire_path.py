"""In-process cost of the gRPC adapter's wire path, against a baseline tree's, in the same run.

    python bench/wire_path.py --baseline-tree DIR [--rows 1] [--rounds 30] [--requests 2000]

Per request, on one thread with no network and no core: parse the request bytes, convert them
to an ``InferRequest``, convert a canned classifier ``InferResponse`` back and serialize it —
what the adapter does around ``DataPlane.infer``. The baseline is ``DIR``'s
``gateway/adapters/grpc_v1/converters.py`` (a checkout of another commit, e.g. a ``git worktree``)
loaded beside this one; a baseline from before the adapter parsed and serialized messages itself
gets the calls grpcio's (de)serializers made instead (``PredictRequest.FromString``,
``SerializeToString``). The arms alternate round by round (AB, BA, ...). Prints one JSON line:
median and minimum µs per request of each, and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import statistics
import time

import numpy as np


def _arm(converters, max_bytes: int, data: bytes, canned):
    from gateway._proto import gateway_pb2 as pb

    parse = getattr(converters, "parse_request", pb.PredictRequest.FromString)
    serialized = getattr(converters, "serialized", None)

    def step() -> bytes:
        converters.to_infer_request(parse(data), t_received_ns=1, deadline_ns=0, max_bytes=max_bytes)
        msg = converters.to_predict_response(canned)
        return serialized(msg, canned.request_id, max_bytes) if serialized else msg.SerializeToString()
    return step


def _baseline(tree: pathlib.Path):
    path = tree / "gateway" / "adapters" / "grpc_v1" / "converters.py"
    # a module of this package, so its relative imports resolve here (the wire and api types)
    spec = importlib.util.spec_from_file_location("gateway.adapters.grpc_v1._baseline_converters", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-tree", type=pathlib.Path, required=True)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--requests", type=int, default=2000, help="per round")
    args = p.parse_args()

    from gateway._proto import gateway_pb2 as pb
    from gateway.adapters.grpc_v1 import converters
    from gateway.api import InferResponse

    max_bytes = 64 << 20
    x = np.random.default_rng(0).standard_normal((args.rows, 16)).astype(np.float32)
    data = pb.PredictRequest(model="classifier", request_id="r", inputs=[pb.Tensor(
        name="features", dtype=pb.DATA_TYPE_FLOAT32, shape=x.shape, data=x.tobytes())]).SerializeToString()
    canned = InferResponse(request_id="r", model="classifier", version="1", served_by="classifier@1",
                           outputs={"probabilities": np.full((args.rows, 3), 1 / 3, np.float32)},
                           confidence=np.full(args.rows, 1 / 3, np.float32),
                           predicted_label=["approve"] * args.rows)
    arms = {"new": _arm(converters, max_bytes, data, canned),
            "base": _arm(_baseline(args.baseline_tree), max_bytes, data, canned)}
    assert arms["new"]() == arms["base"](), "the two arms must answer alike"
    runs: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(args.rounds):
        for name in (("new", "base") if r % 2 == 0 else ("base", "new")):
            step = arms[name]
            t0 = time.perf_counter_ns()
            for _ in range(args.requests):
                step()
            runs[name].append((time.perf_counter_ns() - t0) / args.requests / 1e3)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({"rows": args.rows, "rounds": args.rounds, "requests_per_round": args.requests,
                      "median_us": {k: round(v, 2) for k, v in med.items()},
                      "min_us": {k: round(min(v), 2) for k, v in runs.items()},
                      "ratio_new_over_base": round(med["new"] / med["base"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
