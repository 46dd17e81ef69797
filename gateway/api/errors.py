"""Errors the core raises, with protocol-neutral status codes.

The numeric values are gRPC's (google.rpc.Code) so adapters map them one to one.
"""
from __future__ import annotations

import enum

from .text import bounded


class Status(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class GatewayError(Exception):
    """A request failed with a definite status; ``message`` names what was wrong.

    ``retry_after_ms`` is set where retrying later makes sense (overload); adapters
    turn it into ``grpc-retry-pushback-ms``. ``message`` is cut to
    :data:`gateway.api.text.MESSAGE_LIMIT_BYTES` (see :mod:`gateway.api.text` for why).
    ``reason`` is a short fixed token of what was wrong (``dtype``, ``shape``,
    ``unknown_model``...: :data:`REJECT_REASONS`), the label refused requests are counted by;
    without one, the status's name in lower case.
    """

    def __init__(self, status: Status, message: str, *, retry_after_ms: int | None = None, reason: str = ""):
        message = bounded(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.reason = reason or status.name.lower()

    def __repr__(self) -> str:
        return f"GatewayError({self.status.name}, {self.message!r})"


# Why requests are refused, as counted (``gateway.rejected``, GetStats ``rejected``): a fixed
# vocabulary, so the counts stay bounded whatever clients send. Requests the fallback policy
# refused are counted by its reason (policy.reasons: timeout, overloaded, circuit_open, ...).
REJECT_REASONS: tuple[str, ...] = (
    "malformed",         # the bytes do not parse, or a tensor's encoding is inconsistent
    "too_large",         # over a size limit (message, tensor, counts of inputs/outputs/parameters)
    "no_model",          # the request names no model
    "unknown_model", "unknown_version", "unavailable",
    "missing_input", "unexpected_input", "dtype", "shape", "empty_batch", "rows_mismatch",
    "unknown_output",
    "inflight_bytes",    # the payload bytes admitted and unanswered would pass their bound
    "queue_full", "deadline", "unloading",
)


def invalid(message: str, reason: str = "") -> GatewayError:
    return GatewayError(Status.INVALID_ARGUMENT, message, reason=reason)


def not_found(message: str, reason: str = "") -> GatewayError:
    return GatewayError(Status.NOT_FOUND, message, reason=reason)
