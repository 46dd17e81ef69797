"""Logging (gateway.logs): JSON lines, trace ids on records, the sampled access log, the
rate-limited fallback event log."""
from __future__ import annotations

import json
import logging
import sys

import numpy as np

from gateway.adapters.tracing import RequestTrace
from gateway.api import InferRequest, InferResponse, Status
from gateway.core.context import Attempt
from gateway.logs import AccessLog, FallbackEventLog, JsonFormatter, TraceIdsFilter, current_ids


def _record(msg="hello %s", args=("world",), **extra) -> logging.LogRecord:
    record = logging.LogRecord("gateway.x", logging.WARNING, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_json_lines_carry_the_named_extras_and_fields():
    line = json.loads(JsonFormatter().format(_record(model="clf", version="2", event="model.loaded",
                                                     fields={"provider": "CPU", "model": "not this"})))
    assert line["message"] == "hello world" and line["level"] == "WARNING" and line["logger"] == "gateway.x"
    assert (line["model"], line["version"], line["event"], line["provider"]) == ("clf", "2", "model.loaded", "CPU")
    assert line["ts"].endswith("Z") and "trace_id" not in line
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_the_filter_stamps_the_ids_of_the_request_being_served():
    token = current_ids.set(("a" * 32, "b" * 16))
    try:
        record = _record()
        assert TraceIdsFilter().filter(record)
        assert (record.trace_id, record.span_id) == ("a" * 32, "b" * 16)
        own = _record(trace_id="c" * 32, span_id="d" * 16)             # ids already set win
        TraceIdsFilter().filter(own)
        assert own.trace_id == "c" * 32
    finally:
        current_ids.reset(token)
    record = _record()
    TraceIdsFilter().filter(record)
    assert not hasattr(record, "trace_id")


def _answered(log: AccessLog, *, trace=None, response=True):
    request = InferRequest(model="clf", inputs={"x": np.array([[1.5, 2.0]], np.float32)}, request_id="r1",
                           version="", t_received_ns=1_000_000, trace=trace)
    attempt = Attempt("clf@1", rows=1)
    attempt.batch_size = 3
    answer = InferResponse("r1", "clf", "1", {}, "static", degraded=True, fallback_reason="error",
                           predicted_label=["a"]) if response else None
    log.on_answer(request, attempt, Status.OK if response else Status.NOT_FOUND, answer, 2, 3_500_000)


def test_the_access_log_line_without_and_with_input_values(caplog):
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        _answered(AccessLog(1.0), trace=RequestTrace(0xAB, 0xCD, 0))
        _answered(AccessLog(1.0, log_inputs=True), response=False)
    first, second = caplog.records
    assert first.getMessage() == "clf OK 2.5" and first.event == "request" and first.version == "1"
    assert first.fields == {"request_id": "r1", "status": "OK", "duration_ms": 2.5, "rows": 1, "batch_size": 3,
                            "inputs": {"x": {"dtype": "float32", "shape": [1, 2]}}, "served_by": "static",
                            "degraded": True, "fallback_reason": "error", "predicted": ["a"]}
    assert (first.trace_id, first.span_id) == (f"{0xAB:032x}", f"{0xCD:016x}")
    assert second.fields["inputs"]["x"]["values"] == [[1.5, 2.0]] and second.fields["status"] == "NOT_FOUND"
    assert "served_by" not in second.fields and second.version == ""


def test_the_access_log_samples(caplog):
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        for _ in range(400):
            _answered(AccessLog(0.25))
        _answered(AccessLog(0.0))
    assert 50 < len(caplog.records) < 150


def test_the_fallback_event_log_is_rate_limited_and_reports_what_it_suppressed(caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr("gateway.logs.time.monotonic", lambda: now[0])
    events = FallbackEventLog(per_s=2)
    request = InferRequest(model="clf", inputs={}, request_id="r9")
    with caplog.at_level(logging.INFO, logger="gateway.policy"):
        for _ in range(5):
            events(request, "fallback.triggered", {"model": "clf@1", "reason": "error"})
        events(None, "circuit_breaker.transition", {"model": "clf@1"})      # not a fallback decision
        now[0] = 101.0
        events(request, "fallback.answered", {"model": "clf@1", "step": 0})
    lines = caplog.records
    assert [r.event for r in lines] == ["fallback.triggered", "fallback.triggered", "fallback.answered"]
    assert lines[0].getMessage() == "fallback.triggered request=r9 model=clf@1 reason=error"
    assert lines[0].model == "clf@1" and lines[0].fields == {"request_id": "r9", "model": "clf@1", "reason": "error"}
    assert lines[2].fields["suppressed_before"] == 3 and lines[2].fields["step"] == "0"
