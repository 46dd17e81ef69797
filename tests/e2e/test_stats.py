"""Native telemetry seen end to end: every request counted, live figures through GetStats and the CLI."""
from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest

from gateway._proto import gateway_pb2 as pb


def test_stats_count_every_request_and_report_latency(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models)
    rng = np.random.default_rng(0)
    for _ in range(40):
        gw.predict("classifier", {"features": rng.standard_normal((2, 16)).astype(np.float32)})
    for _ in range(5):
        with pytest.raises(grpc.RpcError):
            gw.predict("classifier", {"features": np.zeros((1, 3), np.float32)})
    gw.server.telemetry.flush()
    stats = {(m.model, m.version): m for m in gw.stub.GetStats(pb.GetStatsRequest(window_s=60)).models}
    clf = stats[("classifier", "1")]
    assert clf.requests == 45
    assert clf.latency.count == 45 and 0 < clf.latency.p50_ms <= clf.latency.p99_ms <= clf.latency.max_ms
    assert clf.error_share == pytest.approx(5 / 45)
    assert clf.rows_per_s > 0 and clf.requests_per_s > 0
    assert 0 < clf.mean_confidence <= 1
    assert stats[("regressor", "1")].requests == 0


def test_unknown_model_requests_are_counted_too(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            gw.predict("nope", {"features": np.zeros((1, 16), np.float32)})
    gw.server.telemetry.flush()
    unknown = [m for m in gw.stub.GetStats(pb.GetStatsRequest()).models if m.model == ""]
    assert unknown and unknown[0].requests == 3


def test_stats_cli_prints_each_model(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models)
    for _ in range(10):
        gw.predict("regressor", {"features": np.ones((1, 8), np.float32)})
    gw.server.telemetry.flush()
    out = subprocess.run([sys.executable, "-m", "gateway", "stats", "--address", gw.address],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("regressor@1"))
    assert float(line.split()[1]) > 0  # requests per second
    idle = next(l for l in out.stdout.splitlines() if l.startswith("wide_mlp@1")).split()
    assert idle[3:7] == ["-"] * 4 and "nan" not in out.stdout   # no latency yet: "-"


def test_stats_with_telemetry_disabled_is_a_clear_error(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, telemetry={"enabled": False})
    with pytest.raises(grpc.RpcError) as info:
        gw.stub.GetStats(pb.GetStatsRequest())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_rejected_requests_do_not_count_as_zero_queue_or_compute_time(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models)
    for _ in range(30):  # rejected by validation: never queued, never computed
        with pytest.raises(grpc.RpcError):
            gw.predict("wide_mlp", {"features": np.zeros((1, 3), np.float32)})
    for _ in range(10):
        gw.predict("wide_mlp", {"features": np.ones((1, 256), np.float32)})
    gw.server.telemetry.flush()
    stats = {m.model: m for m in gw.stub.GetStats(pb.GetStatsRequest(window_s=60)).models}["wide_mlp"]
    assert stats.requests == 40 and stats.latency.count == 40
    assert stats.compute.count == 10 and stats.queue.count == 10
    assert stats.compute.p50_ms > 0.1  # a ~1 ms model: not the zeros of the rejected requests
