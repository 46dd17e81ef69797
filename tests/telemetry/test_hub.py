import time

import numpy as np

from gateway.api import CallTable
from gateway.telemetry import HistogramDeltas, ModelStatsSnapshot, Telemetry
from tests.telemetry.records import record


def _record(t, m, n, status=0, call=0):
    now = time.monotonic_ns()
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


def test_two_delta_readers_never_take_each_others_deltas():
    t = Telemetry()
    m = t.register_model("mlp", "1", inputs={})
    a, b = HistogramDeltas(), HistogramDeltas()

    def e2e_count(reader):
        return sum(p.histogram.count for p in reader.delta(t.histograms()) if p.kind == "e2e")

    _record(t, m, 300)
    t.flush()
    assert e2e_count(a) == 300
    _record(t, m, 50)
    t.flush()
    assert e2e_count(a) == 50 and e2e_count(b) == 350  # b never read before: everything since start
    assert e2e_count(a) == 0 and e2e_count(b) == 0
    # the cumulative view is untouched by either reader
    assert sum(p.histogram.count for p in t.histograms() if p.kind == "e2e") == 350


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
