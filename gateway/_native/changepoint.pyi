"""Type stubs for gateway._native.changepoint (ext/changepoint.pyx): a two-sided CUSUM change
detector per feature, its threshold from the expected rows between false alarms."""
from typing import Literal, TypedDict

import numpy as np
import numpy.typing as npt

SIEGMUND_CORRECTION: float

class _State(TypedDict):
    up: npt.NDArray[np.float64]
    down: npt.NDArray[np.float64]
    nan_count: npt.NDArray[np.int64]
    reference_mean: npt.NDArray[np.float64]
    reference_std: npt.NDArray[np.float64]
    rows_seen: int
    alarm_count: int

# (feature, side, row_number: rows seen so far with the alarming one, statistic in sigma)
_Alarm = tuple[int, Literal["up", "down"], int, float]

def cusum_arl(threshold_sigma: float, allowance_sigma: float, shift_sigma: float = 0.0) -> float:
    """Siegmund's approximation of a one-sided CUSUM's average run length on N(shift, 1)."""
def cusum_threshold(arl0_rows: float, allowance_sigma: float) -> float:
    """The threshold at which Siegmund's in-control ARL is ``arl0_rows``."""

class ChangeDetector:
    """Two-sided CUSUM per feature against a reference mean / std; the false-alarm rate of
    all features together is set by ``expected_rows_between_false_alarms``."""

    def __init__(self, reference_mean: npt.ArrayLike, reference_std: npt.ArrayLike, *,
                 expected_rows_between_false_alarms: float = 10_000_000.0,
                 allowance_sigma: float = 0.25) -> None: ...
    @property
    def n_features(self) -> int: ...
    @property
    def allowance_sigma(self) -> float: ...
    @property
    def threshold_sigma(self) -> float: ...
    @property
    def expected_rows_between_false_alarms(self) -> float: ...
    @property
    def arl0_rows_per_side(self) -> float: ...
    @property
    def rows_seen(self) -> int: ...
    @property
    def alarm_count(self) -> int: ...
    def reset(self) -> None:
        """Both statistics of every feature back to 0; rows, NaN and alarm counts to 0."""
    def observe(self, batch: npt.ArrayLike) -> list[_Alarm]:
        """Fold the rows of ``batch`` in, in order; returns the alarms they raised."""
    def state(self) -> _State: ...
