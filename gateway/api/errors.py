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
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    INTERNAL = 13
    UNAVAILABLE = 14


class GatewayError(Exception):
    """A request failed with a definite status; ``message`` names what was wrong.

    ``retry_after_ms`` is set where retrying later makes sense (overload); adapters
    turn it into ``grpc-retry-pushback-ms``. ``message`` is cut to
    :data:`gateway.api.text.MESSAGE_LIMIT_BYTES` (see :mod:`gateway.api.text` for why).
    """

    def __init__(self, status: Status, message: str, *, retry_after_ms: int | None = None):
        message = bounded(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_ms = retry_after_ms

    def __repr__(self) -> str:
        return f"GatewayError({self.status.name}, {self.message!r})"


def invalid(message: str) -> GatewayError:
    return GatewayError(Status.INVALID_ARGUMENT, message)


def not_found(message: str) -> GatewayError:
    return GatewayError(Status.NOT_FOUND, message)
