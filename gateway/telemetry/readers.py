"""Readers: plain views of the aggregated state, and per-reader delta storage.

The kernels keep cumulative state only. A reader that exports deltas (OTLP with delta
temporality, and the alert evaluator to come) owns a :class:`HistogramDeltas` of its own, so
two delta readers never take each other's deltas. The ``GetStats`` reader owns a
:class:`StatsHistory`: cumulative snapshots of each version, so a window's percentiles are
the difference between now and the snapshot taken ``window_s`` ago.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..api import CallTable
from ..api.stats import (
    MAX_WINDOW_S,
    BatchSizeTotal,
    FeatureShift,
    LatencySummary,
    ModelStatsSnapshot,
    PhaseTotal,
    Rejected,
    VersionTotals,
)
from .models import ModelTelemetry
from .snapshots import HistogramPoint, HistogramSnapshot

ShiftSource = Callable[[ModelTelemetry], list[FeatureShift]]


def latency_summary(h) -> LatencySummary:
    if h.count == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    return LatencySummary(int(h.count), h.quantile(0.5) * 1e3, h.quantile(0.9) * 1e3,
                          h.quantile(0.99) * 1e3, h.max * 1e3)


def model_stats(st: ModelTelemetry, window_s: float, now_ns: int,
                shifts: ShiftSource | None = None, since: Cumulative | None = None) -> ModelStatsSnapshot:
    """What ``GetStats`` reports for one version over the last ``window_s``: rates and shares
    from the per-second counters; percentiles, mean batch size and mean confidence from the
    difference between the cumulative state now and ``since`` (the version's state at the
    window's start; None: since it was registered)."""
    return summarize_parts([window_part(st, window_s, now_ns, since)], st.max_buckets,
                           shifts(st) if shifts is not None else [])


@dataclasses.dataclass(frozen=True)
class WindowHistogram:
    """What a window holds of one histogram, with bounds of the window's extremes: ``lo`` at
    or below its min, ``hi`` at or above its max (exact where they are known)."""

    histogram: HistogramSnapshot
    lo: float
    hi: float


@dataclasses.dataclass(frozen=True)
class WindowPart:
    """One version's window in one process, in a form that merges exactly with other
    processes' (``gateway serve --workers``): sums, and window histograms whose buckets add
    at a common scale (:func:`merge_histograms`). ``requests`` is the total since the version
    was registered; the ``window_*`` sums cover ``covered_s`` seconds."""

    model: str
    version: str
    requests: int
    window_requests: int
    window_rows: int
    window_errors: int
    window_degraded: int
    covered_s: float
    latency: WindowHistogram | None
    queue: WindowHistogram | None
    compute: WindowHistogram | None
    batch_count: int
    batch_sum: float
    conf_n: int
    conf_sum: float
    totals: VersionTotals | None = None   # the running totals (not windowed)


@dataclasses.dataclass(frozen=True)
class StatsShare:
    """One worker process's share of the server's statistics over a window, as the worker
    answering ``GetStats`` gathers them from the others (:mod:`gateway.workers`)."""

    parts: list[WindowPart]
    ring_drops: int
    feedback_unknown: int
    rejected: tuple[Rejected, ...] = ()   # the data plane's tally of refused requests


def window_part(st: ModelTelemetry, window_s: float, now_ns: int, since: Cumulative | None = None) -> WindowPart:
    """The version's :class:`WindowPart` (call under the hub's lock)."""
    sums, covered = st.counters.window_sums(window_s, now_ns)
    cur = cumulative(st, now_ns)
    return WindowPart(
        st.model, st.version, int(st.counters.total_requests), int(sums[0]), int(sums[1]), int(sums[2]),
        int(sums[3]), float(covered),
        window_histogram(cur.latency, since.latency if since else None),
        window_histogram(cur.queue, since.queue if since else None),
        window_histogram(cur.compute, since.compute if since else None),
        cur.batch_count - (since.batch_count if since else 0), cur.batch_sum - (since.batch_sum if since else 0.0),
        cur.conf_n - (since.conf_n if since else 0), cur.conf_sum - (since.conf_sum if since else 0.0),
        st.totals.snapshot())


def summarize_parts(parts: Sequence[WindowPart], max_buckets: int,
                    top_shifts: list[FeatureShift]) -> ModelStatsSnapshot:
    """One version's statistics from its parts (one per process that serves it): counts and
    rates add, window histograms merge (so the percentiles are those of one histogram of all
    the processes' requests), means are of the added sums."""
    first = parts[0]
    w_req = sum(p.window_requests for p in parts)
    batches = sum(p.batch_count for p in parts)
    confidences = sum(p.conf_n for p in parts)

    def summary(pick: Callable[[WindowPart], WindowHistogram | None]) -> LatencySummary:
        return summarize(merge_windows([w for w in map(pick, parts) if w is not None], max_buckets))

    return ModelStatsSnapshot(
        model=first.model, version=first.version, requests=sum(p.requests for p in parts),
        latency=summary(lambda p: p.latency), queue=summary(lambda p: p.queue),
        compute=summary(lambda p: p.compute),
        requests_per_s=sum(p.window_requests / p.covered_s for p in parts),
        rows_per_s=sum(p.window_rows / p.covered_s for p in parts),
        error_share=sum(p.window_errors for p in parts) / w_req if w_req else 0.0,
        degraded_share=sum(p.window_degraded for p in parts) / w_req if w_req else 0.0,
        mean_batch_size=sum(p.batch_sum for p in parts) / batches if batches > 0 else math.nan,
        mean_confidence=sum(p.conf_sum for p in parts) / confidences if confidences > 0 else math.nan,
        top_shifts=top_shifts, totals=merge_totals([p.totals for p in parts if p.totals is not None]))


def merge_histograms(snapshots: Sequence[HistogramSnapshot], max_buckets: int) -> HistogramSnapshot:
    """One base-2 exponential histogram holding all of ``snapshots``' values, by the kernel's
    rule (``ExpHistogram.merge``): the lowest of their scales, lowered further until the
    populated index range fits ``max_buckets``; bucket counts add. Recording every value in
    one histogram ends at the same scale with the same counts (a histogram's scale is the
    highest at which its range fits), so its quantiles are the merged one's."""
    if len(snapshots) == 1:
        return snapshots[0]
    scale = min(s.scale for s in snapshots)
    ends = []  # each histogram's first and last non-empty index, at ``scale``
    for s in snapshots:
        nz = np.flatnonzero(np.asarray(s.bucket_counts))
        if len(nz):
            shift = s.scale - scale
            ends.append(((s.offset + int(nz[0])) >> shift, (s.offset + int(nz[-1])) >> shift))
    counts = np.zeros(0, dtype=np.int64)
    offset = 0
    if ends:
        lo, hi = min(a for a, _ in ends), max(b for _, b in ends)
        change = 0
        while (hi >> change) - (lo >> change) + 1 > max_buckets:
            change += 1
        scale -= change
        offset = lo >> change
        counts = np.zeros((hi >> change) - offset + 1, dtype=np.int64)
        for s in snapshots:
            c = np.asarray(s.bucket_counts, dtype=np.int64)
            if len(c):
                np.add.at(counts, ((s.offset + np.arange(len(c))) >> (s.scale - scale)) - offset, c)
    count = sum(s.count for s in snapshots)
    mins = [s.min for s in snapshots if s.count and not math.isnan(s.min)]
    maxes = [s.max for s in snapshots if s.count and not math.isnan(s.max)]
    return HistogramSnapshot(scale, offset, counts, sum(s.zero_count for s in snapshots), count,
                             sum(s.sum for s in snapshots), min(mins) if mins else math.nan,
                             max(maxes) if maxes else math.nan, min(s.start_time_ns for s in snapshots),
                             max(s.time_ns for s in snapshots))


def merge_totals(totals: Sequence[VersionTotals]) -> VersionTotals | None:
    """Several processes' running totals of one version as one: counts and times add, executions
    of the same batch size add, the last answer is the latest of theirs."""
    if len(totals) <= 1:
        return totals[0] if totals else None

    def phase(pick: Callable[[VersionTotals], PhaseTotal]) -> PhaseTotal:
        return PhaseTotal(sum(pick(t).count for t in totals), sum(pick(t).ns for t in totals))

    batches: dict[int, tuple[int, int]] = {}
    for t in totals:
        for b in t.batches:
            executions, compute_ns = batches.get(b.batch_size, (0, 0))
            batches[b.batch_size] = (executions + b.executions, compute_ns + b.compute_ns)
    return VersionTotals(phase(lambda t: t.success), phase(lambda t: t.fail), phase(lambda t: t.queue),
                         phase(lambda t: t.compute), sum(t.rows for t in totals), sum(t.executions for t in totals),
                         tuple(BatchSizeTotal(size, n, ns) for size, (n, ns) in sorted(batches.items())),
                         max(t.last_unix_ms for t in totals))


def merge_windows(windows: Sequence[WindowHistogram], max_buckets: int) -> WindowHistogram | None:
    """Windows of several processes as one: histograms merged, the lowest ``lo``, the highest ``hi``."""
    if not windows:
        return None
    if len(windows) == 1:
        return windows[0]
    return WindowHistogram(merge_histograms([w.histogram for w in windows], max_buckets),
                           min(w.lo for w in windows), max(w.hi for w in windows))


# -- windows from cumulative snapshots (the GetStats reader) ---------------------------------

@dataclasses.dataclass(frozen=True)
class Cumulative:
    """One version's cumulative state as the GetStats reader needs it, at ``time_ns``."""

    time_ns: int
    requests: int                 # records folded so far: unchanged means nothing else changed
    latency: HistogramSnapshot    # end to end, every status and call merged
    queue: HistogramSnapshot
    compute: HistogramSnapshot
    batch_count: int              # requests that reached an execution ...
    batch_sum: float              # ... and the rows of the batches they ran in
    conf_n: int                   # answers with a confidence, and its sum
    conf_sum: float


def _hist_snapshot(h, start_ns: int, now_ns: int) -> HistogramSnapshot:
    d = h.snapshot()
    return HistogramSnapshot(d["scale"], d["offset"], d["bucket_counts"], int(d["zero_count"]), int(d["count"]),
                             float(d["sum"]), float(d["min"]), float(d["max"]), start_ns, now_ns)


def cumulative(st: ModelTelemetry, now_ns: int) -> Cumulative:
    """The version's state now (call under the hub's lock: the aggregator writes it)."""
    batch = st.merged("batch_size")
    start = st.start_ns
    return Cumulative(
        now_ns, int(st.counters.total_requests), _hist_snapshot(st.merged("e2e"), start, now_ns),
        _hist_snapshot(st.merged("queue"), start, now_ns), _hist_snapshot(st.merged("compute"), start, now_ns),
        int(batch.count), float(batch.sum), st.conf_n, st.conf_sum)


def _lower_boundary(index: int, scale: int) -> float:
    """``base ** index`` at ``scale`` (as the kernel's expmap computes it); inf past the double range."""
    try:
        if scale <= 0:
            return math.ldexp(1.0, index << -scale)
        q = index >> scale
        return math.ldexp(2.0 ** math.ldexp(index - (q << scale), -scale), q)
    except OverflowError:
        return math.inf


def _quantile(h: HistogramSnapshot, cum: np.ndarray, q: float, lo: float, hi: float) -> float:
    """The kernel's rule (``ExpHistogram.quantile``) on a snapshot: the value at rank
    ceil(q * count), answered with its bucket's point ``2 L b / (1 + b)``, within [lo, hi]."""
    rank = min(max(math.ceil(q * h.count), 1), h.count)
    if rank <= h.zero_count:
        return 0.0
    i = int(np.searchsorted(cum, rank - h.zero_count))
    if i >= len(cum):
        return hi
    base = _lower_boundary(1, h.scale)
    rep = 2.0 * _lower_boundary(h.offset + i, h.scale) / (1.0 + 1.0 / base)
    return min(max(rep, lo), hi)


def window_summary(cur: HistogramSnapshot, prev: HistogramSnapshot | None) -> LatencySummary:
    """Percentiles (ms) of what ``cur`` holds beyond ``prev`` (None: all of it)."""
    return summarize(window_histogram(cur, prev))


def window_histogram(cur: HistogramSnapshot, prev: HistogramSnapshot | None) -> WindowHistogram | None:
    """What ``cur`` holds beyond ``prev`` (None: all of it); None when that is nothing.

    Two cumulative states do not say the window's extremes, but they bound them: when the
    all-time max rose since ``prev`` the window holds it (exact); otherwise the window's max
    lies in its highest non-empty bucket, whose upper edge (capped by the all-time max) is
    the bound: never below the true max, above it by at most the bucket's relative width.
    The min likewise, from below; quantiles are clamped to [lo, hi] as the kernel does.
    """
    if prev is None or prev.count == 0:
        h, lo, hi = cur, cur.min, cur.max
    else:
        h = subtract(cur, prev)
        if h.count <= 0:
            return None
        counts = np.asarray(h.bucket_counts)
        top = h.offset + len(counts)  # (subtract trims empty buckets at both ends)
        if cur.max > prev.max:
            hi = cur.max
        else:
            hi = min(cur.max, _lower_boundary(top, h.scale)) if len(counts) else 0.0
        if cur.min < prev.min:
            lo = cur.min
        else:
            lo = 0.0 if h.zero_count else max(cur.min, _lower_boundary(h.offset, h.scale))
    if h.count == 0:
        return None
    return WindowHistogram(h, lo, hi)


def summarize(w: WindowHistogram | None) -> LatencySummary:
    """p50, p90, p99 and the max bound (ms) of a window (NaN where it is empty)."""
    if w is None or w.histogram.count == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    h, lo, hi = w.histogram, w.lo, w.hi
    cum = np.cumsum(np.asarray(h.bucket_counts, dtype=np.int64))
    return LatencySummary(int(h.count), _quantile(h, cum, 0.5, lo, hi) * 1e3, _quantile(h, cum, 0.9, lo, hi) * 1e3,
                          _quantile(h, cum, 0.99, lo, hi) * 1e3, hi * 1e3)


class StatsHistory:
    """The GetStats reader's own history: each version's :class:`Cumulative` state once per
    ``tick_s`` (call :meth:`tick` after each aggregation, under the hub's lock).

    Memory is bounded per version: the snapshots of the last ``fine_s`` seconds, older ones
    ``coarse_step_s`` apart, and one at or before the start of the longest window (with the
    defaults at most 61 + 24 + 1 = 86 snapshots, each three histograms of at most
    ``histogram_max_buckets`` 64-bit counts: under 0.4 MB per version at 160 buckets; a
    snapshot of a version that took no requests since the one before shares its histograms).
    So a window up to ``fine_s`` starts at most ``tick_s`` (plus one aggregation interval)
    before it should, a longer one at most ``coarse_step_s`` plus that; a window reaching
    back before a version's first snapshot covers everything since it was registered.
    """

    def __init__(self, *, max_window_s: float = MAX_WINDOW_S, tick_s: float = 1.0, fine_s: float = 60.0,
                 coarse_step_s: float = 10.0) -> None:
        self._max_window_ns = int(max_window_s * 1e9)
        self._tick_ns = int(tick_s * 1e9)
        self._fine_ns = int(fine_s * 1e9)
        self._coarse_step_ns = int(coarse_step_s * 1e9)
        self._last_tick_ns: int | None = None
        # telemetry id -> (recent snapshots, older thinned ones), oldest first
        self._fine: dict[int, collections.deque[Cumulative]] = {}
        self._coarse: dict[int, collections.deque[Cumulative]] = {}

    def tick(self, models: Sequence[ModelTelemetry], now_ns: int) -> None:
        if self._last_tick_ns is not None and now_ns - self._last_tick_ns < self._tick_ns:
            return
        self._last_tick_ns = now_ns
        for st in models:
            fine = self._fine.setdefault(st.model_id, collections.deque())
            coarse = self._coarse.setdefault(st.model_id, collections.deque())
            newest = fine[-1] if fine else coarse[-1] if coarse else None
            # One snapshot every tick, so the thinning below never leaves a gap wider than a
            # coarse step plus a tick; an idle version's shares its predecessor's histograms.
            if newest is not None and newest.requests == int(st.counters.total_requests):
                fine.append(dataclasses.replace(newest, time_ns=now_ns))
            else:
                fine.append(cumulative(st, now_ns))
            while fine and fine[0].time_ns < now_ns - self._fine_ns:
                old = fine.popleft()
                if not coarse or old.time_ns - coarse[-1].time_ns >= self._coarse_step_ns:
                    coarse.append(old)
            # keep the newest snapshot at or before the longest window's start (the window begins there)
            while len(coarse) >= 2 and coarse[1].time_ns <= now_ns - self._max_window_ns:
                coarse.popleft()

    def at(self, telemetry_id: int, t_ns: int) -> Cumulative | None:
        """The newest snapshot taken at or before ``t_ns`` (None: none that old)."""
        for tier in (self._fine.get(telemetry_id), self._coarse.get(telemetry_id)):
            for snap in reversed(tier or ()):
                if snap.time_ns <= t_ns:
                    return snap
        return None

    def snapshots(self, telemetry_id: int) -> int:
        """How many snapshots of the version are kept (the documented bound)."""
        return len(self._fine.get(telemetry_id, ())) + len(self._coarse.get(telemetry_id, ()))


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
