"""Automatic rollback end to end: two versions split 50/50, delayed labels show the candidate
much less accurate; the rollback rule sets its weight to 0, records it in the version history and
raises the ``rollback`` alert, and from then on the baseline answers everything."""
from __future__ import annotations

import time

import numpy as np
import onnx

from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy
from gateway.demo.models import _mlp

LABELS = "labels: [approve, review, decline]\n"


def test_a_less_accurate_candidate_is_rolled_back_and_alerted(make_gateway, repo):
    (repo / "classifier" / "3").mkdir()
    onnx.save(_mlp("classifier", [16, 32, 3], softmax=True, output_name="probabilities", seed=9),
              str(repo / "classifier" / "3" / "model.onnx"))
    (repo / "classifier" / "config.yaml").write_text(
        LABELS + "traffic:\n  weights: {'1': 1, '3': 1}\n"
        "  rollback: {enabled: true, min_labels: 100, min_requests: 100, consecutive: 1}\n")
    gw = make_gateway(model_repository=repo, feedback_store_entries=10_000, rollback_evaluate_every_s=0.2,
                      alerts={"evaluate_every_s": 0.2})
    rng = np.random.default_rng(3)
    labels, served = [], {"1": 0, "3": 0}
    for i in range(500):
        x = rng.standard_normal((1, 16)).astype(np.float32)
        answer = gw.stub.Predict(pb.PredictRequest(model="classifier", request_id=f"q{i}",
                                                   inputs=[from_numpy("features", x)]), timeout=10)
        served[answer.version] += 1
        truth = gw.predict("classifier", {"features": x}, version="1").predicted_label[0]  # version 1 is right
        labels.append(pb.Label(request_id=f"q{i}", class_label=truth))
    assert min(served.values()) > 150
    assert gw.stub.Feedback(pb.FeedbackRequest(labels=labels), timeout=10).accepted == 500

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and gw.server.registry.weights("classifier").get("3") != 0.0:
        time.sleep(0.1)
    assert gw.server.registry.weights("classifier") == {"1": 1.0, "3": 0.0}
    x = np.zeros((1, 16), np.float32)
    assert {gw.predict("classifier", {"features": x}).version for _ in range(30)} == {"1"}
    (event,) = [e for e in gw.stub.ModelHistory(pb.ModelHistoryRequest(model="classifier")).events
                if e.kind == "rolled_back"]
    assert event.version == "3" and event.source == "rollback" and "accuracy" in event.detail
    while time.monotonic() < deadline and not gw.stub.ListAlerts(pb.ListAlertsRequest()).alerts:
        time.sleep(0.1)
    (alert,) = [a for a in gw.stub.ListAlerts(pb.ListAlertsRequest()).alerts if a.rule == "rollback"]
    assert (alert.model, alert.version, alert.severity) == ("classifier", "3", "critical")
