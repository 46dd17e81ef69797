"""Admission: whether a request may join a model's queue, or is shed as overloaded right away.

Static limits (in-flight requests, queue depth) and an optional adaptive limit in the
style of Netflix's Gradient2: the limit follows ``limit * min(1, tolerance * long_rtt / rtt)
+ sqrt(limit)``, so it shrinks as soon as latency rises above its long-run average
(requests start queueing) and grows back while it doesn't. Overload is refused early
instead of waiting in a queue until it times out.
"""
from __future__ import annotations

import math

from .config import AdaptiveLimitConfig, AdmissionConfig


class GradientLimiter:
    """Concurrency limit from measured latency. Not thread-safe: event loop only."""

    def __init__(self, config: AdaptiveLimitConfig):
        self.config = config
        self.limit = float(config.initial_limit)
        self.long_rtt_s = 0.0
        self._samples = 0

    def on_sample(self, rtt_s: float, in_flight: int) -> None:
        """One finished request: its latency and how many were in flight when it started."""
        c = self.config
        if rtt_s <= 0:
            return
        self._samples += 1
        if self._samples <= 10:  # warm-up: a plain average
            self.long_rtt_s += (rtt_s - self.long_rtt_s) / self._samples
        else:
            self.long_rtt_s += (rtt_s - self.long_rtt_s) / c.long_window
        if self.long_rtt_s / rtt_s > 2:  # latency fell a lot: let the long average catch up
            self.long_rtt_s *= 0.95
        if in_flight < self.limit / 2:  # app-limited: no evidence the limit could be higher
            return
        gradient = max(0.5, min(1.0, c.rtt_tolerance * self.long_rtt_s / rtt_s))
        queue_allowance = math.sqrt(self.limit)
        target = self.limit * gradient + queue_allowance
        limit = self.limit * (1 - c.smoothing) + target * c.smoothing
        self.limit = max(float(c.min_limit), min(float(c.max_limit), limit))


class Admission:
    """Counts what this model version has admitted and not yet answered."""

    def __init__(self, config: AdmissionConfig):
        self.config = config
        self.limiter = GradientLimiter(config.adaptive) if config.adaptive.enabled else None
        self.in_flight = 0
        self.shed = 0

    @property
    def enabled(self) -> bool:
        c = self.config
        return c.max_in_flight is not None or c.max_queue_depth is not None or self.limiter is not None

    def limit(self) -> int | None:
        """The in-flight limit in force now (the smaller of the static and adaptive ones)."""
        limits = []
        if self.config.max_in_flight is not None:
            limits.append(self.config.max_in_flight)
        if self.limiter is not None:
            limits.append(int(self.limiter.limit))
        return min(limits) if limits else None

    def try_acquire(self, queue_depth: int) -> bool:
        c = self.config
        limit = self.limit()
        if (limit is not None and self.in_flight >= limit) or \
                (c.max_queue_depth is not None and queue_depth >= c.max_queue_depth):
            self.shed += 1
            return False
        self.in_flight += 1
        return True

    def release(self, rtt_s: float | None, in_flight_at_start: int) -> None:
        """``rtt_s``: the latency to learn from (None when the call says nothing about it)."""
        self.in_flight -= 1
        if self.limiter is not None and rtt_s is not None:
            self.limiter.on_sample(rtt_s, in_flight_at_start)
