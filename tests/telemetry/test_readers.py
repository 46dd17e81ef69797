"""Readers: deltas of cumulative exponential histograms (``subtract``) across scale changes,
per-reader delta storage, the stats summary and the histogram points, and the GetStats reader's
windows (summaries between two cumulative states, the bounded history of snapshots)."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api import CallTable
from gateway.kernels import ExpHistogram
from gateway.telemetry import HistogramDeltas, Telemetry
from gateway.telemetry.readers import (
    StatsHistory,
    cumulative,
    histogram_points,
    latency_summary,
    model_stats,
    subtract,
    window_summary,
)
from gateway.telemetry.snapshots import HistogramSnapshot
from tests.telemetry.records import record


def _snap(h: ExpHistogram, time_ns: int) -> HistogramSnapshot:
    d = h.snapshot()
    return HistogramSnapshot(d["scale"], d["offset"], d["bucket_counts"], int(d["zero_count"]), int(d["count"]),
                             float(d["sum"]), float(d["min"]), float(d["max"]), 0, time_ns)


def _buckets(s: HistogramSnapshot, scale: int | None = None) -> dict[int, int]:
    """Non-empty buckets by index, folded down to ``scale`` (default: the snapshot's own)."""
    shift = s.scale - (s.scale if scale is None else scale)
    assert shift >= 0
    out: dict[int, int] = {}
    for i, n in enumerate(np.asarray(s.bucket_counts).tolist()):
        if n:
            index = (s.offset + i) >> shift
            out[index] = out.get(index, 0) + int(n)
    return out


def _histogram(values) -> ExpHistogram:
    h = ExpHistogram(160)
    h.record_array(np.asarray(values, np.float64))
    return h


def _check_delta(first, second) -> HistogramSnapshot:
    h = _histogram(first)
    prev = _snap(h, 100)
    h.record_array(np.asarray(second, np.float64))
    cur = _snap(h, 200)
    delta = subtract(cur, prev)
    alone = _snap(_histogram(second), 0)
    assert alone.scale >= cur.scale
    assert delta.scale == cur.scale
    assert _buckets(delta) == _buckets(alone, cur.scale)
    counts = np.asarray(delta.bucket_counts)
    if len(counts):                                   # trimmed: no empty buckets at either end
        assert counts[0] > 0 and counts[-1] > 0
    else:
        assert delta.offset == 0
    assert (delta.count, delta.zero_count) == (len(second), sum(v == 0 for v in second))
    assert math.isclose(delta.sum, sum(second), rel_tol=1e-9, abs_tol=1e-9 * max(1.0, cur.sum))
    assert math.isnan(delta.min) and math.isnan(delta.max)
    assert (delta.start_time_ns, delta.time_ns) == (100, 200)
    return delta


def test_a_delta_across_a_downscale_equals_the_second_batch_alone_at_the_new_scale():
    near_one = 1.0 + np.linspace(0, 1e-3, 50)             # a narrow range: a fine scale
    far_apart = np.geomspace(1e-6, 1e6, 200)             # forces the histogram down several scales
    before = _snap(_histogram(near_one), 0).scale
    delta = _check_delta(near_one, far_apart)
    assert delta.scale < before - 3
    assert sum(_buckets(delta).values()) == 200


def test_a_delta_with_nothing_new_is_empty():
    h = _histogram([0.0, 0.5, 2.0])
    s = _snap(h, 7)
    delta = subtract(s, s)
    assert (delta.count, delta.zero_count, delta.sum, delta.offset, len(delta.bucket_counts)) == (0, 0, 0.0, 0, 0)


def test_a_histogram_that_restarted_at_a_finer_scale_counts_from_its_restart():
    h = _histogram(np.geomspace(1e-6, 1e6, 50))
    prev = _snap(h, 100)
    h.reset()
    h.record_array(np.array([1.0, 1.0001]))
    cur = _snap(h, 200)
    assert cur.scale > prev.scale
    delta = subtract(cur, prev)
    assert delta.count == 2 and _buckets(delta) == _buckets(cur) and delta.start_time_ns == 100


_values = st.lists(st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1e9)), max_size=60)


@settings(max_examples=80, deadline=None)
@given(_values, _values)
def test_subtract_gives_the_histogram_of_what_came_in_between(first, second):
    _check_delta(first, second)


def _record(t, m, n, *, status=0, call=0, e2e_ms=2.0):
    now = time.monotonic_ns() - int(e2e_ms * 1e6)   # answered now: never stamped in the future
    for _ in range(n):
        record(t, m, t_received_ns=now, t_enqueued_ns=now + 100, t_compute_start_ns=now + 1_000,
               t_compute_end_ns=now + 500_000, t_responded_ns=now + int(e2e_ms * 1e6), batch_size=4, rows=4,
               status=status, call=call, confidence=0.75)


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


def test_deltas_are_kept_per_point_and_a_new_point_counts_from_its_start():
    calls = CallTable()
    predict, stream = calls.register("grpc", "S", "Predict"), calls.register("grpc", "S", "PredictStream")
    t = Telemetry(calls=calls)
    m = t.register_model("mlp", "1", inputs={})
    reader = HistogramDeltas()
    _record(t, m, 5, call=predict)
    t.flush()
    first = {(p.kind, p.rpc_method): p for p in reader.delta(t.histograms())}
    assert all(p.temporality == "delta" for p in first.values())
    assert first[("e2e", "Predict")].histogram.count == 5
    _record(t, m, 3, call=stream)
    _record(t, m, 2, call=predict, status=14)
    t.flush()
    second = {(p.status_code, p.kind, p.rpc_method): p.histogram for p in reader.delta(t.histograms())}
    assert second[(0, "e2e", "Predict")].count == 0
    assert second[(0, "e2e", "PredictStream")].count == 3           # new since the last read: all of it
    assert second[(14, "e2e", "Predict")].count == 2
    assert second[(0, "queue", "")].count == 3 and second[(14, "queue", "")].count == 2
    assert second[(0, "e2e", "Predict")].start_time_ns == first[("e2e", "Predict")].histogram.time_ns


def test_histogram_points_name_the_call_for_end_to_end_only():
    calls = CallTable()
    predict = calls.register("grpc", "gateway.v1.Gateway", "Predict")
    t = Telemetry(calls=calls)
    m = t.register_model("mlp", "1", inputs={})
    _record(t, m, 4, call=predict)
    record(t, m, t_responded_ns=10, status=3, call=predict)             # rejected before any execution
    t.flush()
    points = histogram_points(t.models(), calls, time.monotonic_ns())
    keys = [(p.model, p.status_code, p.kind, p.rpc_method) for p in points]
    assert keys == [("mlp", 0, "batch_size", ""), ("mlp", 0, "compute", ""), ("mlp", 0, "e2e", "Predict"),
                    ("mlp", 0, "queue", ""), ("mlp", 3, "e2e", "Predict")]
    e2e = next(p for p in points if p.kind == "e2e" and p.status_code == 0)
    assert (e2e.rpc_system, e2e.rpc_service, e2e.temporality) == ("grpc", "gateway.v1.Gateway", "cumulative")
    assert e2e.histogram.count == 4 and e2e.histogram.start_time_ns == t.model(m).start_ns
    assert histogram_points(t.models(), None, 0)[2].rpc_method == ""     # no call table: no names


def test_latency_summary_in_milliseconds_and_nan_when_empty():
    empty = latency_summary(ExpHistogram(160))
    assert empty.count == 0 and all(math.isnan(v) for v in (empty.p50_ms, empty.p90_ms, empty.p99_ms, empty.max_ms))
    s = latency_summary(_histogram(np.full(100, 0.004)))
    assert s.count == 100 and math.isclose(s.max_ms, 4.0)
    assert all(math.isclose(v, 4.0, rel_tol=0.01) for v in (s.p50_ms, s.p90_ms, s.p99_ms))


def test_model_stats_over_a_window():
    t = Telemetry()
    m = t.register_model("mlp", "1", inputs={})
    _record(t, m, 30, e2e_ms=2.0)
    _record(t, m, 10, status=14, e2e_ms=8.0)
    t.flush()
    shift_calls = []
    stats = model_stats(t.model(m), 10.0, time.monotonic_ns(),
                        shifts=lambda st: shift_calls.append(st.model) or [])
    assert (stats.model, stats.version, stats.requests) == ("mlp", "1", 40)
    assert stats.latency.count == 40 and math.isclose(stats.latency.max_ms, 8.0, rel_tol=1e-6)
    assert math.isclose(stats.latency.p50_ms, 2.0, rel_tol=0.01)
    assert stats.queue.count == stats.compute.count == 40
    assert math.isclose(stats.compute.p50_ms, 0.499, rel_tol=0.01)
    assert stats.error_share == 0.25 and stats.degraded_share == 0.0
    assert stats.requests_per_s > 0 and math.isclose(stats.rows_per_s, 4 * stats.requests_per_s)
    assert stats.mean_batch_size == 4.0 and math.isclose(stats.mean_confidence, 0.75, rel_tol=1e-6)
    assert shift_calls == ["mlp"] and stats.top_shifts == []
    idle = model_stats(t.model(t.register_model("idle", "1", inputs={})), 10.0, time.monotonic_ns())
    assert idle.requests == 0 and idle.error_share == 0.0 and math.isnan(idle.mean_batch_size)
    assert math.isnan(idle.mean_confidence) and idle.latency.count == 0


# -- windows from cumulative snapshots (the GetStats reader) --------------------------------------------

def _exact(values, q: float) -> float:
    """The value at rank ceil(q * n), the rank the kernel's quantile answers."""
    ordered = sorted(values)
    return ordered[min(max(math.ceil(q * len(ordered)), 1), len(ordered)) - 1]


def test_a_summary_of_everything_is_the_kernels_own():
    h = _histogram(np.random.default_rng(3).lognormal(-6, 1.5, 2000))
    mine, kernels = window_summary(_snap(h, 0), None), latency_summary(h)
    assert mine.count == kernels.count == 2000
    for a, b in zip(dataclasses.astuple(mine)[1:], dataclasses.astuple(kernels)[1:]):
        assert math.isclose(a, b, rel_tol=1e-12)


_latencies = st.lists(st.one_of(st.just(0.0), st.floats(min_value=1e-7, max_value=100.0)), max_size=40)


@settings(max_examples=100, deadline=None)
@given(_latencies, _latencies.filter(bool))
def test_a_window_summary_is_of_what_came_in_between_within_the_bucket_error(first, second):
    h = _histogram(first)
    prev = _snap(h, 100)
    h.record_array(np.asarray(second, np.float64))
    cur = _snap(h, 200)
    s = window_summary(cur, prev)
    base = 2.0 ** (2.0 ** -cur.scale)
    rel = (base - 1) / (base + 1)
    assert s.count == len(second)
    true_max = max(second) * 1e3
    if first and max(second) > max(first):
        assert s.max_ms == true_max                       # the all-time max came in the window: exact
    assert true_max <= s.max_ms <= true_max * base * (1 + 1e-12)   # else its bucket's upper edge
    for q, got in zip((0.5, 0.9, 0.99), (s.p50_ms, s.p90_ms, s.p99_ms)):
        want = _exact(second, q) * 1e3
        assert abs(got - want) <= rel * want * (1 + 1e-9) + 1e-12
    assert s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms


def test_a_window_with_nothing_new_is_empty_and_one_before_any_snapshot_is_everything():
    h = _histogram([0.001, 0.002])
    snap = _snap(h, 5)
    empty = window_summary(snap, snap)
    assert empty.count == 0 and all(math.isnan(v) for v in dataclasses.astuple(empty)[1:])
    assert window_summary(snap, None).count == 2
    assert window_summary(snap, _snap(ExpHistogram(160), 0)).count == 2


def _tick_each_second(t, m, history, seconds, *, first_s=1, requests=1):
    for k in range(first_s, first_s + seconds):
        for _ in range(requests):
            record(t, m, t_responded_ns=k * 1_000_000_000)
        t.flush()
        history.tick(t.models(), k * 1_000_000_000)


def test_the_history_is_bounded_and_each_window_starts_where_documented():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    history = StatsHistory()
    _tick_each_second(t, m, history, 1000)
    now = 1000 * 1_000_000_000
    assert history.snapshots(m) == 86     # the last 60 s (61), 24 ten seconds apart, 1 at or before 300 s
    for window_s in (1, 2, 30, 60, 61, 95, 299, 300):
        start = now - window_s * 1_000_000_000
        found = history.at(m, start)
        step = 1 if window_s <= 60 else 10
        assert start - step * 1_000_000_000 < found.time_ns <= start, window_s
        assert found.requests == found.time_ns // 1_000_000_000  # one request each second so far
    assert history.at(m, now - 400 * 1_000_000_000) is None


def test_an_idle_version_shares_its_last_histograms_and_its_windows_stay_exact():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    history = StatsHistory()
    _tick_each_second(t, m, history, 5)                              # a request each second, then none
    busy = history.at(m, 5 * 1_000_000_000)
    _tick_each_second(t, m, history, 1000, first_s=6, requests=0)    # idle for 1000 s
    now = 1005 * 1_000_000_000
    assert history.snapshots(m) == 86
    for window_s in (10, 61, 120, 300):
        since = history.at(m, now - window_s * 1_000_000_000)
        assert since.requests == 5 and since.latency is busy.latency   # no copies of the same state
        assert model_stats(t.model(m), window_s, now, since=since).latency.count == 0


def test_a_window_starting_in_an_idle_stretch_after_the_traffic_counts_none_of_it():
    t = Telemetry()
    m = t.register_model("m", "1", inputs={})
    history = StatsHistory()
    _tick_each_second(t, m, history, 5)                              # traffic at 1..5 s
    _tick_each_second(t, m, history, 95, first_s=6, requests=0)      # idle until 100 s
    now = 100 * 1_000_000_000
    for window_s in (10, 30, 60):                  # (longer ones may start up to a coarse step early)
        since = history.at(m, now - window_s * 1_000_000_000)
        assert model_stats(t.model(m), window_s, now, since=since).latency.count == 0, window_s
    since = history.at(m, now - 100 * 1_000_000_000)                  # starts before the traffic
    assert since is None and model_stats(t.model(m), 100, now, since=since).latency.count == 5


def test_model_stats_since_a_snapshot_cover_only_what_came_after_it():
    t = Telemetry()
    m = t.register_model("mlp", "1", inputs={})
    _record(t, m, 30, e2e_ms=8.0)
    t.flush()
    since = cumulative(t.model(m), time.monotonic_ns())
    _record(t, m, 10, e2e_ms=2.0)
    t.flush()
    stats = model_stats(t.model(m), 10.0, time.monotonic_ns(), since=since)
    assert stats.requests == 40 and stats.latency.count == 10 and stats.compute.count == 10
    assert math.isclose(stats.latency.p99_ms, 2.0, rel_tol=0.01) and stats.latency.max_ms < 8.0
    assert stats.mean_batch_size == 4.0 and math.isclose(stats.mean_confidence, 0.75, rel_tol=1e-6)
