"""Delayed labels (the ``Feedback`` call) as the data plane takes and answers them."""
from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_LABELS_PER_CALL = 10_000
"""Labels one Feedback call may carry (more is INVALID_ARGUMENT, before any is joined)."""


class Outcome(enum.IntEnum):
    """What became of one label."""

    JOINED = 0      # matched a stored prediction and counted in its version's metrics
    UNKNOWN = 1     # no prediction with that request id (and row) was captured (or it is long forgotten)
    LATE = 2        # its prediction had already left the store (TTL or capacity)
    DUPLICATE = 3   # its prediction was already joined
    INVALID = 4     # the prediction cannot take it (no such class, a non-finite target, wrong kind,
    #                 a row past the end of the answer)


@dataclass(frozen=True, slots=True)
class FeedbackLabel:
    """The truth for one row of an answered request: exactly one of ``label`` (a class name
    from the model's labels), ``index`` (a class index) or ``target`` (a regressor's value);
    ``row`` is the row of the answer it is for (0, the first, by default)."""

    request_id: str
    label: str | None = None
    index: int | None = None
    target: float | None = None
    row: int = 0


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    accepted: int = 0
    unknown: int = 0
    late: int = 0
    duplicate: int = 0
    invalid: int = 0

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> FeedbackResult:
        counts = [0] * len(Outcome)
        for outcome in outcomes:
            counts[outcome] += 1
        return cls(*counts)
