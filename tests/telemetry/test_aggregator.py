"""The aggregator: drained records folded into each version's histograms (per status, per call for
end-to-end), counters and outcome totals; queue/compute/batch size only for requests that reached
an execution; unknown ids counted, not folded; the background thread."""
from __future__ import annotations

import logging
import math
import threading

import numpy as np

from gateway.api import InferRequest, InferResponse, Status
from gateway.core.context import Attempt
from gateway.telemetry import Telemetry
from gateway.telemetry.aggregator import Aggregator, drain_into, fold
from gateway.telemetry.recorder import Recorder

MS = 1_000_000
T0 = 1_000_000 * MS


def _answer(rec: Recorder, telemetry_id: int, *, status=Status.OK, call=0, e2e_ms=2, ran=True, rows=2,
            degraded=False, fallback=0, confidence=0.5):
    attempt = Attempt("m@1", telemetry_id, rows=rows)
    if ran:
        attempt.t_enqueued_ns, attempt.t_batch_ns = T0 + MS // 10, T0 + MS // 5
        attempt.t_compute_start_ns, attempt.t_compute_end_ns = T0 + MS // 2, T0 + MS
        attempt.batch_size = 8
    response = None if status else InferResponse(
        "r", "m", "1", {}, "m@1", degraded=degraded, confidence=np.array([confidence], np.float32))
    rec.on_answer(InferRequest(model="m", inputs={}, t_received_ns=T0, call=call), attempt, status, response,
                  fallback, T0 + e2e_ms * MS)


def _fold(answers) -> tuple[list, int]:
    t = Telemetry()
    a = t.register_model("a", "1", inputs={})
    b = t.register_model("b", "1", inputs={})
    rec = Recorder(64)
    for telemetry_id, kw in answers:
        _answer(rec, {"a": a, "b": b}.get(telemetry_id, telemetry_id), **kw)
    models = t.models()
    return models, fold(rec.drain(), models)


def test_records_fold_per_status_and_call_and_only_executions_have_stages():
    models, unknown = _fold([
        ("a", dict(e2e_ms=1)), ("a", dict(e2e_ms=2)), ("a", dict(e2e_ms=3, call=1)),
        ("a", dict(degraded=True, fallback=2, confidence=float("nan"))),
        ("a", dict(status=Status.INVALID_ARGUMENT, ran=False, rows=0)),
        ("a", dict(status=Status.INVALID_ARGUMENT, ran=False, rows=0)),
        ("b", dict(e2e_ms=5)),
    ])
    assert unknown == 0
    a, b = models[1], models[2]
    assert sorted(a.hists) == [(0, "batch_size", -1), (0, "compute", -1), (0, "e2e", 0), (0, "e2e", 1),
                               (0, "queue", -1), (3, "e2e", 0)]             # no stages for status 3
    assert a.hists[(0, "e2e", 0)].count == 3 and a.hists[(0, "e2e", 1)].count == 1
    assert math.isclose(a.hists[(0, "e2e", 0)].sum, 0.001 + 0.002 + 0.002)
    assert math.isclose(a.hists[(0, "e2e", 1)].max, 0.003)
    assert a.hists[(3, "e2e", 0)].count == 2
    assert a.hists[(0, "queue", -1)].count == 4 and math.isclose(a.hists[(0, "queue", -1)].max, 0.0004)
    assert math.isclose(a.hists[(0, "compute", -1)].max, 0.0005)
    assert a.hists[(0, "batch_size", -1)].sum == 32.0
    assert [int(x) for x in a.counters.totals()] == [6, 8, 2, 1]          # requests, rows, errors, degraded
    assert a.outcomes == {(0, 0): 3, (0, 2): 1, (3, 0): 2}
    assert a.conf_n == 3 and math.isclose(a.conf_sum, 1.5)                 # the NaN and the errors skipped
    assert sorted(b.hists) == [(0, "batch_size", -1), (0, "compute", -1), (0, "e2e", 0), (0, "queue", -1)]
    assert b.outcomes == {(0, 0): 1} and not models[0].hists


def test_unknown_ids_are_counted_and_skipped():
    models, unknown = _fold([("a", {}), (9, {}), (9, {}), (3, {})])
    assert unknown == 3 and models[1].outcomes == {(0, 0): 1}
    assert all(not m.hists for m in (models[0], models[2]))


def test_drain_into_empties_the_recorder():
    t = Telemetry()
    m = t.register_model("a", "1", inputs={})
    rec = Recorder(8)
    for _ in range(5):
        _answer(rec, m)
    _answer(rec, 42)
    assert drain_into(rec, t.models()) == 1 and rec.drain() is None
    assert t.model(m).hists[(0, "e2e", 0)].count == 5
    assert drain_into(rec, t.models()) == 0


def test_the_background_thread_flushes_until_stopped_and_survives_a_failed_flush(caplog):
    calls = []
    again = threading.Event()

    def flush():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("flush broke")
        if len(calls) >= 3:
            again.set()

    agg = Aggregator(flush, 0.005)
    with caplog.at_level(logging.ERROR, logger="gateway.telemetry"):
        agg.start()
        agg.start()                                  # already running: no second thread
        assert again.wait(5)
        agg.stop()
    n = len(calls)
    assert n >= 3
    assert [r.getMessage() for r in caplog.records] == ["telemetry aggregation failed"]
    assert len([t for t in threading.enumerate() if t.name == "gateway-telemetry"]) == 0
    agg.stop()                                       # stopping twice is harmless
    assert len(calls) == n
