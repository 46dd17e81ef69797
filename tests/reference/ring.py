"""Reference twin of ``gateway.kernels.RequestRing``: a bounded FIFO of record tuples.

``capacity`` is rounded up to a power of two; a write to a full ring is dropped and counted;
``drain`` hands out the oldest records first as a ``RECORD_DTYPE`` array, copied bytewise
(padding zero), into ``out`` when given. Not thread-safe (the native ring relies on the GIL).
"""
from __future__ import annotations

import collections

import numpy as np

from tests.reference._cy import c_bint, c_float, c_int, c_ssize

RECORD_DTYPE = np.dtype([
    ("t_received_ns", np.int64),
    ("t_enqueued_ns", np.int64),
    ("t_batch_ns", np.int64),
    ("t_compute_start_ns", np.int64),
    ("t_compute_end_ns", np.int64),
    ("t_responded_ns", np.int64),
    ("payload_bytes", np.int64),
    ("model_id", np.uint32),
    ("batch_size", np.uint32),
    ("rows", np.uint32),
    ("status_code", np.int32),
    ("confidence", np.float32),
    ("fallback_code", np.uint16),
    ("degraded", np.uint8),
    ("rpc", np.uint8),
], align=True)

# write's arguments in order, each with its C conversion
WRITE_ARGS = (
    ("model_id", lambda v: c_int(v, 32, False)),
    ("t_received_ns", lambda v: c_int(v, 64, True)),
    ("t_enqueued_ns", lambda v: c_int(v, 64, True)),
    ("t_batch_ns", lambda v: c_int(v, 64, True)),
    ("t_compute_start_ns", lambda v: c_int(v, 64, True)),
    ("t_compute_end_ns", lambda v: c_int(v, 64, True)),
    ("t_responded_ns", lambda v: c_int(v, 64, True)),
    ("batch_size", lambda v: c_int(v, 32, False)),
    ("rows", lambda v: c_int(v, 32, False)),
    ("status_code", lambda v: c_int(v, 32, True)),
    ("degraded", lambda v: int(c_bint(v))),
    ("fallback_code", lambda v: c_int(v, 16, False)),
    ("confidence", c_float),
    ("payload_bytes", lambda v: c_int(v, 64, True)),
    ("rpc", lambda v: c_int(v, 8, False)),
)


class RequestRing:
    """Ring of request records with ``capacity`` slots (rounded up to a power of two)."""

    def __init__(self, capacity=65536):
        capacity = c_ssize(capacity)
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        cap = 1
        while cap < capacity:
            cap *= 2
        self._capacity = cap
        self._records: collections.deque[dict] = collections.deque()
        self._dropped = 0
        self._written = 0

    capacity = property(lambda self: self._capacity)
    dropped = property(lambda self: self._dropped)
    written = property(lambda self: self._written)

    def __len__(self):
        return len(self._records)

    def write(self, model_id, t_received_ns, t_enqueued_ns, t_batch_ns, t_compute_start_ns,
              t_compute_end_ns, t_responded_ns, batch_size, rows, status_code, degraded,
              fallback_code, confidence, payload_bytes, rpc, /):
        """Append one record; returns False (and counts a drop) when the ring is full."""
        given = (model_id, t_received_ns, t_enqueued_ns, t_batch_ns, t_compute_start_ns,
                 t_compute_end_ns, t_responded_ns, batch_size, rows, status_code, degraded,
                 fallback_code, confidence, payload_bytes, rpc)
        record = {name: convert(v) for (name, convert), v in zip(WRITE_ARGS, given)}
        if len(self._records) >= self._capacity:
            self._dropped += 1
            return False
        self._records.append(record)
        self._written += 1
        return True

    def drain(self, max_records=-1, out=None):
        """Move up to ``max_records`` (all when < 0) records out, oldest first."""
        max_records = c_ssize(max_records)
        n = len(self._records)
        if max_records >= 0 and n > max_records:
            n = max_records
        if out is None:
            arr = np.empty(n, dtype=RECORD_DTYPE)
        else:
            if out.dtype != RECORD_DTYPE or not out.flags.c_contiguous:
                raise ValueError("out must be a C-contiguous array of RECORD_DTYPE")
            n = min(n, out.shape[0])
            arr = out[:n]
        if n == 0:
            return arr
        fresh = np.zeros(n, dtype=RECORD_DTYPE)       # zero padding, as the C slots have
        for i in range(n):
            rec = self._records.popleft()
            for name in RECORD_DTYPE.names:
                fresh[name][i] = rec[name]
        arr.view(np.uint8)[...] = fresh.view(np.uint8)   # bytewise, like memcpy
        return arr
