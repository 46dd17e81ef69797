"""Per-model ``input_stats`` in config.yaml: bins, warm-up rows and per-input ranges reach the
input statistics of a served model; unknown inputs fail the load, named (bad values:
tests/config/test_model.py)."""
from __future__ import annotations

import numpy as np
import pytest

from gateway._proto import gateway_pb2 as pb
from gateway.telemetry import freezer


def _features(gw, model="classifier"):
    return {fs.input: fs for fs in gw.server.telemetry.feature_stats() if fs.model == model}


def _send(gw, rows=64, width=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    gw.predict("classifier", {"features": x})


def test_range_gives_uniform_edges_and_bins_count(make_gateway, repo):
    (repo / "classifier" / "config.yaml").write_text(
        "input_stats:\n  bins: 4\n  ranges:\n    features: [-2, 2]\n")
    gw = make_gateway(model_repository=repo)
    _send(gw)
    fs = _features(gw)["features"]
    assert fs.edges.shape == (16, 5)
    np.testing.assert_array_equal(fs.edges[3], [-2, -1, 0, 1, 2])
    assert fs.histogram.shape == (16, 6) and fs.histogram.sum() == 64 * 16


def test_warmup_rows_set_quantile_edges(make_gateway, repo):
    (repo / "classifier" / "config.yaml").write_text("input_stats:\n  bins: 5\n  warmup_rows: 100\n")
    gw = make_gateway(model_repository=repo)
    _send(gw, rows=64)
    assert _features(gw)["features"].edges is None       # 64 < 100 rows: still warming up
    _send(gw, rows=64, seed=1)
    assert freezer.drain()                               # the freezer thread froze them
    fs = _features(gw)["features"]
    assert fs.edges.shape == (16, 6)
    assert fs.histogram.sum() == 128 * 16                # the warm-up rows are binned too


def test_reloaded_binning_restarts_the_statistics(make_gateway, repo):
    gw = make_gateway(model_repository=repo)
    _send(gw)
    assert _features(gw)["features"].histogram.shape == (16, 12)   # default: 10 bins
    (repo / "classifier" / "config.yaml").write_text(
        "input_stats:\n  bins: 3\n  ranges:\n    features: [0, 3]\n")
    gw.reload()
    _send(gw, rows=8)
    fs = _features(gw)["features"]
    np.testing.assert_array_equal(fs.edges[0], [0, 1, 2, 3])
    assert fs.count.tolist() == [8] * 16


@pytest.mark.parametrize("text, expected", [
    ("input_stats:\n  ranges:\n    pixels: [0, 1]\n", "input_stats.ranges names 'pixels'"),
    ("inputs:\n  - name: pixels\n    shape: [-1, 16]\n", "config inputs names 'pixels'"),
])
def test_unknown_input_fails_the_load_naming_it(make_gateway, repo, text, expected):
    (repo / "classifier" / "config.yaml").write_text(text)
    gw = make_gateway(model_repository=repo)
    models = {m.name: m for m in gw.stub.ListModels(pb.ListModelsRequest()).models}
    assert expected in models["classifier"].error and "features" in models["classifier"].error
    assert gw.predict("regressor", {"features": np.ones((1, 8), np.float32)}).outputs
