"""Closed-loop load generator for ``gateway.v1.Gateway`` (the gateway or ``bench/floor_server.py``).

    python bench/load.py --address 127.0.0.1:8001 --model classifier --concurrency 16 \
        --batch-size 1 --duration-s 10 --warmup-s 2 --method predict

One process, one asyncio loop, ``grpc.aio``. ``--concurrency N`` workers each keep exactly one
request outstanding (closed loop: a worker sends its next request as soon as the previous answer
arrives), so N is the number of requests in flight.

``--method predict``: every worker calls the unary ``Predict``.
``--method stream``: every worker opens its own bidirectional ``PredictStream`` and keeps one
request outstanding on it (write, read the answer, write again). N streams x 1 outstanding, rather
than 1 stream x N outstanding, so both methods put the same N requests in flight through the same
number of client coroutines and the difference measured is the per-message cost of the RPC kind.

The input is random float32 rows shaped from ``GetModel`` (``--batch-size`` rows per request; the
same request message is re-sent, so the client spends no time building messages). A per-second
line (req/s, rows/s, p50/p90/p99/max latency over that second) goes to stderr while it runs
(``--quiet`` silences it); the last line on stdout is a one-line JSON summary over the measured
window (after ``--warmup-s``): requests, rows, errors by status, rps, rows_per_s, p50/p90/p99/max
ms, duration. Bounded by ``--duration-s`` and ``--max-requests``; loopback addresses only.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time

import grpc
import numpy as np

from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc
from gateway.adapters.grpc_v1.dtypes import WIRE_TO_NUMPY
from gateway.client import from_numpy

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _check_loopback(address: str) -> None:
    if address.startswith("unix:"):
        return
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise SystemExit(f"load.py: {address!r} is not a loopback address; this tool only loads local servers")


def percentiles_ms(lat_ns: list[int] | np.ndarray) -> dict[str, float]:
    if len(lat_ns) == 0:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    a = np.asarray(lat_ns, dtype=np.int64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50_ms": round(p50 / 1e6, 3), "p90_ms": round(p90 / 1e6, 3), "p99_ms": round(p99 / 1e6, 3),
            "max_ms": round(int(a.max()) / 1e6, 3)}


class Recorder:
    """Latencies of requests that completed inside the measured window, plus a per-second view."""

    def __init__(self, measure_from_ns: int, measure_until_ns: int, rows_per_request: int):
        self.start_ns = measure_from_ns
        self.end_ns = measure_until_ns
        self.rows_per_request = rows_per_request
        self.latencies: list[int] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.window: list[int] = []  # the current second, warm-up included
        self.window_errors = 0
        self.total = 0  # every completion, warm-up included (for --max-requests)

    def ok(self, t0: int, t1: int) -> None:
        lat = t1 - t0
        self.window.append(lat)
        self.total += 1
        if self.start_ns <= t1 <= self.end_ns:
            self.latencies.append(lat)

    def error(self, status: str, t1: int) -> None:
        self.window_errors += 1
        self.total += 1
        if self.start_ns <= t1 <= self.end_ns:
            self.errors[status] += 1


async def _predict_worker(stub, request, rec: Recorder, stop: asyncio.Event, timeout_s: float) -> None:
    clock = time.perf_counter_ns
    while not stop.is_set():
        t0 = clock()
        try:
            await stub.Predict(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            rec.error(exc.code().name, clock())
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                await asyncio.sleep(0.05)  # don't spin on a dead server
            continue
        rec.ok(t0, clock())


async def _stream_worker(stub, request, rec: Recorder, stop: asyncio.Event, timeout_s: float) -> None:
    clock = time.perf_counter_ns
    while not stop.is_set():
        call = stub.PredictStream()
        try:
            while not stop.is_set():
                t0 = clock()
                await call.write(request)
                answer = await asyncio.wait_for(call.read(), timeout_s)
                t1 = clock()
                if answer is grpc.aio.EOF:
                    rec.error("STREAM_CLOSED", t1)
                    break
                if answer.HasField("error"):
                    try:
                        name = grpc.StatusCode(_code_tuple(answer.error.code)).name
                    except ValueError:
                        name = f"CODE_{answer.error.code}"
                    rec.error(name, t1)
                elif answer.request_id != request.request_id:
                    rec.error("WRONG_REQUEST_ID", t1)
                else:
                    rec.ok(t0, t1)
        except grpc.aio.AioRpcError as exc:
            rec.error(exc.code().name, clock())
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                await asyncio.sleep(0.05)
        except asyncio.TimeoutError:
            rec.error("DEADLINE_EXCEEDED", clock())
            call.cancel()
            continue
        # Stopping: half-close and let the server end the stream (nothing is outstanding).
        try:
            await asyncio.wait_for(_close_stream(call), 2.0)
        except Exception:  # noqa: BLE001 - already failed or closed: nothing left to do
            pass
        finally:
            call.cancel()


async def _close_stream(call) -> None:
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:
        pass


def _code_tuple(code: int):
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.value
    raise ValueError(code)


async def _reporter(rec: Recorder, stop: asyncio.Event, t_start_ns: int, quiet: bool) -> None:
    last = time.perf_counter_ns()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        now = time.perf_counter_ns()
        window, rec.window = rec.window, []
        errors, rec.window_errors = rec.window_errors, 0
        if quiet:
            last = now
            continue
        dt = (now - last) / 1e9
        last = now
        p = percentiles_ms(window)
        phase = "warmup" if now < rec.start_ns else "measure"
        print(f"[{(now - t_start_ns) / 1e9:6.1f}s {phase:>7}] {len(window) / dt:9.1f} req/s "
              f"{len(window) * rec.rows_per_request / dt:10.1f} rows/s  p50 {p['p50_ms']:.3f}  "
              f"p90 {p['p90_ms']:.3f}  p99 {p['p99_ms']:.3f}  max {p['max_ms']:.3f} ms  errors {errors}",
              file=sys.stderr, flush=True)


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a local process, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _cpu_at(pid: int, at_ns: int) -> float:
    await asyncio.sleep(max(0.0, (at_ns - time.perf_counter_ns()) / 1e9))
    return server_cpu_s(pid)


async def run(args: argparse.Namespace) -> dict:
    _check_loopback(args.address)
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    # Separate channels get separate TCP connections; by default all workers share one.
    channels = [grpc.aio.insecure_channel(args.address, options=options + [("grpc.channel_id", i)])
                for i in range(max(1, args.channels))]
    try:
        stubs = [pb_grpc.GatewayStub(ch) for ch in channels]
        meta = await stubs[0].GetModel(pb.GetModelRequest(name=args.model), timeout=10)
        rng = np.random.default_rng(args.seed)
        tensors = []
        for spec in meta.inputs:
            dtype = WIRE_TO_NUMPY[spec.dtype]
            shape = [args.batch_size] + [1 if d < 0 else int(d) for d in list(spec.shape)[1:]]
            tensors.append(from_numpy(spec.name, rng.standard_normal(shape).astype(dtype)))
        requests = [pb.PredictRequest(model=args.model, inputs=tensors, request_id=f"w{i}")
                    for i in range(args.concurrency)]

        t_start = time.perf_counter_ns()
        measure_from = t_start + int(args.warmup_s * 1e9)
        measure_until = measure_from + int(args.duration_s * 1e9)
        rec = Recorder(measure_from, measure_until, args.batch_size)
        stop = asyncio.Event()
        worker = _predict_worker if args.method == "predict" else _stream_worker
        tasks = [asyncio.create_task(worker(stubs[i % len(stubs)], requests[i], rec, stop, args.timeout_s))
                 for i in range(args.concurrency)]
        reporter = asyncio.create_task(_reporter(rec, stop, t_start, args.quiet))
        cpu_start = asyncio.create_task(_cpu_at(args.server_pid, measure_from)) if args.server_pid else None

        deadline = measure_until / 1e9
        while time.perf_counter_ns() / 1e9 < deadline:
            if args.max_requests and rec.total >= args.max_requests:
                break
            if all(t.done() for t in tasks):
                break
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.perf_counter_ns() / 1e9)))
        measured_until = min(time.perf_counter_ns(), measure_until)
        rec.end_ns = measured_until  # completions after this instant are not counted
        cpu_s = None
        if cpu_start is not None and cpu_start.done():
            cpu_s = server_cpu_s(args.server_pid) - cpu_start.result()
        elif cpu_start is not None:
            cpu_start.cancel()
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=max(2.0, args.timeout_s))
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await reporter
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                rec.errors[f"CLIENT_{type(t.exception()).__name__}"] += 1
    finally:
        for ch in channels:
            await ch.close()

    duration = max(1e-9, (measured_until - measure_from) / 1e9)
    n = len(rec.latencies)
    summary = {
        "address": args.address, "model": args.model, "method": args.method,
        "concurrency": args.concurrency, "batch_size": args.batch_size,
        "requests": n, "rows": n * args.batch_size,
        "errors": dict(rec.errors), "error_count": sum(rec.errors.values()),
        "rps": round(n / duration, 1), "rows_per_s": round(n * args.batch_size / duration, 1),
        **percentiles_ms(rec.latencies), "duration_s": round(duration, 3),
    }
    if cpu_s is not None and n:
        # Less sensitive to a noisy machine than throughput: what each request cost the server.
        summary["server_cpu_s"] = round(cpu_s, 3)
        summary["server_cpu_us_per_request"] = round(cpu_s / n * 1e6, 1)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1:8001")
    p.add_argument("--model", default="classifier")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (workers)")
    p.add_argument("--batch-size", type=int, default=1, help="rows per request")
    p.add_argument("--duration-s", type=float, default=10.0, help="measured window, after warm-up")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--method", choices=("predict", "stream"), default="predict")
    p.add_argument("--channels", type=int, default=1, help="gRPC channels (TCP connections) shared by the workers")
    p.add_argument("--max-requests", type=int, default=10_000_000,
                   help="stop early after this many completions (warm-up included)")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-request deadline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-second lines on stderr")
    p.add_argument("--server-pid", type=int, default=0,
                   help="local server process: also report its CPU time per request over the measured window")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1 or args.batch_size < 1 or args.duration_s <= 0 or args.warmup_s < 0:
        raise SystemExit("load.py: concurrency and batch size must be >= 1, duration > 0, warm-up >= 0")
    args.duration_s = min(args.duration_s, 3600.0)
    summary = asyncio.run(run(args))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
