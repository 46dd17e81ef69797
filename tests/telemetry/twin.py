"""Pure-Python twin of the exponential histogram (reference for the native kernel)."""
from __future__ import annotations

import math


def map_index(value: float, scale: int) -> int:
    frac, exp = math.frexp(value)
    e = exp - 1
    if frac == 0.5:
        return (e << scale) - 1 if scale > 0 else (e - 1) >> -scale
    if scale <= 0:
        return e >> -scale
    z = min(math.log(2.0 * frac) * 1.4426950408889634074, 0.99999999999999988898)
    return (e << scale) + math.floor(math.ldexp(z, scale))


class PyExpHistogram:
    def __init__(self, max_buckets: int = 160, max_scale: int = 20) -> None:
        self.max_buckets = max_buckets
        self.scale = max_scale
        self.buckets: dict[int, int] = {}
        self.zero_count = 0
        self.count = 0
        self.invalid = 0

    def add(self, v: float) -> None:
        if not (v >= 0.0) or math.isinf(v):
            self.invalid += 1
            return
        self.count += 1
        if v == 0.0:
            self.zero_count += 1
            return
        idx = map_index(v, self.scale)
        keys = list(self.buckets) + [idx]
        lo, hi = min(keys), max(keys)
        c = 0
        while (hi >> c) - (lo >> c) + 1 > self.max_buckets:
            c += 1
        if c:
            new: dict[int, int] = {}
            for k, n in self.buckets.items():
                new[k >> c] = new.get(k >> c, 0) + n
            self.buckets = new
            self.scale -= c
            idx >>= c
        self.buckets[idx] = self.buckets.get(idx, 0) + 1

    def dense(self) -> tuple[int, list[int]]:
        if not self.buckets:
            return 0, []
        lo, hi = min(self.buckets), max(self.buckets)
        return lo, [self.buckets.get(i, 0) for i in range(lo, hi + 1)]
