# cython: language_level=3
"""Per-second ring of throughput counters (requests, rows, errors, degraded).

Each of ``slots`` slots holds one wall second (``t_ns // 1e9`` of the monotonic clock);
a rate over the last ``window_s`` seconds sums the slots of that window. Events older than
the ring are counted in the totals only.
"""
from libc.stdlib cimport calloc, free
from libc.stdint cimport int64_t

import numpy as np

cdef int64_t NS_PER_S = 1000000000


cdef class WindowedCounters:
    """Counters per second over the last ``slots`` seconds, plus running totals."""

    def __cinit__(self, int slots=300):
        cdef int i
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self._stamp = <int64_t*>calloc(slots, sizeof(int64_t))
        self._values = <int64_t*>calloc(slots * 4, sizeof(int64_t))
        if self._stamp == NULL or self._values == NULL:
            raise MemoryError()
        for i in range(slots):
            self._stamp[i] = -1
        self.slots = slots
        self._latest_s = -1
        self._first_ns = -1

    def __dealloc__(self):
        free(self._stamp)
        free(self._values)

    cdef void add(self, int64_t t_ns, int64_t requests, int64_t rows, int64_t errors,
                  int64_t degraded) noexcept nogil:
        cdef int64_t sec = t_ns // NS_PER_S
        cdef int64_t slot = sec % self.slots
        cdef int64_t* v
        self.total_requests += requests
        self.total_rows += rows
        self.total_errors += errors
        self.total_degraded += degraded
        if self._first_ns < 0 or t_ns < self._first_ns:
            self._first_ns = t_ns
        if sec > self._latest_s:
            self._latest_s = sec
        elif sec <= self._latest_s - self.slots:
            return
        v = &self._values[slot * 4]
        if self._stamp[slot] != sec:
            if self._stamp[slot] > sec:
                return
            self._stamp[slot] = sec
            v[0] = 0
            v[1] = 0
            v[2] = 0
            v[3] = 0
        v[0] += requests
        v[1] += rows
        v[2] += errors
        v[3] += degraded

    def increment(self, int64_t t_ns, int64_t requests=1, int64_t rows=0, int64_t errors=0,
                  int64_t degraded=0):
        """Count events at monotonic time ``t_ns`` (t_ns >= 0)."""
        if t_ns < 0:
            raise ValueError("t_ns must be >= 0")
        self.add(t_ns, requests, rows, errors, degraded)

    def add_arrays(self, const int64_t[::1] t_ns, const int64_t[::1] rows,
                   const int64_t[::1] errors, const int64_t[::1] degraded):
        """Count one request per element (same lengths; negative times are skipped)."""
        cdef Py_ssize_t i
        cdef Py_ssize_t n = t_ns.shape[0]
        if rows.shape[0] != n or errors.shape[0] != n or degraded.shape[0] != n:
            raise ValueError("arrays must have the same length")
        with nogil:
            for i in range(n):
                if t_ns[i] >= 0:
                    self.add(t_ns[i], 1, rows[i], errors[i], degraded[i])

    def window_sums(self, double window_s, int64_t now_ns):
        """Sums (requests, rows, errors, degraded) over the seconds (now - window_s, now]
        and the covered duration in seconds: min(window_s, time since the first event),
        at least 1 s.
        """
        cdef int64_t now_s
        cdef int64_t w
        cdef int64_t i
        cdef int64_t s
        cdef double covered
        # floor division whatever the build's division semantics (cdivision on or off)
        if now_ns >= 0:
            now_s = now_ns // NS_PER_S
        else:
            now_s = -(-(now_ns + 1) // NS_PER_S) - 1
        # clamped before the conversion: converting NaN or a double beyond int64_t's range
        # (inf) to an integer is undefined behaviour
        if window_s >= <double>self.slots:
            w = self.slots
        elif not window_s >= 1.0:       # also NaN
            w = 1
        else:
            w = <int64_t>(window_s + 0.999999)
            if w > self.slots:
                w = self.slots
        sums = np.zeros(4, dtype=np.int64)
        cdef int64_t[::1] out = sums
        for i in range(self.slots):
            s = self._stamp[i]
            if s > now_s - w and s <= now_s:
                out[0] += self._values[i * 4]
                out[1] += self._values[i * 4 + 1]
                out[2] += self._values[i * 4 + 2]
                out[3] += self._values[i * 4 + 3]
        covered = <double>w
        if self._first_ns >= 0 and (now_ns - self._first_ns) / 1e9 < covered:
            covered = (now_ns - self._first_ns) / 1e9
        if covered < 1.0:
            covered = 1.0
        return sums, covered

    def rates(self, double window_s, int64_t now_ns):
        """(requests/s, rows/s, errors/s, degraded/s) over the last ``window_s`` seconds."""
        sums, covered = self.window_sums(window_s, now_ns)
        return tuple(float(x) / covered for x in sums)

    def totals(self):
        """Running totals (requests, rows, errors, degraded) since creation."""
        return (self.total_requests, self.total_rows, self.total_errors, self.total_degraded)
