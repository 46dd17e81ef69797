import time

import numpy as np

from gateway.telemetry import ModelStatsSnapshot, Telemetry


def _record(t, m, n, status=0):
    now = time.monotonic_ns()
    for i in range(n):
        t.record(m, now, now + 100, now + 200, now + 1_000, now + 1_000_000, now + 2_000_000,
                 4, 4, status, i % 4 == 0, 0, 0.75, 64, 0)


def test_end_to_end_counts_and_summary():
    t = Telemetry(ring_capacity=1 << 16)
    m = t.register_model("mlp", "1", inputs={"x": 3}, classifier_classes=2)
    assert t.register_model("mlp", "1", inputs={"x": 3}) == m
    _record(t, m, 1000)
    _record(t, m, 200, status=14)
    t.flush()
    (s,) = t.snapshot()
    assert isinstance(s, ModelStatsSnapshot)
    assert s.requests == 1200 and s.latency.count == 1200
    assert abs(s.latency.p50_ms - 2.0) / 2.0 < 0.01
    assert abs(s.error_share - 200 / 1200) < 1e-12
    assert abs(s.degraded_share - 300 / 1200) < 1e-12
    assert s.mean_batch_size == 4.0 and abs(s.mean_confidence - 0.75) < 1e-6
    kinds = {(p.status_code, p.kind) for p in t.histograms()}
    assert (14, "e2e") in kinds and (0, "batch_size") in kinds
    assert sum(p.histogram.count for p in t.histograms("delta") if p.kind == "e2e") == 1200
    assert sum(p.histogram.count for p in t.histograms("delta") if p.kind == "e2e") == 0
    assert t.counters()[0].requests == 1200 and t.ring_drops == 0


def test_background_aggregator_and_drops():
    t = Telemetry(ring_capacity=1024, aggregate_interval_s=0.01)
    m = t.register_model("a", "2", inputs={})
    t.start()
    _record(t, m, 5000)
    t.stop()
    (s,) = t.snapshot()
    assert s.requests + t.ring_drops == 5000


def test_inputs_outputs_and_shift():
    t = Telemetry()
    m = t.register_model("c", "1", inputs={"x": 4}, classifier_classes=3, logits=True)
    rng = np.random.default_rng(0)
    t.observe_inputs(m, "x", rng.normal(size=(256, 4)))
    t.rotate_shift_window()
    shifted = rng.normal(size=(256, 4))
    shifted[:, 2] += 5
    t.observe_inputs(m, "x", shifted)
    top1, pred = t.observe_outputs(m, rng.normal(size=(8, 3)))
    assert top1.dtype == np.float32 and pred.dtype == np.int64 and len(top1) == 8
    t.flush()
    (s,) = t.snapshot()
    assert s.top_shifts[0].feature == 2 and s.top_shifts[0].shift_score > 3
    assert t.feature_stats()[0].count.tolist() == [512] * 4
    assert t.confidence_stats()[0].rows == 8


def test_disabled_is_noop_but_outputs_still_computed():
    t = Telemetry(enabled=False)
    m = t.register_model("d", "1", inputs={"x": 2}, classifier_classes=2)
    t.record(m, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 0)
    t.observe_inputs(m, "x", np.zeros((2, 2)))
    top1, pred = t.observe_outputs(m, np.array([[0.2, 0.8], [0.9, 0.1]]))
    assert pred.tolist() == [1, 0] and np.allclose(top1, [0.8, 0.9])
    t.start()
    t.stop()
    assert t.snapshot() == [] and t.ring_drops == 0
