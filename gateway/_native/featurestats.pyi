"""Type stubs for gateway._native.featurestats (ext/featurestats.pyx): per-feature
statistics and histograms of one model input."""
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt

#: With ``defer_freeze``: buffered rows, as a multiple of warmup_rows, past which observe freezes inline
DEFER_MAX_FACTOR: int

class _State(TypedDict):
    count: npt.NDArray[np.int64]
    mean: npt.NDArray[np.float64]
    m2: npt.NDArray[np.float64]
    variance: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    nan_count: npt.NDArray[np.int64]
    inf_count: npt.NDArray[np.int64]
    edges: npt.NDArray[np.float64] | None
    histogram: npt.NDArray[np.int64]        # [features, n_bins + 2]: underflow, bins, overflow
    batches_seen: int
    batches_observed: int

class FeatureStats:
    """Count, mean, variance, min, max, NaN/Inf counts and a histogram per feature."""

    def __init__(self, n_features: int, *, edges: npt.ArrayLike | None = None,
                 value_range: Sequence[float] | None = None, n_bins: int = 10,
                 warmup_rows: int = 1024, sample_every: int = 1, defer_freeze: bool = False) -> None: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_bins(self) -> int: ...
    @property
    def sample_every(self) -> int: ...
    @property
    def warmup_rows(self) -> int: ...
    @property
    def defer_freeze(self) -> bool: ...
    @property
    def batches_seen(self) -> int: ...
    @property
    def batches_observed(self) -> int: ...
    @property
    def edges(self) -> npt.NDArray[np.float64] | None:
        """Bin edges ``[features, n_bins + 1]`` or None while warming up."""
    def reset(self) -> None: ...
    def observe(self, batch: npt.ArrayLike) -> bool:
        """Fold one batch in; returns False when skipped by sampling (every k-th batch)."""
    @property
    def freeze_due(self) -> bool:
        """Warming up, with at least ``warmup_rows`` rows buffered: the edges can be frozen."""
    def freeze_pending(self) -> tuple[int, list[npt.NDArray[np.generic]]] | None:
        """``(token, batches)``: the freeze set (None: no freeze due); same caller as observe."""
    def freeze_part(self, batches: Sequence[npt.ArrayLike]) -> FeatureStats:
        """Edges from the batches' quantiles and their histogram; may run on another thread."""
    def freeze_with(self, token: int, part: FeatureStats) -> bool:
        """Freeze with ``part`` (False, changing nothing, when the buffer changed since)."""
    def merge(self, other: FeatureStats) -> None: ...
    def state(self) -> _State: ...
    def copy(self) -> FeatureStats: ...
