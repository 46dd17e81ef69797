"""Drift end to end: a profile built with ``gateway profile build`` beside the demo classifier,
a real gateway serving it, in-distribution traffic then a half-sigma shift in one of its 16
features: GetStats, ``gateway stats`` and /metrics say which feature moved, and only that one."""
from __future__ import annotations

import time
import urllib.request

import numpy as np

from gateway import cli
from gateway._proto import gateway_pb2 as pb
from tests.conftest import free_port

WINDOW_S = 3.0


def _send(gw, rng, seconds: float, shift: float = 0.0, feature: int = 5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        x = rng.standard_normal((64, 16)).astype(np.float32)
        x[:, feature] += shift
        gw.predict("classifier", {"features": x})


def _drift(gw) -> pb.Drift:
    stats = gw.stub.GetStats(pb.GetStatsRequest(model="classifier"), timeout=10)
    (m,) = stats.models
    assert m.HasField("drift")
    return m.drift


def _wait(gw, rng, pred, shift=0.0, limit_s=30.0) -> pb.Drift:
    end = time.monotonic() + limit_s
    while True:
        _send(gw, rng, 0.5, shift)
        d = _drift(gw)
        if pred(d) or time.monotonic() > end:
            return d


def test_a_half_sigma_shift_in_one_of_16_features_is_named_by_getstats_the_cli_and_metrics(
        make_gateway, repo, capsys):
    rng = np.random.default_rng(11)
    np.save(repo / "reference.npy", rng.standard_normal((20_000, 16)).astype(np.float32))
    assert cli.main(["profile", "build", "--model", "classifier", "--data", str(repo / "reference.npy"),
                     "--model-repository", str(repo)]) == 0
    admin = free_port()
    gw = make_gateway(model_repository=repo, admin_port=admin, telemetry={"drift_window_s": WINDOW_S})

    # in distribution: graded against the given profile, nothing drifts
    d = _wait(gw, rng, lambda d: d.window_rows >= 2000 and d.window_s >= WINDOW_S)
    assert d.reference == "given" and d.reference_rows == 20_000
    assert (d.features_alert, d.features_warn, d.features_ok) == (0, 0, 16), d
    assert d.predicted_class.window_rows > 0 and d.predicted_class.grade == "ok"
    assert d.change_alarms == 0

    # feature 5 moves by half a standard deviation: within one window (plus the monitor's 1 s
    # between gradings) it alerts, alone
    _send(gw, rng, WINDOW_S + 2.0, shift=0.5)
    d = _drift(gw)
    assert d.features[0].input == "features" and d.features[0].feature == 5 and d.features[0].grade == "alert"
    assert d.features[0].psi >= 0.2 and d.features[0].ks >= 0.15     # (binned PSI of 0.5 sd: about 0.24)
    assert d.features_alert == 1 and all(f.grade == "ok" for f in d.features[1:]), d
    # the sequential detector (the profile's moments) saw it too, on that feature only
    assert d.change_alarms >= 1 and {(c.input, c.feature, c.side) for c in d.changes} == {("features", 5, "up")}

    assert cli.main(["stats", "--address", gw.address, "--model", "classifier"]) == 0
    out = capsys.readouterr().out
    assert "drift vs given reference (20000 rows)" in out and "features alert 1" in out
    assert "alert input features[5]: PSI" in out and "newest input features[5] up at row" in out

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    psi5 = [ln for ln in text.splitlines() if ln.startswith("gateway_drift_psi")
            and 'gateway_input_feature="5"' in ln and 'gateway_model_name="classifier"' in ln]
    assert psi5 and float(psi5[0].rsplit(" ", 1)[1]) >= 0.2
    assert 'gateway_drift_features{' in text


def test_without_a_profile_the_reference_is_captured_and_says_so(make_gateway, repo):
    rng = np.random.default_rng(12)
    gw = make_gateway(model_repository=repo, telemetry={"drift_window_s": WINDOW_S})
    gw.predict("classifier", {"features": rng.standard_normal((8, 16)).astype(np.float32)})
    time.sleep(1.5)                                           # the monitor grades once a second
    assert _drift(gw).reference == "capturing"
    d = _wait(gw, rng, lambda d: d.window_s >= WINDOW_S and d.window_rows >= 1000)
    assert d.reference == "captured" and d.reference_rows >= 1024
    assert d.features_alert == 0

    # data quality: a tenth of feature 2's values NaN for a window
    end = time.monotonic() + WINDOW_S + 2.0
    while time.monotonic() < end:
        x = rng.standard_normal((64, 16)).astype(np.float32)
        x[::10, 2] = np.nan
        gw.predict("classifier", {"features": x})
    top = _drift(gw).data_quality
    assert top and top[0].input == "features" and top[0].feature == 2
    assert abs(top[0].nan_rate - 7 / 64) < 0.01 and top[0].inf_rate == 0

    # a regressor's predictions are watched like an input (captured from its first rows)
    end = time.monotonic() + WINDOW_S + 3.0
    while time.monotonic() < end:
        gw.predict("regressor", {"features": rng.standard_normal((64, 8)).astype(np.float32)})
    (m,) = gw.stub.GetStats(pb.GetStatsRequest(model="regressor"), timeout=10).models
    p = m.drift.prediction
    assert m.drift.reference == "captured" and p.input == "output:prediction" and p.window_rows >= 200
    assert p.grade == "ok", p


def test_monitoring_off_for_a_model_observes_nothing_of_it(make_gateway, repo):
    config = repo / "classifier" / "config.yaml"
    config.write_text(config.read_text() + "monitoring:\n  enabled: false\n")
    rng = np.random.default_rng(13)
    gw = make_gateway(model_repository=repo, feedback_store_entries=100, telemetry={"drift_window_s": 1.0})
    mv = gw.server.registry.resolve("classifier")
    assert not mv.monitored and mv.batcher._observer is None      # nothing runs per batch
    for i in range(20):
        reply = gw.predict("classifier", {"features": rng.standard_normal((1, 16)).astype(np.float32)},
                           request_id=f"q{i}")
        assert reply.predicted_label                                 # answers are the same
        gw.predict("regressor", {"features": rng.standard_normal((1, 8)).astype(np.float32)}, request_id=f"r{i}")
    time.sleep(1.5)
    st = gw.server.telemetry.model(mv.telemetry_id)
    assert st.features == {} and st.confidence is None
    stats = {m.model: m for m in gw.stub.GetStats(pb.GetStatsRequest(), timeout=10).models}
    assert not stats["classifier"].HasField("drift") and not stats["classifier"].HasField("quality")
    assert stats["classifier"].requests == 20 and stats["classifier"].latency.count == 20
    assert stats["regressor"].HasField("quality") and stats["regressor"].quality.predictions == 20
