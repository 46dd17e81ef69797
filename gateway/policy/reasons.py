"""Why an answer was degraded: the one place the reason labels and their telemetry codes are defined."""
from __future__ import annotations

import enum


class FallbackReason(enum.IntEnum):
    """Telemetry records carry the integer; responses and logs carry :attr:`label`."""

    NONE = 0
    TIMEOUT = 1
    ERROR = 2
    OVERLOADED = 3
    CIRCUIT_OPEN = 4
    INVALID_OUTPUT = 5
    OUTLIER = 6

    @property
    def label(self) -> str:
        return "" if self is FallbackReason.NONE else self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "FallbackReason":
        return cls[label.upper()] if label else cls.NONE


REASON_LABELS: tuple[str, ...] = tuple(r.label for r in FallbackReason if r is not FallbackReason.NONE)
