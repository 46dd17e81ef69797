"""The telemetry hub: registration, the recorder → aggregator → readers wiring, periodic hooks."""
import time

import numpy as np
import pytest

from gateway.api import CallTable
from gateway.telemetry import InputBinning, ModelStatsSnapshot, Telemetry
from tests.telemetry.records import record


def _record(t, m, n, status=0, call=0):
    now = time.monotonic_ns() - 2_000_000   # answered now: never stamped in the future
    for i in range(n):
        record(t, m, t_received_ns=now, t_enqueued_ns=now + 100, t_batch_ns=now + 200,
               t_compute_start_ns=now + 1_000, t_compute_end_ns=now + 1_000_000, t_responded_ns=now + 2_000_000,
               batch_size=4, rows=4, status=status, degraded=i % 4 == 0, confidence=0.75, payload_bytes=64,
               call=call)


def test_end_to_end_counts_and_summary():
    calls = CallTable()
    predict = calls.register("grpc", "gateway.v1.Gateway", "Predict")
    t = Telemetry(ring_capacity=1 << 16, calls=calls)
    m = t.register_model("mlp", "1", inputs={"x": 3}, classifier_classes=2)
    assert t.register_model("mlp", "1", inputs={"x": 3}) == m
    _record(t, m, 1000, call=predict)
    _record(t, m, 200, status=14, call=predict)
    t.flush()
    s = next(s for s in t.snapshot() if s.model == "mlp")
    assert isinstance(s, ModelStatsSnapshot)
    assert s.requests == 1200 and s.latency.count == 1200
    assert abs(s.latency.p50_ms - 2.0) / 2.0 < 0.01
    assert abs(s.error_share - 200 / 1200) < 1e-12
    assert abs(s.degraded_share - 300 / 1200) < 1e-12
    assert s.mean_batch_size == 4.0 and abs(s.mean_confidence - 0.75) < 1e-6
    points = t.histograms()
    assert {(p.status_code, p.kind) for p in points} >= {(14, "e2e"), (0, "batch_size")}
    e2e = [p for p in points if p.kind == "e2e"]
    assert {(p.rpc_system, p.rpc_service, p.rpc_method) for p in e2e} == {("grpc", "gateway.v1.Gateway", "Predict")}
    assert next(c for c in t.counters() if c.model == "mlp").requests == 1200 and t.ring_drops == 0


def test_background_aggregator_and_drops():
    t = Telemetry(ring_capacity=1024, aggregate_interval_s=0.01)
    m = t.register_model("a", "2", inputs={})
    t.start()
    _record(t, m, 5000)
    t.stop()
    s = next(s for s in t.snapshot() if s.model == "a")
    assert s.requests + t.ring_drops == 5000


def test_batch_observer_folds_inputs_and_confidence():
    t = Telemetry()
    m = t.register_model("c", "1", inputs={"x": 4}, classifier_classes=3, logits=True)
    rng = np.random.default_rng(0)
    observer = t.batch_observer(m, "scores", True)
    observer.observe_batch({"x": rng.normal(size=(256, 4))}, {"scores": rng.normal(size=(8, 3))})
    assert t.feature_stats()[0].count.tolist() == [256] * 4
    assert t.confidence_stats()[0].rows == 8


def test_unknown_telemetry_ids_are_counted_not_folded():
    t = Telemetry()
    record(t, 99, t_responded_ns=10)
    t.flush()
    assert t.unknown_model_records == 1


def test_registration_is_idempotent_and_id_zero_is_for_requests_of_no_version():
    t = Telemetry()
    assert [(m.model_id, m.model, m.version) for m in t.models()] == [(0, "", "")]
    a = t.register_model("m", "1", inputs={"x": 2})
    b = t.register_model("m", "2", inputs={"x": 2})
    assert (a, b) == (1, 2) and t.register_model("m", "1", inputs={"x": 2}) == 1
    assert [m.version for m in t.models()] == ["", "1", "2"] and t.model(b).version == "2"
    with pytest.raises(ValueError, match="labels must have classifier_classes entries"):
        t.register_model("c", "1", inputs={}, classifier_classes=3, labels=["a", "b"])


def test_registering_again_with_other_binning_restarts_the_input_statistics():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={"x": 2})
    t.batch_observer(m, None, False).observe_batch({"x": np.ones((5, 2))}, {})
    assert t.register_model("m", "1", inputs={"x": 2}) == m
    assert t.feature_stats()[0].count.tolist() == [5, 5]          # same binning: kept
    t.register_model("m", "1", inputs={"x": 2}, input_binning=InputBinning(bins=3, ranges={"x": (0.0, 3.0)}))
    (fs,) = t.feature_stats()
    assert fs.count.tolist() == [0, 0] and fs.histogram.shape == (2, 5)


def test_counters_and_outcomes_are_running_totals():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    record(t, m, t_responded_ns=time.monotonic_ns(), rows=3)
    record(t, m, t_responded_ns=time.monotonic_ns(), rows=2, status=14, fallback_code=4)
    record(t, m, t_responded_ns=time.monotonic_ns(), rows=1, degraded=True, fallback_code=2)
    t.flush()
    counters = {c.model: c for c in t.counters()}
    c = counters["m"]
    assert (c.requests, c.rows, c.errors, c.degraded) == (3, 6, 1, 1) and counters[""].requests == 0
    assert [(o.status_code, o.fallback_code, o.requests) for o in t.outcomes()] == [(0, 0, 1), (0, 2, 1), (14, 4, 1)]


def test_periodic_hooks_run_after_each_flush_with_the_versions():
    heard = []
    t = Telemetry(periodic=(lambda models, now: heard.append(([m.model for m in models], now)),))
    t.register_model("m", "1", inputs={})
    before = time.monotonic_ns()
    t.flush()
    t.flush()
    assert [names for names, _ in heard] == [["", "m"], ["", "m"]] and heard[0][1] >= before


def test_stop_folds_what_is_left_in_the_ring():
    t = Telemetry(aggregate_interval_s=60.0)
    m = t.register_model("m", "1", inputs={})
    t.start()
    _record(t, m, 7)
    t.stop()
    assert next(s for s in t.snapshot() if s.model == "m").requests == 7


def test_registering_again_with_other_classifier_settings_observes_new_rows_with_them():
    t = Telemetry()
    m = t.register_model("c", "1", inputs={}, classifier_classes=3, logits=False, labels=["a", "b", "c"])
    scores = {"s": np.array([[16.0, 1.0, 2.0]], np.float32)}
    old_observer = t.batch_observer(m, "s", False)
    old_observer.observe_batch({}, scores)
    assert t.confidence_stats()[0].mean_top1 == 16.0                 # raw scores taken as probabilities
    # the reloaded config says the scores are logits: the same statistics go on, with a softmax
    assert t.register_model("c", "1", inputs={}, classifier_classes=3, logits=True, labels=["x", "y", "z"]) == m
    t.batch_observer(m, "s", True).observe_batch({}, scores)
    (c,) = t.confidence_stats()
    softmax = 1 / (1 + np.exp(-15.0) + np.exp(-14.0))
    assert c.rows == 2 and c.mean_top1 == pytest.approx((16.0 + softmax) / 2) and c.labels == ["x", "y", "z"]
    # another number of classes restarts them; the replaced version's observer no longer feeds them
    t.register_model("c", "1", inputs={}, classifier_classes=2, logits=True, labels=None)
    old_observer.observe_batch({}, scores)
    assert t.confidence_stats()[0].rows == 0
    t.batch_observer(m, "s", True).observe_batch({}, {"s": np.array([[0.0, 0.0]], np.float32)})
    (c,) = t.confidence_stats()
    assert c.rows == 1 and c.mean_top1 == pytest.approx(0.5) and c.labels is None
    t.register_model("c", "1", inputs={}, classifier_classes=None)   # no longer a classifier
    assert t.confidence_stats() == []


def test_snapshots_leave_out_id_zero_and_refuse_windows_out_of_range():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    record(t, 0, t_responded_ns=time.monotonic_ns())
    _record(t, m, 2)
    t.flush()
    assert [(s.model, s.requests) for s in t.snapshot(300)] == [("m", 2)]
    assert next(c for c in t.counters() if c.model == "").requests == 1   # still counted, for export
    for bad in (0.0, -1.0, 300.5, float("nan")):
        with pytest.raises(ValueError, match="window_s must be in"):
            t.snapshot(bad)
