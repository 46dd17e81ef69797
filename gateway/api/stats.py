"""Live statistics as the data plane reports them (what ``GetStats`` and ``gateway stats`` show)."""
from __future__ import annotations

import dataclasses

MAX_WINDOW_S = 300
"""The longest window: telemetry keeps per-second counters and the GetStats reader's history of
cumulative histograms this far back (windows are whole seconds; a fraction rounds up)."""


@dataclasses.dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclasses.dataclass(frozen=True)
class FeatureShift:
    input: str
    feature: int
    mean: float           # recent-window mean
    std: float            # long-run standard deviation (reference)
    shift_score: float    # |recent mean - reference mean| / reference std
    nan_count: int        # recent-window NaN count


@dataclasses.dataclass(frozen=True)
class ModelStatsSnapshot:
    """One version over a window: everything but ``requests`` (the total since it was
    registered) and ``top_shifts`` (the feature-shift monitor's own window) covers it."""

    model: str
    version: str
    requests: int
    latency: LatencySummary
    queue: LatencySummary
    compute: LatencySummary
    requests_per_s: float
    rows_per_s: float
    error_share: float
    degraded_share: float
    mean_batch_size: float
    mean_confidence: float
    top_shifts: list[FeatureShift]


@dataclasses.dataclass(frozen=True)
class Statistics:
    models: list[ModelStatsSnapshot]
    ring_drops: int       # request records the telemetry ring had to drop
