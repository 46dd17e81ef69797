"""Traffic splits: which version answers a request that names no version.

A :class:`TrafficSplit` holds a model's weights over its loaded versions, normalised, as
cumulative shares in version order. :meth:`TrafficSplit.choose` maps a number ``u`` in [0, 1)
to the version whose share covers it: a uniform random ``u`` for a request without a routing
key, and for one with a key, the CRC-32 of its UTF-8 bytes as a fraction of 2^32 (as Redis
Cluster places keys by a CRC), so the same key lands on the same version in every process for
as long as the split is unchanged, and moves only when the shares around its point move.
(BLAKE2b spread keys no better here and cost 0.5 us a key more.) Weights naming versions not loaded are
left out and the rest renormalised; no loaded version with a share: no split, the latest
version takes everything (the default). Choosing costs a hash (with a key) and a bisection
over at most a handful of versions (``bench/routing.py``; bench/RESULTS.md "Routing").

Splits are immutable; the registry swaps them whole, like its entries.
"""
from __future__ import annotations

import bisect
import random
import zlib
from collections.abc import Mapping

_TWO_32 = float(1 << 32)


def version_key(version: str) -> tuple[int, int, str]:
    """Numeric versions sort numerically and after non-numeric ones."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def key_point(key: str) -> float:
    """Where a routing key falls in [0, 1): stable across processes and restarts."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) / _TWO_32


class TrafficSplit:
    __slots__ = ("versions", "shares", "_edges")

    def __init__(self, weights: Mapping[str, float]) -> None:
        total = float(sum(weights.values()))
        if not weights or total <= 0:
            raise ValueError("a traffic split needs a version with a share above 0")
        ordered = sorted((v for v, w in weights.items() if w > 0), key=version_key)
        self.versions: tuple[str, ...] = tuple(ordered)
        self.shares: dict[str, float] = {v: weights[v] / total for v in ordered}
        edges, acc = [], 0.0
        for v in ordered[:-1]:
            acc += self.shares[v]
            edges.append(acc)
        self._edges = edges       # the upper edge of every share but the last (which ends at 1)

    @classmethod
    def over(cls, weights: Mapping[str, float], loaded: Mapping[str, object]) -> "TrafficSplit | None":
        """The split of ``weights`` over the versions ``loaded``; None when none of those has a share."""
        usable = {v: w for v, w in weights.items() if v in loaded and w > 0}
        return cls(usable) if usable else None

    def choose(self, key: str = "") -> str:
        u = key_point(key) if key else random.random()
        return self.versions[bisect.bisect_right(self._edges, u)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrafficSplit) and self.shares == other.shares

    def __repr__(self) -> str:
        return "TrafficSplit(" + ", ".join(f"{v}: {s:.3f}" for v, s in self.shares.items()) + ")"
