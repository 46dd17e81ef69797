# cython: language_level=3
"""Base-2 exponential histogram (OpenTelemetry ExponentialHistogram data model).

Fixed memory: ``max_buckets`` counters in a circular buffer. Recording starts at scale 20
(like the OTel SDK) and downscales when the populated index range would not fit.

Error bound: at scale ``s`` the bucket base is ``b = 2**(2**-s)``; a quantile is answered
with the point ``2*L*b/(1+b)`` of its bucket ``(L, L*b]`` (clamped to [min, max]), whose
relative error against any value in the bucket is at most ``(b-1)/(b+1)``.

Thread safety: every method runs with the GIL held and makes no Python calls while it
mutates state (``record_array`` releases the GIL, so do not share one histogram between
a ``record_array`` caller and other writers without a lock).
"""
from libc.math cimport ceil, INFINITY, NAN
from libc.stdlib cimport calloc, free
from libc.string cimport memset
from libc.stdint cimport uint64_t

import numpy as np

from expmap cimport map_index, lower_boundary

cdef class ExpHistogram:
    """Exponential histogram of non-negative finite values.

    NaN, negative and infinite values are rejected and counted in ``invalid_count``.
    Zero (and -0.0) goes to ``zero_count``.
    """

    def __cinit__(self, int max_buckets=160, int max_scale=20):
        if max_buckets < 2:
            raise ValueError("max_buckets must be >= 2")
        if not -10 <= max_scale <= 20:
            raise ValueError("max_scale must be in [-10, 20]")
        self._buckets = <uint64_t*>calloc(max_buckets, sizeof(uint64_t))
        self._spare = <uint64_t*>calloc(max_buckets, sizeof(uint64_t))
        if self._buckets == NULL or self._spare == NULL:
            raise MemoryError()
        self._max_buckets = max_buckets
        self._max_scale = max_scale
        self._clear()

    def __dealloc__(self):
        free(self._buckets)
        free(self._spare)

    cdef void _clear(self) noexcept:
        memset(self._buckets, 0, self._max_buckets * sizeof(uint64_t))
        self.scale = self._max_scale
        self._base = 0
        self._start = 0
        self._end = 0
        self._used = False
        self.count = 0
        self.zero_count = 0
        self.invalid_count = 0
        self.sum = 0.0
        self.min = INFINITY
        self.max = -INFINITY

    @property
    def max_buckets(self):
        return self._max_buckets

    @property
    def offset(self):
        """Index of the first bucket in ``bucket_counts()`` (0 when empty)."""
        return self._start if self._used else 0

    cdef long long _slot(self, long long index) noexcept nogil:
        cdef long long pos = index - self._base
        if pos < 0:
            pos += self._max_buckets
        elif pos >= self._max_buckets:
            pos -= self._max_buckets
        return pos

    cdef void _add_index(self, long long index, uint64_t n) noexcept nogil:
        # caller guarantees the widened range fits in _max_buckets
        if not self._used:
            self._used = True
            self._base = index
            self._start = index
            self._end = index
        elif index < self._start:
            self._start = index
        elif index > self._end:
            self._end = index
        self._buckets[self._slot(index)] += n

    cdef int _needed_change(self, long long lo, long long hi) noexcept nogil:
        cdef int change = 0
        while (hi >> change) - (lo >> change) + 1 > self._max_buckets:
            change += 1
        return change

    cdef void _downscale(self, int change) noexcept nogil:
        cdef long long idx
        cdef long long new_start
        cdef long long new_end
        cdef uint64_t* tmp
        if change <= 0:
            return
        self.scale -= change
        if not self._used:
            return
        tmp = self._spare
        memset(tmp, 0, self._max_buckets * sizeof(uint64_t))
        new_start = self._start >> change
        new_end = self._end >> change
        for idx in range(self._start, self._end + 1):
            tmp[(idx >> change) - new_start] += self._buckets[self._slot(idx)]
        self._spare = self._buckets
        self._buckets = tmp
        self._base = new_start
        self._start = new_start
        self._end = new_end

    cdef int record(self, double value) noexcept nogil:
        """Record one value; returns 0 when it was rejected."""
        cdef long long idx
        cdef int change
        if not (value >= 0.0) or value == INFINITY:
            self.invalid_count += 1
            return 0
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value == 0.0:
            self.zero_count += 1
            return 1
        idx = map_index(value, self.scale)
        if self._used and (idx < self._start or idx > self._end):
            change = self._needed_change(
                idx if idx < self._start else self._start,
                idx if idx > self._end else self._end)
            if change > 0:
                self._downscale(change)
                idx >>= change
        self._add_index(idx, 1)
        return 1

    def add(self, double value):
        """Record one value (Python surface); returns False when it was rejected."""
        return self.record(value) != 0

    cpdef void record_array(self, const double[::1] values):
        """Record every element of a contiguous float64 array, read-only ones too (GIL
        released)."""
        cdef Py_ssize_t i
        cdef Py_ssize_t n = values.shape[0]
        with nogil:
            for i in range(n):
                self.record(values[i])

    cpdef double quantile(self, double q):
        """Value at rank ceil(q * count) (1-based), within the documented relative error."""
        cdef uint64_t rank
        cdef uint64_t cum
        cdef long long idx
        cdef double lower
        cdef double base
        cdef double rep
        if self.count == 0 or q != q:
            return NAN
        if q <= 0.0:
            rank = 1
        elif q >= 1.0:
            rank = self.count
        else:
            rank = <uint64_t>ceil(q * <double>self.count)
            if rank < 1:
                rank = 1
        if rank <= self.zero_count:
            return 0.0
        cum = self.zero_count
        if self._used:
            base = lower_boundary(1, self.scale)
            for idx in range(self._start, self._end + 1):
                cum += self._buckets[self._slot(idx)]
                if cum >= rank:
                    lower = lower_boundary(idx, self.scale)
                    rep = 2.0 * lower / (1.0 + 1.0 / base)
                    if rep < self.min:
                        rep = self.min
                    if rep > self.max:
                        rep = self.max
                    return rep
        return self.max

    def relative_error(self):
        """Worst relative error of ``quantile`` at the current scale: (b-1)/(b+1)."""
        cdef double b = lower_boundary(1, self.scale)
        if b == INFINITY:
            return 1.0
        return (b - 1.0) / (b + 1.0)

    cpdef void merge(self, ExpHistogram other):
        """Add ``other`` into this histogram (scales may differ; the result takes the lower)."""
        cdef int s
        cdef int shift
        cdef long long lo
        cdef long long hi
        cdef long long idx
        cdef uint64_t n
        if other is None:   # a typed argument admits None: its fields would be read from None
            raise TypeError("merge() argument must be an ExpHistogram, not None")
        self.invalid_count += other.invalid_count
        if other.count == 0:
            return
        self.count += other.count
        self.zero_count += other.zero_count
        self.sum += other.sum
        if other.min < self.min:
            self.min = other.min
        if other.max > self.max:
            self.max = other.max
        if not other._used:
            return
        s = self.scale if self.scale < other.scale else other.scale
        lo = other._start >> (other.scale - s)
        hi = other._end >> (other.scale - s)
        if self._used:
            lo = min(lo, self._start >> (self.scale - s))
            hi = max(hi, self._end >> (self.scale - s))
        s -= self._needed_change(lo, hi)
        self._downscale(self.scale - s)
        shift = other.scale - s
        for idx in range(other._start, other._end + 1):
            n = other._buckets[other._slot(idx)]
            if n:
                self._add_index(idx >> shift, n)

    def bucket_counts(self):
        """Positive bucket counts from index ``offset`` up (numpy uint64)."""
        cdef long long idx
        if not self._used:
            return np.zeros(0, dtype=np.uint64)
        out = np.empty(self._end - self._start + 1, dtype=np.uint64)
        cdef uint64_t[::1] view = out
        for idx in range(self._start, self._end + 1):
            view[idx - self._start] = self._buckets[self._slot(idx)]
        return out

    def snapshot(self):
        """Cumulative state as a dict: scale, offset, bucket_counts (a copy), zero_count, count,
        sum, min and max (NaN while empty), invalid_count.

        The kernel keeps no per-reader state: a reader wanting deltas keeps its previous
        snapshot and subtracts (shift the older buckets by the scale difference first).
        """
        return dict(scale=self.scale, offset=self.offset, bucket_counts=self.bucket_counts(),
                    zero_count=self.zero_count, count=self.count, sum=self.sum,
                    min=self.min if self.count else NAN,
                    max=self.max if self.count else NAN,
                    invalid_count=self.invalid_count)

    def copy(self):
        """An independent histogram with the same content."""
        cdef ExpHistogram h = ExpHistogram(self._max_buckets, self._max_scale)
        h.merge(self)
        h.scale = min(h.scale, self.scale)
        return h

    def reset(self):
        """Forget everything (scale goes back to max_scale)."""
        self._clear()
