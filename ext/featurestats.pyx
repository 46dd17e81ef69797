# cython: language_level=3
"""Per-feature statistics of one model input, a whole batch at a time.

A batch ``[rows, features]`` (higher ranks are flattened to ``[rows, -1]``) is folded in
two ``nogil`` passes: the first counts NaN/Inf and takes the finite count, sum, min and
max per feature; the second takes the batch's sum of squared deviations about its own
mean (two-pass, so no cancellation) and bins the values. The batch moments are then
merged into the running ones with Chan et al.'s parallel update, the same rule ``merge``
uses for two accumulators. NaN and +/-Inf are counted and excluded from the moments and
the histogram.

Histogram bins per feature: edges given explicitly (shared ``[n_bins + 1]`` or per
feature ``[features, n_bins + 1]``), or uniform over a configured ``value_range``, or the
quantiles of the first ``warmup_rows`` rows (then frozen; the buffered rows are binned
once the edges exist). The rows a freeze takes its quantiles from (its *freeze set*) are the
buffered batches up to the first that brings the count to ``warmup_rows``. With
``defer_freeze`` the freeze is left to the owner, off the thread that observes
(``freeze_pending``, ``freeze_part``, ``freeze_with``): the edges and the histogram of the
freeze set are the same as an inline freeze's, batches that came meanwhile are binned by
``freeze_with``; past ``DEFER_MAX_FACTOR`` x ``warmup_rows`` buffered rows ``observe`` freezes
inline after all, so the buffer stays bounded. Bins are ``[e_i, e_i+1)`` with the last one
closed, like ``numpy.histogram``, plus an underflow and an overflow bin. Uniform bins are
found by arithmetic; explicit edges through an exact per-feature table of uniform cells
(``_fill_index``), so a value costs one table load and one comparison.

State lives in plain C arrays; ``observe`` takes the input's data pointer once (no
buffer acquisition per pass) and runs both passes row-major (features inner, contiguous),
releasing the GIL for batches of at least ``NOGIL_MIN_VALUES`` values (``gil.pxd``).
"""
cimport numpy as cnp
from libc.math cimport INFINITY, nextafter
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memcmp

from gil cimport NOGIL_MIN_VALUES

import math

import numpy as np

cnp.import_array()

ctypedef fused value_t:
    float
    double
    int32_t
    int64_t
    uint8_t

#: With defer_freeze: buffered rows, as a multiple of warmup_rows, past which observe freezes inline
DEFER_MAX_FACTOR = 2
cdef int _MAX_CELLS = 512     # per feature, or 2 * n_bins: at most 4 KiB or twice the edges

cdef enum:
    _NO_BINS = 0
    _UNIFORM = 1
    _EDGES = 2


cdef void _fast_moments_pass(const value_t* x, Py_ssize_t rows, Py_ssize_t nf, double* s,
                             double* mn, double* mx) noexcept nogil:
    """Sum, min and max per feature without any finiteness test (branch-free, so the
    compiler vectorises it across features). A NaN or Inf anywhere leaves a non-finite
    sum behind, which sends the batch to the careful passes."""
    cdef Py_ssize_t r, f
    cdef const value_t* row
    cdef double v
    for r in range(rows):
        row = x + r * nf
        for f in range(nf):
            v = <double>row[f]
            s[f] += v
            mn[f] = v if v < mn[f] else mn[f]
            mx[f] = v if v > mx[f] else mx[f]


cdef void _fast_deviation_pass(const value_t* x, Py_ssize_t rows, Py_ssize_t nf,
                               const double* bmean, double* bm2) noexcept nogil:
    """Sum of squared deviations of an all-finite batch (branch-free, vectorised)."""
    cdef Py_ssize_t r, f
    cdef const value_t* row
    cdef double d
    for r in range(rows):
        row = x + r * nf
        for f in range(nf):
            d = <double>row[f] - bmean[f]
            bm2[f] += d * d


cdef inline Py_ssize_t _uniform_slot(double v, double lo, double inv, const double* e,
                                     int nbins) noexcept nogil:
    """Histogram slot of a finite ``v`` for the uniform edges ``e[0 .. nbins]``: the bin
    that ``(v - low) * nbins / (high - low)`` points at, then corrected against the edges
    themselves (as numpy.histogram does), since the rounded arithmetic can point one bin
    beside a value within an ulp or so of an edge (or of the top of the range)."""
    cdef Py_ssize_t b
    cdef double t
    if v < e[0]:
        return 0
    if v > e[nbins]:
        return nbins + 1
    t = (v - lo) * inv
    b = <Py_ssize_t>t if t < nbins else nbins - 1    # t >= 0 here; NaN: the last bin
    while b > 0 and v < e[b]:
        b -= 1
    while b < nbins - 1 and v >= e[b + 1]:
        b += 1
    return b + 1                                      # the last bin is closed


cdef void _fast_uniform_bins(const value_t* x, Py_ssize_t rows, Py_ssize_t nf,
                             const double* lo, const double* inv, const double* edges,
                             int nbins, int64_t* hist) noexcept nogil:
    """Uniform binning of an all-finite batch."""
    cdef Py_ssize_t r, f
    cdef Py_ssize_t stride = nbins + 2
    cdef const value_t* row
    cdef int64_t* h
    cdef const double* e
    for r in range(rows):
        row = x + r * nf
        h = hist
        e = edges
        for f in range(nf):
            h[_uniform_slot(<double>row[f], lo[f], inv[f], e, nbins)] += 1
            h += stride
            e += nbins + 1


cdef void _moments_pass(const value_t* x, Py_ssize_t rows, Py_ssize_t nf, int64_t* bad,
                        double* s, double* mn, double* mx, int64_t* nan,
                        int64_t* inf) noexcept nogil:
    """Per feature: sum, min, max of the finite values; NaN / Inf counts; ``bad`` counts
    both (the finite count is rows - bad)."""
    cdef Py_ssize_t r, f
    cdef const value_t* row
    cdef double v
    for r in range(rows):
        row = x + r * nf
        for f in range(nf):
            v = <double>row[f]
            if v - v != 0.0:        # NaN or +/-Inf (rare)
                bad[f] += 1
                if v != v:
                    nan[f] += 1
                else:
                    inf[f] += 1
                continue
            s[f] += v
            if v < mn[f]:
                mn[f] = v
            if v > mx[f]:
                mx[f] = v


cdef void _deviation_pass(const value_t* x, Py_ssize_t rows, Py_ssize_t nf,
                          const double* bmean, double* bm2) noexcept nogil:
    cdef Py_ssize_t r, f
    cdef const value_t* row
    cdef double v, d
    for r in range(rows):
        row = x + r * nf
        for f in range(nf):
            v = <double>row[f]
            if v - v != 0.0:
                continue
            d = v - bmean[f]
            bm2[f] += d * d


cdef void _deviation_uniform_pass(const value_t* x, Py_ssize_t rows, Py_ssize_t nf,
                                  const double* bmean, double* bm2, const double* lo,
                                  const double* inv, const double* edges, int nbins,
                                  int64_t* hist) noexcept nogil:
    """Deviation pass fused with uniform binning (bm2 NULL: binning only)."""
    cdef Py_ssize_t r, f
    cdef Py_ssize_t stride = nbins + 2
    cdef const value_t* row
    cdef double v, d
    for r in range(rows):
        row = x + r * nf
        for f in range(nf):
            v = <double>row[f]
            if v - v != 0.0:
                continue
            if bm2 != NULL:
                d = v - bmean[f]
                bm2[f] += d * d
            hist[f * stride + _uniform_slot(v, lo[f], inv[f], edges + f * (nbins + 1),
                                            nbins)] += 1


# +inf entries after each feature's thresholds: a crowded cell of up to _PAD thresholds
# is counted with _PAD comparisons and no branch.
cdef enum:
    _PAD = 8


cdef inline int32_t _cell(double v, double t0, double scale, double mtop) noexcept nogil:
    """Lookup cell of ``v``: 0 below the first edge, 1..m across the span, m + 1 at or
    above the last edge. Monotone in ``v`` (every step is), which is all the table
    built by ``_fill_index`` relies on: it runs this same function over the edges."""
    cdef double t = (v - t0) * scale
    t = t if t > -1.0 else -1.0         # NaN (degenerate span only) lands in cell 0
    t = t if t < mtop else mtop
    return <int32_t>(t + 1.0)           # t + 1 >= 0: truncation is floor


cdef inline Py_ssize_t _slot(FeatureStats st, Py_ssize_t f, Py_ssize_t i,
                             double v) noexcept nogil:
    """Histogram slot of a finite ``v`` of feature ``f`` in its cell ``i`` (counted from
    the start of ``st._lut``, see ``_cell``): how many of the thresholds ``e[0 .. nbins-1],
    next_above(e[nbins])`` are <= v. 0 is the underflow slot, j + 1 bin j (so the last
    bin is closed), nbins + 1 the overflow slot.

    A cell with at most one threshold: one table load, one comparison. A crowded cell
    (sign bit set) whose thresholds take at most two values (a discrete feature's
    repeated edges, a last edge and the one just above it): two comparisons, no branch.
    Otherwise up to _PAD thresholds are counted without a branch, more binary-searched."""
    cdef const double* thr = st._thr + f * (st.n_bins + 1 + _PAD)
    cdef Py_ssize_t lo = st._lut[i]
    cdef Py_ssize_t n, n1, half, j
    cdef const double* base
    if lo >= 0:
        return lo + (thr[lo] <= v)
    lo = -1 - lo
    n = st._lutn[i]
    base = thr + lo
    if n >= 0:                          # n1 equal thresholds, then n2 equal ones
        n1 = n & 0xffff
        return lo + n1 * (base[0] <= v) + (n >> 16) * (base[n1] <= v)
    n = -n
    if n <= _PAD:                       # thresholds past the cell's are > v (or +inf pads)
        for j in range(_PAD):
            lo += base[j] <= v
        return lo
    while n > 1:                        # branch-free upper bound over n thresholds
        half = n >> 1
        base = base + half if base[half] <= v else base
        n -= half
    return (base - thr) + (base[0] <= v)


cdef void _fill_index(const double* e, int nbins, int m, double* t0, double* scale,
                      double* mtop, double* thr, int32_t* lut,
                      int32_t* lutn) noexcept nogil:
    """Build one feature's lookup over edges ``e[0 .. nbins]`` with ``m`` cells (0:
    degenerate span: one crowded cell); ``lut`` and ``lutn`` hold ``m + 2`` each,
    ``thr`` ``nbins + 1 + _PAD``.

    A cell holding at most one threshold stores how many thresholds lie in lower cells
    (all of them <= any value of the cell; those of higher cells are above it), so the
    slot is that count plus one comparison. A crowded cell stores ``-1 - count`` and, in
    ``lutn``, ``n1 | n2 << 16`` when its thresholds are n1 copies of one value then n2 of
    another, else minus how many it holds."""
    cdef Py_ssize_t k, j, c
    cdef double span = e[nbins] - e[0]
    cdef double s = 0.0
    cdef int nthr = nbins + 1
    for k in range(nbins):
        thr[k] = e[k]
    thr[nbins] = nextafter(e[nbins], INFINITY)
    for k in range(nbins + 1, nbins + 1 + _PAD):
        thr[k] = INFINITY
    if m > 0 and span > 0.0:
        s = <double>m / span
    if not (s > 0.0 and s < INFINITY):
        m = 0
        s = 0.0
    t0[0] = e[0]
    scale[0] = s
    mtop[0] = <double>m
    if m == 0:
        for c in range(2):
            lut[c] = -1
            lutn[c] = _crowded(thr, nthr)
        return
    k = 0
    for c in range(m + 2):
        while k < nthr and _cell(thr[k], e[0], s, <double>m) < c:
            k += 1
        j = k
        while j < nthr and _cell(thr[j], e[0], s, <double>m) == c:
            j += 1
        if j - k <= 1:
            lut[c] = <int32_t>k
            lutn[c] = <int32_t>(j - k)
        else:
            lut[c] = <int32_t>(-1 - k)
            lutn[c] = _crowded(thr + k, j - k)
        k = j


cdef int32_t _crowded(const double* t, Py_ssize_t n) noexcept nogil:
    """``lutn`` of a cell holding the ``n`` sorted thresholds ``t`` (see _fill_index)."""
    cdef Py_ssize_t n1 = 1
    while n1 < n and t[n1] == t[0]:
        n1 += 1
    if n1 < 0x8000 and n - n1 < 0x8000 and (n1 == n or t[n1] == t[n - 1]):
        return <int32_t>(n1 | ((n - n1) << 16))
    return <int32_t>(-n)


cdef void _fast_edge_bins(const value_t* x, Py_ssize_t rows, Py_ssize_t nf,
                          FeatureStats st) noexcept nogil:
    """Binning of an all-finite batch by explicit edges, a row at a time in three
    loops: cells (vectorised), slots (table loads), counts. Keeping the counts apart
    from the loads lets the loads of many values overlap."""
    cdef Py_ssize_t r, f
    cdef Py_ssize_t stride = st.n_bins + 2
    cdef const value_t* row
    cdef double t
    cdef int32_t* cells = st._cells
    cdef int64_t* slots = st._slots
    cdef int64_t* hist = st._hist
    cdef const double* t0 = st._t0
    cdef const double* scale = st._scale
    cdef const double* mtop = st._mtop
    cdef const int32_t* lutoff = st._lutoff
    for r in range(rows):
        row = x + r * nf
        for f in range(nf):
            # _cell written out: the call costs ~4 instructions a value (callgrind) because
            # this loop stops vectorising; the steps must stay identical to _cell's (the
            # property tests compare both passes with the reference).
            t = (<double>row[f] - t0[f]) * scale[f]
            t = t if t > -1.0 else -1.0
            t = t if t < mtop[f] else mtop[f]
            cells[f] = <int32_t>(t + 1.0) + lutoff[f]
        for f in range(nf):
            slots[f] = f * stride + _slot(st, f, cells[f], <double>row[f])
        for f in range(nf):
            hist[slots[f]] += 1


cdef void _deviation_edges_pass(const value_t* x, Py_ssize_t rows, Py_ssize_t nf,
                                const double* bmean, double* bm2,
                                FeatureStats st) noexcept nogil:
    """Deviation pass fused with binning by explicit edges (bm2 NULL: binning only)."""
    cdef Py_ssize_t r, f
    cdef Py_ssize_t stride = st.n_bins + 2
    cdef const value_t* row
    cdef double v, d
    cdef Py_ssize_t c
    for r in range(rows):
        row = x + r * nf
        for f in range(nf):
            v = <double>row[f]
            if v - v != 0.0:
                continue
            if bm2 != NULL:
                d = v - bmean[f]
                bm2[f] += d * d
            c = _cell(v, st._t0[f], st._scale[f], st._mtop[f]) + st._lutoff[f]
            st._hist[f * stride + _slot(st, f, c, v)] += 1


cdef void _pass2(const value_t* x, Py_ssize_t rows, Py_ssize_t nf, const double* bmean,
                 double* bm2, int mode, FeatureStats st) noexcept nogil:
    if mode == _UNIFORM:
        _deviation_uniform_pass(x, rows, nf, bmean, bm2, st._lo, st._inv, st._edges,
                                st.n_bins, st._hist)
    elif mode == _EDGES:
        _deviation_edges_pass(x, rows, nf, bmean, bm2, st)
    elif bm2 != NULL:
        _deviation_pass(x, rows, nf, bmean, bm2)


cdef void _fold(const value_t* x, Py_ssize_t rows, Py_ssize_t nf, FeatureStats st,
                int mode) noexcept nogil:
    """One batch into ``st``: moments pass, deviation (+ bins) pass, Chan merge.

    Fast path: branch-free passes, valid when the batch is all finite (checked by the
    batch sums); otherwise the batch is redone with the NaN/Inf-aware passes."""
    cdef Py_ssize_t f
    cdef int64_t n, nb_i
    cdef double delta, nb
    cdef bint finite = True
    for f in range(nf):
        st._bsum[f] = 0.0
        st._bm2[f] = 0.0
        st._bmin[f] = INFINITY
        st._bmax[f] = -INFINITY
    _fast_moments_pass(x, rows, nf, st._bsum, st._bmin, st._bmax)
    for f in range(nf):
        if st._bsum[f] - st._bsum[f] != 0.0:
            finite = False
            break
    if finite:
        for f in range(nf):
            st._bcnt[f] = rows
            st._bmean[f] = st._bsum[f] / <double>rows
            if st._bmin[f] < st._min[f]:
                st._min[f] = st._bmin[f]
            if st._bmax[f] > st._max[f]:
                st._max[f] = st._bmax[f]
        _fast_deviation_pass(x, rows, nf, st._bmean, st._bm2)
        if mode == _UNIFORM:
            _fast_uniform_bins(x, rows, nf, st._lo, st._inv, st._edges, st.n_bins,
                               st._hist)
        elif mode == _EDGES:
            _fast_edge_bins(x, rows, nf, st)
    else:
        for f in range(nf):
            st._bcnt[f] = 0
            st._bsum[f] = 0.0
        _moments_pass(x, rows, nf, st._bcnt, st._bsum, st._min, st._max, st._nan,
                      st._inf)
        for f in range(nf):
            st._bcnt[f] = rows - st._bcnt[f]
            st._bmean[f] = st._bsum[f] / <double>st._bcnt[f] if st._bcnt[f] > 0 else 0.0
        _pass2(x, rows, nf, st._bmean, st._bm2, mode, st)
    for f in range(nf):
        nb_i = st._bcnt[f]
        if nb_i == 0:
            continue
        n = st._count[f] + nb_i
        nb = <double>nb_i
        delta = st._bmean[f] - st._mean[f]
        st._mean[f] += delta * (nb / <double>n)
        st._m2[f] += st._bm2[f] + delta * delta * (<double>st._count[f] * nb / <double>n)
        st._count[f] = n


cdef cnp.ndarray _as_2d(object batch, int n_features):
    """A C-contiguous, aligned, native-order 2-D view (or copy) of ``batch``."""
    cdef cnp.ndarray arr
    cdef int t
    if type(batch) is np.ndarray:
        arr = <cnp.ndarray>batch
    else:
        arr = np.asarray(batch)
    cdef int nd = cnp.PyArray_NDIM(arr)
    if nd == 0:
        raise ValueError("input batch must have at least one dimension")
    if nd == 1:
        arr = arr.reshape(-1, n_features) if n_features > 1 else arr.reshape(-1, 1)
    elif nd > 2:    # (rows, -1) is ambiguous for 0 rows: give the width
        arr = arr.reshape(cnp.PyArray_DIMS(arr)[0], math.prod((<object>arr).shape[1:]))
    if cnp.PyArray_DIMS(arr)[1] != n_features:
        raise ValueError(f"expected {n_features} features per row, got {arr.shape[1]}")
    t = cnp.PyArray_TYPE(arr)
    if not (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE or t == cnp.NPY_INT32
            or t == cnp.NPY_INT64 or t == cnp.NPY_UBYTE):
        return np.ascontiguousarray(arr, dtype=np.float64)
    if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISBEHAVED_RO(arr)):
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)
    return arr


cdef void _fold_typed(FeatureStats st, const void* p, int t, Py_ssize_t rows,
                      Py_ssize_t nf, int mode, bint moments) noexcept nogil:
    if moments:
        if t == cnp.NPY_FLOAT:
            _fold(<const float*>p, rows, nf, st, mode)
        elif t == cnp.NPY_DOUBLE:
            _fold(<const double*>p, rows, nf, st, mode)
        elif t == cnp.NPY_INT32:
            _fold(<const int32_t*>p, rows, nf, st, mode)
        elif t == cnp.NPY_INT64:
            _fold(<const int64_t*>p, rows, nf, st, mode)
        else:
            _fold(<const uint8_t*>p, rows, nf, st, mode)
    else:
        if t == cnp.NPY_FLOAT:
            _pass2(<const float*>p, rows, nf, NULL, NULL, mode, st)
        elif t == cnp.NPY_DOUBLE:
            _pass2(<const double*>p, rows, nf, NULL, NULL, mode, st)
        elif t == cnp.NPY_INT32:
            _pass2(<const int32_t*>p, rows, nf, NULL, NULL, mode, st)
        elif t == cnp.NPY_INT64:
            _pass2(<const int64_t*>p, rows, nf, NULL, NULL, mode, st)
        else:
            _pass2(<const uint8_t*>p, rows, nf, NULL, NULL, mode, st)


cdef int _fold_array(FeatureStats st, cnp.ndarray x, int mode, bint moments) except -1:
    """Moments + bins (``moments``) or bins only (warm-up rows) of a batch from _as_2d."""
    cdef void* p = cnp.PyArray_DATA(x)
    cdef Py_ssize_t rows = cnp.PyArray_DIMS(x)[0]
    cdef Py_ssize_t nf = st.n_features
    cdef int t = cnp.PyArray_TYPE(x)
    if rows == 0:
        return 0
    if rows * nf >= NOGIL_MIN_VALUES:
        with nogil:
            _fold_typed(st, p, t, rows, nf, mode, moments)
    else:  # see NOGIL_MIN_VALUES: a small batch keeps the GIL
        _fold_typed(st, p, t, rows, nf, mode, moments)
    return 0


cdef inline int _mode(FeatureStats st) noexcept:
    if not st._has_edges:
        return _NO_BINS
    return _UNIFORM if st._uniform else _EDGES


cdef object _copy_out(const void* src, Py_ssize_t n, object dtype, object shape):
    out = np.empty(shape, dtype=dtype)
    if n:
        memcpy(cnp.PyArray_DATA(out), src, n * out.itemsize)
    return out


def _quantile_edges(rows, int n_bins):
    """Each column's ``np.quantile`` at ``n_bins + 1`` even steps over its finite values (numpy's
    default linear rule; its "lower" rule for a column where interpolating overflows), for all
    columns from one sort: the per-column loop took ~0.5 s for 4,096 features of 1,024 rows, a
    stall of the execution thread that froze them. A column with no finite value gets 0..1, a
    constant one its value -0.5..+0.5."""
    nf = rows.shape[1]
    qs = np.linspace(0.0, 1.0, n_bins + 1)
    finite = np.isfinite(rows)
    n = finite.sum(axis=0)                                # finite values per column
    ordered = np.where(finite, rows, np.inf)
    ordered.sort(axis=0)                      # in place: each column's finite values first
    cols = np.arange(nf)
    last = np.maximum(n - 1, 0)
    virtual = qs[:, None] * last[None, :]                 # (n_bins + 1, features), as numpy's rule
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, last[None, :])
    gamma = virtual - below
    a = ordered[below, cols]
    b = ordered[above, cols]
    with np.errstate(over="ignore", invalid="ignore"):
        diff = b - a
        edges = np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)
        bad = ~(np.isfinite(edges).all(axis=0) & (edges[1:] >= edges[:n_bins]).all(axis=0))
    if bad.any():  # interpolating between values further apart than the double range overflowed
        edges[:, bad] = a[:, bad]                         # the order statistics themselves
    flat = edges[0] == edges[n_bins]
    edges[:, flat] = edges[0, flat] - 0.5 + qs[:, None]
    empty = n == 0
    edges[:, empty] = qs[:, None]
    edges += 0.0  # -0.0 -> 0.0: a sort or np.quantile's partition may pick either equal zero
    return np.ascontiguousarray(edges.T)


cdef class FeatureStats:
    """Count, mean, variance, min, max, NaN/Inf counts and a histogram per feature."""

    def __cinit__(self, *args, **kwargs):
        self._count = NULL    # the arrays are allocated by _alloc once n_bins is known
        self._hist = NULL
        self._edges = NULL
        self._lut = NULL
        self.sample_every = 1    # observe() divides by it: never 0, even without __init__

    def __dealloc__(self):
        free(self._count)
        free(self._mean)
        free(self._m2)
        free(self._min)
        free(self._max)
        free(self._nan)
        free(self._inf)
        free(self._hist)
        free(self._edges)
        free(self._t0)
        free(self._scale)
        free(self._mtop)
        free(self._lutoff)
        free(self._lut)
        free(self._lutn)
        free(self._thr)
        free(self._cells)
        free(self._slots)
        free(self._lo)
        free(self._inv)
        free(self._bcnt)
        free(self._bsum)
        free(self._bmean)
        free(self._bm2)
        free(self._bmin)
        free(self._bmax)

    cdef int _alloc(self, int n_features, int n_bins) except -1:
        cdef size_t nf = <size_t>n_features
        if self._count != NULL:
            raise RuntimeError("FeatureStats is already initialised")
        self.n_features = n_features
        self.n_bins = n_bins
        self._count = <int64_t*>malloc(nf * sizeof(int64_t))
        self._mean = <double*>malloc(nf * sizeof(double))
        self._m2 = <double*>malloc(nf * sizeof(double))
        self._min = <double*>malloc(nf * sizeof(double))
        self._max = <double*>malloc(nf * sizeof(double))
        self._nan = <int64_t*>malloc(nf * sizeof(int64_t))
        self._inf = <int64_t*>malloc(nf * sizeof(int64_t))
        self._hist = <int64_t*>malloc(nf * (n_bins + 2) * sizeof(int64_t))
        self._edges = <double*>malloc(nf * (n_bins + 1) * sizeof(double))
        self._t0 = <double*>malloc(nf * sizeof(double))
        self._scale = <double*>malloc(nf * sizeof(double))
        self._mtop = <double*>malloc(nf * sizeof(double))
        self._lutoff = <int32_t*>malloc(nf * sizeof(int32_t))
        self._thr = <double*>malloc(nf * (n_bins + 1 + _PAD) * sizeof(double))
        self._cells = <int32_t*>malloc(nf * sizeof(int32_t))
        self._slots = <int64_t*>malloc(nf * sizeof(int64_t))
        self._lo = <double*>malloc(nf * sizeof(double))
        self._inv = <double*>malloc(nf * sizeof(double))
        self._bcnt = <int64_t*>malloc(nf * sizeof(int64_t))
        self._bsum = <double*>malloc(nf * sizeof(double))
        self._bmean = <double*>malloc(nf * sizeof(double))
        self._bm2 = <double*>malloc(nf * sizeof(double))
        self._bmin = <double*>malloc(nf * sizeof(double))
        self._bmax = <double*>malloc(nf * sizeof(double))
        if (self._count == NULL or self._mean == NULL or self._m2 == NULL
                or self._min == NULL or self._max == NULL or self._nan == NULL
                or self._inf == NULL or self._hist == NULL or self._edges == NULL
                or self._t0 == NULL or self._scale == NULL
                or self._mtop == NULL or self._lutoff == NULL or self._thr == NULL
                or self._cells == NULL or self._slots == NULL
                or self._lo == NULL or self._inv == NULL or self._bcnt == NULL
                or self._bsum == NULL or self._bmean == NULL or self._bm2 == NULL
                or self._bmin == NULL or self._bmax == NULL):
            raise MemoryError()
        self._has_edges = False
        self._uniform = False
        self._clear()
        return 0

    cdef void _clear(self) noexcept:
        cdef Py_ssize_t f
        cdef Py_ssize_t i
        cdef Py_ssize_t nh = <Py_ssize_t>self.n_features * (self.n_bins + 2)
        for f in range(self.n_features):
            self._count[f] = 0
            self._mean[f] = 0.0
            self._m2[f] = 0.0
            self._min[f] = INFINITY
            self._max[f] = -INFINITY
            self._nan[f] = 0
            self._inf[f] = 0
        for i in range(nh):
            self._hist[i] = 0

    def __init__(self, int n_features, *, edges=None, value_range=None, int n_bins=10,
                 int warmup_rows=1024, int sample_every=1, bint defer_freeze=False):
        if n_features < 1:
            raise ValueError("n_features must be >= 1")
        if sample_every < 1:
            raise ValueError("sample_every must be >= 1")
        e = None
        lo = hi = 0.0
        if edges is not None:
            e = np.asarray(edges, dtype=np.float64)
            if e.ndim == 1:
                e = np.broadcast_to(e, (n_features, e.shape[0]))
            if e.ndim != 2 or e.shape[0] != n_features or e.shape[1] < 2:
                raise ValueError("edges must be [n_bins + 1] or [n_features, n_bins + 1]")
            if not np.all(np.isfinite(e)) or not np.all(e[:, 1:] >= e[:, :-1]):
                raise ValueError("edges must be finite and non-decreasing")
            n_bins = e.shape[1] - 1
        elif value_range is not None:
            lo, hi = (float(v) for v in value_range)
            if not (lo < hi and math.isfinite(hi - lo)):
                raise ValueError("value_range must be finite (low, high) with low < high")
        elif warmup_rows < 1:
            raise ValueError("give edges, value_range or warmup_rows >= 1")
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        self._alloc(n_features, n_bins)
        self.sample_every = sample_every
        self.warmup_rows = warmup_rows
        self.defer_freeze = defer_freeze
        if e is not None:
            self._set_edges(e)
        elif value_range is not None:
            self._set_uniform(np.full(n_features, lo), np.full(n_features, hi))
        self.reset()

    def _set_edges(self, edges):
        e = np.ascontiguousarray(edges, dtype=np.float64)
        assert e.shape == (self.n_features, self.n_bins + 1)
        # Cells per feature: twice the span over the narrowest non-empty bin, so a cell
        # rarely holds two thresholds; capped, which only costs a binary search in the
        # crowded cells.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            span = e[:, -1] - e[:, 0]          # may overflow: degenerate, see _fill_index
            width = np.diff(e, axis=1)
            width = np.where(width > 0, width, np.inf).min(axis=1)
            cells = np.ceil(2.0 * span / width)
        cells = np.where(np.isfinite(cells) & (span > 0),
                         np.clip(cells, 1, max(_MAX_CELLS, 2 * self.n_bins)), 0)
        cells = cells.astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(cells + 2)])
        n_cells = int(offsets[self.n_features])     # the last offset: all features' cells
        if n_cells > 2**31 - 1:
            raise ValueError("too many features x bins for the edge lookup")
        cdef size_t total = <size_t>n_cells
        cdef int32_t* lut = <int32_t*>malloc(total * sizeof(int32_t))
        cdef int32_t* lutn = <int32_t*>malloc(total * sizeof(int32_t))
        if lut == NULL or lutn == NULL:
            free(lut)
            free(lutn)
            raise MemoryError()
        free(self._lut)
        free(self._lutn)
        self._lut = lut
        self._lutn = lutn
        memcpy(self._edges, cnp.PyArray_DATA(e), e.size * sizeof(double))
        cdef Py_ssize_t f
        cdef Py_ssize_t off
        cdef int nb = self.n_bins
        for f in range(self.n_features):
            off = offsets[f]
            self._lutoff[f] = <int32_t>off
            _fill_index(self._edges + f * (nb + 1), nb, <int>cells[f], &self._t0[f],
                        &self._scale[f], &self._mtop[f], self._thr + f * (nb + 1 + _PAD),
                        lut + off, lutn + off)
        self._has_edges = True
        self._uniform = False

    def _set_uniform(self, lo, hi):
        lo = np.ascontiguousarray(lo, dtype=np.float64)
        hi = np.ascontiguousarray(hi, dtype=np.float64)
        e = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, self.n_bins + 1)[None, :]
        e[:, -1] = hi
        self._set_edges(e)
        inv = np.ascontiguousarray(self.n_bins / (hi - lo))
        memcpy(self._lo, cnp.PyArray_DATA(lo), self.n_features * sizeof(double))
        memcpy(self._inv, cnp.PyArray_DATA(inv), self.n_features * sizeof(double))
        self._uniform = True

    def reset(self):
        """Forget the moments, counts and histogram (frozen edges are kept)."""
        self._clear()
        self._warmup = []
        self._warmup_n = 0
        self._warmup_gen += 1
        self.batches_seen = 0
        self.batches_observed = 0

    @property
    def edges(self):
        """Bin edges ``[features, n_bins + 1]`` or None while warming up."""
        if not self._has_edges:
            return None
        return _copy_out(self._edges, self.n_features * (self.n_bins + 1), np.float64,
                         (self.n_features, self.n_bins + 1))

    cdef int _bin(self, object x) except -1:
        return _fold_array(self, x, _mode(self), False)

    cpdef bint observe(self, object batch) except -1:
        """Fold one batch in; returns False when skipped by sampling (every k-th batch)."""
        self.batches_seen += 1
        if (self.batches_seen - 1) % self.sample_every != 0:
            return False
        cdef cnp.ndarray x = _as_2d(batch, self.n_features)
        self.batches_observed += 1
        if cnp.PyArray_DIMS(x)[0] == 0:
            return True
        _fold_array(self, x, _mode(self), True)
        if not self._has_edges:
            # a copy: x may be the caller's own array, which it is free to reuse
            self._warmup.append(x.copy())
            self._warmup_n += cnp.PyArray_DIMS(x)[0]
            if self._warmup_n >= self.warmup_rows and (
                    not self.defer_freeze
                    or self._warmup_n >= DEFER_MAX_FACTOR * <int64_t>self.warmup_rows):
                self._freeze_from_warmup()
        return True

    cdef Py_ssize_t _freeze_set(self) except -1:
        """Buffered batches in the freeze set (0: fewer than warmup_rows rows buffered)."""
        cdef int64_t rows = 0
        cdef Py_ssize_t k = 0
        for w in self._warmup:
            rows += (<cnp.ndarray>w).shape[0]
            k += 1
            if rows >= self.warmup_rows:
                return k
        return 0

    def _freeze_from_warmup(self):
        """The inline freeze: the deferred one's two steps, here and now."""
        self.freeze_with(self._warmup_gen, self.freeze_part(self._warmup[:self._freeze_set()]))

    @property
    def freeze_due(self):
        """Warming up, with at least ``warmup_rows`` rows buffered: the edges can be frozen."""
        return not self._has_edges and self._warmup_n >= self.warmup_rows

    def freeze_pending(self):
        """``(token, batches)``: the freeze set, for :meth:`freeze_part` (None: no freeze due).
        Call it where :meth:`observe` is called from, or under the same lock; the batches are
        the accumulator's own copies and are never written to."""
        cdef Py_ssize_t k = self._freeze_set() if not self._has_edges else 0
        if k == 0:
            return None
        return self._warmup_gen, self._warmup[:k]

    def freeze_part(self, batches):
        """A new accumulator binned by the quantile edges of ``batches`` (a freeze set from
        :meth:`freeze_pending`), holding their histogram: the slow part of a freeze, which reads
        nothing of this accumulator's state but its shape, so it may run on another thread."""
        xs = [_as_2d(w, self.n_features) for w in batches]
        if not xs:
            raise ValueError("freeze_part needs at least one batch")
        # one copy and one binning pass over all of them: few GIL hand-overs (each can wait a
        # switch interval for a busy event loop), and both release the GIL
        rows = np.concatenate(xs, dtype=np.float64)
        cdef FeatureStats part = FeatureStats(self.n_features,
                                              edges=_quantile_edges(rows, self.n_bins))
        part._bin(rows)
        return part

    def freeze_with(self, token, FeatureStats part not None):
        """Freeze with ``part``'s edges (``part``: :meth:`freeze_part` of the freeze set that
        :meth:`freeze_pending` returned with ``token``): its histogram is added and the batches
        buffered after the freeze set are binned. False, changing nothing, when the buffer is no
        longer that one (frozen, reset or merged since) or ``part`` does not fit. Same caller as
        :meth:`freeze_pending`."""
        if self._has_edges or token != self._warmup_gen or not part._has_edges:
            return False
        if part.n_features != self.n_features or part.n_bins != self.n_bins:
            return False
        cdef Py_ssize_t k = self._freeze_set()
        if k == 0:
            return False
        self._set_edges(part.edges)
        cdef Py_ssize_t i
        for i in range(<Py_ssize_t>self.n_features * (self.n_bins + 2)):
            self._hist[i] += part._hist[i]
        for w in self._warmup[k:]:
            self._bin(w)
        self._warmup = []
        self._warmup_gen += 1
        return True

    cpdef void merge(self, FeatureStats other) except *:
        """Add ``other``'s statistics (same feature count; same edges once both froze)."""
        cdef Py_ssize_t f
        cdef Py_ssize_t i
        cdef Py_ssize_t nf = self.n_features
        cdef Py_ssize_t nh = nf * (self.n_bins + 2)
        cdef int64_t n
        cdef double delta, nb
        if other is None:   # a typed argument admits None: its fields would be read from None
            raise TypeError("merge() argument must be a FeatureStats, not None")
        if other.n_features != self.n_features or other.n_bins != self.n_bins:
            raise ValueError("feature statistics have different shapes")
        if self._has_edges and other._has_edges:
            if memcmp(self._edges, other._edges,
                      nf * (self.n_bins + 1) * sizeof(double)) != 0:
                if not np.array_equal(self.edges, other.edges):   # e.g. -0.0 vs 0.0
                    raise ValueError("feature statistics have different bin edges")
        for f in range(nf):
            if other._count[f] == 0:
                continue
            n = self._count[f] + other._count[f]
            nb = <double>other._count[f]
            delta = other._mean[f] - self._mean[f]
            self._mean[f] += delta * (nb / <double>n)
            self._m2[f] += other._m2[f] + delta * delta * (<double>self._count[f] * nb / <double>n)
            self._count[f] = n
        for f in range(nf):
            if other._min[f] < self._min[f]:
                self._min[f] = other._min[f]
            if other._max[f] > self._max[f]:
                self._max[f] = other._max[f]
            self._nan[f] += other._nan[f]
            self._inf[f] += other._inf[f]
        if other._has_edges and not self._has_edges:
            self._set_edges(other.edges)
            memcpy(self._lo, other._lo, nf * sizeof(double))
            memcpy(self._inv, other._inv, nf * sizeof(double))
            self._uniform = other._uniform
            for w in self._warmup:
                self._bin(w)
            self._warmup = []
            self._warmup_gen += 1
        if self._has_edges:
            for i in range(nh):
                self._hist[i] += other._hist[i]
            for w in other._warmup:
                self._bin(w)
        else:
            self._warmup.extend(other._warmup)
            self._warmup_n += other._warmup_n
        self.batches_seen += other.batches_seen
        self.batches_observed += other.batches_observed

    def state(self):
        """Copies of the running state as plain numpy arrays (dict)."""
        cdef Py_ssize_t nf = self.n_features
        count = _copy_out(self._count, nf, np.int64, nf)
        m2 = _copy_out(self._m2, nf, np.float64, nf)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(count > 1, m2 / np.maximum(count - 1, 1), np.nan)
        return dict(count=count, mean=_copy_out(self._mean, nf, np.float64, nf), m2=m2,
                    variance=var, min=_copy_out(self._min, nf, np.float64, nf),
                    max=_copy_out(self._max, nf, np.float64, nf),
                    nan_count=_copy_out(self._nan, nf, np.int64, nf),
                    inf_count=_copy_out(self._inf, nf, np.int64, nf),
                    edges=self.edges,
                    histogram=_copy_out(self._hist, nf * (self.n_bins + 2), np.int64,
                                        (nf, self.n_bins + 2)),
                    batches_seen=self.batches_seen, batches_observed=self.batches_observed)

    def copy(self):
        """An independent accumulator with the same state."""
        cdef FeatureStats c = FeatureStats.__new__(FeatureStats)
        c._alloc(self.n_features, self.n_bins)
        c.sample_every = self.sample_every
        c.warmup_rows = self.warmup_rows
        c.defer_freeze = self.defer_freeze
        c.reset()
        c.merge(self)
        return c
