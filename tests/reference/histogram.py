"""Reference twin of ``gateway.kernels.ExpHistogram`` (base-2 exponential histogram, the
OpenTelemetry ExponentialHistogram data model), with the bucket index of a value.

Buckets are a dict {index: count}. At scale ``s`` bucket ``i`` holds ``(b**i, b**(i+1)]``,
``b = 2**(2**-s)``. A value whose index would widen the populated range past
``max_buckets`` first lowers the scale by the smallest ``c`` that makes it fit (index
``i`` becomes ``i >> c``). Zero goes to ``zero_count``; NaN, negative and infinite values
are rejected (``invalid_count``). Cumulative state only: no delta bookkeeping.
"""
from __future__ import annotations

import math

import numpy as np

from tests.reference._cy import c_double, c_int

INV_LN2 = 1.4426950408889634074          # 1 / ln 2, as the C code spells it
ONE_MINUS_ULP = 0.99999999999999988898   # the largest double below 1


def map_index(value: float, scale: int) -> int:
    """Bucket index of a finite ``value`` > 0 at ``scale``: value = f * 2**e with f in
    [1, 2); exact powers of two are the upper boundary of the bucket below."""
    frac, exp = math.frexp(value)          # value = frac * 2**exp, frac in [0.5, 1)
    e = exp - 1
    if frac == 0.5:
        return (e << scale) - 1 if scale > 0 else (e - 1) >> -scale
    if scale <= 0:
        return e >> -scale
    z = min(math.log(2.0 * frac) * INV_LN2, ONE_MINUS_ULP)
    return (e << scale) + math.floor(math.ldexp(z, scale))


def lower_boundary(index: int, scale: int) -> float:
    """``b**index`` (the exclusive lower end of bucket ``index``), inf past the double range."""
    try:
        if scale <= 0:
            return math.ldexp(1.0, index << -scale)
        q, r = index >> scale, index & ((1 << scale) - 1)
        return math.ldexp(2.0 ** math.ldexp(r, -scale), q)
    except OverflowError:
        return math.inf


def _fits(lo: int, hi: int, max_buckets: int) -> int:
    """Smallest c >= 0 with (hi >> c) - (lo >> c) + 1 <= max_buckets."""
    c = 0
    while (hi >> c) - (lo >> c) + 1 > max_buckets:
        c += 1
    return c


class ExpHistogram:
    """Exponential histogram of non-negative finite values."""

    def __init__(self, max_buckets=160, max_scale=20):
        max_buckets, max_scale = c_int(max_buckets, 32, True), c_int(max_scale, 32, True)
        if max_buckets < 2:
            raise ValueError("max_buckets must be >= 2")
        if not -10 <= max_scale <= 20:
            raise ValueError("max_scale must be in [-10, 20]")
        self._max_buckets = max_buckets
        self._max_scale = max_scale
        self.reset()

    def reset(self):
        """Forget everything (scale goes back to max_scale)."""
        self._scale = self._max_scale
        self._buckets: dict[int, int] = {}
        self._count = 0
        self._zero_count = 0
        self._invalid_count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    max_buckets = property(lambda self: self._max_buckets)
    scale = property(lambda self: self._scale)
    count = property(lambda self: self._count)
    zero_count = property(lambda self: self._zero_count)
    invalid_count = property(lambda self: self._invalid_count)
    sum = property(lambda self: self._sum)
    min = property(lambda self: self._min)
    max = property(lambda self: self._max)

    @property
    def offset(self):
        """Index of the first bucket in ``bucket_counts()`` (0 when empty)."""
        return min(self._buckets) if self._buckets else 0

    def _downscale(self, change: int) -> None:
        merged: dict[int, int] = {}
        for k, n in self._buckets.items():
            merged[k >> change] = merged.get(k >> change, 0) + n
        self._buckets = merged
        self._scale -= change

    def add(self, value):
        """Record one value; returns False when it was rejected."""
        v = c_double(value)
        if not v >= 0.0 or v == math.inf:
            self._invalid_count += 1
            return False
        self._count += 1
        self._sum += v
        self._min = v if v < self._min else self._min
        self._max = v if v > self._max else self._max
        if v == 0.0:
            self._zero_count += 1
            return True
        idx = map_index(v, self._scale)
        if self._buckets:
            change = _fits(min(min(self._buckets), idx), max(max(self._buckets), idx),
                           self._max_buckets)
            if change:
                self._downscale(change)
                idx >>= change
        self._buckets[idx] = self._buckets.get(idx, 0) + 1
        return True

    def record_array(self, values):
        """Record every element of a 1-D C-contiguous float64 buffer, in order."""
        try:
            view = memoryview(values)
        except TypeError:
            raise TypeError(f"a bytes-like object is required, not "
                            f"'{type(values).__name__}'") from None
        if view.ndim != 1:
            raise ValueError(f"Buffer has wrong number of dimensions (expected 1, got "
                             f"{view.ndim})")
        if view.format not in ("d", "<d", "=d", "@d"):
            raise ValueError(f"Buffer dtype mismatch, expected 'double' but got "
                             f"'{view.format}'")
        if not view.c_contiguous:
            raise ValueError("ndarray is not C-contiguous")
        for v in view.tolist():
            self.add(v)

    def quantile(self, q):
        """Value at rank ceil(q * count): the point 2*L*b/(1+b) of the bucket (L, L*b]
        holding that rank, clamped to [min, max]; 0 within the zero count."""
        q = c_double(q)
        if self._count == 0 or q != q:
            return math.nan
        if q <= 0.0:
            rank = 1
        elif q >= 1.0:
            rank = self._count
        else:
            rank = max(1, math.ceil(q * float(self._count)))
        if rank <= self._zero_count:
            return 0.0
        cum = self._zero_count
        base = lower_boundary(1, self._scale)
        for idx in sorted(self._buckets):
            cum += self._buckets[idx]
            if cum >= rank:
                rep = 2.0 * lower_boundary(idx, self._scale) / (1.0 + 1.0 / base)
                return min(max(rep, self._min), self._max)
        return self._max

    def relative_error(self):
        """Worst relative error of ``quantile`` at the current scale: (b-1)/(b+1)."""
        b = lower_boundary(1, self._scale)
        return 1.0 if b == math.inf else (b - 1.0) / (b + 1.0)

    def merge(self, other):
        """Add ``other`` in; both go to the lower scale, lowered further if the union of
        their ranges does not fit."""
        if not isinstance(other, ExpHistogram):
            raise TypeError(f"Argument 'other' has incorrect type (expected ExpHistogram, "
                            f"got {type(other).__name__})")
        theirs = dict(other._buckets)            # other may be self
        self._invalid_count += other._invalid_count
        if other._count == 0:
            return
        self._count += other._count
        self._zero_count += other._zero_count
        self._sum += other._sum
        self._min = other._min if other._min < self._min else self._min
        self._max = other._max if other._max > self._max else self._max
        if not theirs:
            return
        s = min(self._scale, other._scale)
        keys = [k >> (other._scale - s) for k in theirs]
        keys += [k >> (self._scale - s) for k in self._buckets]
        s -= _fits(min(keys), max(keys), self._max_buckets)
        shift = other._scale - s
        self._downscale(self._scale - s)
        for k, n in theirs.items():
            self._buckets[k >> shift] = self._buckets.get(k >> shift, 0) + n

    def bucket_counts(self):
        """Positive bucket counts from index ``offset`` up (numpy uint64)."""
        if not self._buckets:
            return np.zeros(0, dtype=np.uint64)
        lo, hi = min(self._buckets), max(self._buckets)
        return np.array([self._buckets.get(i, 0) for i in range(lo, hi + 1)], dtype=np.uint64)

    def snapshot(self):
        """Cumulative state as a dict: scale, offset, bucket_counts, zero_count, count, sum,
        min and max (NaN while empty), invalid_count."""
        return dict(scale=self._scale, offset=self.offset, bucket_counts=self.bucket_counts(),
                    zero_count=self._zero_count, count=self._count, sum=self._sum,
                    min=self._min if self._count else math.nan,
                    max=self._max if self._count else math.nan,
                    invalid_count=self._invalid_count)

    def copy(self):
        """An independent histogram with the same content (and scale)."""
        h = ExpHistogram(self._max_buckets, self._max_scale)
        h.merge(self)
        h._scale = min(h._scale, self._scale)
        return h
