"""The default alert rules, with no rules written, driven end to end in a real gateway: inputs
shifted against a profile fire ``drift``, wrong delayed labels ``accuracy_drop``, injected
errors ``error_rate``, injected latency over the version's deadline ``p99_over_deadline``
(the fifth default, ``rollback``, is driven by tests/e2e/test_rollback.py).
Each is listed by ListAlerts and ``gateway alerts`` while it fires, reaches a webhook as a
firing then a resolved event, and resolves once its cause stops. Only the timing is made
small (``alerts.defaults_for_s``, a 2 s window, a 3 s drift window); the rules are the defaults."""
from __future__ import annotations

import shutil
import time

import grpc
import numpy as np
import pytest

from gateway import cli
from gateway._proto import gateway_pb2 as pb
from gateway.config.alerts import DEFAULT_RULES
from tests.e2e.test_alerts import Receiver

FAST = {"evaluate_every_s": 0.1, "window_s": 2, "defaults_for_s": 0.3}
LABELS = ["approve", "review", "decline"]  # the demo classifier's


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _until(pred, action=None, limit_s: float = 40.0):
    """``action()`` (traffic) repeatedly until ``pred()`` is true; its last value."""
    end = time.monotonic() + limit_s
    while True:
        if action is not None:
            action()
        else:
            time.sleep(0.05)
        value = pred()
        if value or time.monotonic() > end:
            return value


def _event(receiver: Receiver, status: str, rule: str) -> dict | None:
    return next((e for e in list(receiver.events) if e["status"] == status and e["rule"] == rule), None)


def _listed(g) -> set[tuple[str, str, str, str]]:
    return {(a.rule, a.model, a.version, a.severity) for a in g.stub.ListAlerts(pb.ListAlertsRequest()).alerts}


def _cli_alerts(g, capsys) -> list[str]:
    assert cli.main(["alerts", "--address", g.address]) == 0
    return capsys.readouterr().out.splitlines()


def _in_force(g) -> list[str]:
    return [r.name for r in g.server.alerts.evaluator.rules]


def test_the_defaults_are_the_only_rules_in_force(make_gateway, demo_models):
    g = make_gateway(model_repository=demo_models, alerts=FAST)
    assert _in_force(g) == [r.name for r in DEFAULT_RULES] == ["drift", "accuracy_drop", "error_rate",
                                                               "p99_over_deadline", "rollback"]
    assert {r.for_s for r in g.server.alerts.evaluator.rules} == {0.3}
    assert g.stub.ListAlerts(pb.ListAlertsRequest()).rules == 5


def test_drift_fires_on_shifted_inputs_and_resolves_once_they_are_back(make_gateway, repo, receiver, capsys):
    rng = np.random.default_rng(21)
    np.save(repo / "reference.npy", rng.standard_normal((20_000, 16)).astype(np.float32))
    assert cli.main(["profile", "build", "--model", "classifier", "--data", str(repo / "reference.npy"),
                     "--model-repository", str(repo)]) == 0
    capsys.readouterr()
    g = make_gateway(model_repository=repo, telemetry={"drift_window_s": 3.0},
                     alerts=FAST | {"webhook_url": receiver.url})

    def send(shift: float):
        def go():
            for _ in range(5):
                x = rng.standard_normal((64, 16)).astype(np.float32)
                x[:, 5] += shift
                g.predict("classifier", {"features": x})
        return go

    # in distribution for more than a drift window: graded, nothing fires
    _until(lambda: False, send(0.0), limit_s=4.5)
    (m,) = g.stub.GetStats(pb.GetStatsRequest(model="classifier"), timeout=10).models
    assert m.drift.reference == "given" and m.drift.features_alert == 0
    assert receiver.events == [] and _listed(g) == set()

    # feature 5 moves by one standard deviation
    fired = _until(lambda: _event(receiver, "firing", "drift"), send(1.0))
    assert fired, receiver.events
    assert (fired["model"], fired["version"], fired["severity"], fired["metric"]) == \
        ("classifier", "1", "warning", "drift_features_alert")
    assert fired["value"] >= 1
    assert ("drift", "classifier", "1", "warning") in _listed(g)
    lines = _cli_alerts(g, capsys)
    assert any(line.startswith("warning  drift  classifier@1  drift_features_alert ") for line in lines), lines

    # back in distribution: once the drift window holds none of the shifted rows, it resolves
    resolved = _until(lambda: _event(receiver, "resolved", "drift"), send(0.0))
    assert resolved, receiver.events
    assert resolved["firing_since_unix_s"] == fired["firing_since_unix_s"]
    assert ("drift", "classifier", "1", "warning") not in _listed(g)
    assert {e["rule"] for e in receiver.events} == {"drift"}  # no other default fired


def test_accuracy_drop_fires_on_wrong_labels_and_resolves_once_they_are_right(make_gateway, demo_models,
                                                                              receiver, capsys):
    g = make_gateway(model_repository=demo_models, feedback_store_entries=10_000, feedback_window=100,
                     alerts=FAST | {"webhook_url": receiver.url})
    rng = np.random.default_rng(22)
    sent = 0

    def answer_and_label(wrong: bool) -> pb.FeedbackResponse:
        """100 rows answered (4 requests of 25 rows), each labelled: its predicted class, or another."""
        nonlocal sent
        labels = []
        for _ in range(4):
            rid = f"q{sent}"
            sent += 1
            reply = g.predict("classifier", {"features": rng.standard_normal((25, 16)).astype(np.float32)},
                              request_id=rid)
            for row, name in enumerate(reply.predicted_label):
                index = (LABELS.index(name) + wrong) % 3
                labels.append(pb.Label(request_id=rid, row=row, class_index=index))
        return g.stub.Feedback(pb.FeedbackRequest(labels=labels), timeout=10)

    # labels flow and match: the first labelled window (100 rows, accuracy 1) is the reference
    assert answer_and_label(wrong=False).accepted == 100
    seen = g.server.alerts.evaluations
    _until(lambda: g.server.alerts.evaluations >= seen + 3)
    assert receiver.events == [] and _listed(g) == set()

    # concept drift, as the labels show it: every prediction wrong
    assert answer_and_label(wrong=True).accepted == 100
    fired = _until(lambda: _event(receiver, "firing", "accuracy_drop"))
    assert fired, receiver.events
    assert (fired["model"], fired["version"], fired["severity"], fired["value"]) == \
        ("classifier", "1", "warning", 1.0)
    assert ("accuracy_drop", "classifier", "1", "warning") in _listed(g)
    lines = _cli_alerts(g, capsys)
    assert any(line.startswith("warning  accuracy_drop  classifier@1  accuracy_drop 1 >= 0.05")
               for line in lines), lines
    (m,) = g.stub.GetStats(pb.GetStatsRequest(model="classifier"), timeout=10).models
    assert m.quality.accuracy == 0.0 and m.quality.window == 100

    # right again: the window of the last 100 joined labels is back to accuracy 1
    assert answer_and_label(wrong=False).accepted == 100
    resolved = _until(lambda: _event(receiver, "resolved", "accuracy_drop"))
    assert resolved, receiver.events
    assert _listed(g) == set()
    assert {e["rule"] for e in receiver.events} == {"accuracy_drop"}


def _rewrite(path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    while path.stat().st_mtime_ns == before:  # coarse clocks: make the change visible to the scanner
        time.sleep(0.01)
        path.write_text(text)


def test_error_rate_and_p99_over_deadline_fire_on_injected_faults_and_resolve(make_gateway, demo_models, tmp_path,
                                                                             receiver, capsys):
    root = tmp_path / "models"
    head = "labels: [approve, review, decline]\nbatching: {enabled: false}\n"
    configs = {"broken": head + "faults: {error_rate: 1.0}\n",
               # the version's deadline is 100 ms (for clients that send none); these clients allow 30 s
               "slow": head + "faults: {latency_ms: 300}\npolicy:\n  deadlines: {default_timeout_ms: 100}\n"}
    for name, config in configs.items():
        (root / name / "1").mkdir(parents=True)
        shutil.copy(demo_models / "classifier" / "1" / "model.onnx", root / name / "1" / "model.onnx")
        (root / name / "config.yaml").write_text(config)
    g = make_gateway(model_repository=root, allow_fault_injection=True, executor_threads=4,
                     alerts=FAST | {"webhook_url": receiver.url})
    x = np.zeros((1, 16), np.float32)

    def traffic():
        for _ in range(3):
            try:
                g.predict("broken", {"features": x})
            except grpc.RpcError as exc:
                assert "injected fault" in exc.details()
        g.predict("slow", {"features": x})

    def both(status: str):
        return lambda: _event(receiver, status, "error_rate") and _event(receiver, status, "p99_over_deadline")

    assert _until(both("firing"), traffic), receiver.events
    errors, late = _event(receiver, "firing", "error_rate"), _event(receiver, "firing", "p99_over_deadline")
    assert (errors["model"], errors["severity"], errors["value"]) == ("broken", "critical", 1.0)
    assert (late["model"], late["severity"]) == ("slow", "warning") and late["value"] > 2  # ~300 ms / 100 ms
    assert {("error_rate", "broken", "1", "critical"),
            ("p99_over_deadline", "slow", "1", "warning")} <= _listed(g)
    lines = _cli_alerts(g, capsys)
    assert lines[1].startswith("critical error_rate  broken@1  error_share 1 > 0.05"), lines  # the most severe first
    assert any(line.startswith("warning  p99_over_deadline  slow@1  p99_over_deadline ")
               for line in lines), lines

    # the faults stop (hot reload): the window fills with good answers and both resolve
    for name in configs:
        _rewrite(root / name / "config.yaml", head)
    g.reload()

    def healthy():
        g.predict("broken", {"features": x})
        g.predict("slow", {"features": x})
        time.sleep(0.05)

    assert _until(both("resolved"), healthy), receiver.events
    assert _listed(g) == set()
    assert _cli_alerts(g, capsys)[0].startswith("# 0 firing")
