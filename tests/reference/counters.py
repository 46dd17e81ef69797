"""Reference twin of ``gateway.kernels.WindowedCounters``: per-second counters of the last
``slots`` seconds plus running totals.

Every accepted event is kept in a dict {second: [requests, rows, errors, degraded]}, the
second being ``t_ns // 10**9``. The ring remembers the ``slots`` seconds up to the latest one
seen: an event at or before ``latest - slots`` (latest including the event itself) is
counted in the totals only, and ``window_sums`` looks only at remembered seconds.
"""
from __future__ import annotations

import math

import numpy as np

from tests.reference._cy import c_double, c_int

NS_PER_S = 1_000_000_000


def _int64(v):
    return c_int(v, 64, True)


class WindowedCounters:
    """Counters per second over the last ``slots`` seconds, plus running totals."""

    def __init__(self, slots=300):
        slots = c_int(slots, 32, True)
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self._slots = slots
        self._seconds: dict[int, list[int]] = {}
        self._latest_s = -1
        self._first_ns = -1
        self._totals = [0, 0, 0, 0]

    slots = property(lambda self: self._slots)
    total_requests = property(lambda self: self._totals[0])
    total_rows = property(lambda self: self._totals[1])
    total_errors = property(lambda self: self._totals[2])
    total_degraded = property(lambda self: self._totals[3])

    def _add(self, t_ns, values):
        sec = t_ns // NS_PER_S
        self._totals = [a + b for a, b in zip(self._totals, values)]
        if self._first_ns < 0 or t_ns < self._first_ns:
            self._first_ns = t_ns
        self._latest_s = max(self._latest_s, sec)
        if sec <= self._latest_s - self._slots:
            return                               # older than the ring: totals only
        kept = self._seconds.setdefault(sec, [0, 0, 0, 0])
        for i, v in enumerate(values):
            kept[i] += v

    def increment(self, t_ns, requests=1, rows=0, errors=0, degraded=0):
        """Count events at monotonic time ``t_ns`` (t_ns >= 0)."""
        t_ns = _int64(t_ns)
        values = [_int64(requests), _int64(rows), _int64(errors), _int64(degraded)]
        if t_ns < 0:
            raise ValueError("t_ns must be >= 0")
        self._add(t_ns, values)

    def add_arrays(self, t_ns, rows, errors, degraded):
        """Count one request per element (same lengths; negative times are skipped)."""
        arrays = []
        for a in (t_ns, rows, errors, degraded):
            view = memoryview(a)
            if view.ndim != 1 or view.format not in ("l", "q", "<q", "=q", "@q", "<l",
                                                       "=l", "@l") or view.itemsize != 8:
                raise ValueError(f"Buffer dtype mismatch, expected 'const int64_t' but got "
                                 f"'{view.format}'")
            if not view.c_contiguous:
                raise ValueError("ndarray is not C-contiguous")
            arrays.append(view.tolist())
        n = len(arrays[0])
        if any(len(a) != n for a in arrays[1:]):
            raise ValueError("arrays must have the same length")
        for t, r, e, d in zip(*arrays):
            if t >= 0:
                self._add(t, [1, r, e, d])

    def _window(self, window_s: float) -> int:
        """Whole seconds a window covers: window_s rounded up (within 1e-6), in [1, slots];
        NaN is 1."""
        if window_s >= self._slots:
            return self._slots
        if not window_s >= 1.0:
            return 1
        return min(self._slots, math.trunc(window_s + 0.999999))

    def window_sums(self, window_s, now_ns):
        """Sums (requests, rows, errors, degraded) over the seconds (now - window_s, now]
        and the covered duration in seconds: min(window_s, time since the first event),
        at least 1 s."""
        window_s, now_ns = c_double(window_s), _int64(now_ns)
        now_s = now_ns // NS_PER_S
        w = self._window(window_s)
        sums = np.zeros(4, dtype=np.int64)
        for sec, values in self._seconds.items():
            if now_s - w < sec <= now_s and sec > self._latest_s - self._slots:
                sums += np.array(values, dtype=np.int64)
        covered = float(w)
        if self._first_ns >= 0 and (now_ns - self._first_ns) / 1e9 < covered:
            covered = (now_ns - self._first_ns) / 1e9
        return sums, max(covered, 1.0)

    def rates(self, window_s, now_ns):
        """(requests/s, rows/s, errors/s, degraded/s) over the last ``window_s`` seconds."""
        sums, covered = self.window_sums(window_s, now_ns)
        return tuple(float(x) / covered for x in sums)

    def totals(self):
        """Running totals (requests, rows, errors, degraded) since creation."""
        return tuple(self._totals)
