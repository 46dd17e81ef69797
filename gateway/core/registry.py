"""Routing: which loaded model version answers a (model, version) pair."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..api import GatewayError, Status, TensorSpec, not_found, quote
from .routing import TrafficSplit, version_key

__all__ = ["ModelEntry", "ModelRegistry", "ModelVersion", "Runtime", "TrafficSplit", "version_key"]

if TYPE_CHECKING:
    from ..policy.state import ModelPolicy
    from .batching import DynamicBatcher
    from .postprocess import ClassifierHead


class Runtime(Protocol):
    """What the core needs of a loaded model (``gateway.runtime.OnnxModel``; the core does not
    import onnxruntime)."""

    name: str
    version: str
    provider: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    input_by_name: dict[str, TensorSpec]
    output_names: list[str]
    batchable: bool
    max_batch_size: int
    classifier_output: str | None

    @property
    def served_by(self) -> str: ...

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> Sequence[np.ndarray]: ...


@dataclass(eq=False)
class ModelVersion:
    """A version that is loaded and accepting requests (built by :mod:`gateway.core.assembly`)."""

    name: str
    version: str
    model: Runtime
    batcher: DynamicBatcher
    policy: ModelPolicy
    head: ClassifierHead | None = None  # classifiers only
    labels: tuple[str, ...] = ()
    telemetry_id: int = 0
    monitored: bool = True  # its config's monitoring.enabled: input/confidence statistics, drift, capture

    @property
    def served_by(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class ModelEntry:
    name: str
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # version (or "config") -> why it isn't loaded

    @property
    def latest(self) -> str | None:
        return max(self.versions, key=version_key) if self.versions else None

    @property
    def state(self) -> str:
        return "READY" if self.versions else "UNAVAILABLE"

    def describe_errors(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))


class ModelRegistry:
    """Entries are replaced whole (copy on write), so readers never see a half-updated model."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._latest: dict[str, ModelVersion] = {}
        self._weights: dict[str, dict[str, float]] = {}   # model -> the weights asked for
        self._splits: dict[str, TrafficSplit] = {}        # model -> those over its loaded versions
        self._shadow_shares: dict[str, dict[str, float]] = {}  # model -> candidate version -> share
        self._rollback: dict[str, object] = {}             # model -> its traffic.rollback rules
        self._shadows: dict[str, tuple[tuple[ModelVersion, float], ...]] = {}  # over loaded versions

    def resolve(self, name: str, version: str = "", routing_key: str = "") -> ModelVersion:
        """The version that answers: ``version`` when named, else the model's traffic split's
        choice (by ``routing_key`` when given: sticky), else its latest."""
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise not_found(f"model {quote(name)} not found (models: {known})", "unknown_model")
        if not version:
            split = self._splits.get(name)
            if split is not None:
                return entry.versions[split.choose(routing_key)]
            latest = self._latest.get(name)
            if latest is None:
                raise GatewayError(Status.UNAVAILABLE,
                                   f"model {quote(name)} has no loaded version: {entry.describe_errors()}",
                                   reason="unavailable")
            return latest
        found = entry.versions.get(version)
        if found is None:
            if version in entry.errors:
                raise GatewayError(Status.UNAVAILABLE, f"model {quote(name)} version {quote(version)} failed to "
                                   f"load: {entry.errors[version]}", reason="unavailable")
            known = ", ".join(sorted(entry.versions, key=version_key)) or "none"
            raise not_found(f"model {quote(name)} has no version {quote(version)} (loaded versions: {known})",
                            "unknown_version")
        return found

    def get(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def entries(self) -> list[ModelEntry]:
        return [self._entries[k] for k in sorted(self._entries)]

    def put(self, entry: ModelEntry) -> None:
        latest = entry.latest
        self._entries = {**self._entries, entry.name: entry}
        others = {k: v for k, v in self._latest.items() if k != entry.name}
        self._latest = {**others, entry.name: entry.versions[latest]} if latest is not None else others
        self._resplit(entry.name)

    def set_weights(self, name: str, weights: dict[str, float]) -> TrafficSplit | None:
        """Ask for ``weights`` over ``name``'s versions ({}: the latest takes everything); returns
        the split now in force (None: none, the latest answers). Kept across reloads: versions
        loaded later get their share when they come."""
        weights = {v: float(w) for v, w in weights.items()}
        if weights:
            self._weights = {**self._weights, name: weights}
        else:
            self._weights = {k: v for k, v in self._weights.items() if k != name}
        self._resplit(name)
        return self._splits.get(name)

    def weights(self, name: str) -> dict[str, float]:
        """The weights asked for (``set_weights``), as given."""
        return dict(self._weights.get(name, {}))

    def split(self, name: str) -> TrafficSplit | None:
        return self._splits.get(name)

    def set_rollback(self, name: str, rules: object | None) -> None:
        """The model's automatic-rollback rules (``gateway.config.model.RollbackConfig``; None: none)."""
        others = {k: v for k, v in self._rollback.items() if k != name}
        self._rollback = {**others, name: rules} if rules is not None else others

    def rollback_rules(self, name: str):
        return self._rollback.get(name)

    def set_shadow(self, name: str, shares: dict[str, float]) -> None:
        """Mirror ``shares`` of ``name``'s answered requests to those versions ({}: none)."""
        shares = {v: float(s) for v, s in shares.items() if s > 0}
        if shares:
            self._shadow_shares = {**self._shadow_shares, name: shares}
        else:
            self._shadow_shares = {k: v for k, v in self._shadow_shares.items() if k != name}
        self._resplit(name)

    def shadow_shares(self, name: str) -> dict[str, float]:
        return dict(self._shadow_shares.get(name, {}))

    def shadows(self, name: str) -> tuple[tuple[ModelVersion, float], ...]:
        """The loaded candidate versions ``name``'s requests are mirrored to, with their shares."""
        return self._shadows.get(name, ())

    def _resplit(self, name: str) -> None:
        entry = self._entries.get(name)
        weights = self._weights.get(name)
        split = TrafficSplit.over(weights, entry.versions) if entry is not None and weights else None
        others = {k: v for k, v in self._splits.items() if k != name}
        self._splits = {**others, name: split} if split is not None else others
        shares = self._shadow_shares.get(name, {})
        shadows = tuple((entry.versions[v], s) for v, s in sorted(shares.items(), key=lambda i: version_key(i[0]))
                        if v in entry.versions) if entry is not None else ()
        rest = {k: v for k, v in self._shadows.items() if k != name}
        self._shadows = {**rest, name: shadows} if shadows else rest

    def remove(self, name: str) -> ModelEntry | None:
        entries = dict(self._entries)
        entry = entries.pop(name, None)
        self._entries = entries
        self._latest = {k: v for k, v in self._latest.items() if k != name}
        self._resplit(name)
        return entry
