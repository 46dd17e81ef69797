"""Type stubs for gateway._native.histogram (ext/histogram.pyx): base-2 exponential
histogram (OpenTelemetry ExponentialHistogram data model)."""
from typing import TypedDict

import numpy as np
import numpy.typing as npt

class _Snapshot(TypedDict):
    scale: int
    offset: int
    bucket_counts: npt.NDArray[np.uint64]
    zero_count: int
    count: int
    sum: float
    min: float              # NaN while empty
    max: float              # NaN while empty
    invalid_count: int

class ExpHistogram:
    """Exponential histogram of non-negative finite values (NaN, negative and infinite
    values are counted in ``invalid_count``; zeros in ``zero_count``)."""

    def __new__(cls, max_buckets: int = 160, max_scale: int = 20) -> ExpHistogram: ...
    @property
    def scale(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def zero_count(self) -> int: ...
    @property
    def invalid_count(self) -> int: ...
    @property
    def sum(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def max_buckets(self) -> int: ...
    @property
    def offset(self) -> int:
        """Index of the first bucket in ``bucket_counts()`` (0 when empty)."""
    def add(self, value: float) -> bool:
        """Record one value; returns False when it was rejected."""
    def record_array(self, values: npt.NDArray[np.float64]) -> None:
        """Record every element of a contiguous float64 array (GIL released)."""
    def quantile(self, q: float) -> float: ...
    def relative_error(self) -> float: ...
    def merge(self, other: ExpHistogram) -> None: ...
    def bucket_counts(self) -> npt.NDArray[np.uint64]: ...
    def snapshot(self) -> _Snapshot:
        """Cumulative state (a reader wanting deltas keeps its previous snapshot)."""
    def copy(self) -> ExpHistogram: ...
    def reset(self) -> None: ...
