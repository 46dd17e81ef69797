"""Type stubs for gateway._native.confidence (ext/confidence.pyx): output confidence of a
classifier (top-1, margin, entropy, predicted class), a whole batch at a time."""
from typing import TypedDict

import numpy as np
import numpy.typing as npt

class _State(TypedDict):
    rows: int
    invalid_rows: int
    mean_top1: float                        # NaN before any valid row
    class_counts: npt.NDArray[np.int64]
    top1_hist: npt.NDArray[np.int64]
    margin_hist: npt.NDArray[np.int64]
    entropy_hist: npt.NDArray[np.int64]
    entropy_max: float

def top1(scores: npt.ArrayLike,
         logits: bool = False) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top-1 probability (float32[rows]) and class (int64[rows]) of ``scores[rows, classes]``,
    recording nothing."""

class ConfidenceStats:
    """Top-1, margin and entropy histograms and per-class counts of a classifier's output."""

    def __init__(self, n_classes: int, n_bins: int = 20) -> None: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def n_bins(self) -> int: ...
    @property
    def rows(self) -> int: ...
    @property
    def invalid_rows(self) -> int: ...
    @property
    def top1_sum(self) -> float: ...
    def reset(self) -> None: ...
    def observe(self, scores: npt.ArrayLike,
                logits: bool = False) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Fold a ``[rows, classes]`` batch in; returns (top1, class) per row."""
    def merge(self, other: ConfidenceStats) -> None: ...
    def state(self) -> _State: ...
