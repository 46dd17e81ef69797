"""Merging the statistics of several processes (``gateway serve --workers``): exponential
histograms merge into exactly the histogram of all their values, so merged percentiles are the
percentiles of one histogram built from the union; window parts add up."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kernels import ExpHistogram
from gateway.telemetry import Telemetry
from gateway.telemetry.readers import (
    WindowHistogram,
    merge_histograms,
    merge_windows,
    summarize,
    summarize_parts,
)
from gateway.telemetry.snapshots import HistogramSnapshot
from tests.telemetry.records import record

QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)


def _histogram(values, max_buckets: int = 160) -> ExpHistogram:
    h = ExpHistogram(max_buckets)
    h.record_array(np.asarray(values, np.float64))
    return h


def _snap(h: ExpHistogram) -> HistogramSnapshot:
    d = h.snapshot()
    return HistogramSnapshot(d["scale"], d["offset"], d["bucket_counts"], int(d["zero_count"]), int(d["count"]),
                             float(d["sum"]), float(d["min"]), float(d["max"]), 0, 1)


def _buckets(s: HistogramSnapshot) -> dict[int, int]:
    return {s.offset + i: int(n) for i, n in enumerate(np.asarray(s.bucket_counts).tolist()) if n}


def _check_union(groups: list, max_buckets: int = 160) -> None:
    """Merging the groups' histograms gives the union's histogram, bucket for bucket, and its quantiles."""
    union = _histogram(np.concatenate([np.asarray(g, np.float64) for g in groups]), max_buckets)
    merged = merge_histograms([_snap(_histogram(g, max_buckets)) for g in groups], max_buckets)
    expected = _snap(union)
    assert merged.count == expected.count and merged.zero_count == expected.zero_count
    if expected.count - expected.zero_count:
        assert merged.scale == expected.scale
    assert _buckets(merged) == _buckets(expected)
    assert math.isclose(merged.sum, expected.sum, rel_tol=1e-12, abs_tol=1e-300)
    if not expected.count:
        return
    assert (merged.min, merged.max) == (expected.min, expected.max)
    summary = summarize(WindowHistogram(merged, merged.min, merged.max))
    for q, mine in ((0.5, summary.p50_ms), (0.9, summary.p90_ms), (0.99, summary.p99_ms)):
        assert mine == pytest.approx(union.quantile(q) * 1e3, rel=1e-12), q
    assert summary.max_ms == pytest.approx(union.max * 1e3, rel=1e-12)


def test_histograms_of_one_scale_merge_into_the_union():
    rng = np.random.default_rng(1)
    _check_union([rng.lognormal(-6, 0.3, 500), rng.lognormal(-6, 0.3, 700)])


def test_histograms_of_different_scales_merge_at_the_lowest_and_lower_when_the_union_is_wider():
    rng = np.random.default_rng(2)
    narrow, wide = rng.uniform(1e-3, 1.1e-3, 300), rng.lognormal(-5, 2.0, 300)
    assert _histogram(narrow).scale > _histogram(wide).scale
    _check_union([narrow, wide])
    # apart, each fits at a high scale; together they span 2**40: the merge must lower the scale further
    low, high = rng.uniform(1e-9, 2e-9, 100), rng.uniform(1e3, 2e3, 100)
    assert min(_histogram(low).scale, _histogram(high).scale) > _histogram(np.concatenate([low, high])).scale
    _check_union([low, high])


def test_zeros_empty_histograms_and_one_histogram():
    rng = np.random.default_rng(3)
    _check_union([np.zeros(10), rng.lognormal(-6, 1, 50), []])
    _check_union([[], []])
    _check_union([rng.lognormal(-6, 1, 50)])
    _check_union([np.zeros(4), np.zeros(3)])


def test_few_buckets():
    rng = np.random.default_rng(4)
    _check_union([rng.lognormal(-6, 3, 200), rng.lognormal(0, 3, 200), rng.lognormal(-9, 1, 50)], max_buckets=8)


_values = st.lists(st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1e4)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(st.lists(_values, min_size=1, max_size=4), st.sampled_from([8, 20, 160]))
def test_any_histograms_merge_into_their_union(groups, max_buckets):
    _check_union(groups, max_buckets)


def test_windows_merge_their_histograms_and_bounds():
    a, b = _snap(_histogram([0.001, 0.002])), _snap(_histogram([0.004]))
    w = merge_windows([WindowHistogram(a, 0.0009, 0.0021), WindowHistogram(b, 0.0039, 0.0041)], 160)
    assert w is not None and w.histogram.count == 3 and (w.lo, w.hi) == (0.0009, 0.0041)
    assert merge_windows([], 160) is None


def _record(t, m, n, *, status=0, e2e_ms=2.0, rows=4):
    # answered now, received e2e_ms ago: a record stamped in the future lies outside the window
    # sums when a second boundary falls between the stamp and the read
    now = time.monotonic_ns() - int(e2e_ms * 1e6)
    for _ in range(n):
        record(t, m, t_received_ns=now, t_enqueued_ns=now + 100, t_compute_start_ns=now + 1_000,
               t_compute_end_ns=now + 500_000, t_responded_ns=now + int(e2e_ms * 1e6), batch_size=rows, rows=rows,
               status=status, confidence=0.75)


def test_two_processes_parts_summarize_as_one_process_that_took_all_requests():
    """Worker a took 30 fast and 10 failed slow requests, worker b 20 very slow ones; one hub
    that took all 60 reports what the merged parts report."""
    a, b, whole = Telemetry(), Telemetry(), Telemetry()
    ids = {t: t.register_model("mlp", "1", inputs={}) for t in (a, b, whole)}
    began = time.monotonic()
    for t in (a, whole):
        _record(t, ids[t], 30, e2e_ms=2.0)
        _record(t, ids[t], 10, status=14, e2e_ms=8.0)
    for t in (b, whole):
        _record(t, ids[t], 20, e2e_ms=40.0, rows=2)
    for t in (a, b, whole):
        t.flush()
    merged, = a.snapshot(10.0, others=b.window_parts(10.0))
    alone, = whole.snapshot(10.0)
    assert merged.requests == alone.requests == 60
    assert merged.totals is not None and alone.totals is not None and merged.totals.success.count == 50
    # the running totals add up (the last answer's time is the later worker's: not compared)
    assert dataclasses.replace(merged.totals, last_unix_ms=0) == dataclasses.replace(alone.totals, last_unix_ms=0)
    for kind in ("latency", "queue", "compute"):
        assert getattr(merged, kind) == getattr(alone, kind), kind
    assert merged.latency.count == 60 and merged.latency.p90_ms == pytest.approx(40.0, rel=0.01)
    assert merged.error_share == alone.error_share == 10 / 60
    assert merged.mean_batch_size == alone.mean_batch_size == (40 * 4 + 20 * 2) / 60
    assert merged.mean_confidence == pytest.approx(alone.mean_confidence)
    # A rate divides by the seconds covered since a hub's first record, at least 1 s: within a
    # second of the first record every hub covers exactly 1 s and the rates are equal; on a
    # machine so busy that this test took longer, each lies between the counts over the time taken
    # and the counts themselves.
    took_s = time.monotonic() - began
    if took_s < 1.0:
        assert merged.requests_per_s == pytest.approx(alone.requests_per_s, rel=1e-6) == 60
        assert merged.rows_per_s == pytest.approx(alone.rows_per_s, rel=1e-6) == 40 * 4 + 20 * 2
    else:
        for s in (merged, alone):
            assert 60 / took_s <= s.requests_per_s <= 60 and 200 / took_s <= s.rows_per_s <= 200


def test_a_version_only_another_process_serves_is_listed_after_this_ones():
    a, b = Telemetry(), Telemetry()
    a.register_model("mlp", "1", inputs={})
    other = b.register_model("mlp", "2", inputs={})
    _record(b, other, 5)
    b.flush()
    versions = [(s.model, s.version, s.requests) for s in a.snapshot(10.0, others=b.window_parts(10.0))]
    assert versions == [("mlp", "1", 0), ("mlp", "2", 5)]
    empty = summarize_parts(a.window_parts(10.0), 160, [])
    assert empty.latency.count == 0 and math.isnan(empty.latency.p50_ms)
