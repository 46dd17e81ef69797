"""Alert rules and the alerting settings (``alerts:`` in the gateway's settings).

A rule compares one per-version signal (:data:`METRICS`) with a threshold; it fires once the
comparison has held for ``for_s`` seconds and resolves when it no longer holds. With no rules
written the defaults (:data:`DEFAULT_RULES`) are in force; ``defaults_for_s`` sets their
``for_s`` all at once (tests/e2e/test_default_alerts.py drives each through a real server). The signals
are read from the gateway's own state (the ``GetStats`` snapshot: latency, errors, drift,
quality from delayed labels) by :mod:`gateway.monitoring.alerts`.
"""
from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The signals a rule may name, each per model version, with what it is.
METRICS: dict[str, str] = {
    "error_share": "share of requests answered with an error over the window",
    "degraded_share": "share of requests answered degraded (by a fallback) over the window",
    "p99_ms": "99th percentile end-to-end latency over the window (ms)",
    "p99_over_deadline": "p99 latency / the version's policy deadline (attempt_timeout_ms, else "
                         "default_timeout_ms); no value for a version with neither",
    "requests_per_s": "requests per second over the window",
    "drift_features_alert": "input features whose drift grade is alert",
    "drift_psi_max": "highest PSI among the input features",
    "change_alarms": "changes the change detectors raised within the window (re-alarms of a side latched)",
    "accuracy": "accuracy over the last feedback_window joined labels (classifiers)",
    "accuracy_drop": "reference accuracy (the profile's, else the first labelled window's) minus accuracy",
    "macro_f1": "macro F1 over the joined labels (classifiers)",
    "mae": "mean absolute error over the joined labels (regressors)",
    "rmse": "root mean squared error over the joined labels (regressors)",
    "nan_rate_max": "highest share of NaN values of any input feature in the drift window",
    "out_of_range_rate_max": "highest share of values outside the reference range of any input feature",
    "outlier_rate": "share of the rows scored in the drift window that were outliers against the reference",
    "rolled_back": "1 while the version is rolled back by traffic.rollback (its weight 0), else 0; only for "
                   "versions under a split",
}

MAX_RULES = 100
MAX_LABELS = 16
_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    metric: str
    """One of :data:`METRICS`."""
    comparator: Literal[">", ">=", "<", "<="] = ">"
    threshold: float = Field(allow_inf_nan=False)
    for_s: float = Field(0.0, ge=0, le=86400)
    """How long the comparison must hold before the alert fires (0: at the first evaluation)."""
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    """Passed on with every event (at most 16, keys identifiers, values at most 256 characters)."""
    model: str | None = None
    """Only this model's versions (default: every model)."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; one of: {', '.join(METRICS)}")
        return value

    @field_validator("labels")
    @classmethod
    def _bounded_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"{len(value)} labels, at most {MAX_LABELS}")
        for key, text in value.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label name {key[:70]!r}: letters, digits, '_' and '.', at most 64, "
                                 f"not starting with a digit")
            if len(text) > 256:
                raise ValueError(f"label {key}: value of {len(text)} characters, at most 256")
        return value

    def holds(self, value: float) -> bool:
        c = self.comparator
        return (value > self.threshold if c == ">" else value >= self.threshold if c == ">="
                else value < self.threshold if c == "<" else value <= self.threshold)


#: The rules in force when ``alerts.defaults`` is true (the default), before the user's own;
#: a user rule of the same name replaces a default one.
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(name="drift", metric="drift_features_alert", comparator=">=", threshold=1, for_s=60,
              severity="warning"),
    AlertRule(name="accuracy_drop", metric="accuracy_drop", comparator=">=", threshold=0.05, for_s=300,
              severity="warning"),
    AlertRule(name="error_rate", metric="error_share", comparator=">", threshold=0.05, for_s=60,
              severity="critical"),
    AlertRule(name="p99_over_deadline", metric="p99_over_deadline", comparator=">", threshold=1, for_s=60,
              severity="warning"),
    AlertRule(name="rollback", metric="rolled_back", comparator=">=", threshold=1, for_s=0,
              severity="critical"),
)


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    defaults: bool = True
    """Include :data:`DEFAULT_RULES` (drift, accuracy drop, error rate, p99 over deadline, rollback)."""
    defaults_for_s: float | None = Field(None, ge=0, le=86400)
    """``for_s`` of every default rule (default: each its own: 60 s; accuracy_drop 300 s; rollback 0)."""
    rules: list[AlertRule] = Field(default_factory=list, max_length=MAX_RULES)
    evaluate_every_s: float = Field(5.0, gt=0, le=3600)
    window_s: float = Field(60.0, gt=0, le=300)
    """The window that the rate, share and latency signals cover (whole seconds)."""
    max_active: int = Field(1000, ge=1, le=100_000)
    """Alert states (pending or firing) kept; past it new ones are not tracked and counted."""
    webhook_url: str | None = None
    """POST each firing and resolved event as JSON here (http or https)."""
    webhook_timeout_s: float = Field(2.0, gt=0, le=60)
    webhook_queue: int = Field(256, ge=1, le=100_000)
    """Events waiting for the webhook; past it the oldest is dropped (and counted)."""
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_s: float = Field(0.5, gt=0, le=60)
    """First retry delay; doubled each attempt (with jitter), at most 30 s."""

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {value[:200]!r}")
        if len(value) > 2048:
            raise ValueError("longer than 2048 characters")
        return value

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[AlertRule]) -> list[AlertRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules named {rule.name!r}")
            seen.add(rule.name)
        return rules

    def in_force(self) -> list[AlertRule]:
        """The rules evaluated: the defaults (where on) unless replaced by name, then the user's."""
        own = {r.name for r in self.rules}
        base = [r for r in DEFAULT_RULES if r.name not in own] if self.defaults else []
        if self.defaults_for_s is not None:
            base = [r.model_copy(update={"for_s": self.defaults_for_s}) for r in base]
        return base + list(self.rules)
