"""Plain request/response types shared by every protocol adapter."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# The front-end calls requests arrive on: (rpc.service, rpc.method). A request carries its index
# (``InferRequest.rpc``) into its telemetry record, so latency is reported per call kind.
# Protocol adapters append their calls; indices must stay below 256 (one byte in the record).
RPC_CALLS: tuple[tuple[str, str], ...] = (
    ("gateway.v1.Gateway", "Predict"),
    ("gateway.v1.Gateway", "PredictStream"),
)
RPC_PREDICT = 0
RPC_PREDICT_STREAM = 1


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: -1 marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def describe(self) -> str:
        from .dtypes import dtype_name

        dims = ",".join(str(d) for d in self.shape)
        return f"{dtype_name(self.dtype)}[{dims}]"


@dataclass(slots=True)
class InferRequest:
    """One inference request after wire decoding.

    Timestamps are ``time.monotonic_ns()`` values stamped as the request moves
    through the core; telemetry reads them once the request is answered.
    """

    model: str
    inputs: dict[str, np.ndarray]
    version: str = ""
    request_id: str = ""
    output_names: tuple[str, ...] = ()
    deadline_ns: int = 0  # monotonic; 0 means no deadline
    payload_bytes: int = 0
    t_received_ns: int = 0
    t_enqueued_ns: int = 0
    t_batch_ns: int = 0
    t_compute_start_ns: int = 0
    t_compute_end_ns: int = 0
    batch_size: int = 0
    rows: int = 0
    trace: object | None = None  # telemetry.tracecontext.RequestTrace when sampled
    rpc: int = RPC_PREDICT  # index into RPC_CALLS: the call the request arrived on


@dataclass(slots=True)
class InferResponse:
    request_id: str
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    served_by: str
    degraded: bool = False
    fallback_reason: str = ""
    confidence: np.ndarray | None = None
    predicted_label: list[str] = field(default_factory=list)
