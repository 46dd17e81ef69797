"""The one module that imports the native kernels (gateway._native.*)."""
from gateway._native.confidence import ConfidenceStats
from gateway._native.counters import WindowedCounters
from gateway._native.featurestats import FeatureStats
from gateway._native.histogram import ExpHistogram
from gateway._native.ring import RECORD_DTYPE, RequestRing

__all__ = ["ConfidenceStats", "ExpHistogram", "FeatureStats", "RECORD_DTYPE", "RequestRing",
           "WindowedCounters"]
