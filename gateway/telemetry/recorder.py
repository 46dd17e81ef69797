"""The recorder: the only Python code that knows the layout of the native ring's record.

Writing: :meth:`Recorder.on_answer` (a request observer, on the event loop) turns one answered
request into one fixed-size record with a single native call. Reading: :meth:`Recorder.drain`
hands the aggregator what was written since, as named columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import kernels
from ..api import InferRequest, InferResponse, Status
if TYPE_CHECKING:
    from ..core.context import Attempt


@dataclass(frozen=True, slots=True)
class Records:
    """Drained records, one numpy column per field (times are ``time.monotonic_ns()``)."""

    telemetry_id: np.ndarray
    t_received_ns: np.ndarray
    t_enqueued_ns: np.ndarray
    t_batch_ns: np.ndarray
    t_compute_start_ns: np.ndarray
    t_compute_end_ns: np.ndarray
    t_responded_ns: np.ndarray
    batch_size: np.ndarray
    rows: np.ndarray
    status_code: np.ndarray
    degraded: np.ndarray
    fallback_code: np.ndarray
    confidence: np.ndarray   # first row's top-1 (NaN where none)
    payload_bytes: np.ndarray
    call: np.ndarray         # protocol call index (gateway.api.CallTable)

    def __len__(self) -> int:
        return len(self.telemetry_id)


class Recorder:
    """Writes into a ring of ``capacity`` records; a full ring drops and counts (never blocks)."""

    def __init__(self, capacity: int) -> None:
        self._ring = kernels.RequestRing(capacity)
        self._write = self._ring.write  # the bound native method: one C call per request

    @property
    def dropped(self) -> int:
        return int(self._ring.dropped)

    def on_answer(self, request: InferRequest, attempt: Attempt, status: Status,
                  response: InferResponse | None, fallback_code: int, t_responded_ns: int) -> None:
        confidence = response.confidence if response is not None else None
        self._write(attempt.telemetry_id, request.t_received_ns, attempt.t_enqueued_ns, attempt.t_batch_ns,
                    attempt.t_compute_start_ns, attempt.t_compute_end_ns, t_responded_ns,
                    attempt.batch_size, attempt.rows, status,
                    response.degraded if response is not None else False, fallback_code,
                    confidence[0] if confidence is not None and len(confidence) else np.nan,
                    request.payload_bytes, request.call)

    def drain(self) -> Records | None:
        """Everything written since the last drain (None when nothing was). One reader at a time."""
        r = self._ring.drain()
        if len(r) == 0:
            return None
        return Records(r["model_id"], r["t_received_ns"], r["t_enqueued_ns"], r["t_batch_ns"],
                       r["t_compute_start_ns"], r["t_compute_end_ns"], r["t_responded_ns"], r["batch_size"],
                       r["rows"], r["status_code"], r["degraded"], r["fallback_code"], r["confidence"],
                       r["payload_bytes"], r["rpc"])
