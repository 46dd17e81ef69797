from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef struct RequestRecord:
    int64_t t_received_ns
    int64_t t_enqueued_ns
    int64_t t_batch_ns
    int64_t t_compute_start_ns
    int64_t t_compute_end_ns
    int64_t t_responded_ns
    int64_t payload_bytes
    uint32_t model_id
    uint32_t batch_size
    uint32_t rows
    int32_t status_code
    float confidence
    uint16_t fallback_code
    uint8_t degraded
    uint8_t rpc          # the front-end call (gateway.core.types.RPC_CALLS index)


cdef class RequestRing:
    cdef:
        RequestRecord* _slots
        uint64_t _mask
        uint64_t _head      # records ever written (next slot to write)
        uint64_t _tail      # records ever drained (next slot to read)
        readonly uint64_t capacity
        readonly uint64_t dropped
        readonly uint64_t written

    cdef bint _append(self, uint32_t model_id, int64_t t_received_ns, int64_t t_enqueued_ns,
                      int64_t t_batch_ns, int64_t t_compute_start_ns,
                      int64_t t_compute_end_ns, int64_t t_responded_ns, uint32_t batch_size,
                      uint32_t rows, int32_t status_code, bint degraded,
                      uint16_t fallback_code, float confidence,
                      int64_t payload_bytes, uint8_t rpc) noexcept
