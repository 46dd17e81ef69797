from libc.stdint cimport int32_t, int64_t


cdef class FeatureStats:
    cdef:
        readonly int n_features
        readonly int n_bins
        readonly int sample_every
        readonly int warmup_rows
        readonly bint defer_freeze
        readonly int64_t batches_seen
        readonly int64_t batches_observed
        # Running state in plain C arrays (allocated by _alloc, freed in __dealloc__).
        int64_t* _count         # [F] finite values
        double* _mean           # [F]
        double* _m2             # [F] sum of squared deviations
        double* _min            # [F]
        double* _max            # [F]
        int64_t* _nan           # [F]
        int64_t* _inf           # [F]
        int64_t* _hist          # [F, n_bins + 2]: underflow, bins, overflow
        double* _edges          # [F, n_bins + 1]; valid when _has_edges
        double* _lo             # [F] uniform edges: low end ...
        double* _inv            # [F] ... and n_bins / (high - low); valid when _uniform
        # Lookup for explicit edges (valid when _has_edges), see _fill_index: the span
        # of feature f is cut into _mtop[f] uniform cells plus one below and one above.
        double* _t0             # [F] first edge
        double* _scale          # [F] cells per unit (0: degenerate span)
        double* _mtop           # [F] cell count as a double
        int32_t* _lutoff        # [F] index of feature f's first cell
        int32_t* _lut           # per cell: thresholds below it (crowded: -1 - that)
        int32_t* _lutn          # per cell: thresholds in it (negative: many, distinct)
        # [F, n_bins + 9]: edges[0 .. n_bins - 1], the next double above edges[n_bins],
        # then 8 x +inf
        double* _thr
        int32_t* _cells         # per-row scratch [F]
        int64_t* _slots         # per-row scratch [F]
        int64_t* _bcnt          # per-batch scratch [F]
        double* _bsum
        double* _bmean
        double* _bm2
        double* _bmin
        double* _bmax
        bint _has_edges
        bint _uniform
        list _warmup
        int64_t _warmup_n
        int64_t _warmup_gen     # bumped whenever _warmup is replaced (see freeze_pending)

    cdef int _alloc(self, int n_features, int n_bins) except -1
    cdef void _clear(self) noexcept
    cdef int _bin(self, object x) except -1
    cdef Py_ssize_t _freeze_set(self) except -1
    cpdef bint observe(self, object batch) except -1
    cpdef void merge(self, FeatureStats other) except *
