"""Requests recorded through the recorder's real entry point (what the data plane calls)."""
from __future__ import annotations

import numpy as np

from gateway.api import InferRequest, InferResponse, Status
from gateway.core.context import Attempt


def record(telemetry, telemetry_id: int, *, t_received_ns: int = 0, t_enqueued_ns: int = 0, t_batch_ns: int = 0,
           t_compute_start_ns: int = 0, t_compute_end_ns: int = 0, t_responded_ns: int = 0, batch_size: int = 1,
           rows: int = 1, status: int = 0, degraded: bool = False, fallback_code: int = 0,
           confidence: float = float("nan"), payload_bytes: int = 0, call: int = 0) -> None:
    request = InferRequest(model="m", inputs={}, payload_bytes=payload_bytes, t_received_ns=t_received_ns, call=call)
    attempt = Attempt("m@1", telemetry_id, rows=rows)
    attempt.t_enqueued_ns, attempt.t_batch_ns = t_enqueued_ns, t_batch_ns
    attempt.t_compute_start_ns, attempt.t_compute_end_ns = t_compute_start_ns, t_compute_end_ns
    attempt.batch_size = batch_size
    response = InferResponse("r", "m", "1", {}, "m@1", degraded=degraded,
                             confidence=np.array([confidence], np.float32))
    telemetry.recorder.on_answer(request, attempt, Status(status), response, fallback_code, t_responded_ns)
