"""The one module that imports the compiled kernels (``gateway._native.*``, built from ext/).

Everything else imports them from here, so the native surface is listed in one place (and
an import-linter contract keeps it so).
"""
from gateway._native.confidence import ConfidenceStats, top1
from gateway._native.counters import WindowedCounters
from gateway._native.featurestats import FeatureStats
from gateway._native.histogram import ExpHistogram
from gateway._native.ring import RECORD_DTYPE, RequestRing

__all__ = ["ConfidenceStats", "ExpHistogram", "FeatureStats", "RECORD_DTYPE", "RequestRing",
           "WindowedCounters", "top1"]
