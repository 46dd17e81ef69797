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


# --- python -m bench --------------------------------------------------------------------------------

def _bench(*argv: str, timeout_s: float = 180, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench", *argv, "--quiet"], capture_output=True, text=True,
                          timeout=timeout_s, cwd=BENCH.parent, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _plots_expected() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _check_point(p: dict) -> None:
    assert p["rps"] > 0, p
    assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"] <= p["p999_ms"] <= p["max_ms"], p
    assert p["error_share"] == 0 and p["degraded_share"] == 0, p


def test_bench_sweep_closed_loop_over_the_four_rpcs(gateway, tmp_path):
    summary = _bench("sweep", "--address", gateway.address, "--model", "classifier", "--concurrency", "2,4",
                     "--methods", "predict,stream,infer,stream_infer", "--duration-s", "1", "--warmup-s", "0.2",
                     "--processes", "2", "--out", str(tmp_path))
    by_method: dict[str, list[dict]] = {}
    for p in summary["points"]:
        by_method.setdefault(p["method"], []).append(p)
    for method in ("predict", "stream"):
        assert [p["concurrency"] for p in by_method[method]] == [2, 4]
        for p in by_method[method]:
            _check_point(p)
    for method in ("infer", "stream_infer"):
        # The gateway answers the Open Inference Protocol or the point says it doesn't: no figure either way.
        for p in by_method[method]:
            if "skipped" in p:
                assert p["skipped"] == "server has no inference.GRPCInferenceService"
            else:
                _check_point(p)
    results = json.loads((tmp_path / "results.json").read_text())
    measured = [r for r in results if "requests" in r]
    assert all(sum(s["ok"] for s in r["series"]) >= r["requests"] for r in measured)
    if _plots_expected():
        assert (tmp_path / "throughput_latency.png").stat().st_size > 0
        assert (tmp_path / "latency_cdf.png").stat().st_size > 0


def test_bench_rate_sends_on_schedule_whatever_the_answers(gateway, tmp_path):
    summary = _bench("rate", "--address", gateway.address, "--model", "classifier", "--rate", "200",
                     "--arrival", "constant", "--duration-s", "1", "--warmup-s", "0.2", "--processes", "2",
                     "--method", "stream", "--out", str(tmp_path))
    _check_point(summary)
    # two processes at 100/s each: at most 101 sends each fall inside the one-second window
    assert 0 < summary["requests"] <= 202
    assert summary["mode"] == "open" and summary["arrival"] == "constant"


def test_bench_fault_scenario_reports_degraded_answers_from_the_fallback(tmp_path):
    summary = _bench("scenario", "faults", "--duration-s", "1.5", "--warmup-s", "0.3", "--concurrency", "4",
                     "--repository", str(tmp_path / "repo"), "--out", str(tmp_path / "out"))
    assert summary["model"] == "mlp_faults" and summary["requests"] > 0
    assert summary["error_count"] == 0  # the static fallback answers every failed execution
    assert 0 < summary["degraded_share"] < 0.5, summary
    assert summary["server_cpu_us_per_request"] > 0
    if _plots_expected():
        assert (tmp_path / "out" / "time_series.png").stat().st_size > 0


def test_bench_compare_alternates_arms_and_skips_a_missing_peer_saying_why(tmp_path):
    summary = _bench("compare", "--pairs", "floor,mlserver,telemetry,ceiling", "--concurrency", "2",
                     "--repeats", "2", "--duration-s", "0.6", "--warmup-s", "0.2", "--processes", "1",
                     "--repository", str(tmp_path / "repo"), "--out", str(tmp_path / "out"),
                     env={"BENCH_MLSERVER_PYTHON": str(tmp_path / "no-such-python")}, timeout_s=280)
    assert "no interpreter at" in summary["mlserver"]["skipped"]
    ratios = summary["peers"]["2"]["ratios"]
    # the gateway's arm is ModelInfer when it serves the Open Inference Protocol (then Predict is an arm too)
    gateway_arm = "gateway-infer" if summary["gateway_oip"] == "served" else "gateway-predict"
    expected = {f"{gateway_arm} / floor"} | ({"gateway-infer / gateway-predict"} if gateway_arm == "gateway-infer" else set())
    assert set(ratios) == expected
    for r in ratios.values():
        assert r["rps"] > 0 and r["server_cpu_per_request"] > 0
    assert summary["telemetry"]["2"]["ratios"]["telemetry_on / telemetry_off"]["rps"] > 0
    assert summary["ceiling"]["ratio"] > 0
    full = json.loads((tmp_path / "out" / "results.json").read_text())
    floor_runs = full["pairs"]["peers"]["by_concurrency"]["2"]["medians"]["floor"]["runs_rps"]
    assert len(floor_runs) == 2
    assert len(full["pairs"]["ceiling"]["runs"]) == 2 and full["pairs"]["ceiling"]["runs"][0]["mean_batch_formed"] >= 1


def test_bench_refuses_a_non_loopback_address():
    proc = subprocess.run([sys.executable, "-m", "bench", "sweep", "--address", "10.1.2.3:8001", "--duration-s", "1"],
                          capture_output=True, text=True, timeout=60, cwd=BENCH.parent)
    assert proc.returncode != 0 and "not a loopback address" in proc.stderr


def test_workers_bench_reports_throughput_per_worker_count():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "workers.py"), "--workers", "1,2", "--repeats", "1", "--clients", "2",
         "--concurrency", "2", "--channels", "2", "--duration-s", "1", "--settle-s", "0.3", "--warmup-s", "0.2"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["median_rps"]) == {"1", "2"} and all(v > 0 for v in summary["median_rps"].values())
    assert summary["ratio_to_1"]["1"] == 1.0 and summary["errors"] == {"1": 0, "2": 0}
