"""The outlier policy end to end: the demo classifier with a reference profile, requests far
from it answered by the fallback chain (``fallback_reason: outlier``) or refused, the others
served by the model."""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from gateway import cli
from gateway._proto import gateway_pb2 as pb

POLICY = """policy:
  outliers: {enabled: true, max_out_of_range: 0, max_robust_z: 8}
"""
CHAIN = """  fallback:
    chain:
      - static: {probabilities: [0.2, 0.3, 0.5]}
"""


def _profile(repo) -> None:
    rng = np.random.default_rng(21)
    np.save(repo / "reference.npy", rng.standard_normal((5000, 16)).astype(np.float32))
    assert cli.main(["profile", "build", "--model", "classifier", "--data", str(repo / "reference.npy"),
                     "--model-repository", str(repo)]) == 0


def _config(repo, extra: str) -> None:
    path = repo / "classifier" / "config.yaml"
    path.write_text(path.read_text() + extra)


def test_outlier_rows_walk_the_fallback_chain_and_the_rest_reach_the_model(make_gateway, repo):
    _profile(repo)
    _config(repo, POLICY + CHAIN)
    gw = make_gateway(model_repository=repo)
    x = np.zeros((1, 16), np.float32)
    ok = gw.predict("classifier", {"features": x})
    assert not ok.degraded and ok.served_by == "classifier@1"
    x[0, 4] = 40.0                                            # far outside the reference's range
    out = gw.predict("classifier", {"features": x})
    assert out.degraded and out.fallback_reason == "outlier" and out.served_by == "static"
    assert out.predicted_label == ["decline"]
    batch = np.zeros((3, 16), np.float32)
    batch[2, 0] = np.nan                                      # NaN counts as out of range
    assert gw.predict("classifier", {"features": batch}).fallback_reason == "outlier"


def test_the_outlier_rate_is_monitored_where_the_policy_is_off(make_gateway, repo):
    _profile(repo)
    gw = make_gateway(model_repository=repo, telemetry={"drift_window_s": 2.0})
    rng = np.random.default_rng(22)
    end = time.monotonic() + 3.5
    while time.monotonic() < end:                             # a quarter of the rows far out
        x = rng.standard_normal((8, 16)).astype(np.float32)
        x[:2, 3] = 60.0
        assert not gw.predict("classifier", {"features": x}).degraded
        time.sleep(0.005)
    d = gw.stub.GetStats(pb.GetStatsRequest(model="classifier"), timeout=10).models[0].drift
    assert d.outlier_scored_rows >= 80 and 0.2 <= d.outlier_rate <= 0.3, d


def test_without_a_chain_an_outlier_is_refused_saying_why(make_gateway, repo):
    _profile(repo)
    _config(repo, POLICY)
    gw = make_gateway(model_repository=repo)
    x = np.zeros((1, 16), np.float32)
    x[0, 7] = -30.0
    with pytest.raises(grpc.RpcError) as info:
        gw.predict("classifier", {"features": x})
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "row 0 of input 'features' is an outlier against the reference: 1 features outside its range" \
        in info.value.details()
    assert gw.predict("classifier", {"features": np.zeros((1, 16), np.float32)}).served_by == "classifier@1"


def test_without_a_profile_the_policy_checks_nothing_and_says_so(make_gateway, repo, caplog):
    _config(repo, POLICY + CHAIN)
    with caplog.at_level("WARNING", logger="gateway.core"):
        gw = make_gateway(model_repository=repo)
    assert "policy.outliers is on but the version has no reference profile" in caplog.text
    x = np.full((1, 16), 40.0, np.float32)
    assert not gw.predict("classifier", {"features": x}).degraded
