"""Traffic administration's plain types: a model's split, shadows and rollbacks, and the control
the admin calls use (``gateway.lifecycle.control.TrafficAdmin``)."""
from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class TrafficState:
    model: str
    weights: dict[str, float]      # as asked for (config, admin or a rollback); {}: the latest takes all
    shares: dict[str, float]       # in force: over the versions loaded (empty: the latest takes all)
    latest: str                    # the version that answers without a split
    shadow: dict[str, float]       # candidate version -> share mirrored to it
    rolled_back: tuple[str, ...]   # versions at weight 0 by an automatic rollback
    previous: dict[str, float] | None = None  # the weights a roll back returns to (None: nothing to undo)


class TrafficControl(Protocol):
    def state(self, model: str) -> TrafficState: ...

    def set_weights(self, model: str, weights: dict[str, float], reason: str, actor: str) -> TrafficState: ...

    def promote(self, model: str, version: str, reason: str, actor: str) -> TrafficState: ...

    def roll_back(self, model: str, reason: str, actor: str) -> TrafficState: ...

    def set_shadow(self, model: str, shares: dict[str, float], reason: str, actor: str) -> TrafficState: ...

    async def reload_profiles(self, model: str, reason: str, actor: str) -> dict[str, str]: ...

    async def propagate(self, model: str, *, reload: bool = False) -> tuple[int, int]: ...
