"""Readers: plain views of the aggregated state, and per-reader delta storage.

The kernels keep cumulative state only. A reader that exports deltas (OTLP with delta
temporality, and the alert evaluator to come) owns a :class:`HistogramDeltas` of its own, so
two delta readers never take each other's deltas.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import numpy as np

from ..api import CallTable
from ..api.stats import FeatureShift, LatencySummary, ModelStatsSnapshot
from .models import ModelTelemetry
from .snapshots import HistogramPoint, HistogramSnapshot

ShiftSource = Callable[[ModelTelemetry], list[FeatureShift]]


def latency_summary(h) -> LatencySummary:
    if h.count == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    return LatencySummary(int(h.count), h.quantile(0.5) * 1e3, h.quantile(0.9) * 1e3,
                          h.quantile(0.99) * 1e3, h.max * 1e3)


def model_stats(st: ModelTelemetry, window_s: float, now_ns: int,
                shifts: ShiftSource | None = None) -> ModelStatsSnapshot:
    """What ``GetStats`` reports for one version: rates and shares over the last ``window_s``."""
    sums, covered = st.counters.window_sums(window_s, now_ns)
    w_req = int(sums[0])
    bs = st.merged("batch_size")
    return ModelStatsSnapshot(
        model=st.model, version=st.version, requests=int(st.counters.total_requests),
        latency=latency_summary(st.merged("e2e")), queue=latency_summary(st.merged("queue")),
        compute=latency_summary(st.merged("compute")),
        requests_per_s=w_req / covered, rows_per_s=int(sums[1]) / covered,
        error_share=int(sums[2]) / w_req if w_req else 0.0,
        degraded_share=int(sums[3]) / w_req if w_req else 0.0,
        mean_batch_size=bs.sum / bs.count if bs.count else math.nan,
        mean_confidence=st.conf_sum / st.conf_n if st.conf_n else math.nan,
        top_shifts=shifts(st) if shifts is not None else [])


def histogram_points(models: Iterable[ModelTelemetry], calls: CallTable | None, now_ns: int) -> list[HistogramPoint]:
    """Cumulative histograms per (model, version, status, kind; the call for "e2e")."""
    out = []
    for st in models:
        for (code, kind, call), h in sorted(st.hists.items()):
            d = h.snapshot()
            rpc = calls.get(call) if calls is not None and call >= 0 else None
            out.append(HistogramPoint(
                st.model, st.version, code, kind, "cumulative",
                HistogramSnapshot(d["scale"], d["offset"], d["bucket_counts"], int(d["zero_count"]),
                                  int(d["count"]), float(d["sum"]), float(d["min"]), float(d["max"]),
                                  st.start_ns, now_ns),
                rpc.system if rpc else "", rpc.service if rpc else "", rpc.method if rpc else ""))
    return out


def subtract(cur: HistogramSnapshot, prev: HistogramSnapshot) -> HistogramSnapshot:
    """``cur - prev`` of one cumulative exponential histogram, at ``cur``'s scale (a histogram
    only ever lowers its scale, so ``prev`` is folded down to it). The interval's min and max
    are unknown from two cumulative states: NaN (the OTLP fields are optional)."""
    shift = prev.scale - cur.scale
    counts = np.asarray(cur.bucket_counts, dtype=np.int64).copy()
    if shift < 0:  # cannot happen for one histogram: treat as a restart
        return dataclasses.replace(cur, start_time_ns=prev.time_ns)
    prev_counts = np.asarray(prev.bucket_counts, dtype=np.int64)
    if len(prev_counts):
        idx = ((prev.offset + np.arange(len(prev_counts))) >> shift) - cur.offset
        np.subtract.at(counts, idx, prev_counts)
    nz = np.flatnonzero(counts)
    if len(nz):
        offset, counts = cur.offset + int(nz[0]), counts[nz[0]:nz[-1] + 1]
    else:
        offset, counts = 0, counts[:0]
    count = cur.count - prev.count
    return HistogramSnapshot(cur.scale, offset, counts, cur.zero_count - prev.zero_count, count,
                             cur.sum - prev.sum if count else 0.0, math.nan, math.nan, prev.time_ns, cur.time_ns)


class HistogramDeltas:
    """One reader's delta storage: the cumulative state it saw last, per histogram."""

    def __init__(self) -> None:
        self._previous: dict[tuple, HistogramSnapshot] = {}

    def delta(self, points: Iterable[HistogramPoint]) -> list[HistogramPoint]:
        """What was recorded since this reader's previous call (a point new since then counts
        from its histogram's start)."""
        out = []
        seen = {}
        for p in points:
            key = (p.model, p.version, p.status_code, p.kind, p.rpc_system, p.rpc_service, p.rpc_method)
            cur = p.histogram
            prev = self._previous.get(key)
            seen[key] = cur
            d = subtract(cur, prev) if prev is not None else cur
            out.append(dataclasses.replace(p, temporality="delta", histogram=d))
        self._previous.update(seen)
        return out
