"""Alerts as the data plane reports them (``ListAlerts``, ``gateway alerts``)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ActiveAlert:
    """A rule firing for one model version (:mod:`gateway.monitoring.alerts`)."""

    rule: str
    metric: str
    comparator: str
    threshold: float
    severity: str        # "info", "warning", "critical"
    labels: dict[str, str]
    model: str
    version: str
    value: float         # the metric at the last evaluation
    since_unix_s: float  # firing since


@dataclasses.dataclass(frozen=True)
class AlertList:
    alerts: list[ActiveAlert]  # the most severe first
    rules: int                 # rules in force
    pending: int = 0           # holding for less than their for_s so far
    untracked: int = 0         # states not kept because alerts.max_active were
