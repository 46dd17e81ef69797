"""Refused requests counted by why, end to end: GetStats ``rejected``, ``gateway stats`` and the
``gateway.rejected`` metric, for classes of bad input (bytes that do not parse, a tensor that
cannot be decoded, a made-up model, the wrong dtype or shape, a policy refusal)."""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from gateway import cli
from gateway._proto import gateway_pb2 as pb
from tests.e2e.test_otel_export import MemoryMetricExporter


def _refused(gw, call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_refused_requests_are_counted_by_model_status_and_reason(monkeypatch, make_gateway, demo_models, capsys):
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    metrics = MemoryMetricExporter()
    gw = make_gateway(model_repository=demo_models, metric_exporter=metrics)
    raw = gw.channel.unary_unary("/gateway.v1.Gateway/Predict")
    x = np.zeros((1, 16), np.float32)
    for _ in range(2):
        assert _refused(gw, lambda: raw(b"\xff\xff\xff", timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    bad_tensor = pb.PredictRequest(model="classifier", inputs=[pb.Tensor(name="features", dtype=pb.DATA_TYPE_FLOAT32,
                                                                          shape=[1, 16], data=b"\0" * 7)])
    assert _refused(gw, lambda: gw.stub.Predict(bad_tensor, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    for i in range(3):   # three made-up names: counted under no model, not three new ones
        assert _refused(gw, lambda: gw.predict(f"nope-{i}", {"features": x})) == grpc.StatusCode.NOT_FOUND
    assert _refused(gw, lambda: gw.predict("classifier", {"features": x.astype(np.float64)})) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert _refused(gw, lambda: gw.predict("classifier", {"features": np.zeros((1, 3), np.float32)})) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert _refused(gw, lambda: gw.predict("classifier", {"features": x}, version="9")) == grpc.StatusCode.NOT_FOUND
    assert not gw.predict("classifier", {"features": x}).degraded                   # the rest keeps working

    got = {(r.model, r.version, r.status, r.reason): r.requests
           for r in gw.stub.GetStats(pb.GetStatsRequest(window_s=60)).rejected}
    assert got == {("", "", "INVALID_ARGUMENT", "malformed"): 2,
                   ("classifier", "", "INVALID_ARGUMENT", "malformed"): 1,
                   ("", "", "NOT_FOUND", "unknown_model"): 3,
                   ("classifier", "", "INVALID_ARGUMENT", "dtype"): 1,
                   ("classifier", "", "INVALID_ARGUMENT", "shape"): 1,
                   ("classifier", "", "NOT_FOUND", "unknown_version"): 1}
    only = gw.stub.GetStats(pb.GetStatsRequest(window_s=60, model="classifier")).rejected
    assert {r.model for r in only} == {"classifier"}

    assert cli.main(["stats", "--address", gw.address]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("# refused since start"))
    assert "(no known model) unknown_model 3" in line and "classifier dtype 1" in line

    def exported():
        m = metrics.metrics("gateway.rejected")
        return {(p.attributes["gateway.model.name"], p.attributes["gateway.reject.reason"],
                 p.attributes["rpc.grpc.status_code"]): p.value for p in m.data.data_points} if m else {}

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(exported()) < len(got):
        time.sleep(0.1)
    assert exported()[("", "unknown_model", grpc.StatusCode.NOT_FOUND.value[0])] == 3
    assert exported()[("classifier", "shape", grpc.StatusCode.INVALID_ARGUMENT.value[0])] == 1


def test_a_request_the_fallback_policy_refuses_is_counted_by_the_policy_s_reason(make_gateway, repo):
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {latency_ms: 300}\n"
        "policy:\n  deadlines: {attempt_timeout_ms: 20}\n")
    gw = make_gateway(model_repository=repo, allow_fault_injection=True)
    x = np.zeros((1, 16), np.float32)
    assert _refused(gw, lambda: gw.predict("classifier", {"features": x})) == grpc.StatusCode.DEADLINE_EXCEEDED
    got = {(r.model, r.status, r.reason): r.requests for r in gw.stub.GetStats(pb.GetStatsRequest(window_s=60)).rejected}
    assert got == {("classifier", "DEADLINE_EXCEEDED", "timeout"): 1}
