"""The ``policy:`` and ``faults:`` blocks of a model's ``config.yaml``.

Every field is typed and validated; an unknown or bad key is rejected with its
dotted path (``policy.circuit_breaker.failure_rate_threshold``) and the model keeps
its previous policy. Circuit-breaker names follow resilience4j's, with units in the name.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

Reason = Literal["timeout", "error", "overloaded", "circuit_open", "invalid_output", "outlier"]
ALL_REASONS: list[Reason] = ["timeout", "error", "overloaded", "circuit_open", "invalid_output", "outlier"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeadlineConfig(_Strict):
    default_timeout_ms: int | None = Field(None, ge=1)
    """Deadline for requests whose client sent none (none: wait as long as it takes)."""
    attempt_timeout_ms: int | None = Field(None, ge=1)
    """Most time the requested model may take even when the client allows more, leaving the
    rest of the client's deadline to the fallback chain."""


class AdaptiveLimitConfig(_Strict):
    """A gradient concurrency limit (Netflix Gradient2): the limit shrinks when the latency
    measured now rises above the long-run latency, and grows while it does not."""

    enabled: bool = False
    initial_limit: int = Field(16, ge=1)
    min_limit: int = Field(2, ge=1)
    max_limit: int = Field(256, ge=1)
    smoothing: float = Field(0.2, gt=0, le=1)
    """Weight of each new estimate in the limit."""
    rtt_tolerance: float = Field(1.5, ge=1)
    """How much slower than the long-run latency a sample may be before the limit shrinks."""
    long_window: int = Field(600, ge=10)
    """Samples in the long-run latency average."""

    @model_validator(mode="after")
    def _ordered(self) -> "AdaptiveLimitConfig":
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("need min_limit <= initial_limit <= max_limit")
        return self


class AdmissionConfig(_Strict):
    max_in_flight: int | None = Field(None, ge=1)
    """Requests admitted to this model and not yet answered (queued + running); beyond it, overloaded."""
    max_queue_depth: int | None = Field(None, ge=1)
    """Requests waiting in the batcher's queue beyond which new ones are overloaded."""
    retry_after_ms: int = Field(50, ge=0)
    """Sent as ``grpc-retry-pushback-ms`` when an overloaded request is finally rejected."""
    adaptive: AdaptiveLimitConfig = Field(default_factory=AdaptiveLimitConfig)


class CircuitBreakerConfig(_Strict):
    """resilience4j's circuit breaker, per model version."""

    enabled: bool = False
    sliding_window_type: Literal["count_based", "time_based"] = "count_based"
    sliding_window_size: int = Field(100, ge=1)
    """Calls (count_based) or seconds (time_based) the failure and slow-call rates are taken over."""
    minimum_number_of_calls: int = Field(100, ge=1)
    """Calls in the window before the rates are looked at."""
    failure_rate_threshold: float = Field(50.0, gt=0, le=100)
    """Percent of failed calls at or above which the circuit opens."""
    slow_call_rate_threshold: float = Field(100.0, gt=0, le=100)
    """Percent of slow calls at or above which the circuit opens."""
    slow_call_duration_threshold_ms: float = Field(60_000, gt=0)
    wait_duration_in_open_state_ms: float = Field(60_000, gt=0)
    """How long the circuit stays open before letting probe calls through (half-open)."""
    permitted_number_of_calls_in_half_open_state: int = Field(10, ge=1)


class OutputGuardConfig(_Strict):
    enabled: bool = False
    reject_non_finite: bool = True
    """NaN or ±Inf in a float output fails the call."""
    min_value: float | None = None
    max_value: float | None = None
    outputs: list[str] = Field(default_factory=list)
    """Outputs to check; empty: every float output."""

    @model_validator(mode="after")
    def _range(self) -> "OutputGuardConfig":
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError("min_value is greater than max_value")
        return self


class OutlierConfig(_Strict):
    """Requests with a row far from the version's reference profile fail with reason
    ``outlier`` before they are queued (so the fallback chain answers them, where
    ``fallback.triggers`` lists ``outlier``). Needs the version's ``profile.npz``: without one
    it is off, and the load says so. See :mod:`gateway.policy.outliers` for the score."""

    enabled: bool = False
    max_out_of_range: int = Field(0, ge=0)
    """Features of a row that may lie outside the reference's range (NaN and Inf count as outside)."""
    max_robust_z: float | None = Field(8.0, gt=0)
    """Largest |x - median| / (1.4826 MAD) a row's features may have (None: not checked)."""


class ModelStep(_Strict):
    """Ask another model (or another version of this one): a smaller model, a CPU copy."""

    model: str = Field(min_length=1)
    version: str = ""


class CacheSettings(_Strict):
    max_entries: int = Field(1024, ge=1, le=10_000_000)
    max_age_s: float | None = Field(None, gt=0)


class CacheStep(_Strict):
    """The last good answer of this model version for an identical input."""

    cache: CacheSettings = Field(default_factory=CacheSettings)


class StaticStep(_Strict):
    """A fixed answer per row: a default value or a class prior, by output name."""

    static: dict[str, Any]

    @field_validator("static")
    @classmethod
    def _numeric(cls, outputs: dict[str, Any]) -> dict[str, Any]:
        if not outputs:
            raise ValueError("give at least one output")
        for name, value in outputs.items():
            if not _all_numbers(value):
                raise ValueError(f"output {name!r}: expected a number or a (nested) list of numbers")
        return outputs


def _all_numbers(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, list) and value:
        return all(_all_numbers(v) for v in value)
    return False


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return {ModelStep: "model", CacheStep: "cache", StaticStep: "static"}.get(type(value))
    if isinstance(value, dict):
        for key in ("model", "cache", "static"):
            if key in value:
                return key
    return None


FallbackStep = Annotated[
    Union[Annotated[ModelStep, Tag("model")], Annotated[CacheStep, Tag("cache")],
          Annotated[StaticStep, Tag("static")]],
    Discriminator(_step_kind, custom_error_type="fallback_step",
                  custom_error_message="a fallback step is one of {model: ...}, {cache: {...}}, {static: {...}}"),
]


class FallbackConfig(_Strict):
    chain: list[FallbackStep] = Field(default_factory=list)
    """Tried in order until one answers; then the request is rejected with a status."""
    triggers: list[Reason] = Field(default_factory=lambda: list(ALL_REASONS))
    """Which failures walk the chain; the others are rejected at once."""

    @field_validator("chain")
    @classmethod
    def _one_cache(cls, chain: list) -> list:
        if sum(isinstance(s, CacheStep) for s in chain) > 1:
            raise ValueError("at most one cache step")
        return chain


class PolicyConfig(_Strict):
    """A model's fallback policy. The defaults change nothing: no timeout, no limits, no breaker."""

    deadlines: DeadlineConfig = Field(default_factory=DeadlineConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    output_guard: OutputGuardConfig = Field(default_factory=OutputGuardConfig)
    outliers: OutlierConfig = Field(default_factory=OutlierConfig)
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)


class FaultInjectionConfig(_Strict):
    """Faults injected into every execution of the model (tests and bench only).

    Takes effect only when the process runs with ``GATEWAY_ALLOW_FAULT_INJECTION=true``;
    otherwise a config with this block is rejected.
    """

    latency_ms: float = Field(0.0, ge=0, le=600_000)
    """Added to every execution (it occupies the model instance, like a slow model would)."""
    latency_jitter_ms: float = Field(0.0, ge=0, le=600_000)
    """Uniform extra latency in [0, jitter)."""
    error_rate: float = Field(0.0, ge=0, le=1)
    """Share of executions that fail."""
    nan_rate: float = Field(0.0, ge=0, le=1)
    """Share of executions whose float outputs are replaced with NaN."""
    seed: int | None = None

    def describe(self) -> str:
        parts = [f"latency {self.latency_ms:g} ms" + (f" (+ up to {self.latency_jitter_ms:g})"
                                                    if self.latency_jitter_ms else "")
                 if self.latency_ms or self.latency_jitter_ms else "",
                 f"error rate {self.error_rate:g}" if self.error_rate else "",
                 f"NaN rate {self.nan_rate:g}" if self.nan_rate else ""]
        return ", ".join(p for p in parts if p) or "none (all rates 0)"
