"""Capture and replay end to end: a gateway captures its answered requests (inputs kept for the
classifier, labels following); ``gateway replay`` re-sends them to a gateway and finds the same
answers from the same version, and reports the differences when another version answers."""
from __future__ import annotations

import json
import time

import numpy as np
import onnx

from gateway import cli
from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy
from gateway.demo.models import _mlp


def test_a_capture_replays_to_the_same_answers_and_a_changed_version_is_reported(make_gateway, repo, tmp_path,
                                                                                  capsys):
    (repo / "classifier" / "2").mkdir()
    onnx.save(_mlp("classifier", [16, 32, 3], softmax=True, output_name="probabilities", seed=9),
              str(repo / "classifier" / "2" / "model.onnx"))
    captured = tmp_path / "capture"
    gw = make_gateway(model_repository=repo, feedback_store_entries=1000,
                      capture={"enabled": True, "directory": str(captured), "sample_ratio": 1.0,
                               "inputs": {"classifier": {"features": "keep"}}})
    rng = np.random.default_rng(5)
    for i in range(30):
        gw.stub.Predict(pb.PredictRequest(model="classifier", version="1", request_id=f"c{i}", inputs=[
            from_numpy("features", rng.standard_normal((2, 16)).astype(np.float32))]), timeout=10)
    gw.predict("regressor", {"features": np.zeros((1, 8), np.float32)})      # inputs not kept: not replayable
    gw.stub.Feedback(pb.FeedbackRequest(labels=[pb.Label(request_id="c0", class_label="approve")]), timeout=10)
    gw.close()                                                                # writes what is queued
    lines = [json.loads(line) for f in sorted(captured.glob("capture-*.jsonl")) for line in f.read_text().splitlines()]
    assert sum(r["kind"] == "request" for r in lines) == 31 and lines[-1]["kind"] == "label"

    target = make_gateway(model_repository=repo)
    assert cli.main(["replay", str(captured), "--address", target.address]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["replayed"], summary["same"], summary["differ"]) == (30, 30, 0)
    assert summary["skipped"] == {"inputs not captured (capture.inputs: drop)": 1}

    assert cli.main(["replay", str(captured), "--address", target.address, "--version", "2"]) == 1
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["replayed"] == 30 and summary["differ"] == 30
    assert "differs: c0 (captured from version 1, replayed by classifier@2)" in out
    assert cli.main(["replay", str(captured), "--address", target.address, "--version", "2",
                     "--atol", "10"]) == 0                                     # within a (huge) tolerance


def test_a_capture_that_cannot_write_leaves_serving_alone(make_gateway, repo, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the capture directory should be")
    gw = make_gateway(model_repository=repo, capture={"enabled": True, "directory": str(blocker / "sub"),
                                                       "sample_ratio": 1.0})
    for _ in range(5):
        assert not gw.predict("classifier", {"features": np.zeros((1, 16), np.float32)}).degraded
    assert gw.server.capture.stopped
