# cython: language_level=3
"""Output confidence of a classifier, a whole batch at a time.

For ``scores[rows, classes]`` (probabilities, or logits when ``logits=True``; softmax is
taken stably by subtracting the row maximum) each row gives its top-1 probability, margin
(top-1 minus top-2), entropy in nats and predicted class. Probabilities are used as given
(not renormalised). Rows with a NaN score are counted in ``invalid_rows``, get top-1 NaN
and class -1, and stay out of the histograms.

Histograms use ``n_bins`` fixed bins: top-1 and margin over [0, 1], entropy over
[0, ln C] (values outside are clamped into the end bins).
"""
from libc.math cimport exp, log, INFINITY, NAN
from libc.stdint cimport int64_t

from gil cimport NOGIL_MIN_VALUES

import math

import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef inline int _bin(double v, double hi, int nbins) noexcept nogil:
    cdef int b
    if v != v or hi <= 0.0 or v <= 0.0:
        return 0
    if v >= hi:  # also +inf: casting inf or NaN to int is undefined behaviour
        return nbins - 1
    b = <int>(v / hi * nbins)
    return nbins - 1 if b >= nbins else b


ctypedef fused real_t:
    float
    double


cdef int64_t _rows_pass(const real_t* xs, Py_ssize_t rows, Py_ssize_t nc, bint logits, float* top1,
                        int64_t* pred, int64_t* counts, int64_t* h_top1,
                        int64_t* h_margin, int64_t* h_entropy, int nbins,
                        double* top1_sum) noexcept nogil:
    # Raw pointers (``observe`` checks the shapes): acquiring seven typed memoryviews cost
    # about 3 us a call, more than the pass itself on a per-request batch.
    cdef Py_ssize_t r, c
    cdef const real_t* x
    cdef double m1, m2, v, s, acc, p, ent, p1, p2
    cdef Py_ssize_t arg
    cdef bint bad
    cdef int64_t invalid = 0
    cdef double ln_c = log(<double>nc)
    for r in range(rows):
        x = xs + r * nc
        m1 = -INFINITY
        m2 = -INFINITY
        arg = 0
        bad = False
        for c in range(nc):
            v = x[c]
            if v != v:
                bad = True
                break
            if v > m1:
                m2 = m1
                m1 = v
                arg = c
            elif v > m2:
                m2 = v
        if bad or m1 == -INFINITY:
            invalid += 1
            top1[r] = <float>(NAN if bad else 0.0)
            pred[r] = -1
            continue
        if logits:
            if m1 == INFINITY:
                p1 = 1.0
                p2 = 0.0
                ent = 0.0
            else:
                s = 0.0
                acc = 0.0
                for c in range(nc):
                    v = exp(x[c] - m1)
                    s += v
                    if v > 0.0:
                        acc += v * (x[c] - m1)
                p1 = 1.0 / s
                p2 = exp(m2 - m1) / s if nc > 1 else 0.0
                ent = log(s) - acc / s
        else:
            p1 = m1
            p2 = m2 if nc > 1 else 0.0
            ent = 0.0
            for c in range(nc):
                p = x[c]
                if p > 0.0:
                    ent -= p * log(p)
        if ent < 0.0:
            ent = 0.0
        top1[r] = <float>p1
        pred[r] = arg
        counts[arg] += 1
        top1_sum[0] += p1
        h_top1[_bin(p1, 1.0, nbins)] += 1
        h_margin[_bin(p1 - p2, 1.0, nbins)] += 1
        h_entropy[_bin(ent, ln_c, nbins)] += 1
    return invalid


cdef void _top1_pass(const real_t* x, Py_ssize_t rows, Py_ssize_t nc, bint logits, float* top1,
                     int64_t* pred) noexcept nogil:
    # The same per-row rule as _rows_pass (first maximum wins; a NaN row gets NaN and -1; a row
    # of -inf gets 0 and -1), without the statistics. Raw pointers: this runs for every
    # classifier answer, and acquiring typed memoryviews costs more than the pass itself on
    # a per-request batch; ``top1`` checks the shapes before calling it.
    cdef Py_ssize_t r, c
    cdef const real_t* row
    cdef double m1, v, s
    cdef Py_ssize_t arg
    cdef bint bad
    for r in range(rows):
        row = x + r * nc
        m1 = -INFINITY
        arg = 0
        bad = False
        for c in range(nc):
            v = row[c]
            if v != v:
                bad = True
                break
            if v > m1:
                m1 = v
                arg = c
        if bad or m1 == -INFINITY:
            top1[r] = <float>(NAN if bad else 0.0)
            pred[r] = -1
            continue
        if logits:
            if m1 == INFINITY:
                s = 1.0
            else:
                s = 0.0
                for c in range(nc):
                    s += exp(row[c] - m1)
            top1[r] = <float>(1.0 / s)
        else:
            top1[r] = <float>m1
        pred[r] = arg


def _as_rows(scores):
    # 2-D and C-contiguous; float32 stays float32 (no copy), anything else becomes float64.
    x = np.asarray(scores)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim > 2:    # (rows, -1) is ambiguous for 0 rows: give the width
        x = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    if x.dtype.char == "f":
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)
    return np.ascontiguousarray(x, dtype=np.float64)


def top1(scores, bint logits=False):
    """Top-1 probability (float32[rows]) and class (int64[rows]) of ``scores[rows, classes]``,
    recording nothing: the classifier head every response uses, telemetry on or off."""
    cdef cnp.ndarray x = _as_rows(scores)
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(x)[0]
    cdef Py_ssize_t nc = cnp.PyArray_DIMS(x)[1]
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &n, cnp.NPY_FLOAT32, 0)
    cdef cnp.ndarray pred = cnp.PyArray_EMPTY(1, &n, cnp.NPY_INT64, 0)
    cdef float* t1 = <float*>cnp.PyArray_DATA(out)
    cdef int64_t* pv = <int64_t*>cnp.PyArray_DATA(pred)
    cdef Py_ssize_t r
    if nc == 0:
        for r in range(n):
            t1[r] = 0.0
            pv[r] = -1
        return out, pred
    cdef bint release = n * nc >= NOGIL_MIN_VALUES
    cdef const float* xf
    cdef const double* xd
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        xf = <const float*>cnp.PyArray_DATA(x)
        if release:
            with nogil:
                _top1_pass(xf, n, nc, logits, t1, pv)
        else:
            _top1_pass(xf, n, nc, logits, t1, pv)
    else:
        xd = <const double*>cnp.PyArray_DATA(x)
        if release:
            with nogil:
                _top1_pass(xd, n, nc, logits, t1, pv)
        else:
            _top1_pass(xd, n, nc, logits, t1, pv)
    return out, pred


cdef class ConfidenceStats:
    """Top-1, margin and entropy histograms and per-class counts of a classifier's output."""

    def __init__(self, int n_classes, int n_bins=20):
        if n_classes < 1 or n_bins < 1:
            raise ValueError("n_classes and n_bins must be >= 1")
        self.n_classes = n_classes
        self.n_bins = n_bins
        self.reset()

    def reset(self):
        """Forget everything."""
        self.rows = 0
        self.invalid_rows = 0
        self.top1_sum = 0.0
        self._class_counts = np.zeros(self.n_classes, dtype=np.int64)
        self._top1_hist = np.zeros(self.n_bins, dtype=np.int64)
        self._margin_hist = np.zeros(self.n_bins, dtype=np.int64)
        self._entropy_hist = np.zeros(self.n_bins, dtype=np.int64)

    def observe(self, scores, bint logits=False):
        """Fold a ``[rows, classes]`` batch in; returns (top1 float32[rows], class int64[rows])."""
        cdef cnp.ndarray x = _as_rows(scores)
        cdef cnp.npy_intp n = cnp.PyArray_DIMS(x)[0]
        if cnp.PyArray_DIMS(x)[1] != self.n_classes:
            raise ValueError(f"expected {self.n_classes} classes, got {cnp.PyArray_DIMS(x)[1]}")
        cdef Py_ssize_t nc = self.n_classes
        cdef cnp.ndarray top1 = cnp.PyArray_EMPTY(1, &n, cnp.NPY_FLOAT32, 0)
        cdef cnp.ndarray pred = cnp.PyArray_EMPTY(1, &n, cnp.NPY_INT64, 0)
        cdef float* t1 = <float*>cnp.PyArray_DATA(top1)
        cdef int64_t* pv = <int64_t*>cnp.PyArray_DATA(pred)
        # the counters are C-contiguous int64 arrays of their own (reset makes them; merge
        # adds in place), so their data pointers stay valid while this call holds them
        cdef int64_t* counts = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._class_counts)
        cdef int64_t* ht = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._top1_hist)
        cdef int64_t* hm = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._margin_hist)
        cdef int64_t* he = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._entropy_hist)
        cdef double tsum = 0.0
        cdef int64_t invalid
        cdef const float* xf
        cdef const double* xd
        # a small batch keeps the GIL (gil.pxd)
        cdef bint release = n * nc >= NOGIL_MIN_VALUES
        if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
            xf = <const float*>cnp.PyArray_DATA(x)
            if release:
                with nogil:
                    invalid = _rows_pass(xf, n, nc, logits, t1, pv, counts, ht, hm, he,
                                         self.n_bins, &tsum)
            else:
                invalid = _rows_pass(xf, n, nc, logits, t1, pv, counts, ht, hm, he,
                                     self.n_bins, &tsum)
        else:
            xd = <const double*>cnp.PyArray_DATA(x)
            if release:
                with nogil:
                    invalid = _rows_pass(xd, n, nc, logits, t1, pv, counts, ht, hm, he,
                                         self.n_bins, &tsum)
            else:
                invalid = _rows_pass(xd, n, nc, logits, t1, pv, counts, ht, hm, he,
                                     self.n_bins, &tsum)
        self.rows += n - invalid
        self.invalid_rows += invalid
        self.top1_sum += tsum
        return top1, pred

    def merge(self, ConfidenceStats other not None):
        """Add ``other``'s counts (same class and bin counts)."""
        if other.n_classes != self.n_classes or other.n_bins != self.n_bins:
            raise ValueError("confidence statistics have different shapes")
        self.rows += other.rows
        self.invalid_rows += other.invalid_rows
        self.top1_sum += other.top1_sum
        self._class_counts += other._class_counts
        self._top1_hist += other._top1_hist
        self._margin_hist += other._margin_hist
        self._entropy_hist += other._entropy_hist

    def state(self):
        """Copies of the counters as a dict of numpy arrays and numbers."""
        return dict(rows=self.rows, invalid_rows=self.invalid_rows,
                    mean_top1=self.top1_sum / self.rows if self.rows else float("nan"),
                    class_counts=self._class_counts.copy(),
                    top1_hist=self._top1_hist.copy(), margin_hist=self._margin_hist.copy(),
                    entropy_hist=self._entropy_hist.copy(),
                    entropy_max=float(np.log(self.n_classes)))
