"""Per-request telemetry on native kernels, exposed as plain Python types.

Data flow, one module a step: :mod:`.recorder` writes one C struct per answered request into
the native ring (no Python lock); :mod:`.aggregator` drains it in bulk every
``aggregate_interval_s`` into each version's state (:mod:`.models`): exponential histograms
of end-to-end, queue and compute time (seconds) and batch size, windowed counters, outcome
totals; input and confidence statistics are folded per executed batch. :mod:`.readers` turn
that state into the dataclasses of :mod:`.snapshots` (each delta reader with its own delta
storage); :mod:`.hub` wires the steps together; ``otel/`` exports.
"""
from .hub import Telemetry
from .models import LATENCY_KINDS, InputBinning
from .readers import HistogramDeltas
from .snapshots import (
    ConfidenceSnapshot,
    CounterSnapshot,
    FeatureShift,
    FeatureStatsSnapshot,
    HistogramPoint,
    HistogramSnapshot,
    LatencySummary,
    ModelStatsSnapshot,
    OutcomeSnapshot,
)

__all__ = [
    "ConfidenceSnapshot", "CounterSnapshot", "FeatureShift", "FeatureStatsSnapshot", "HistogramDeltas",
    "HistogramPoint", "HistogramSnapshot", "InputBinning", "LATENCY_KINDS", "LatencySummary",
    "ModelStatsSnapshot", "OutcomeSnapshot", "Telemetry",
]
