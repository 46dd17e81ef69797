# cython: language_level=3
"""Fixed-size ring of per-request records, many writers, one draining consumer.

Concurrency: ``write`` runs with the GIL held and makes no Python calls between reading
the indices and publishing the record, so the GIL serialises writers and slot reservation
is atomic without any Python lock (this relies on a GIL build of CPython; on a
free-threaded build use one ring per thread). A full ring never blocks: the record is
dropped and counted in ``dropped``.

``drain`` reads the indices under the GIL, copies the published slots with the GIL
released (writers only touch slots past the head, which are outside the copied range),
then advances the tail under the GIL. One consumer at a time.
"""
cimport cython
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

import numpy as np

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

if RECORD_DTYPE.itemsize != sizeof(RequestRecord):
    raise ImportError("RECORD_DTYPE does not match the C RequestRecord layout")


cdef class RequestRing:
    """Ring of ``RequestRecord`` with ``capacity`` slots (rounded up to a power of two)."""

    def __cinit__(self, Py_ssize_t capacity=65536):
        cdef uint64_t cap = 1
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        while cap < <uint64_t>capacity:
            cap <<= 1
        self._slots = <RequestRecord*>calloc(cap, sizeof(RequestRecord))
        if self._slots == NULL:
            raise MemoryError()
        self.capacity = cap
        self._mask = cap - 1
        self._head = 0
        self._tail = 0
        self.dropped = 0
        self.written = 0

    def __dealloc__(self):
        free(self._slots)

    def __len__(self):
        return self._head - self._tail

    cdef bint _append(self, uint32_t model_id, int64_t t_received_ns,
                      int64_t t_enqueued_ns, int64_t t_batch_ns,
                      int64_t t_compute_start_ns, int64_t t_compute_end_ns,
                      int64_t t_responded_ns, uint32_t batch_size, uint32_t rows,
                      int32_t status_code, bint degraded, uint16_t fallback_code,
                      float confidence, int64_t payload_bytes, uint8_t rpc) noexcept:
        # GIL held, no Python calls between reading the indices and publishing.
        cdef RequestRecord* r
        if self._head - self._tail >= self.capacity:
            self.dropped += 1
            return False
        r = &self._slots[self._head & self._mask]
        r.t_received_ns = t_received_ns
        r.t_enqueued_ns = t_enqueued_ns
        r.t_batch_ns = t_batch_ns
        r.t_compute_start_ns = t_compute_start_ns
        r.t_compute_end_ns = t_compute_end_ns
        r.t_responded_ns = t_responded_ns
        r.payload_bytes = payload_bytes
        r.model_id = model_id
        r.batch_size = batch_size
        r.rows = rows
        r.status_code = status_code
        r.confidence = confidence
        r.fallback_code = fallback_code
        r.degraded = degraded
        r.rpc = rpc
        self._head += 1
        self.written += 1
        return True

    # binding(False): a plain C method descriptor (METH_FASTCALL), the cheapest call
    # CPython has for 15 positional arguments.
    @cython.binding(False)
    def write(self, uint32_t model_id, int64_t t_received_ns, int64_t t_enqueued_ns,
              int64_t t_batch_ns, int64_t t_compute_start_ns, int64_t t_compute_end_ns,
              int64_t t_responded_ns, uint32_t batch_size, uint32_t rows,
              int32_t status_code, bint degraded, uint16_t fallback_code,
              float confidence, int64_t payload_bytes, uint8_t rpc, /):
        """Append one record; returns False (and counts a drop) when the ring is full."""
        return self._append(model_id, t_received_ns, t_enqueued_ns, t_batch_ns,
                            t_compute_start_ns, t_compute_end_ns, t_responded_ns,
                            batch_size, rows, status_code, degraded, fallback_code,
                            confidence, payload_bytes, rpc)

    def drain(self, Py_ssize_t max_records=-1, out=None):
        """Move up to ``max_records`` (all when < 0) records out, oldest first.

        Returns a numpy array of ``RECORD_DTYPE``: a view of ``out`` (which must be a
        C-contiguous array of that dtype, large enough) or a new array.
        """
        cdef uint64_t head = self._head
        cdef uint64_t tail = self._tail
        cdef uint64_t n = head - tail
        cdef uint64_t first
        cdef uint64_t start
        cdef char* dst
        if max_records >= 0 and n > <uint64_t>max_records:
            n = <uint64_t>max_records
        if out is None:
            arr = np.empty(n, dtype=RECORD_DTYPE)
        else:
            if out.dtype != RECORD_DTYPE or not out.flags.c_contiguous:
                raise ValueError("out must be a C-contiguous array of RECORD_DTYPE")
            if <uint64_t>out.shape[0] < n:
                n = <uint64_t>out.shape[0]
            arr = out[:n]
        if n == 0:
            return arr
        cdef unsigned char[::1] raw = arr.view(np.uint8).reshape(-1)
        dst = <char*>&raw[0]
        start = tail & self._mask
        first = self.capacity - start
        if first > n:
            first = n
        with nogil:
            memcpy(dst, &self._slots[start], first * sizeof(RequestRecord))
            if n > first:
                memcpy(dst + first * sizeof(RequestRecord), &self._slots[0],
                       (n - first) * sizeof(RequestRecord))
        self._tail = tail + n
        return arr
