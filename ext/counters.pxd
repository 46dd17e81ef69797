from libc.stdint cimport int64_t


cdef class WindowedCounters:
    cdef:
        int64_t* _stamp         # second held by each slot (-1: empty)
        int64_t* _values        # [slots, 4]: requests, rows, errors, degraded
        readonly int slots
        int64_t _latest_s
        int64_t _first_ns
        readonly int64_t total_requests
        readonly int64_t total_rows
        readonly int64_t total_errors
        readonly int64_t total_degraded

    cdef void add(self, int64_t t_ns, int64_t requests, int64_t rows, int64_t errors,
                  int64_t degraded) noexcept nogil
