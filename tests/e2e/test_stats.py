"""Native telemetry seen end to end: every request counted, live figures through GetStats and the CLI."""
from __future__ import annotations

import math
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from gateway import cli
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


def test_requests_naming_no_loaded_version_are_exported_as_unknown_and_are_no_get_stats_model(make_gateway,
                                                                                             demo_models):
    gw = make_gateway(model_repository=demo_models)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            gw.predict("nope", {"features": np.zeros((1, 16), np.float32)})
    gw.server.telemetry.flush()
    models = [(m.model, m.version) for m in gw.stub.GetStats(pb.GetStatsRequest()).models]
    assert sorted(models) == [("classifier", "1"), ("regressor", "1"), ("wide_mlp", "1")]
    assert 'gateway_requests_total{gateway_model_name="unknown",gateway_model_version="unknown",' \
           'rpc_grpc_status_code="5",gateway_fallback_reason="none"} 3' in gw.server.export.prometheus_text()


def test_percentiles_and_means_cover_the_window_asked_for(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models)
    telemetry = gw.server.telemetry
    for _ in range(4):                                   # earlier: batches of 4 rows
        gw.predict("regressor", {"features": np.ones((4, 8), np.float32)})
    telemetry.flush()
    # The GetStats reader snapshots the cumulative state at most once a second: by the second
    # flush one was taken after the earlier requests were folded, and over a second ago by the end.
    time.sleep(1.1)
    telemetry.flush()
    time.sleep(1.1)
    for _ in range(5):                                   # within the last second: 1 row each
        gw.predict("regressor", {"features": np.ones((1, 8), np.float32)})
    telemetry.flush()

    def regressor(window_s):
        (m,) = gw.stub.GetStats(pb.GetStatsRequest(model="regressor", window_s=window_s)).models
        return m

    recent, everything = regressor(1), regressor(60)
    assert recent.requests == everything.requests == 9   # (the total since start, whatever the window)
    assert (recent.latency.count, recent.queue.count, recent.compute.count) == (5, 5, 5)
    assert recent.mean_batch_size == 1.0
    assert 0 < recent.latency.p50_ms <= recent.latency.p99_ms <= recent.latency.max_ms
    assert (everything.latency.count, everything.compute.count) == (9, 9)
    assert everything.mean_batch_size == pytest.approx((4 * 4 + 5) / 9)
    assert everything.latency.max_ms >= recent.latency.max_ms


def test_a_window_out_of_range_and_an_unknown_model_are_refused(make_gateway, demo_models, capsys):
    gw = make_gateway(model_repository=demo_models)
    for window_s in (-1, 301, math.nan):
        with pytest.raises(grpc.RpcError) as info:
            gw.stub.GetStats(pb.GetStatsRequest(window_s=window_s))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "window_s" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        gw.stub.GetStats(pb.GetStatsRequest(model="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "model 'nope' not found" in info.value.details()
    # the CLI: a flag error before connecting (exit 2), and the server's NOT_FOUND (exit 1)
    for window in ("0", "-5", "301", "soon"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["stats", "--address", gw.address, "--window-s", window])
        assert exited.value.code == 2 and "argument --window-s" in capsys.readouterr().err
    assert cli.main(["stats", "--address", gw.address, "--model", "nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert cli.main(["stats", "--address", gw.address, "--model", "regressor", "--window-s", "0.5"]) == 0
    out = capsys.readouterr().out
    models = [line.split()[0] for line in out.splitlines()[2:] if not line.startswith(" ")]   # (not the
    assert out.startswith("# window 1 s;") and models == ["regressor@1"]            # versions' detail lines)


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
