"""Native telemetry state → OpenTelemetry SDK points (gateway.telemetry.otel.points), in-process:
exponential → explicit buckets, cumulative and delta temporality."""
from __future__ import annotations

import numpy as np
from opentelemetry.sdk.metrics.export import ExponentialHistogram, Histogram

from gateway.telemetry import Telemetry
from gateway.telemetry.otel.points import NativeMetrics, exp_to_explicit
from tests.telemetry.records import record


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


def test_a_delta_reader_counts_restarted_confidence_statistics_from_their_restart():
    t = Telemetry()
    mid = t.register_model("c", "1", inputs={}, classifier_classes=3, labels=["a", "b", "c"])
    t.batch_observer(mid, "p", False).observe_batch({}, {"p": np.full((4, 3), [0.1, 0.8, 0.1], np.float32)})
    delta = NativeMetrics(t, temporality="delta")
    delta.collect()
    # a reload gives the version two classes: its confidence statistics restart with one row
    t.register_model("c", "1", inputs={}, classifier_classes=2, labels=["x", "y"])
    t.batch_observer(mid, "p", False).observe_batch({}, {"p": np.array([[0.3, 0.7]], np.float32)})
    second = {m.name: m for m in delta.collect()}
    (conf,) = second["gateway.output.confidence"].data.data_points
    assert conf.count == 1 and min(conf.bucket_counts) >= 0 and sum(conf.bucket_counts) == 1
    classes = {p.attributes["gateway.output.class"]: p.value
               for p in second["gateway.output.predicted_class"].data.data_points}
    assert classes == {"y": 1}
