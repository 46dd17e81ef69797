"""OTLP export against a real collector (rotel-agent): metric names, histogram counts,
span parents, resource attributes, alert events as log records, and a collector killed mid-load."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy
from tests.conftest import RunningGateway, free_port, matmul_graph, save_model
from tests.e2e.collector import Collector, agent_runs

_ok, _why = agent_runs()
pytestmark = pytest.mark.skipif(not _ok, reason=f"no runnable OTLP collector: {_why}")

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPANS = ["00f067aa0ba902b7", "00f067aa0ba902b8", "00f067aa0ba902b9"]


@pytest.fixture
def collector():
    c = Collector(free_port(), free_port()).start()
    yield c
    c.stop()


@pytest.fixture
def otel_env(monkeypatch, collector):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-under-test")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=ml")
    return collector


def _request(rows: int = 2) -> pb.PredictRequest:
    x = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
    return pb.PredictRequest(model="classifier", inputs=[from_numpy("features", x)])


def _wait(pred, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    return pred()


def _last_count(collector, name: str, **attrs) -> int | None:
    pts = [p for p in collector.metric_points()
           if p["name"] == name and all(p["attrs"].get(k) == v for k, v in attrs.items())]
    return pts[-1].get("count", pts[-1].get("value")) if pts else None


def test_metrics_spans_and_resource_reach_the_collector(otel_env, make_gateway, demo_models):
    collector = otel_env
    gw = make_gateway(model_repository=demo_models)
    sent = 25
    for i in range(sent):
        md = (("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPANS[i]}-01"),) if i < len(CLIENT_SPANS) else None
        gw.stub.Predict(_request(), metadata=md, timeout=10)
    with pytest.raises(grpc.RpcError):
        gw.stub.Predict(pb.PredictRequest(model="nope", inputs=[]), timeout=10)

    count = _wait(lambda: _last_count(collector, "rpc.server.call.duration",
                                      **{"gateway.model.name": "classifier",
                                         "rpc.grpc.status_code": "0"}) == sent)
    assert count, collector.metric_points()[-5:]
    names = collector.metric_names()
    for name in ("rpc.server.call.duration", "gateway.request.queue.duration",
                 "gateway.request.compute.duration", "gateway.batch.size", "gateway.requests",
                 "gateway.rows", "gateway.errors", "gateway.requests.in_flight",
                 "gateway.requests.in_flight_bytes", "gateway.queue.depth",
                 "gateway.input.feature.mean", "gateway.input.feature.nan_rate",
                 "gateway.output.confidence", "gateway.output.predicted_class",
                 "gateway.telemetry.ring.drops", "process.cpu.time", "process.memory.usage"):
        assert name in names, name
    types = {p["name"]: p["type"] for p in collector.metric_points()}
    assert types["rpc.server.call.duration"] == "ExponentialHistogram"
    assert _last_count(collector, "gateway.requests", **{"gateway.model.name": "classifier",
                                                         "rpc.grpc.status_code": "0"}) == sent
    assert _last_count(collector, "gateway.errors", **{"rpc.grpc.status_code": "5"}) == 1

    # The client's three spans are the parents of three SERVER spans in the client's trace.
    servers = _wait(lambda: [s for s in collector.spans()
                             if s.get("kind") == "SPAN_KIND_SERVER" and s.get("trace_id") == CLIENT_TRACE])
    assert sorted(s["parent_id"] for s in servers) == CLIENT_SPANS
    assert all(s["name"] == "gateway.v1.Gateway/Predict" for s in servers)
    children = {s["name"] for s in collector.spans() if s.get("trace_id") == CLIENT_TRACE}
    assert {"gateway.queue", "gateway.batch", "gateway.compute"} <= children

    res = collector.resource_attributes()
    assert res["service.name"] == "gw-under-test"
    assert res["deployment.environment"] == "ci" and res["team"] == "ml"
    assert len(res["service.instance.id"]) == 36


def test_delta_temporality_reaches_the_collector(otel_env, monkeypatch, make_gateway, demo_models):
    collector = otel_env
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    gw = make_gateway(model_repository=demo_models)
    ok = {"gateway.model.name": "classifier", "rpc.grpc.status_code": "0"}

    def durations():
        return [p for p in collector.metric_points() if p["name"] == "rpc.server.call.duration"
                and all(p["attrs"].get(k) == v for k, v in ok.items())]

    for _ in range(7):
        gw.stub.Predict(_request(), timeout=10)
    assert _wait(lambda: sum(p["count"] for p in durations()) == 7), durations()
    for _ in range(5):
        gw.stub.Predict(_request(), timeout=10)
    # Each export carries what happened since the previous one: the counts add up, no point
    # repeats an earlier request, and quiet intervals send no histogram point at all.
    assert _wait(lambda: sum(p["count"] for p in durations()) == 12), durations()
    points = durations()
    assert {p["temporality"] for p in points} == {"DELTA"}
    assert all(p["count"] > 0 for p in points) and len(points) >= 2
    requests = [p for p in collector.metric_points() if p["name"] == "gateway.requests"]
    assert requests and {p["temporality"] for p in requests} == {"DELTA"}
    time.sleep(1.0)  # three more export intervals with no traffic
    assert sum(p["count"] for p in durations()) == 12


def test_collector_killed_mid_load(otel_env, make_gateway, demo_models):
    collector = otel_env
    gw = make_gateway(model_repository=demo_models)
    errors: list[Exception] = []
    latencies: list[float] = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            t = time.perf_counter()
            try:
                gw.stub.Predict(_request(), timeout=5)
            except Exception as exc:  # any failure is a test failure
                errors.append(exc)
            latencies.append(time.perf_counter() - t)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    before = len(latencies)
    collector.kill()
    time.sleep(2.5)   # several export cycles into a dead collector
    during = len(latencies) - before
    collector.start()  # back on the same port
    time.sleep(1.5)
    stop.set()
    for w in workers:
        w.join(10)
    assert not errors, errors[:3]
    assert during > 50, f"serving stalled while the collector was down ({during} requests in 2.5 s)"
    assert max(latencies) < 1.0
    dropped = _wait(lambda: (_last_count(collector, "gateway.telemetry.dropped", signal="metrics") or 0) > 0)
    assert dropped, "dropped metric points were not exported once the collector was back"
    # The histogram count after recovery covers every request answered (cumulative).
    total = len(latencies)
    count = _wait(lambda: (_last_count(collector, "rpc.server.call.duration",
                                       **{"gateway.model.name": "classifier"}) or 0) >= total)
    assert count


def test_shutdown_is_bounded_with_a_dead_collector(monkeypatch, demo_models):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    gw = RunningGateway(model_repository=demo_models)
    for _ in range(10):
        gw.stub.Predict(_request(), timeout=10)
    time.sleep(0.5)
    t = time.monotonic()
    gw.close()
    assert time.monotonic() - t < 7.0  # min(OTEL_EXPORTER_OTLP_TIMEOUT=10 s, 5 s) + margin


def test_alert_events_reach_the_collector_as_log_records(monkeypatch, make_gateway, tmp_path):
    """A rule fires and resolves; both events arrive at rotel as OTel log records with the
    rule, severity, status, labels and model as attributes (the gateway's OTLP log exporter),
    and the gateway.alerts.active gauge shows it while it fires."""
    collector = Collector(free_port(), free_port(), logs=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "200")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-alerts")
        models = tmp_path / "models"
        save_model(models / "fragile" / "1" / "model.onnx", matmul_graph(features="width"))
        rule = {"name": "fragile_errors", "metric": "error_share", "comparator": ">", "threshold": 0.5,
                "for_s": 0.2, "severity": "critical", "labels": {"team": "ml"}}
        gw = make_gateway(model_repository=models, alerts={"defaults": False, "evaluate_every_s": 0.1,
                                                           "window_s": 2, "rules": [rule]})
        bad, good = np.ones((1, 5), np.float32), np.ones((1, 16), np.float32)
        for _ in range(10):
            with pytest.raises(grpc.RpcError):
                gw.predict("fragile", {"features": bad})

        def record(status):
            return next((r for r in collector.log_records() if r.get("event_name") == f"alert.{status}"), None)

        firing = _wait(lambda: record("firing"), 20.0)
        assert firing, collector.text()[-3000:]
        assert (firing["severity_text"], firing["severity_number"]) == ("WARNING", "SEVERITY_NUMBER_WARN(13)")
        a = firing["attrs"]
        assert (a["gateway.alert.rule"], a["gateway.alert.severity"], a["gateway.alert.status"]) == \
            ("fragile_errors", "critical", "firing")
        assert (a["gateway.model.name"], a["gateway.model.version"], a["gateway.alert.label.team"]) == \
            ("fragile", "1", "ml")
        assert (a["gateway.alert.metric"], a["gateway.alert.comparator"], float(a["gateway.alert.threshold"])) == \
            ("error_share", ">", 0.5)
        assert float(a["gateway.alert.value"]) == 1.0
        assert '"rule": "fragile_errors"' in firing["body"]
        # and, while it fires, the gateway.alerts.active gauge says so
        assert _wait(lambda: _last_count(collector, "gateway.alerts.active", **{
            "gateway.alert.rule": "fragile_errors", "gateway.alert.severity": "critical",
            "gateway.model.name": "fragile"}) == 1), [p for p in collector.metric_points() if "alert" in p["name"]]

        gw.predict("fragile", {"features": good})  # the errors stop: the window empties of them
        resolved = _wait(lambda: record("resolved"), 20.0)
        assert resolved, collector.text()[-3000:]
        r = resolved["attrs"]
        assert (resolved["severity_text"], r["gateway.alert.status"], r["gateway.alert.rule"]) == \
            ("INFO", "resolved", "fragile_errors")
        assert (r["gateway.model.name"], r["gateway.alert.severity"]) == ("fragile", "critical")
        assert r["gateway.alert.firing_since_unix_s"] == a["gateway.alert.firing_since_unix_s"]
        assert [x["event_name"] for x in collector.log_records()] == ["alert.firing", "alert.resolved"]
        assert collector.resource_attributes()["service.name"] == "gw-alerts"
    finally:
        collector.stop()
