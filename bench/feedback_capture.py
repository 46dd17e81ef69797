"""Cost of keeping answers for delayed labels: µs per ``DataPlane.infer`` with and without the capture.

    python bench/feedback_capture.py [--requests 20000] [--model classifier|regressor] [--rows 1]

As bench/core_path.py: the gateway built as ``gateway serve`` builds it (demo repository,
batching off, telemetry on), one request of ``--rows`` rows (default 1; each row kept up to
``feedback_max_rows``) at a time awaited on the event loop, each with
a fresh request id (as a client sending labels would give); ``feedback_store_entries`` 0 (off)
against 100000. Prints one JSON line: median µs/request over 5 rounds for each, their
difference (within the noise of a shared machine), and the observer's own cost timed alone
(``PredictionCapture.on_answer`` on a real answer, each call a new id, median of 5 rounds).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import statistics
import time

import numpy as np


async def _measure(entries: int, model: str, requests: int, rows: int) -> tuple[float, float]:
    from gateway.api import InferRequest
    from gateway.app import GatewayServer
    from gateway.config.settings import load_settings

    settings = load_settings(port=0, admin_port=0, reload_interval_s=0, batching=False,
                             feedback_store_entries=entries)
    server = GatewayServer(settings)
    await server.start()
    try:
        dataplane = server.dataplane
        width = 16 if model == "classifier" else 8
        x = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)
        x.setflags(write=False)
        it = (f"{i:032x}" for i in itertools.count())
        for _ in range(2000):
            await dataplane.infer(InferRequest(model=model, inputs={"features": x}, request_id=next(it),
                                               t_received_ns=time.monotonic_ns()))
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(requests):
                await dataplane.infer(InferRequest(model=model, inputs={"features": x}, request_id=next(it),
                                                   t_received_ns=time.monotonic_ns()))
            rounds.append((time.perf_counter() - t0) / requests * 1e6)
        if not entries:
            return statistics.median(rounds), 0.0
        from gateway.api import Status
        from gateway.core.context import NO_ATTEMPT
        from gateway.monitoring.capture import PredictionCapture
        from gateway.monitoring.labels import PredictionStore

        answer = await dataplane.infer(InferRequest(model=model, inputs={"features": x}, request_id="probe"))
        capture = PredictionCapture(PredictionStore(entries, 3600.0), server.registry)
        alone = []
        for _ in range(5):
            responses = [dataclasses.replace(answer, request_id=next(it)) for _ in range(requests)]
            request = InferRequest(model=model, inputs={"features": x})
            t0 = time.perf_counter()
            for r in responses:
                capture.on_answer(request, NO_ATTEMPT, Status.OK, r, 0, 0)
            alone.append((time.perf_counter() - t0) / requests * 1e6)
        return statistics.median(rounds), statistics.median(alone)
    finally:
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--model", default="classifier", choices=["classifier", "regressor"])
    parser.add_argument("--rows", type=int, default=1)
    args = parser.parse_args()
    off, _ = asyncio.run(_measure(0, args.model, args.requests, args.rows))
    on, alone = asyncio.run(_measure(100_000, args.model, args.requests, args.rows))
    print(json.dumps({"model": args.model, "rows": args.rows, "us_per_request_off": round(off, 2), "us_per_request_on": round(on, 2),
                      "difference_us": round(on - off, 2), "observer_alone_us": round(alone, 2)}))


if __name__ == "__main__":
    main()
