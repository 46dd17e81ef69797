"""The recorder: what ``on_answer`` writes is what ``drain`` hands back, field by field; a full
ring drops and counts."""
from __future__ import annotations

import math

import numpy as np

from gateway.api import InferRequest, InferResponse, Status
from gateway.core.context import Attempt
from gateway.telemetry.recorder import Recorder

BIG = 5_600_000_000_000_000   # monotonic_ns-sized


def _attempt(telemetry_id=3, **times) -> Attempt:
    a = Attempt("m@2", telemetry_id, rows=5)
    a.t_enqueued_ns, a.t_batch_ns = BIG + 10, BIG + 20
    a.t_compute_start_ns, a.t_compute_end_ns = BIG + 30, BIG + 40
    a.batch_size = 12
    for k, v in times.items():
        setattr(a, k, v)
    return a


def _request(**fields) -> InferRequest:
    fields.setdefault("t_received_ns", BIG)
    return InferRequest(model="m", inputs={}, payload_bytes=1 << 33, call=7, **fields)


def _response(confidence, degraded=True) -> InferResponse:
    return InferResponse("r", "m", "2", {}, "static", degraded=degraded, fallback_reason="error",
                         confidence=confidence)


def test_every_field_written_is_drained_as_written():
    rec = Recorder(16)
    rec.on_answer(_request(), _attempt(), Status.OK, _response(np.array([0.25, 0.9], np.float32)), 2, BIG + 50)
    records = rec.drain()
    assert len(records) == 1
    got = {name: getattr(records, name)[0].item() for name in records.__dataclass_fields__}
    assert got == {
        "telemetry_id": 3, "t_received_ns": BIG, "t_enqueued_ns": BIG + 10, "t_batch_ns": BIG + 20,
        "t_compute_start_ns": BIG + 30, "t_compute_end_ns": BIG + 40, "t_responded_ns": BIG + 50,
        "batch_size": 12, "rows": 5, "status_code": 0, "degraded": True, "fallback_code": 2,
        "confidence": 0.25,                              # the first row's
        "payload_bytes": 1 << 33, "call": 7}
    assert rec.drain() is None


def test_no_response_or_no_confidence_records_nan_and_not_degraded():
    rec = Recorder(16)
    rec.on_answer(_request(), _attempt(0, t_enqueued_ns=0), Status.NOT_FOUND, None, 0, BIG + 1)
    rec.on_answer(_request(), _attempt(), Status.OK, _response(None, degraded=False), 0, BIG + 2)
    rec.on_answer(_request(), _attempt(), Status.OK, _response(np.zeros(0, np.float32)), 1, BIG + 3)
    records = rec.drain()
    assert records.status_code.tolist() == [Status.NOT_FOUND, 0, 0]
    assert records.degraded.tolist() == [False, False, True]
    assert all(math.isnan(c) for c in records.confidence.tolist())
    assert records.t_enqueued_ns.tolist() == [0, BIG + 10, BIG + 10] and records.telemetry_id.tolist() == [0, 3, 3]


def test_a_full_ring_drops_and_counts_and_keeps_the_oldest():
    rec = Recorder(4)
    for i in range(6):
        rec.on_answer(_request(), _attempt(i), Status.OK, None, 0, BIG + i)
    assert rec.dropped == 2
    assert rec.drain().telemetry_id.tolist() == [0, 1, 2, 3]
    rec.on_answer(_request(), _attempt(9), Status.OK, None, 0, BIG)      # room again
    assert rec.drain().telemetry_id.tolist() == [9] and rec.dropped == 2
