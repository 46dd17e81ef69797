"""Traffic splits end to end: a model's config weights its versions; requests that name no version
follow the weights (within binomial tolerance), a routing key keeps its version, a named version
bypasses the split, and a config edit moves the traffic without reloading a session."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy

X = np.zeros((1, 16), np.float32)


def _config(repo, traffic: str) -> None:
    (repo / "classifier" / "config.yaml").write_text("labels: [approve, review, decline]\n" + traffic)


def _served(gw, n: int, **fields) -> list[str]:
    req = pb.PredictRequest(model="classifier", inputs=[from_numpy("features", X)], **fields)
    return [gw.stub.Predict(req, timeout=10).version for _ in range(n)]


def test_weights_keys_and_pins_and_a_config_edit_moves_the_traffic(make_gateway, repo, caplog):
    caplog.set_level("INFO", logger="gateway.repository")
    shutil.copytree(repo / "classifier" / "1", repo / "classifier" / "2")
    _config(repo, "traffic:\n  weights: {'1': 0.8, '2': 0.2}\n")
    gw = make_gateway(model_repository=repo)
    n = 400
    got = _served(gw, n)
    share = got.count("2") / n
    assert abs(share - 0.2) <= 5 * math.sqrt(0.2 * 0.8 / n), share           # within 5 sigma of 20 %
    assert set(got) == {"1", "2"}
    for key in ("user-1", "user-2", "user-3", "user-4"):                     # sticky: one version per key
        assert len(set(_served(gw, 15, parameters={"routing_key": key}))) == 1
    assert set(_served(gw, 20, version="2")) == {"2"}                         # pinned: the split is bypassed

    session = gw.server.registry.resolve("classifier", "1").model
    _config(repo, "traffic:\n  weights: {'2': 1}\n")
    gw.reload()
    assert set(_served(gw, 50)) == {"2"}
    assert gw.server.registry.resolve("classifier", "1").model is session    # no session reloaded
    assert any(getattr(r, "event", "") == "traffic.weights" for r in caplog.records)

    _config(repo, "")                                                         # no weights: the latest takes all
    gw.reload()
    assert set(_served(gw, 20)) == {"2"}


@pytest.mark.parametrize("traffic, what", [
    ("traffic:\n  weights: {'1': -1}\n", "must be a finite number >= 0"),
    ("traffic:\n  weights: {'1': 0}\n", "all 0"),
])
def test_unusable_weights_are_refused_and_what_is_loaded_keeps_serving(make_gateway, repo, traffic, what):
    gw = make_gateway(model_repository=repo)
    _config(repo, traffic)
    gw.reload()
    assert set(_served(gw, 5)) == {"1"}
    entry = gw.server.registry.get("classifier")
    assert what in entry.errors["config"]


def test_an_oversized_routing_key_is_refused_naming_it(make_gateway, repo):
    import grpc
    gw = make_gateway(model_repository=repo)
    with pytest.raises(grpc.RpcError) as info:
        _served(gw, 1, parameters={"routing_key": "k" * 5000})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "routing_key" in info.value.details()
