"""Deadlines: how long the requested model may take for one request.

The client's gRPC deadline is never exceeded. A model's ``default_timeout_ms`` applies to
clients that send none; ``attempt_timeout_ms`` caps the requested model's share so the
fallback chain still has time left. The batcher drops queued requests whose deadline has
passed before they reach the model.
"""
from __future__ import annotations

from .config import DeadlineConfig


def client_deadline_ns(config: DeadlineConfig, client_deadline_ns: int, received_ns: int) -> int:
    """The request's overall deadline (monotonic ns; 0: none)."""
    if client_deadline_ns:
        return client_deadline_ns
    if config.default_timeout_ms is not None:
        return received_ns + config.default_timeout_ms * 1_000_000
    return 0


def attempt_deadline_ns(config: DeadlineConfig, overall_ns: int, now_ns: int) -> int:
    """Deadline for the requested model's attempt: the overall one, or sooner."""
    if config.attempt_timeout_ms is None:
        return overall_ns
    capped = now_ns + config.attempt_timeout_ms * 1_000_000
    return capped if not overall_ns else min(overall_ns, capped)


def expired(deadline_ns: int, now_ns: int) -> bool:
    return bool(deadline_ns) and deadline_ns <= now_ns
