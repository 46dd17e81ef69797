"""In-process export tests: InMemorySpanExporter / an in-memory metric exporter, no collector."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Histogram,
    MetricExporter,
    MetricExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.logs import JsonFormatter
from gateway.telemetry import Telemetry
from tests.telemetry.records import record
from gateway.telemetry.otel.points import NativeMetrics, exp_to_explicit
from gateway.adapters.tracing import HeadSampler, parse_traceparent
from tests.conftest import RunningGateway, free_port

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


class MemoryMetricExporter(MetricExporter):
    def __init__(self):
        super().__init__()
        self.batches = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass

    def metrics(self, name):
        for data in reversed(self.batches):
            for rm in data.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == name:
                            return m
        return None


# -- request-path pieces ------------------------------------------------------------------
def test_parse_traceparent():
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (int(TRACE, 16), int(PARENT, 16), True)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00")[2] is False
    for bad in ("", "garbage", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
                f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-01-extra", f"00-{TRACE[:-1]}x-{PARENT}-01"):
        assert parse_traceparent(bad) is None, bad


def test_sampler_semantics():
    md_on = (("traceparent", f"00-{TRACE}-{PARENT}-01"),)
    md_off = (("traceparent", f"00-{TRACE}-{PARENT}-00"),)
    pb = HeadSampler("parentbased_traceidratio", 0.0)
    t = pb.start(md_on)
    assert t.trace_id == int(TRACE, 16) and t.parent_span_id == int(PARENT, 16)
    assert pb.start(md_off) is None
    assert all(pb.start(()) is None for _ in range(100))
    on = HeadSampler("always_on")
    assert on.start(md_off) is not None and on.start(()) is not None
    assert HeadSampler("always_off").never
    ratio = HeadSampler("traceidratio", 0.25)
    share = sum(ratio.start(()) is not None for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    with pytest.raises(ValueError):
        HeadSampler("jaeger_remote")


# -- native → SDK points --------------------------------------------------------------------
def test_exp_to_explicit_matches_direct_bucketing():
    rng = np.random.default_rng(1)
    values = rng.lognormal(-6, 1.5, 5000)
    t = Telemetry()
    mid = t.register_model("m", "1", inputs={})
    for v in values:
        ns = int(v * 1e9)
        record(t, mid, t_responded_ns=ns)
    t.flush()
    h = next(p.histogram for p in t.histograms() if p.kind == "e2e")
    bounds = [0.0005, 0.001, 0.005, 0.01, 0.05]
    got = exp_to_explicit(h.scale, h.offset, h.bucket_counts, h.zero_count, bounds)
    assert sum(got) == len(values)
    # Each value counts where the upper edge of its exponential bucket falls.
    seconds = np.array([int(v * 1e9) for v in values]) / 1e9
    index = np.ceil(np.log2(seconds) * 2.0 ** h.scale) - 1
    upper = 2.0 ** ((index + 1) * 2.0 ** -h.scale)
    want = np.bincount(np.searchsorted(bounds, upper * (1 - 1e-9), side="left"), minlength=len(bounds) + 1)
    assert np.abs(np.array(got) - want).sum() <= 0.005 * len(values)


def _telemetry_with(n: int) -> Telemetry:
    t = Telemetry()
    mid = t.register_model("m", "1", inputs={"x": 4}, classifier_classes=3, labels=["a", "b", "c"])
    for i in range(n):
        record(t, mid, t_enqueued_ns=100, t_batch_ns=200, t_compute_start_ns=300, t_compute_end_ns=400 + i,
               t_responded_ns=1000 + i, batch_size=2, status=0 if i % 5 else 14, confidence=0.9)
    t.batch_observer(mid, "p", False).observe_batch(
        {"x": np.array([[1, 2, np.nan, 4], [3, 4, 5, 6]], np.float32)}, {"p": np.array([[0.1, 0.8, 0.1]], np.float32)})
    return t


def test_native_metrics_cumulative_and_delta():
    t = _telemetry_with(50)
    cum = {m.name: m for m in NativeMetrics(t).collect()}
    e2e = cum["rpc.server.call.duration"].data
    assert isinstance(e2e, ExponentialHistogram)
    by_code = {p.attributes["rpc.grpc.status_code"]: p.count for p in e2e.data_points}
    assert by_code == {0: 40, 14: 10}
    assert {p.attributes["rpc.grpc.status_code"]: p.value
            for p in cum["gateway.errors"].data.data_points} == {14: 10}
    assert isinstance(cum["gateway.output.confidence"].data, Histogram)
    nan_rate = {p.attributes["gateway.input.feature"]: p.value
                for p in cum["gateway.input.feature.nan_rate"].data.data_points}
    assert nan_rate[2] == 0.5 and nan_rate[0] == 0.0

    delta = NativeMetrics(t, temporality="delta")
    first = {m.name: m for m in delta.collect()}
    assert sum(p.count for p in first["rpc.server.call.duration"].data.data_points) == 50
    mid = t.register_model("m", "1", inputs={})
    for _ in range(7):
        record(t, mid, t_responded_ns=10)
    second = {m.name: m for m in delta.collect()}
    pts = second["rpc.server.call.duration"].data.data_points
    assert sum(p.count for p in pts) == 7
    assert all(p.start_time_unix_nano <= p.time_unix_nano for p in pts)
    req = second["gateway.requests"].data.data_points
    assert sum(p.value for p in req) == 7
    assert req[0].start_time_unix_nano == first["gateway.requests"].data.data_points[0].time_unix_nano


def test_explicit_histogram_when_configured():
    t = _telemetry_with(10)
    m = {m.name: m for m in NativeMetrics(t, histogram="explicit").collect()}
    data = m["rpc.server.call.duration"].data
    assert isinstance(data, Histogram)
    assert sum(sum(p.bucket_counts) for p in data.data_points) == 10


# -- a gateway in-process with in-memory exporters --------------------------------------------
@pytest.fixture
def memory_export(monkeypatch):
    spans, metrics = InMemorySpanExporter(), MemoryMetricExporter()
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    return spans, metrics


def _predict(gw, traceparent=None):
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    from gateway._proto import gateway_pb2 as pb
    from gateway.client import from_numpy

    md = (("traceparent", traceparent),) if traceparent else None
    return gw.stub.Predict(pb.PredictRequest(model="classifier", inputs=[from_numpy("features", x)]),
                           metadata=md, timeout=10)


def test_gateway_spans_and_metrics_in_memory(memory_export, make_gateway, demo_models):
    spans, metrics = memory_export
    gw = make_gateway(model_repository=demo_models, span_exporter=spans, metric_exporter=metrics)
    for _ in range(5):
        _predict(gw)  # no parent, parent-based always_off: not sampled
    _predict(gw, f"00-{TRACE}-{PARENT}-01")
    gw.server.export.spans.export_pending()
    got = spans.get_finished_spans()
    servers = [s for s in got if s.kind is SpanKind.SERVER]
    assert len(servers) == 1
    assert servers[0].parent.span_id == int(PARENT, 16) and servers[0].parent.is_remote
    assert servers[0].context.trace_id == int(TRACE, 16)
    assert servers[0].name == "gateway.v1.Gateway/Predict"
    names = {s.name for s in got}
    assert {"gateway.queue", "gateway.batch", "gateway.compute"} <= names
    from gateway._proto import gateway_pb2 as pb
    from gateway.client import from_numpy

    x = np.zeros((1, 16), np.float32)
    stream = [pb.PredictRequest(model="classifier", request_id=f"s{i}", inputs=[from_numpy("features", x)])
              for i in range(3)]
    assert len(list(gw.stub.PredictStream(iter(stream), timeout=10))) == 3

    def by_method():
        m = metrics.metrics("rpc.server.call.duration")
        counts: dict[str, int] = {}
        for p in m.data.data_points if m is not None else ():
            method = p.attributes["rpc.method"]
            counts[method] = counts.get(method, 0) + p.count
        return counts

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and by_method() != {"Predict": 6, "PredictStream": 3}:
        time.sleep(0.1)
    assert by_method() == {"Predict": 6, "PredictStream": 3}  # one observation per prediction
    assert metrics.metrics("gateway.requests.in_flight") is not None
    assert metrics.metrics("process.memory.usage") is not None


def test_admin_endpoints(make_gateway, demo_models):
    port = free_port()
    gw = make_gateway(model_repository=demo_models, admin_port=port)
    _predict(gw)
    base = f"http://127.0.0.1:{port}"
    assert urllib.request.urlopen(base + "/healthz").status == 200
    assert urllib.request.urlopen(base + "/readyz").status == 200
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    assert "# TYPE rpc_server_call_duration_seconds histogram" in text
    assert 'rpc_server_call_duration_seconds_count{rpc_system="grpc"' in text
    assert "gateway_requests_total{" in text and "target_info{" in text
    gw.server.dataplane.set_accepting(False)  # as while draining
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/readyz")
    assert err.value.code == 503


@pytest.mark.parametrize("log_inputs", [False, True])
def test_access_log_json_with_trace_ids(monkeypatch, make_gateway, demo_models, caplog, log_inputs):
    spans = InMemorySpanExporter()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    gw = make_gateway(model_repository=demo_models, access_log=True, access_log_sample_ratio=1.0,
                      log_inputs=log_inputs, span_exporter=spans)
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        _predict(gw, f"00-{TRACE}-{PARENT}-01")
        _predict(gw)
    recs = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(recs) == 2
    line = json.loads(JsonFormatter().format(recs[0]))
    assert line["trace_id"] == TRACE and len(line["span_id"]) == 16
    assert line["event"] == "request" and line["model"] == "classifier"
    assert line["inputs"]["features"]["shape"] == [2, 16]
    assert ("values" in line["inputs"]["features"]) is log_inputs


def test_fallback_decisions_are_span_events(memory_export, make_gateway, repo):
    spans, metrics = memory_export
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {error_rate: 1.0}\n"
        "policy:\n  fallback: {chain: [{static: {probabilities: [0.6, 0.3, 0.1]}}]}\n")
    gw = make_gateway(model_repository=repo, allow_fault_injection=True, span_exporter=spans,
                      metric_exporter=metrics)
    response = _predict(gw, f"00-{TRACE}-{PARENT}-01")
    assert response.degraded and response.fallback_reason == "error"
    gw.server.export.spans.export_pending()
    server = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    events = [e.name for e in server.events]
    assert "fallback.triggered" in events and "fallback.answered" in events
    answered = next(e for e in server.events if e.name == "fallback.answered")
    assert answered.attributes["reason"] == "error" and answered.attributes["served_by"] == "static"


def test_breaker_state_and_admission_limit_are_exported(make_gateway, repo):
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {error_rate: 1.0}\npolicy:\n"
        "  admission: {max_in_flight: 8}\n"
        "  circuit_breaker: {enabled: true, sliding_window_size: 4, minimum_number_of_calls: 2,"
        " wait_duration_in_open_state_ms: 60000}\n"
        "  fallback: {chain: [{static: {probabilities: [0.6, 0.3, 0.1]}}]}\n")
    port = free_port()
    gw = make_gateway(model_repository=repo, allow_fault_injection=True, admin_port=port)
    for _ in range(4):
        _predict(gw)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    state = {line.split("gateway_circuit_breaker_state=\"")[1].split("\"")[0]: line.rsplit(" ", 1)[1]
             for line in text.splitlines()
             if line.startswith("gateway_circuit_breaker_state") and 'gateway_model_name="classifier"' in line}
    assert {k: float(v) for k, v in state.items()} == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    assert any(line.startswith("gateway_admission_limit") and 'gateway_model_name="classifier"' in line
               for line in text.splitlines())


def test_notable_events_are_json_lines_with_event_names(caplog, repo):
    """Model loaded, provider chosen, reload, config rejected, breaker transition, drain:
    each one JSON line with an ``event`` (and model/version where there is one)."""
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {error_rate: 1.0}\npolicy:\n"
        "  circuit_breaker: {enabled: true, sliding_window_size: 2, minimum_number_of_calls: 2,"
        " wait_duration_in_open_state_ms: 60000}\n"
        "  fallback: {chain: [{static: {probabilities: [0.6, 0.3, 0.1]}}]}\n")
    with caplog.at_level(logging.INFO, logger="gateway"):
        gw = RunningGateway(model_repository=repo, allow_fault_injection=True)
        for _ in range(3):
            _predict(gw)
        (repo / "regressor" / "config.yaml").write_text("batching: {max_batch_sise: 1}\n")
        gw.call(_request_reload(gw.server))
        gw.close()
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    by_event = {}
    for line in lines:
        by_event.setdefault(line.get("event"), []).append(line)
    assert {"server.listening", "server.ready", "model.provider", "model.loaded",
            "circuit_breaker.transition", "repository.reload", "model.config_rejected",
            "model.released", "server.stopped"} <= set(by_event)
    provider = next(x for x in by_event["model.provider"] if x["model"] == "classifier")
    assert provider["version"] == "1" and provider["provider"] == "CPUExecutionProvider"
    breaker = by_event["circuit_breaker.transition"][0]
    assert breaker["model"].startswith("classifier") and breaker["to"] == "open"
    assert by_event["model.config_rejected"][0]["model"] == "regressor"


async def _request_reload(server):
    server.request_reload()                    # what SIGHUP does
    await asyncio.gather(*list(server._reloads))
