"""Alerts end to end: a real gateway, a real webhook receiver on loopback (``http.server``),
errors that fire a rule and stop so that it resolves; a dead webhook (nothing listening, or a
listener that never answers) slows nothing and holds no more than its bounded queue."""
from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from gateway._proto import gateway_pb2 as pb
from tests.conftest import free_port, matmul_graph, save_model


class Receiver:
    """An HTTP server on 127.0.0.1 (ephemeral port) that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        received = self.events

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook receiver", daemon=True)
        self.thread.start()

    def wait_for(self, status: str, timeout_s: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event["status"] == status:
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no {status} event within {timeout_s} s; got {self.events}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fragile_repo(tmp_path):
    """``fragile``: features[batch, width] @ W[16, 3]; a width other than 16 fails in onnxruntime."""
    models = tmp_path / "models"
    save_model(models / "fragile" / "1" / "model.onnx", matmul_graph(features="width"))
    return models


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)


def _x(width: int) -> np.ndarray:
    return np.ones((1, width), np.float32)


ERRORS = {"name": "fragile_errors", "metric": "error_share", "comparator": ">", "threshold": 0.5, "for_s": 0.3,
          "severity": "critical", "labels": {"team": "ml"}}
FAST = {"defaults": False, "evaluate_every_s": 0.1, "window_s": 2}


def test_webhook_gets_firing_then_resolved(make_gateway, fragile_repo, receiver):
    g = make_gateway(model_repository=fragile_repo, alerts=FAST | {"rules": [ERRORS], "webhook_url": receiver.url})
    for _ in range(20):
        with pytest.raises(grpc.RpcError):
            g.predict("fragile", {"features": _x(5)})
    fired = receiver.wait_for("firing")
    assert (fired["rule"], fired["model"], fired["version"]) == ("fragile_errors", "fragile", "1")
    assert fired["severity"] == "critical" and fired["labels"] == {"team": "ml"} and fired["value"] == 1.0
    [active] = g.server.alerts.active()
    assert (active.rule, active.model, active.severity) == ("fragile_errors", "fragile", "critical")
    assert "gateway_alerts_active" in g.server.export.prometheus_text()
    listed = g.stub.ListAlerts(pb.ListAlertsRequest())
    [alert] = listed.alerts
    assert (alert.rule, alert.model, alert.version, alert.severity, alert.value) == \
        ("fragile_errors", "fragile", "1", "critical", 1.0)
    assert dict(alert.labels) == {"team": "ml"} and listed.rules == 1
    assert g.stub.ListAlerts(pb.ListAlertsRequest(model="other")).alerts == []
    out = _cli("alerts", "--address", g.address)
    assert out.returncode == 0, out.stderr
    header, line = out.stdout.splitlines()
    assert header.startswith("# 1 firing, 0 pending; 1 rules")
    assert line.startswith("critical fragile_errors  fragile@1  error_share 1 > 0.5  since ") and "team=ml" in line
    g.predict("fragile", {"features": _x(16)})  # the errors stop: the window empties of them
    resolved = receiver.wait_for("resolved")
    assert [e["status"] for e in receiver.events] == ["firing", "resolved"]
    assert resolved["firing_since_unix_s"] == fired["firing_since_unix_s"]
    assert g.server.alerts.active() == []
    assert _cli("alerts", "--address", g.address).stdout.startswith("# 0 firing")


def test_list_alerts_when_alerting_is_off(make_gateway, fragile_repo):
    g = make_gateway(model_repository=fragile_repo, alerts={"enabled": False})
    with pytest.raises(grpc.RpcError) as info:
        g.stub.ListAlerts(pb.ListAlertsRequest())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "alerting is off" in info.value.details()
    out = _cli("alerts", "--address", g.address)
    assert out.returncode == 1 and out.stderr.startswith("gateway alerts: FAILED_PRECONDITION: alerting is off")
    # bytes that are no ListAlertsRequest: INVALID_ARGUMENT, as on every call
    raw = g.channel.unary_unary("/gateway.v1.Gateway/ListAlerts")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class Silent:
    """Accepts connections (the kernel's backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"


@pytest.mark.parametrize("dead", ["refused", "silent"])
def test_a_dead_webhook_slows_nothing_and_stays_bounded(make_gateway, fragile_repo, dead):
    silent = Silent() if dead == "silent" else None
    url = silent.url if silent is not None else f"http://127.0.0.1:{free_port()}/hook"
    # ten rules that fire while requests flow and resolve when they stop: events enough to fill the queue
    rules = [{"name": f"busy{i}", "metric": "requests_per_s", "comparator": ">", "threshold": 0, "for_s": 0}
             for i in range(10)]
    g = make_gateway(model_repository=fragile_repo, alerts=FAST | {
        "rules": rules, "webhook_url": url, "webhook_timeout_s": 0.5, "webhook_queue": 4,
        "webhook_max_attempts": 2, "webhook_backoff_s": 0.05})
    alerts = g.server.alerts
    hook = alerts.webhook
    answered = 0
    deadline = time.monotonic() + 20
    while len(alerts.active()) < 10 and time.monotonic() < deadline:
        g.predict("fragile", {"features": _x(16)})
        answered += 1
    assert len(alerts.active()) == 10  # evaluation went on with the webhook stuck
    before = alerts.evaluations
    for _ in range(200):  # serving goes on: every request answered
        g.predict("fragile", {"features": _x(16)})
    time.sleep(0.5)
    assert alerts.evaluations > before
    assert hook.queued <= 4 and hook.dropped >= 10 - 4 - 1  # at most one being delivered
    assert hook.delivered == 0
    # bounded attempts: 2 per event given up on, plus the event in hand
    assert hook.attempts <= 2 * (hook.failed + 1)
    if silent is not None:
        silent.sock.close()


def test_p99_over_deadline_reads_each_versions_policy_deadline(make_gateway, fragile_repo):
    save_model(fragile_repo / "bounded" / "1" / "model.onnx", matmul_graph())
    (fragile_repo / "bounded" / "config.yaml").write_text("policy:\n  deadlines: {default_timeout_ms: 10000}\n")
    rule = {"name": "near_deadline", "metric": "p99_over_deadline", "comparator": ">", "threshold": 0, "for_s": 0}
    g = make_gateway(model_repository=fragile_repo, alerts=FAST | {"rules": [rule]})
    for model in ("bounded", "fragile"):
        for _ in range(5):
            g.predict(model, {"features": _x(16)})
    deadline = time.monotonic() + 20
    while not g.server.alerts.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a few more evaluations: fragile (no deadline) has no value and never fires
    [alert] = g.server.alerts.active()
    assert (alert.model, alert.rule) == ("bounded", "near_deadline")
    p99_ms = g.stub.GetStats(pb.GetStatsRequest(model="bounded", window_s=2)).models[0].latency.p99_ms
    assert 0 < alert.value < 0.1 and abs(alert.value - p99_ms / 10000) < 0.01
