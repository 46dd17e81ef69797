"""Refused requests, counted by why: the data plane's tally of every request it answered with
an error, and of those a protocol adapter refused before they reached it (bytes that do not
parse, a tensor that cannot be decoded).

A count is keyed by (model, version, status, reason). The reason is a token from a fixed
vocabulary (:data:`gateway.api.errors.REJECT_REASONS`, or the fallback policy's reason for a
request it refused: ``timeout``, ``overloaded``, ``circuit_open``, ``outlier``...). The model
and version are kept only when the registry holds them (else ""), so a client naming
made-up models cannot grow the table: it holds at most (models x versions + 1) x statuses x
reasons keys, and never more than :data:`MAX_KEYS` (further new keys are counted under
``other``). Totals since the gateway started; read by GetStats (``rejected``), ``gateway
stats`` and the ``gateway.rejected`` metric.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from ..api import GatewayError
from ..api.stats import Rejected

MAX_KEYS = 4096


class Rejections:
    def __init__(self, known: Callable[[str, str], tuple[str, str]]) -> None:
        """``known(model, version)``: the pair as counted (its parts the registry does not hold
        replaced by "")."""
        self._known = known
        self._counts: dict[tuple[str, str, str, str], int] = {}
        self._lock = threading.Lock()   # written on the event loop, read by exporter threads

    def count(self, model: str, version: str, error: GatewayError, reason: str = "") -> None:
        model, version = self._known(model, version)
        key = (model, version, error.status.name, reason or error.reason)
        with self._lock:
            counts = self._counts
            if key not in counts and len(counts) >= MAX_KEYS:
                key = ("", "", error.status.name, "other")
            counts[key] = counts.get(key, 0) + 1

    def snapshot(self, model: str = "") -> tuple[Rejected, ...]:
        with self._lock:
            items = list(self._counts.items())
        return tuple(Rejected(m, v, s, r, n) for (m, v, s, r), n in sorted(items) if not model or m == model)


def added(*groups: tuple[Rejected, ...]) -> tuple[Rejected, ...]:
    """Several tallies (of the workers of ``gateway serve --workers``) as one: counts of the same
    (model, version, status, reason) add."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for group in groups:
        for r in group:
            key = (r.model, r.version, r.status, r.reason)
            counts[key] = counts.get(key, 0) + r.requests
    return tuple(Rejected(m, v, s, r, n) for (m, v, s, r), n in sorted(counts.items()))
