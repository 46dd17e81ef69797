from libc.stdint cimport int64_t


cdef class FeatureStats:
    cdef:
        readonly int n_features
        readonly int n_bins
        readonly int sample_every
        readonly int warmup_rows
        readonly int64_t batches_seen
        readonly int64_t batches_observed
        object _count           # int64[F]  finite values
        object _mean            # float64[F]
        object _m2              # float64[F] sum of squared deviations
        object _min
        object _max
        object _nan
        object _inf
        object _edges           # float64[F, n_bins + 1] or None while warming up
        object _hist            # int64[F, n_bins + 2]: underflow, bins, overflow
        object _uniform_lo      # float64[F] when the edges are uniform, else None
        object _uniform_inv
        object _bcnt            # per-batch scratch
        object _bsum
        object _bm2
        object _bmean
        list _warmup
        int64_t _warmup_n

    cdef void _bin(self, object x) except *
    cpdef bint observe(self, object batch) except -1
    cpdef void merge(self, FeatureStats other) except *
