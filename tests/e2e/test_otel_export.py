"""A gateway in-process with in-memory exporters (no collector): spans, metrics per RPC method,
fallback decisions as span events, breaker state and admission limit in the exported metrics."""
from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.conftest import free_port
from tests.e2e.traced import PARENT, TRACE, predict


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


@pytest.fixture
def memory_export(monkeypatch):
    spans, metrics = InMemorySpanExporter(), MemoryMetricExporter()
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    return spans, metrics


def test_gateway_spans_and_metrics_in_memory(memory_export, make_gateway, demo_models):
    spans, metrics = memory_export
    gw = make_gateway(model_repository=demo_models, span_exporter=spans, metric_exporter=metrics)
    for _ in range(5):
        predict(gw)  # no parent, parent-based always_off: not sampled
    predict(gw, f"00-{TRACE}-{PARENT}-01")
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


def test_fallback_decisions_are_span_events(memory_export, make_gateway, repo):
    spans, metrics = memory_export
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {error_rate: 1.0}\n"
        "policy:\n  fallback: {chain: [{static: {probabilities: [0.6, 0.3, 0.1]}}]}\n")
    gw = make_gateway(model_repository=repo, allow_fault_injection=True, span_exporter=spans,
                      metric_exporter=metrics)
    response = predict(gw, f"00-{TRACE}-{PARENT}-01")
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
        predict(gw)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    state = {line.split("gateway_circuit_breaker_state=\"")[1].split("\"")[0]: line.rsplit(" ", 1)[1]
             for line in text.splitlines()
             if line.startswith("gateway_circuit_breaker_state") and 'gateway_model_name="classifier"' in line}
    assert {k: float(v) for k, v in state.items()} == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    assert any(line.startswith("gateway_admission_limit") and 'gateway_model_name="classifier"' in line
               for line in text.splitlines())


class _DeadCollector(InMemorySpanExporter):
    """Every export fails, as with a collector on a port nothing listens on; then it comes back."""

    def __init__(self):
        super().__init__()
        self.dead = True

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.FAILURE if self.dead else super().export(spans)


def test_a_dead_collector_pauses_sampling_until_it_answers_again(monkeypatch, make_gateway, demo_models):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    exporter = _DeadCollector()
    gw = make_gateway(model_repository=demo_models, span_exporter=exporter, metric_exporter=MemoryMetricExporter())
    pipeline = gw.server.export.spans
    pipeline.probe_every_s = 0.0
    predict(gw)
    pipeline.export_pending()                              # as the span thread does every second
    dropped = gw.server.export.dropped["spans"]
    assert dropped == 4                                    # the one request's spans, and then paused:
    for _ in range(20):
        predict(gw)
    assert len(pipeline._queue) == 0 and gw.server.export.dropped["spans"] == dropped   # nothing sampled
    exporter.dead = False
    pipeline.export_pending()                              # the probe answers: sampling resumes
    predict(gw)
    pipeline.export_pending()
    assert len([s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]) == 1

