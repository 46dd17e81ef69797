"""Type stubs for gateway._native.ring (ext/ring.pyx): the per-request record ring."""
import numpy as np
import numpy.typing as npt

RECORD_DTYPE: np.dtype[np.void]

class RequestRing:
    """Ring of ``RequestRecord`` with ``capacity`` slots (rounded up to a power of two)."""

    def __new__(cls, capacity: int = 65536) -> RequestRing: ...
    @property
    def capacity(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def written(self) -> int: ...
    def __len__(self) -> int: ...
    def write(self, model_id: int, t_received_ns: int, t_enqueued_ns: int, t_batch_ns: int,
              t_compute_start_ns: int, t_compute_end_ns: int, t_responded_ns: int,
              batch_size: int, rows: int, status_code: int, degraded: bool, fallback_code: int,
              confidence: float, payload_bytes: int, rpc: int, /) -> bool:
        """Append one record; returns False (and counts a drop) when the ring is full."""
    def drain(self, max_records: int = -1,
              out: npt.NDArray[np.void] | None = None) -> npt.NDArray[np.void]:
        """Move up to ``max_records`` (all when < 0) records out, oldest first, as an array
        of RECORD_DTYPE (a view of ``out`` when given)."""
