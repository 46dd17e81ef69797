"""Type stubs for gateway._native.counters (ext/counters.pyx): per-second throughput
counters over a ring of ``slots`` seconds, plus running totals."""
import numpy as np
import numpy.typing as npt

class WindowedCounters:
    def __new__(cls, slots: int = 300) -> WindowedCounters: ...
    @property
    def slots(self) -> int: ...
    @property
    def total_requests(self) -> int: ...
    @property
    def total_rows(self) -> int: ...
    @property
    def total_errors(self) -> int: ...
    @property
    def total_degraded(self) -> int: ...
    def increment(self, t_ns: int, requests: int = 1, rows: int = 0, errors: int = 0,
                  degraded: int = 0) -> None:
        """Count events at monotonic time ``t_ns`` (t_ns >= 0)."""
    def add_arrays(self, t_ns: npt.NDArray[np.int64], rows: npt.NDArray[np.int64],
                   errors: npt.NDArray[np.int64], degraded: npt.NDArray[np.int64]) -> None:
        """Count one request per element (same lengths; negative times are skipped)."""
    def window_sums(self, window_s: float, now_ns: int) -> tuple[npt.NDArray[np.int64], float]:
        """Sums (requests, rows, errors, degraded) over the last ``window_s`` seconds and
        the covered duration in seconds (at least 1)."""
    def rates(self, window_s: float, now_ns: int) -> tuple[float, float, float, float]:
        """(requests/s, rows/s, errors/s, degraded/s) over the last ``window_s`` seconds."""
    def totals(self) -> tuple[int, int, int, int]:
        """Running totals (requests, rows, errors, degraded) since creation."""
