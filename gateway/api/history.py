"""The version history's plain types: what happened to a model's versions, when and why."""
from __future__ import annotations

import dataclasses
from typing import Protocol

MAX_HISTORY_EVENTS_PER_CALL = 10_000

# What an event is: a version loaded, failed to load or unloaded; the traffic weights changed;
# a version's policy was updated in place; (lifecycle operations) promoted or rolled back.
HISTORY_KINDS = ("loaded", "load_failed", "unloaded", "weights", "shadow", "policy_updated", "promoted",
                 "rolled_back")


@dataclasses.dataclass(frozen=True)
class HistoryEvent:
    t_unix_s: float
    model: str
    version: str          # "" for an event of the whole model (weights)
    kind: str             # HISTORY_KINDS
    detail: str           # what and why, in a sentence (weights as version: share, an error...)
    source: str = ""      # who: "repository", "config", "admin", "rollback"


class HistorySink(Protocol):
    """Where lifecycle events are recorded (``gateway.lifecycle.history.VersionHistory``)."""

    def record(self, model: str, version: str, kind: str, detail: str, source: str) -> None: ...
