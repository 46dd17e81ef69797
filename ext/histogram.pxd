from libc.stdint cimport uint64_t


cdef class ExpHistogram:
    cdef:
        uint64_t* _buckets          # circular, _max_buckets slots
        uint64_t* _spare            # as many: a downscale refills it and swaps (no allocation)
        int _max_buckets
        int _max_scale
        readonly int scale
        long long _base             # index stored at slot 0 of the circle
        long long _start            # lowest used index (valid when _used)
        long long _end              # highest used index
        bint _used
        readonly uint64_t count
        readonly uint64_t zero_count
        readonly uint64_t invalid_count
        readonly double sum
        readonly double min
        readonly double max

    cdef void _clear(self) noexcept
    cdef long long _slot(self, long long index) noexcept nogil
    cdef int record(self, double value) noexcept nogil
    cdef void _add_index(self, long long index, uint64_t n) noexcept nogil
    cdef void _downscale(self, int change) noexcept nogil
    cdef int _needed_change(self, long long lo, long long hi) noexcept nogil
    cpdef void record_array(self, const double[::1] values)
    cpdef double quantile(self, double q)
    cpdef void merge(self, ExpHistogram other)
