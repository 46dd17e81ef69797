"""The two implementations every parity test runs on: the compiled kernels and the twins."""
from __future__ import annotations

import types

import gateway.kernels as native_kernels
from tests.reference import changepoint, confidence, counters, featurestats, histogram, ring

NATIVE = types.SimpleNamespace(
    name="native",
    RequestRing=native_kernels.RequestRing, RECORD_DTYPE=native_kernels.RECORD_DTYPE,
    ExpHistogram=native_kernels.ExpHistogram, FeatureStats=native_kernels.FeatureStats,
    ConfidenceStats=native_kernels.ConfidenceStats, top1=native_kernels.top1,
    WindowedCounters=native_kernels.WindowedCounters,
    ChangeDetector=native_kernels.ChangeDetector, cusum_arl=native_kernels.cusum_arl,
    cusum_threshold=native_kernels.cusum_threshold)
TWIN = types.SimpleNamespace(
    name="twin",
    RequestRing=ring.RequestRing, RECORD_DTYPE=ring.RECORD_DTYPE,
    ExpHistogram=histogram.ExpHistogram, FeatureStats=featurestats.FeatureStats,
    ConfidenceStats=confidence.ConfidenceStats, top1=confidence.top1,
    WindowedCounters=counters.WindowedCounters,
    ChangeDetector=changepoint.ChangeDetector, cusum_arl=changepoint.cusum_arl,
    cusum_threshold=changepoint.cusum_threshold)


def public(cls) -> set[str]:
    """The public surface of a class: its non-underscore names (and ``__len__``)."""
    return {n for n in dir(cls) if not n.startswith("_") or n == "__len__"}
