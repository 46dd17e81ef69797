"""Spans built off the request path (SpanPipeline) into an in-memory exporter: only sampled
requests, the SERVER span and its queue/batch/compute children, links between requests that
shared a batch, fallback decisions as events, drops counted."""
from __future__ import annotations

import logging

from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.adapters.tracing import RequestTrace
from gateway.api import CallTable, InferRequest, InferResponse, Status
from gateway.core.context import Attempt
from gateway.telemetry.otel import make_resource
from gateway.telemetry.otel.traces import SpanPipeline

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
PARENT = 0xB7AD6B7169203331
MS = 1_000_000


def _pipeline(exporter=None, **kw):
    calls = CallTable()
    predict = calls.register("grpc", "gateway.v1.Gateway", "Predict")
    return SpanPipeline(exporter or InMemorySpanExporter(), make_resource(), calls, **kw), predict


def _answer(spans, call, *, trace, request_id="r1", status=Status.OK, batch_ns=3 * MS, fallback=0,
            served_by="clf@1"):
    attempt = Attempt("clf@1", 1, rows=2)
    attempt.t_enqueued_ns, attempt.t_batch_ns = 2 * MS, batch_ns
    attempt.t_compute_start_ns, attempt.t_compute_end_ns = batch_ns + MS, batch_ns + 4 * MS
    attempt.batch_size = 4
    request = InferRequest(model="clf", inputs={}, request_id=request_id, t_received_ns=MS, call=call, trace=trace)
    response = None if status else InferResponse(request_id, "clf", "1", {}, served_by, degraded=bool(fallback))
    spans.on_answer(request, attempt, status, response, fallback, 10 * MS)


def test_a_sampled_request_becomes_a_server_span_with_its_stages():
    spans, call = _pipeline()
    _answer(spans, call, trace=None)                                 # not sampled: nothing queued
    _answer(spans, call, trace=RequestTrace(TRACE, 0x1111, PARENT, parent_remote_sampled=True))
    assert spans.export_pending() == 4 and spans.exported == 4
    by_name = {s.name: s for s in spans.exporter.get_finished_spans()}
    assert set(by_name) == {"gateway.v1.Gateway/Predict", "gateway.queue", "gateway.batch", "gateway.compute"}
    server = by_name["gateway.v1.Gateway/Predict"]
    assert server.kind is SpanKind.SERVER and server.context.trace_id == TRACE and server.context.span_id == 0x1111
    assert server.parent.span_id == PARENT and server.parent.is_remote and server.parent.trace_flags.sampled
    assert server.end_time - server.start_time == 9 * MS and server.status.status_code is StatusCode.UNSET
    assert dict(server.attributes) == {
        "rpc.system": "grpc", "rpc.service": "gateway.v1.Gateway", "rpc.method": "Predict",
        "rpc.grpc.status_code": 0, "gateway.model.name": "clf", "gateway.model.version": "1",
        "gateway.request.id": "r1", "gateway.rows": 2}
    queue, batch, compute = by_name["gateway.queue"], by_name["gateway.batch"], by_name["gateway.compute"]
    assert queue.parent.span_id == batch.parent.span_id == 0x1111 and compute.parent.span_id == batch.context.span_id
    assert (queue.end_time - queue.start_time, batch.end_time - batch.start_time,
            compute.end_time - compute.start_time) == (1 * MS, 4 * MS, 3 * MS)
    assert batch.attributes["gateway.batch.size"] == 4 and list(batch.links) == []
    assert spans.export_pending() == 0


def test_requests_that_shared_a_batch_are_linked_and_errors_marked():
    spans, call = _pipeline()
    _answer(spans, call, trace=RequestTrace(TRACE, 0xA, 0), request_id="a")
    _answer(spans, call, trace=RequestTrace(TRACE + 1, 0xB, 0), request_id="b")
    _answer(spans, call, trace=RequestTrace(TRACE + 2, 0xC, 0), request_id="c", batch_ns=7 * MS)  # another batch
    _answer(spans, call, trace=RequestTrace(TRACE + 3, 0xD, 0), request_id="d", status=Status.UNAVAILABLE)
    spans.export_pending()
    finished = spans.exporter.get_finished_spans()
    batches = {s.parent.span_id: s for s in finished if s.name == "gateway.batch"}
    assert [link.context.span_id for link in batches[0xA].links] == [0xB]
    assert [link.context.span_id for link in batches[0xB].links] == [0xA] and list(batches[0xC].links) == []
    assert batches[0xA].links[0].attributes["gateway.link"] == "batched_with"
    servers = {s.attributes["gateway.request.id"]: s for s in finished if s.kind is SpanKind.SERVER}
    assert servers["a"].parent is None                                       # a root span
    assert servers["d"].status.status_code is StatusCode.ERROR and servers["d"].attributes["rpc.grpc.status_code"] == 14


def test_fallback_decisions_become_events_and_the_answer_names_the_fallback():
    spans, call = _pipeline()
    trace = RequestTrace(TRACE, 0xA, 0)
    request = InferRequest(model="clf", inputs={}, trace=trace)
    spans(request, "fallback.triggered", {"model": "clf@1", "reason": "error", "step": 0, "ok": True})
    spans(None, "circuit_breaker.transition", {"model": "clf@1"})             # no request: no span
    spans(InferRequest(model="clf", inputs={}), "fallback.answered", {})    # not sampled
    for i in range(70):
        spans(request, "fallback.step_missed", {"step": i})
    _answer(spans, call, trace=trace, fallback=2, served_by="static")
    spans.export_pending()
    server = next(s for s in spans.exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert len(server.events) == 64                                          # bounded
    first = server.events[0]
    assert first.name == "fallback.triggered" and dict(first.attributes) == \
        {"model": "clf@1", "reason": "error", "step": 0, "ok": True}
    assert server.attributes["gateway.degraded"] is True and server.attributes["gateway.fallback.reason"] == "error"
    assert server.attributes["gateway.served_by"] == "static"


class _Failing(InMemorySpanExporter):
    def __init__(self):
        super().__init__()
        self.fail = True

    def export(self, spans):
        if self.fail:
            return SpanExportResult.FAILURE
        return super().export(spans)


def test_a_full_queue_and_failed_exports_count_dropped_spans(caplog):
    dropped = {}
    exporter = _Failing()
    spans, call = _pipeline(exporter, max_queue=2, dropped=dropped, probe_every_s=0.0)
    for i in range(3):
        _answer(spans, call, trace=RequestTrace(TRACE + i, 0xA + i, 0))
    assert dropped == {"spans": 1}                                           # the third one pushed out the oldest
    with caplog.at_level(logging.INFO, logger="gateway.telemetry"):
        assert spans.export_pending() == 0
        assert dropped == {"spans": 1 + 8}                                   # 2 requests x 4 spans
        _answer(spans, call, trace=RequestTrace(TRACE, 0xE, 0))              # (sampled before the pause)
        assert spans.export_pending() == 0 and dropped == {"spans": 1 + 8 + 1}   # dropped unbuilt, probe fails
        exporter.fail = False
        assert spans.export_pending() == 0                                   # the probe: back
        _answer(spans, call, trace=RequestTrace(TRACE, 0xF, 0))
        assert spans.export_pending() == 4
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["span export failed; sampling paused and spans counted as dropped until the "
                        "collector is back (probed every 0 s)", "span export recovered; sampling resumed"]


class _Probed(_Failing):
    def __init__(self):
        super().__init__()
        self.exports: list[int] = []

    def export(self, spans):
        self.exports.append(len(spans))
        return super().export(spans)


def test_a_failing_collector_pauses_sampling_and_is_probed_until_it_answers():
    health: list[bool] = []
    exporter = _Probed()
    spans, call = _pipeline(exporter, on_health=health.append, probe_every_s=0.0)
    _answer(spans, call, trace=RequestTrace(TRACE, 0xA, 0))
    assert spans.export_pending() == 0 and health == [False]           # told once
    assert spans.export_pending() == 0 and exporter.exports == [4, 0]   # nothing queued: an empty probe
    assert health == [False] and spans.probes == 1
    spans.probe_every_s = 3600.0
    assert spans.export_pending() == 0 and exporter.exports == [4, 0]   # not again within probe_every_s
    spans.probe_every_s = 0.0
    exporter.fail = False
    assert spans.export_pending() == 0 and exporter.exports == [4, 0, 0] and health == [False, True]
    assert spans.export_pending() == 0 and exporter.exports == [4, 0, 0]  # healthy: no probes
    _answer(spans, call, trace=RequestTrace(TRACE, 0xB, 0))
    assert spans.export_pending() == 4


def test_a_raising_health_callback_changes_nothing(caplog):
    def broken(ok):
        raise RuntimeError("gate broke")

    exporter = _Probed()
    spans, call = _pipeline(exporter, on_health=broken, probe_every_s=0.0)
    with caplog.at_level(logging.ERROR, logger="gateway.telemetry"):
        _answer(spans, call, trace=RequestTrace(TRACE, 0xA, 0))
        assert spans.export_pending() == 0
    assert any("health callback failed" in r.getMessage() for r in caplog.records)
    exporter.fail = False
    assert spans.export_pending() == 0 and exporter.exports[-1] == 0         # the probe
    _answer(spans, call, trace=RequestTrace(TRACE, 0xB, 0))
    assert spans.export_pending() == 4


def test_stop_exports_what_is_queued():
    spans, call = _pipeline(schedule_delay_s=60.0)
    spans.start()
    _answer(spans, call, trace=RequestTrace(TRACE, 0xA, 0))
    spans.stop(5.0)
    assert spans.exported == 4 and len(spans.exporter.get_finished_spans()) == 4   # not the 60 s tick
