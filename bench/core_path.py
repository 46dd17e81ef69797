"""In-process cost of the core path: µs per request through ``DataPlane.infer``, no gRPC.

    python bench/core_path.py [--requests 20000] [--model classifier] [--telemetry on|off]

Builds the gateway exactly as ``gateway serve`` does (composition root, demo repository,
defaults but batching off) inside this process, then awaits ``infer`` for one batch-1 request
at a time on the event loop (the model runs inline there once timed as fast), so the figure is
the core's own work: routing, validation, policy, batcher, the model run, the classifier head,
telemetry recording. Prints one JSON line: median µs/request over 5 rounds, and per-round figures.

It also runs against the layout before the core was reshaped (``gateway.server.app``), so
``bench/ab_commits.py`` can compare two installs of the package with the same script.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import numpy as np


def _server_and_request():
    try:
        from gateway.api import InferRequest
        from gateway.app import GatewayServer

        def request(x):
            return InferRequest(model="classifier", inputs={"features": x}, t_received_ns=time.monotonic_ns(),
                                request_id="r")
    except ImportError:  # the layout before the core was reshaped
        from gateway.core.types import InferRequest
        from gateway.server.app import GatewayServer

        def request(x):
            return InferRequest(model="classifier", inputs={"features": x}, t_received_ns=time.monotonic_ns(),
                                request_id="r")
    return GatewayServer, request


async def _run(args) -> dict:
    from gateway.config.settings import load_settings

    GatewayServer, request = _server_and_request()
    # Batching off: a lone request would otherwise wait out the queue delay for company.
    settings = load_settings(port=0, admin_port=0, reload_interval_s=0, batching=False,
                             telemetry={"enabled": args.telemetry == "on"})
    server = GatewayServer(settings)
    await server.start()
    try:
        dataplane = server.dataplane
        x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
        x.setflags(write=False)
        for _ in range(2000):  # warm-up: the batcher times the model and moves it inline
            await dataplane.infer(request(x))
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(args.requests):
                await dataplane.infer(request(x))
            rounds.append((time.perf_counter_ns() - t0) / args.requests / 1e3)
    finally:
        await server.stop(0.5)
    return {"us_per_request": round(statistics.median(rounds), 2), "rounds": [round(r, 2) for r in rounds],
            "requests_per_round": args.requests, "telemetry": args.telemetry}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--telemetry", choices=("on", "off"), default="on")
    args = p.parse_args()
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "WARNING")
    print(json.dumps(asyncio.run(_run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
