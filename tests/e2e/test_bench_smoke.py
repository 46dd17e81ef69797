"""Smoke test of the bench tools: a one-second load against the floor server and the gateway."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import free_port

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow


def _load(address: str, method: str = "predict") -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "load.py"), "--address", address, "--model", "classifier",
         "--concurrency", "4", "--batch-size", "2", "--duration-s", "1", "--warmup-s", "0.2",
         "--method", method, "--quiet"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(summary: dict) -> None:
    assert summary["requests"] > 0
    assert summary["rows"] == 2 * summary["requests"]
    assert summary["errors"] == {}
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_load_against_floor(demo_models):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(BENCH / "floor_server.py"), "--port", str(port),
                             "--model-repository", str(demo_models), "--models", "classifier"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "floor server never became SERVING"
                time.sleep(0.1)
        _check(_load(f"127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("method", ["predict", "stream"])
def test_load_against_gateway(gateway, method):
    _check(_load(gateway.address, method))


def test_load_refuses_remote_address():
    proc = subprocess.run([sys.executable, str(BENCH / "load.py"), "--address", "10.1.2.3:8001",
                           "--duration-s", "1"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "loopback" in proc.stderr


def test_a_bench_whose_server_fails_to_start_shows_the_servers_error():
    """The server's own error, not "did not become ready" (here: a setting it refuses)."""
    proc = subprocess.run([sys.executable, str(BENCH / "overload.py")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GATEWAY_ADMINPORT": "1"})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("overload: the gateway exited with status 2 at start:\n"), proc.stderr
    assert "GATEWAY_ADMINPORT: unknown setting (did you mean GATEWAY_ADMIN_PORT?)" in proc.stderr


def test_the_deadline_flood_bench_reports_both_arms_and_the_default_one_clean():
    proc = subprocess.run([sys.executable, str(BENCH / "deadline_flood.py"), "--calls", "400", "--repeats", "1"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["runs"]) == {"rollout off (gateway default)", "rollout on"}
    (off,) = summary["runs"]["rollout off (gateway default)"]
    assert sum(off["statuses"].values()) == 400 and set(off["statuses"]) <= {"OK", "DEADLINE_EXCEEDED"}, off
    assert off["failed_follow_ups"] == 0


def test_workers_bench_reports_throughput_per_worker_count():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "workers.py"), "--workers", "1,2", "--repeats", "1", "--clients", "2",
         "--concurrency", "2", "--channels", "2", "--duration-s", "1", "--settle-s", "0.3", "--warmup-s", "0.2"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["median_rps"]) == {"1", "2"} and all(v > 0 for v in summary["median_rps"].values())
    assert summary["ratio_to_1"]["1"] == 1.0 and summary["errors"] == {"1": 0, "2": 0}
