from libc.stdint cimport int64_t


cdef class ConfidenceStats:
    cdef:
        readonly int n_classes
        readonly int n_bins
        readonly int64_t rows
        readonly int64_t invalid_rows
        readonly double top1_sum
        object _class_counts    # int64[C]
        object _top1_hist       # int64[n_bins] over [0, 1]
        object _margin_hist     # int64[n_bins] over [0, 1]
        object _entropy_hist    # int64[n_bins] over [0, ln C]
