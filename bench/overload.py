"""Overload and fault scenarios against a real gateway process on loopback.

    python bench/overload.py [--service-ms 20] [--instances 2] [--overload-s 6] [--faults-s 4]

The model under test is the demo classifier whose every execution takes ``--service-ms`` more
(injected latency, so capacity is set by the model and not by this 2-core machine's gRPC
cost), ``--instances`` executions at a time, no batching: capacity ≈ instances / service time.

1. unloaded: one request at a time → unloaded p99.
2. capacity: closed loop with 2 × instances in flight → requests/s answered in full.
3. overload: open loop at 3 × capacity for ``--overload-s`` s, each request with a
   ``--deadline-ms`` gRPC deadline, against the policy ``admission: {max_in_flight:
   instances + 1, adaptive: on}`` (an accepted request waits behind at most one other, so at most
   one service time and usually less; with 2 x instances the p99 lands at ~2 x by construction).
   Reports accepted p99 / unloaded p99 (target ≤ 2), goodput / capacity (target ≥ 0.9) and late answers (any answer after its deadline; target 0).
4. faults: open loop at half capacity against ``flaky`` (50 % injected errors, breaker,
   fallback to ``small``) for ``--faults-s`` s; then the faults are switched off by editing
   its config.yaml (a policy-only hot reload) and the load goes on. Reports the share answered
   (full or degraded; target 1.0), when the breaker opened and how long after the faults
   stopped the model answered in full again.

The last line on stdout is a one-line JSON summary. Loopback only; bounded duration.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc
from gateway.demo import write_demo_repository
from gateway.client import from_numpy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _repository(root: pathlib.Path, service_ms: float, instances: int, max_in_flight: int) -> pathlib.Path:
    demo = write_demo_repository(root / "demo", ["classifier"])
    models = root / "models"
    base = "labels: [approve, review, decline]\nbatching: {enabled: false}\n"
    configs = {
        "primary": (base + f"instance_count: {instances}\nfaults: {{latency_ms: {service_ms}}}\n"
                    f"policy:\n  admission: {{max_in_flight: {max_in_flight}, adaptive: {{enabled: true, "
                    f"initial_limit: {max_in_flight}, min_limit: {instances}, max_limit: {4 * instances}}}}}\n"),
        "flaky": (base + f"instance_count: {instances}\nfaults: {{latency_ms: {service_ms}, error_rate: 0.5, seed: 1}}\n"
                  "policy:\n  circuit_breaker: {enabled: true, sliding_window_size: 20, minimum_number_of_calls: 10, "
                  "failure_rate_threshold: 50, wait_duration_in_open_state_ms: 1000, "
                  "permitted_number_of_calls_in_half_open_state: 5}\n"
                  f"  admission: {{max_in_flight: {4 * instances}}}\n"
                  "  fallback: {chain: [{model: small}]}\n"),
        "small": base + f"instance_count: {instances}\n",
    }
    for name, config in configs.items():
        (models / name / "1").mkdir(parents=True)
        shutil.copy(demo / "classifier" / "1" / "model.onnx", models / name / "1" / "model.onnx")
        (models / name / "config.yaml").write_text(config)
    return models


def _request(model: str) -> pb.PredictRequest:
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    return pb.PredictRequest(model=model, inputs=[from_numpy("features", x)])


async def _one(stub, request, deadline_s: float, sent: float) -> tuple[float, str, bool, str]:
    """(latency s, status name, degraded, fallback reason)."""
    try:
        r = await stub.Predict(request, timeout=deadline_s)
        return time.perf_counter() - sent, "OK", r.degraded, r.fallback_reason
    except grpc.aio.AioRpcError as exc:
        return time.perf_counter() - sent, exc.code().name, False, ""


async def closed_loop(stub, model: str, concurrency: int, duration_s: float, deadline_s: float):
    request = _request(model)
    results: list[tuple[float, str, bool, str]] = []
    stop = time.perf_counter() + duration_s

    async def worker():
        while time.perf_counter() < stop:
            results.append(await _one(stub, request, deadline_s, time.perf_counter()))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def open_loop(stub, model: str, rate: float, duration_s: float, deadline_s: float, on_tick=None):
    """Send at a fixed rate whatever the answers do; returns (send time, result) for each request."""
    request = _request(model)
    start = time.perf_counter()
    tasks = []
    n = int(rate * duration_s)
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if on_tick is not None:
            on_tick(time.perf_counter() - start)
        tasks.append((at - start, asyncio.ensure_future(_one(stub, request, deadline_s, time.perf_counter()))))
    out = [(t, await task) for t, task in tasks]
    return out, time.perf_counter() - start


class ServerStartError(RuntimeError):
    pass


def _tail(path: pathlib.Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(nothing logged)"
    except OSError as exc:
        return f"(no log: {exc})"


def _p99_ms(latencies: list[float]) -> float:
    return float(np.percentile(np.array(latencies) * 1e3, 99)) if latencies else float("nan")


async def run(args) -> dict:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="overload-"))
    max_in_flight = args.max_in_flight or args.instances + 1
    models = _repository(tmp, args.service_ms, args.instances, max_in_flight)
    port = _free_port()
    env = dict(os.environ, GATEWAY_MODEL_REPOSITORY=str(models), GATEWAY_PORT=str(port),
               GATEWAY_ALLOW_FAULT_INJECTION="true", GATEWAY_RELOAD_INTERVAL_S="0.5",
               GATEWAY_LOG_LEVEL="WARNING", GATEWAY_EXECUTOR_THREADS=str(max(4, 2 * args.instances)))
    server_log = tmp / "gateway.log"  # (WARNING and above: small; shown when the server fails)
    with open(server_log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.GatewayStub(channel)
        for _ in range(300):
            if server.poll() is not None:
                raise ServerStartError(f"the gateway exited with status {server.returncode} at start:\n"
                                       f"{_tail(server_log)}")
            try:
                listed = await stub.ListModels(pb.ListModelsRequest(), timeout=1)
                if sum(m.state == "READY" for m in listed.models) == 3:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise ServerStartError(f"the gateway did not become ready in 30 s; its log:\n{_tail(server_log)}")
        deadline_s = args.deadline_ms / 1e3
        await closed_loop(stub, "primary", 2, 1.0, deadline_s)  # warm-up
        unloaded = await closed_loop(stub, "primary", 1, args.unloaded_s, deadline_s)
        unloaded_p99 = _p99_ms([r[0] for r in unloaded if r[1] == "OK"])
        cap_runs = await closed_loop(stub, "primary", 2 * args.instances, args.capacity_s, deadline_s)
        capacity = sum(r[1] == "OK" and not r[2] for r in cap_runs) / args.capacity_s
        print(f"unloaded p99 {unloaded_p99:.2f} ms; capacity {capacity:.0f} req/s", file=sys.stderr)

        offered = 3 * capacity
        sent, elapsed = await open_loop(stub, "primary", offered, args.overload_s, deadline_s)
        results = [r for _, r in sent]
        accepted = [r[0] for r in results if r[1] == "OK" and not r[2]]
        statuses: dict[str, int] = {}
        for r in results:
            statuses[r[1]] = statuses.get(r[1], 0) + 1
        late = sum(r[0] > deadline_s for r in results)
        overload = {
            "offered_rps": round(offered, 1), "requests": len(results), "statuses": statuses,
            "accepted_p99_ms": round(_p99_ms(accepted), 2),
            "accepted_p99_over_unloaded": round(_p99_ms(accepted) / unloaded_p99, 2),
            "goodput_rps": round(len(accepted) / args.overload_s, 1),
            "goodput_over_capacity": round(len(accepted) / args.overload_s / capacity, 3),
            "late_answers": late, "deadline_ms": args.deadline_ms,
        }
        print(f"overload: {overload}", file=sys.stderr)

        # Faults: 50 % errors on 'flaky' until the config edit turns them off.
        config = models / "flaky" / "config.yaml"
        fault_text = config.read_text()
        edit_at: list[float] = []

        def maybe_edit(t: float) -> None:
            if not edit_at and t >= args.faults_s:
                config.write_text(fault_text.replace("error_rate: 0.5", "error_rate: 0.0"))
                edit_at.append(t)

        rate = capacity / 2
        sent, _ = await open_loop(stub, "flaky", rate, args.faults_s + args.recovery_s, deadline_s, maybe_edit)
        answered = sum(r[1] == "OK" for _, r in sent)
        reasons: dict[str, int] = {}
        for _, r in sent:
            if r[2]:
                reasons[r[3]] = reasons.get(r[3], 0) + 1
        opened = next((t for t, r in sent if r[3] == "circuit_open"), None)
        t_edit = edit_at[0] if edit_at else float("nan")
        # Recovered: from here on every answer is full (not degraded).
        last_degraded = max((t for t, r in sent if r[2] or r[1] != "OK"), default=0.0)
        recovered = last_degraded < sent[-1][0] - 0.5
        faults = {
            "offered_rps": round(rate, 1), "requests": len(sent), "answered_share": round(answered / len(sent), 4),
            "degraded_by_reason": reasons, "breaker_opened_after_s": None if opened is None else round(opened, 2),
            "faults_stopped_at_s": round(t_edit, 2), "recovered": recovered,
            "full_answers_again_after_s": round(last_degraded - t_edit, 2) if recovered else None,
        }
        print(f"faults: {faults}", file=sys.stderr)
        await channel.close()
        return {"scenario": "overload", "service_ms": args.service_ms, "instances": args.instances,
                "max_in_flight": max_in_flight,
                "unloaded_p99_ms": round(unloaded_p99, 2), "capacity_rps": round(capacity, 1),
                "overload": overload, "faults": faults}
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--service-ms", type=float, default=20.0)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--max-in-flight", type=int, default=0,
                   help="primary's admission.max_in_flight (default: instances + 1)")
    p.add_argument("--deadline-ms", type=float, default=250.0)
    p.add_argument("--unloaded-s", type=float, default=3.0)
    p.add_argument("--capacity-s", type=float, default=4.0)
    p.add_argument("--overload-s", type=float, default=6.0)
    p.add_argument("--faults-s", type=float, default=4.0)
    p.add_argument("--recovery-s", type=float, default=5.0)
    args = p.parse_args()
    try:
        summary = asyncio.run(run(args))
    except ServerStartError as exc:  # its own error says why
        print(f"overload: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
