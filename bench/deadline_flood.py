"""Deadline floods against `gateway serve`: how calls with millisecond deadlines end, with gRPC
core's ``optimization_04`` rollout off (the gateway's default, gateway/_grpc_core.py) and on
(``GRPC_EXPERIMENTS=optimization_04``, what grpcio 1.82.1-1.85.3 do by default).

    python bench/deadline_flood.py [--calls 5000] [--in-flight 200] [--deadline-ms 0.5,5] [--repeats 6]

Each repeat floods one server with ``--calls`` ``Predict`` calls to the classifier, ``--in-flight``
at a time over one channel, deadlines drawn uniformly from ``--deadline-ms``, then makes 20 valid
calls (10 s deadline) on the same channel. Both servers run from the start; the one not measured
is frozen (SIGSTOP), and the arms alternate A B / B A. Every call must end OK or DEADLINE_EXCEEDED,
and every follow-up OK. The client is this process (grpc.aio); its own core settings are grpc's
defaults (the rollout only matters on the server side). Progress on stderr; the last stdout line is
a JSON summary: per arm and repeat the final statuses, calls CANCELLED before their deadline, and
failed follow-ups, plus medians.
"""
from __future__ import annotations

import grpc  # noqa: I001  (first: this client keeps grpc's default core settings)

import argparse
import asyncio
import collections
import json
import pathlib
import random
import statistics
import sys
import tempfile
import time

import numpy as np

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from run_serving import Server, ServerStartError  # noqa: E402

from gateway._proto import gateway_pb2 as pb  # noqa: E402
from gateway._proto import gateway_pb2_grpc as pb_grpc  # noqa: E402

ARMS = {"rollout off (gateway default)": {}, "rollout on": {"GRPC_EXPERIMENTS": "optimization_04"}}
FOLLOW_UPS = 20


def log(msg: str) -> None:
    print(f"[deadline_flood {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _request() -> pb.PredictRequest:
    x = np.random.default_rng(0).random((1, 16), dtype=np.float32)
    return pb.PredictRequest(model="classifier", inputs=[pb.Tensor(
        name="features", dtype=pb.DATA_TYPE_FLOAT32, shape=list(x.shape), data=x.tobytes())])


async def flood(address: str, calls: int, in_flight: int, deadline_ms: tuple[float, float], seed: int) -> dict:
    rng = random.Random(seed)
    timeouts_s = [rng.uniform(*deadline_ms) / 1e3 for _ in range(calls)]
    codes: collections.Counter = collections.Counter()
    cancelled_early = 0
    request = _request()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        await stub.Predict(request, timeout=10)
        gate = asyncio.Semaphore(in_flight)

        async def one(timeout_s: float) -> None:
            nonlocal cancelled_early
            async with gate:
                began = time.monotonic()
                try:
                    await stub.Predict(request, timeout=timeout_s)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    if exc.code() == grpc.StatusCode.CANCELLED and time.monotonic() - began < timeout_s:
                        cancelled_early += 1

        began = time.monotonic()
        await asyncio.gather(*(one(t) for t in timeouts_s))
        flood_s = time.monotonic() - began
        failed_follow_ups = 0
        for _ in range(FOLLOW_UPS):
            try:
                await stub.Predict(request, timeout=10)
            except grpc.aio.AioRpcError:
                failed_follow_ups += 1
    return {"statuses": dict(codes), "cancelled_before_deadline": cancelled_early,
            "failed_follow_ups": failed_follow_ups, "flood_s": round(flood_s, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--deadline-ms", default="0.5,5", help="low,high (uniform)")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args(argv)
    low, high = (float(v) for v in args.deadline_ms.split(","))
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="deadline_flood-"))
    servers = {}
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    try:
        for n, (arm, env) in enumerate(ARMS.items()):
            server = Server(f"arm{n}", [sys.executable, "-m", "gateway", "serve", "--port", "{port}",
                                        "--admin-port", "0"],
                            {"GATEWAY_RELOAD_INTERVAL_S": "0", **env}, logdir)
            server.start()
            server.wait_serving()
            server.pause()
            servers[arm] = server
        order = list(ARMS)
        for repeat in range(args.repeats):
            for arm in (order if repeat % 2 == 0 else order[::-1]):
                server = servers[arm]
                server.resume()
                server.wait_serving()
                result = asyncio.run(flood(server.address, args.calls, args.in_flight, (low, high), repeat))
                server.pause()
                runs[arm].append(result)
                log(f"{arm}: {result}")
    except ServerStartError as exc:
        log(f"a server failed to start: {exc}")
        return 1
    finally:
        for server in servers.values():
            server.stop()
    summary = {"date": time.strftime("%Y-%m-%d"), "grpcio": grpc.__version__, "calls": args.calls,
               "in_flight": args.in_flight, "deadline_ms": [low, high], "repeats": args.repeats,
               "server_logs": str(logdir), "runs": runs, "medians": {
                   arm: {"CANCELLED": statistics.median(r["statuses"].get("CANCELLED", 0) for r in rs),
                         "cancelled_before_deadline": statistics.median(r["cancelled_before_deadline"] for r in rs),
                         "failed_follow_ups": statistics.median(r["failed_follow_ups"] for r in rs),
                         "runs_with_any_CANCELLED": sum(1 for r in rs if r["statuses"].get("CANCELLED"))}
                   for arm, rs in runs.items()}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
