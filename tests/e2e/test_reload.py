"""Repository changes are picked up without dropping requests; broken models stay contained."""
from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper

from gateway._proto import gateway_pb2 as pb
from tests.conftest import save_model


def _x(width=16):
    return np.ones((1, width), np.float32)


def _traffic(gw, model, stop: threading.Event, results: list, errors: list, x=None):
    while not stop.is_set():
        try:
            results.append(gw.predict(model, {"features": _x() if x is None else x}, timeout=10).served_by)
        except grpc.RpcError as exc:  # any failure here is a dropped request
            errors.append(f"{exc.code().name}: {exc.details()}")


def test_new_version_is_loaded_under_traffic_without_errors(make_gateway, repo):
    gw = make_gateway(model_repository=repo)
    stop, results, errors = threading.Event(), [], []
    workers = [threading.Thread(target=_traffic, args=(gw, "classifier", stop, results, errors)) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.3)
        shutil.copytree(repo / "classifier" / "1", repo / "classifier" / "2")
        gw.reload()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "classifier@2" not in results[-20:]:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert errors == []
    assert "classifier@1" in results and results[-1] == "classifier@2"
    # The old version still answers when pinned.
    assert gw.predict("classifier", {"features": _x()}, version="1").served_by == "classifier@1"


def test_config_change_reloads_the_model_and_keeps_serving(make_gateway, repo):
    gw = make_gateway(model_repository=repo)
    stop, results, errors = threading.Event(), [], []
    worker = threading.Thread(target=_traffic, args=(gw, "classifier", stop, results, errors))
    worker.start()
    try:
        (repo / "classifier" / "config.yaml").write_text("batching:\n  max_batch_size: 8\nlabels: [a, b, c]\n")
        gw.reload()
        time.sleep(0.2)
    finally:
        stop.set()
        worker.join(10)
    assert errors == []
    assert gw.stub.GetModel(pb.GetModelRequest(name="classifier")).max_batch_size == 8
    assert gw.predict("classifier", {"features": _x()}).predicted_label[0] in "abc"


def test_invalid_config_is_rejected_naming_the_key_and_old_config_stays(make_gateway, repo):
    gw = make_gateway(model_repository=repo)
    (repo / "classifier" / "config.yaml").write_text("batching:\n  max_batch_sise: 8\n")
    gw.reload()
    summary = {m.name: m for m in gw.stub.ListModels(pb.ListModelsRequest()).models}["classifier"]
    assert summary.state == "READY"
    assert "batching.max_batch_sise" in summary.error and "unknown key" in summary.error
    assert gw.stub.GetModel(pb.GetModelRequest(name="classifier")).max_batch_size == 64
    assert gw.predict("classifier", {"features": _x()}).served_by == "classifier@1"


def test_broken_model_is_reported_and_does_not_take_others_down(make_gateway, repo):
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    gw = make_gateway(model_repository=repo)
    listed = {m.name: m for m in gw.stub.ListModels(pb.ListModelsRequest()).models}
    assert listed["broken"].state == "UNAVAILABLE" and "model.onnx" in listed["broken"].error
    assert listed["classifier"].state == "READY"
    try:
        gw.predict("broken", {"features": _x()})
        raise AssertionError("expected UNAVAILABLE")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE and "broken" in exc.details()
    assert gw.predict("regressor", {"features": _x(8)}).served_by == "regressor@1"


def test_broken_new_version_keeps_the_old_one_serving(make_gateway, repo):
    gw = make_gateway(model_repository=repo)
    (repo / "classifier" / "2").mkdir()
    (repo / "classifier" / "2" / "model.onnx").write_bytes(b"garbage")
    gw.reload()
    assert gw.predict("classifier", {"features": _x()}).served_by == "classifier@1"
    summary = {m.name: m for m in gw.stub.ListModels(pb.ListModelsRequest()).models}["classifier"]
    assert summary.state == "READY" and "2:" in summary.error


def test_removed_model_is_unloaded(make_gateway, repo):
    gw = make_gateway(model_repository=repo)
    shutil.rmtree(repo / "regressor")
    gw.reload()
    assert "regressor" not in {m.name for m in gw.stub.ListModels(pb.ListModelsRequest()).models}
    try:
        gw.predict("regressor", {"features": _x(8)})
        raise AssertionError("expected NOT_FOUND")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND


def test_polling_picks_up_changes_by_itself(make_gateway, repo):
    gw = make_gateway(model_repository=repo, reload_interval_s=0.2)
    shutil.copytree(repo / "regressor" / "1", repo / "regressor" / "3")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if gw.predict("regressor", {"features": _x(8)}).served_by == "regressor@3":
            break
        time.sleep(0.1)
    assert gw.predict("regressor", {"features": _x(8)}).served_by == "regressor@3"


def test_a_classifier_edit_applies_to_the_loaded_version_and_its_telemetry(make_gateway, tmp_path):
    repo = tmp_path / "models"
    save_model(repo / "scores" / "1" / "model.onnx", helper.make_graph(
        [helper.make_node("Identity", ["features"], ["scores"])], "scores",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])]))
    config = repo / "scores" / "config.yaml"
    config.write_text("labels: [a, b, c]\n")
    gw = make_gateway(model_repository=repo)
    x = np.array([[16.0, 1.0, 2.0]], np.float32)
    assert list(gw.predict("scores", {"features": x}).confidence) == [16.0]   # scores taken as probabilities
    stop, results, errors = threading.Event(), [], []
    worker = threading.Thread(target=_traffic, args=(gw, "scores", stop, results, errors, x))
    worker.start()
    try:
        config.write_text("labels: [a, b, c]\nclassifier: {logits: true}\n")
        gw.reload()
        reply = gw.predict("scores", {"features": x})
    finally:
        stop.set()
        worker.join(10)
    assert errors == [] and results                                            # nothing dropped meanwhile
    softmax = 1 / (1 + np.exp(-15.0) + np.exp(-14.0))
    assert (reply.served_by, list(reply.predicted_label)) == ("scores@1", ["a"])
    assert reply.confidence[0] == np.float32(softmax)
    # the version's confidence statistics observe rows from now on with the softmax too
    telemetry = gw.server.telemetry
    telemetry.flush()
    before = telemetry.confidence_stats()[0]
    for _ in range(3):
        gw.predict("scores", {"features": x})
    telemetry.flush()
    after = telemetry.confidence_stats()[0]
    assert after.rows == before.rows + 3
    assert after.mean_top1 * after.rows - before.mean_top1 * before.rows == pytest.approx(3 * softmax, rel=1e-5)

