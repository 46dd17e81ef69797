"""Plain request/response and model-description types shared by every layer.

An :class:`InferRequest` is what the client sent, decoded: read-only from then on. What
happens to it on the way (timestamps, batch, the deadline share of one attempt) lives in
the pipeline's per-attempt context (:mod:`gateway.core.context`), never on the request.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


def dtype_name(dtype: np.dtype) -> str:
    """Short name used in messages and metadata: float32, int64, bool, ..."""
    return "bool" if dtype == np.dtype("?") else np.dtype(dtype).name


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: -1 marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def describe(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{dtype_name(self.dtype)}[{dims}]"


class InferRequest(NamedTuple):
    """One inference request after wire decoding; read-only (a named tuple: building one per
    request costs about half of a frozen dataclass).

    ``inputs`` hold read-only arrays (decoded straight from the message bytes) and must not
    be changed. ``deadline_ns`` and ``t_received_ns`` are ``time.monotonic_ns()`` values;
    ``call`` is the index of the protocol call it arrived on (:class:`gateway.api.CallTable`);
    ``trace`` the adapter's tracing handle for a sampled request (None otherwise).
    """

    model: str
    inputs: Mapping[str, np.ndarray]
    version: str = ""
    request_id: str = ""
    output_names: tuple[str, ...] = ()
    deadline_ns: int = 0  # the client's deadline; 0 means none
    payload_bytes: int = 0
    t_received_ns: int = 0
    call: int = 0
    trace: object | None = None
    routing_key: str = ""  # a request with one keeps its version under a traffic split (sticky)


@dataclass(slots=True)
class InferResponse:
    """What the pipeline answers; the adapter encodes it and nothing changes it after."""

    request_id: str
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    served_by: str
    degraded: bool = False
    fallback_reason: str = ""
    confidence: np.ndarray | None = None
    predicted_label: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model in the repository index."""

    name: str
    versions: tuple[str, ...]          # sorted as the registry sorts them
    latest_version: str                # "" while none is loaded
    state: str                         # READY / UNAVAILABLE
    error: str                         # why versions are not loaded ("" when none failed)
    execution_provider: str            # of the latest version


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """One loaded model version, as a protocol describes it."""

    name: str
    version: str
    versions: tuple[str, ...]
    platform: str
    execution_provider: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    labels: tuple[str, ...]
    state: str
    batching: BatchingInfo | None = None  # None: requests run alone (no dynamic batching)
    instance_count: int = 1               # executions of this version that may run at once


@dataclass(frozen=True, slots=True)
class BatchingInfo:
    """How a version's dynamic batcher forms batches (its config's ``batching:``)."""

    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_size: int


@dataclass(frozen=True, slots=True)
class VersionState:
    """Live load and policy state of one loaded version, for gauges."""

    name: str
    version: str
    queue_depth: int
    breaker_state: str | None           # closed / open / half_open; None without a breaker
    concurrency_limit: int | None       # None without an admission limit
