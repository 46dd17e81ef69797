"""Plain-Python views of the telemetry state (what readers and exporters see)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..api.stats import FeatureShift, LatencySummary, ModelStatsSnapshot, Statistics

__all__ = [
    "ConfidenceSnapshot", "CounterSnapshot", "FeatureShift", "FeatureStatsSnapshot", "HistogramPoint",
    "HistogramSnapshot", "LatencySummary", "ModelStatsSnapshot", "OutcomeSnapshot", "Statistics",
]


@dataclasses.dataclass(frozen=True)
class HistogramSnapshot:
    """Base-2 exponential histogram in the OpenTelemetry data model; values in seconds
    for latencies (``kind`` e2e/queue/compute) and rows for ``batch_size``."""

    scale: int
    offset: int
    bucket_counts: np.ndarray
    zero_count: int
    count: int
    sum: float
    min: float
    max: float
    start_time_ns: int
    time_ns: int


@dataclasses.dataclass(frozen=True)
class HistogramPoint:
    model: str
    version: str
    status_code: int
    kind: str            # "e2e" | "queue" | "compute" | "batch_size"
    temporality: str     # "cumulative" | "delta"
    histogram: HistogramSnapshot
    rpc_system: str = ""   # "e2e" only: the call the requests arrived on
    rpc_service: str = ""
    rpc_method: str = ""


@dataclasses.dataclass(frozen=True)
class CounterSnapshot:
    model: str
    version: str
    requests: int
    rows: int
    errors: int
    degraded: int


@dataclasses.dataclass(frozen=True)
class OutcomeSnapshot:
    """Requests that ended with ``status_code`` (gRPC code) and ``fallback_code``
    (:class:`gateway.policy.reasons.FallbackReason`; 0: not degraded)."""

    model: str
    version: str
    status_code: int
    fallback_code: int
    requests: int


@dataclasses.dataclass(frozen=True)
class FeatureStatsSnapshot:
    model: str
    version: str
    input: str
    count: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan_count: np.ndarray
    inf_count: np.ndarray
    edges: np.ndarray | None
    histogram: np.ndarray     # [features, n_bins + 2]: underflow, bins, overflow


@dataclasses.dataclass(frozen=True)
class ConfidenceSnapshot:
    model: str
    version: str
    rows: int
    invalid_rows: int
    mean_top1: float
    class_counts: np.ndarray
    labels: list[str] | None
    top1_hist: np.ndarray      # fixed bins over [0, 1]
    margin_hist: np.ndarray    # fixed bins over [0, 1]
    entropy_hist: np.ndarray   # fixed bins over [0, entropy_max]
    entropy_max: float
