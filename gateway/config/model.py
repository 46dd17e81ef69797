"""A model's ``<repository>/<model>/config.yaml``: batching, providers, threads, overrides, labels."""
from __future__ import annotations

import math
import pathlib
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..policy.config import FaultInjectionConfig, PolicyConfig
from .errors import SettingsError, describe_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchingConfig(_Strict):
    enabled: bool = True
    """Concatenate concurrent requests along the batch axis (models with a dynamic first dimension only)."""
    max_batch_size: int = Field(32, ge=1, le=65536)
    """Most rows in one execution."""
    max_queue_delay_us: int = Field(500, ge=0, le=10_000_000)
    """How long the first queued request may wait for others to join its batch."""
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    """Row counts at which a batch is sent at once instead of waiting for the delay to pass."""
    max_queue_size: int = Field(1024, ge=1)
    """Requests waiting for this model beyond which new ones get RESOURCE_EXHAUSTED."""

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if any(s < 1 for s in sizes):
            raise ValueError("preferred batch sizes must be positive")
        return sorted(set(sizes))


class TensorOverride(_Strict):
    name: str
    shape: list[int] | None = None
    """Dimensions to declare instead of the graph's (-1 for dynamic)."""


class ClassifierConfig(_Strict):
    output: str | None = None
    """Output holding per-class scores; default: the first 2-D float output."""
    logits: bool = False
    """Scores are logits: softmax is applied before confidence is computed."""


class InputStatsConfig(_Strict):
    """How per-feature input histograms are binned (moments, NaN/Inf counts are always kept)."""
    bins: int = Field(10, ge=1, le=4096)
    """Histogram bins per feature (plus an underflow and an overflow bin)."""
    warmup_rows: int = Field(1024, ge=1, le=1_000_000)
    """Rows whose quantiles become the bin edges of inputs without a range (frozen after)."""
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Input name -> (low, high): uniform bins over that range instead of warm-up quantiles."""

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in ranges.items():
            if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(high - low) and low < high):
                raise ValueError(f"range of input {name!r} must be finite [low, high] with low < high, "
                                 f"got [{low}, {high}]")
        return ranges


class MonitoringConfig(_Strict):
    """Model monitoring of this model's versions."""
    enabled: bool = True
    """Input and confidence statistics, drift against the reference, answers kept for delayed
    labels. Off: none of them run for this model (nothing is observed per batch or per answer;
    its latency, throughput and errors are still recorded)."""


class RollbackConfig(_Strict):
    """Automatic rollback of a candidate version (see ``gateway.lifecycle.rollback``): under a
    traffic split, every version with a share other than the baseline is a candidate, compared
    with the baseline over the same window; a rule that holds for ``consecutive`` evaluations in
    a row sets the candidate's weight to 0."""
    enabled: bool = False
    baseline: str = ""
    """The version candidates are compared with; "" : the one with the largest share."""
    window_s: float = Field(60.0, gt=0, le=300)
    """Requests of the last this many seconds (errors, p99); labels: each version's label window."""
    min_requests: int = Field(200, ge=1)
    """Requests each side needs in the window before error rate and p99 are compared."""
    min_labels: int = Field(200, ge=1)
    """Joined labels each side needs before accuracy is compared."""
    alpha: float = Field(0.01, gt=0, lt=0.5)
    """The chance that a candidate no worse than its baseline is ever rolled back by the error-rate
    and accuracy tests, however long it runs: spent over the looks (the k-th look with new data
    tests at alpha / (k (k + 1)), each of the two tests at half of that)."""
    max_error_rate_increase: float = Field(0.02, ge=0, le=1)
    """The candidate's error share may exceed the baseline's by this much (and significantly)."""
    max_accuracy_drop: float = Field(0.05, ge=0, le=1)
    """Its accuracy from delayed labels may fall below the baseline's by this much (and significantly)."""
    max_p99_ratio: float | None = Field(None, gt=1)
    """Its p99 latency may be this many times the baseline's (None: not compared; a p99 over a
    few hundred requests rests on its few slowest, so set it well above the noise, e.g. 3)."""
    max_shadow_disagreement: float | None = Field(None, gt=0, le=1)
    """Where the candidate is also shadowed from the baseline: the share of rows whose predicted
    labels may differ (None: not compared). Needs ``min_requests`` compared rows."""
    drift: bool = True
    """Roll back a candidate whose input drift is graded alert while the baseline's is not."""
    consecutive: int = Field(2, ge=1, le=100)
    """Evaluations in a row a rule must hold before the rollback (hysteresis)."""


class TrafficConfig(_Strict):
    """Which version answers a request that names none (one that names a version gets it)."""
    weights: dict[str, float] = Field(default_factory=dict)
    """Version -> share of the traffic (any non-negative numbers; they are normalised over the
    versions loaded). Empty: the latest version takes everything. A request with a routing key
    (``parameters["routing_key"]``) keeps its version while the weights are unchanged."""

    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
    """Automatic rollback of a candidate that does worse than the baseline."""
    shadow: dict[str, float] = Field(default_factory=dict)
    """Candidate version -> share (0..1) of this model's answered requests mirrored to it, off
    the response path; its answers are compared, never returned (see ``gateway.core.shadow``)."""

    @field_validator("shadow")
    @classmethod
    def _shares(cls, shadow: dict[str, float]) -> dict[str, float]:
        for version, share in shadow.items():
            if not version or not math.isfinite(share) or not 0 <= share <= 1:
                raise ValueError(f"shadow share of version {version!r} must be in [0, 1], got {share}")
        return shadow

    @field_validator("weights")
    @classmethod
    def _usable(cls, weights: dict[str, float]) -> dict[str, float]:
        for version, w in weights.items():
            if not version or not math.isfinite(w) or w < 0:
                raise ValueError(f"traffic weight of version {version!r} must be a finite number >= 0, got {w}")
        if weights and not any(weights.values()):
            raise ValueError("traffic weights are all 0: give at least one version a share")
        return weights


class ModelConfig(_Strict):
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    execution_providers: list[Literal["cuda", "cpu"]] | None = None
    """Preference order; default: cuda when usable, else cpu."""
    intra_op_threads: int = Field(1, ge=0, le=256)
    """onnxruntime intra-op threads (0 lets onnxruntime choose)."""
    instance_count: int = Field(1, ge=1, le=64)
    """Executions of this model that may run at the same time."""
    cpu_memory_arena: bool = False
    """onnxruntime's CPU memory arena for this model. Off (the default) its tensors come from
    malloc and large requests' memory is returned; on, a model with large activations (1 MiB or
    more a batch) stops paying page faults for every batch (measured up to +65 % a row,
    bench/RESULTS.md "The ceiling"), and its arena keeps the largest batch's memory for good."""
    inputs: list[TensorOverride] = Field(default_factory=list)
    outputs: list[TensorOverride] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    """Class names, index-aligned with the classifier output."""
    classifier: ClassifierConfig | None = None
    """Set (or give labels) to report per-row confidence and predicted labels."""
    input_stats: InputStatsConfig = Field(default_factory=InputStatsConfig)
    """Binning of the per-feature input statistics (see docs/telemetry.md)."""
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)
    """The split of requests that name no version over this model's versions."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """Deadlines, admission limits, circuit breaker, output guard and fallback chain."""
    faults: FaultInjectionConfig | None = None
    """Injected latency, errors and NaN outputs; rejected unless the process allows fault injection."""

    def without_policy(self) -> "ModelConfig":
        """Everything but ``policy``, ``traffic`` and ``faults``: what needs the model's session
        reloaded when it changes."""
        return self.model_copy(update={"policy": PolicyConfig(), "traffic": TrafficConfig(), "faults": None})


def load_model_config(path: pathlib.Path, *, allow_fault_injection: bool = False) -> ModelConfig:
    """Read and validate a model's config.yaml; a missing file gives the defaults.

    A ``faults:`` block is rejected unless ``allow_fault_injection`` (the process setting
    ``GATEWAY_ALLOW_FAULT_INJECTION=true``) is on.
    """
    if not path.exists():
        return ModelConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"invalid YAML in {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(str(path), exc)) from None
    if config.faults is not None and not allow_fault_injection:
        raise SettingsError(f"invalid configuration in {path}:\n  faults: fault injection is disabled in this "
                            f"process; set GATEWAY_ALLOW_FAULT_INJECTION=true (tests and benchmarks only) "
                            f"or remove the block")
    return config
