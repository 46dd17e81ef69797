"""Deadlines: how long the requested model may take for one request.

The client's gRPC deadline is never exceeded. A model's ``default_timeout_ms`` applies to
clients that send none; ``attempt_timeout_ms`` caps the requested model's share so the
fallback chain still has time left. The batcher drops queued requests whose deadline has
passed before they reach the model. A request cancelled by its protocol within
:func:`deadline_slack_ns` of its deadline ran out of time (:func:`ran_out`); sooner, it was
cancelled.
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


#: The least of :func:`deadline_slack_ns`. gRPC core's clocks tick in whole milliseconds and are
#: read once per round of work, so under load the time left that a client sends is milliseconds
#: stale: in tests/e2e/test_deadline_flood on a 2-core machine, client resets came up to 15 ms
#: before the server's deadline (most within 3 ms). A client that really cancels within this
#: much of its deadline is counted as out of time.
DEADLINE_SLACK_MIN_NS = 25_000_000


def deadline_slack_ns(deadline_ns: int, received_ns: int) -> int:
    """How much later than the client's deadline the one the server knows may be. gRPC sends
    the time left (``grpc-timeout``), rounded up to at most 1% of it (1 ms units below 1 s,
    10 ms below 10 s, 100 ms below 100 s, then seconds) and read from a clock that may lag by
    milliseconds; the server adds it to its arrival time, so the transit itself cancels out."""
    return max(DEADLINE_SLACK_MIN_NS, (deadline_ns - received_ns) // 100)


def ran_out(deadline_ns: int, received_ns: int, now_ns: int) -> bool:
    """Whether a request cancelled at ``now_ns`` was cancelled by its deadline. A client whose
    deadline fires resets the stream exactly as one that cancels does (HTTP/2 RST_STREAM CANCEL),
    and it does so up to :func:`deadline_slack_ns` before the deadline the server knows; a client
    that really cancels within that much of its deadline is counted as having run out."""
    return bool(deadline_ns) and now_ns >= deadline_ns - deadline_slack_ns(deadline_ns, received_ns)
