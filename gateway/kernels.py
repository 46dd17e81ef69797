"""The one module that imports the compiled kernels (``gateway._native.*``, built from ext/).

Everything else imports them from here, so the native surface is listed in one place (and
an import-linter contract keeps it so).

A source checkout has ``gateway/_native/`` without the compiled modules until they are built
in place, and Python puts the current directory first on ``sys.path`` for ``python -m`` and
``python -c``: run from the checkout's root, such a tree shadows the installed package. That
case gets one clear :class:`KernelsMissing` instead of a ``ModuleNotFoundError`` deep in an
import chain.
"""
from __future__ import annotations

import pathlib


class KernelsMissing(ImportError):
    """``gateway._native`` has no compiled modules here (a source tree without built kernels)."""


try:
    from gateway._native.changepoint import ChangeDetector, cusum_arl, cusum_threshold
    from gateway._native.confidence import ConfidenceStats, top1
    from gateway._native.counters import WindowedCounters
    from gateway._native.featurestats import FeatureStats
    from gateway._native.histogram import ExpHistogram
    from gateway._native.ring import RECORD_DTYPE, RequestRing
except ModuleNotFoundError as exc:
    if not (exc.name or "").startswith("gateway._native"):
        raise
    _here = pathlib.Path(__file__).resolve().parent
    raise KernelsMissing(
        f"the compiled kernels are missing from {_here / '_native'} ({exc.name} not built): this is "
        f"a source tree without built kernels. Run from outside the source tree to use the installed "
        f"package, or build in place: python setup.py build_ext --inplace", name="gateway._native") from exc

__all__ = ["ChangeDetector", "ConfidenceStats", "ExpHistogram", "FeatureStats", "KernelsMissing", "RECORD_DTYPE",
           "RequestRing", "WindowedCounters", "cusum_arl", "cusum_threshold", "top1"]
