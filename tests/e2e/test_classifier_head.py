"""The classifier head decides confidence and labels once, whether telemetry runs or not."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy
from tests.conftest import save_model

SCORES = np.array([
    [0.2, 0.7, 0.1],
    [np.nan, 0.5, 0.5],          # a NaN score: confidence NaN, no label
    [0.4, 0.4, 0.2],             # a tie: the first class wins
    [-np.inf, -np.inf, -np.inf],  # nothing: confidence 0, no label
    [np.inf, 1.0, 0.0],
    [0.0, 0.0, 0.0],
], np.float32)


def _passthrough(repo, name: str, config: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["scores"])], "passthrough",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])])
    save_model(repo / name / "1" / "model.onnx", graph)
    (repo / name / "config.yaml").write_text(config)


@pytest.fixture
def passthrough_repo(tmp_path):
    repo = tmp_path / "models"
    _passthrough(repo, "probs", "labels: [a, b, c]\n")
    _passthrough(repo, "logits", "labels: [a, b, c]\nclassifier: {logits: true}\n")
    return repo


def _answers(gw) -> list[bytes]:
    out = []
    for model in ("probs", "logits"):
        for rows in (SCORES, SCORES[1:2], SCORES[3:4]):
            reply = gw.stub.Predict(pb.PredictRequest(model=model, request_id="fixed",
                                                      inputs=[from_numpy("x", rows)]), timeout=10)
            out.append(reply.SerializeToString(deterministic=True))
    return out


def test_responses_are_byte_identical_with_telemetry_on_and_off(make_gateway, passthrough_repo):
    on = make_gateway(model_repository=passthrough_repo)
    off = make_gateway(model_repository=passthrough_repo, telemetry={"enabled": False})
    assert on.server.telemetry is not None and off.server.telemetry is None
    assert _answers(on) == _answers(off)


def test_what_each_kind_of_row_gets(make_gateway, passthrough_repo):
    gw = make_gateway(model_repository=passthrough_repo)
    reply = gw.stub.Predict(pb.PredictRequest(model="probs", inputs=[from_numpy("x", SCORES)]), timeout=10)
    conf = np.array(reply.confidence, np.float32)
    assert list(reply.predicted_label) == ["b", "", "a", "", "a", "a"]
    np.testing.assert_array_equal(conf[[0, 2, 3, 5]], np.float32([0.7, 0.4, 0.0, 0.0]))
    assert np.isnan(conf[1]) and conf[4] == np.inf
    reply = gw.stub.Predict(pb.PredictRequest(model="logits", inputs=[from_numpy("x", SCORES)]), timeout=10)
    conf = np.array(reply.confidence, np.float32)
    assert list(reply.predicted_label) == ["b", "", "a", "", "a", "a"]
    x = SCORES[0].astype(np.float64)
    np.testing.assert_allclose(conf[0], np.exp(x[1]) / np.exp(x).sum(), rtol=1e-6)
    assert np.isnan(conf[1]) and conf[3] == 0.0 and conf[4] == 1.0
    np.testing.assert_allclose(conf[5], 1 / 3, rtol=1e-6)
