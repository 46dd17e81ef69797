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
once the edges exist). Bins are ``[e_i, e_i+1)`` with the last one closed, like
``numpy.histogram``, plus an underflow and an overflow bin.
"""
cimport cython
from libc.math cimport floor, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t

import numpy as np

ctypedef fused value_t:
    float
    double
    int32_t
    int64_t
    uint8_t


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _moments_pass(const value_t[:, ::1] x, int64_t[::1] cnt, double[::1] s,
                        double[::1] mn, double[::1] mx, int64_t[::1] nan,
                        int64_t[::1] inf) noexcept nogil:
    cdef Py_ssize_t r, f
    cdef Py_ssize_t rows = x.shape[0]
    cdef Py_ssize_t nf = x.shape[1]
    cdef double v
    for r in range(rows):
        for f in range(nf):
            v = <double>x[r, f]
            if v != v:
                nan[f] += 1
            elif v == INFINITY or v == -INFINITY:
                inf[f] += 1
            else:
                cnt[f] += 1
                s[f] += v
                if v < mn[f]:
                    mn[f] = v
                if v > mx[f]:
                    mx[f] = v


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _deviation_pass(const value_t[:, ::1] x, const double[::1] bmean,
                          double[::1] bm2) noexcept nogil:
    cdef Py_ssize_t r, f
    cdef double v, d
    for r in range(x.shape[0]):
        for f in range(x.shape[1]):
            v = <double>x[r, f]
            if v - v == 0.0:    # finite
                d = v - bmean[f]
                bm2[f] += d * d


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _bin_uniform(const value_t[:, ::1] x, const double[::1] lo, const double[::1] inv,
                       int nbins, int64_t[:, ::1] hist) noexcept nogil:
    cdef Py_ssize_t r, f
    cdef double v, t
    cdef int b
    for r in range(x.shape[0]):
        for f in range(x.shape[1]):
            v = <double>x[r, f]
            if v - v != 0.0:
                continue
            t = (v - lo[f]) * inv[f]
            if t < 0.0:
                b = 0
            elif t >= nbins:
                b = nbins if t == nbins else nbins + 1
            else:
                b = <int>floor(t) + 1
            hist[f, b] += 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _bin_edges(const value_t[:, ::1] x, const double[:, ::1] edges, int nbins,
                     int64_t[:, ::1] hist) noexcept nogil:
    cdef Py_ssize_t r, f
    cdef double v
    cdef int lo, hi, mid
    for r in range(x.shape[0]):
        for f in range(x.shape[1]):
            v = <double>x[r, f]
            if v - v != 0.0:
                continue
            if v < edges[f, 0]:
                hist[f, 0] += 1
            elif v > edges[f, nbins]:
                hist[f, nbins + 1] += 1
            elif v == edges[f, nbins]:
                hist[f, nbins] += 1
            else:
                # largest i with edges[f, i] <= v
                lo = 0
                hi = nbins
                while hi - lo > 1:
                    mid = (lo + hi) >> 1
                    if edges[f, mid] <= v:
                        lo = mid
                    else:
                        hi = mid
                hist[f, lo + 1] += 1


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _chan_merge(int64_t[::1] cnt, double[::1] mean, double[::1] m2,
                      const int64_t[::1] bcnt, const double[::1] bmean,
                      const double[::1] bm2) noexcept nogil:
    """Chan et al.: combine (n_a, mean_a, M2_a) with (n_b, mean_b, M2_b) in place."""
    cdef Py_ssize_t f
    cdef int64_t n
    cdef double delta, nb
    for f in range(cnt.shape[0]):
        if bcnt[f] == 0:
            continue
        n = cnt[f] + bcnt[f]
        nb = <double>bcnt[f]
        delta = bmean[f] - mean[f]
        mean[f] += delta * (nb / <double>n)
        m2[f] += bm2[f] + delta * delta * (<double>cnt[f] * nb / <double>n)
        cnt[f] = n


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _batch_mean(const int64_t[::1] bcnt, const double[::1] bsum,
                      double[::1] bmean) noexcept nogil:
    cdef Py_ssize_t f
    for f in range(bcnt.shape[0]):
        bmean[f] = bsum[f] / <double>bcnt[f] if bcnt[f] > 0 else 0.0


cdef object _as_2d(object batch, int n_features):
    arr = np.asarray(batch)
    if arr.ndim == 0:
        raise ValueError("input batch must have at least one dimension")
    if arr.ndim == 1:
        arr = arr.reshape(-1, n_features) if n_features > 1 else arr.reshape(-1, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features per row, got {arr.shape[1]}")
    if arr.dtype not in (np.float32, np.float64, np.int32, np.int64, np.uint8):
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _dispatch_moments(object x, int64_t[::1] cnt, double[::1] s, double[::1] mn,
                            double[::1] mx, int64_t[::1] nan, int64_t[::1] inf) except *:
    cdef str t = x.dtype.name
    cdef const float[:, ::1] xf
    cdef const double[:, ::1] xd
    cdef const int32_t[:, ::1] xi
    cdef const int64_t[:, ::1] xl
    cdef const uint8_t[:, ::1] xb
    if t == "float32":
        xf = x
        with nogil:
            _moments_pass(xf, cnt, s, mn, mx, nan, inf)
    elif t == "float64":
        xd = x
        with nogil:
            _moments_pass(xd, cnt, s, mn, mx, nan, inf)
    elif t == "int32":
        xi = x
        with nogil:
            _moments_pass(xi, cnt, s, mn, mx, nan, inf)
    elif t == "int64":
        xl = x
        with nogil:
            _moments_pass(xl, cnt, s, mn, mx, nan, inf)
    else:
        xb = x
        with nogil:
            _moments_pass(xb, cnt, s, mn, mx, nan, inf)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _dispatch_deviation(object x, const double[::1] bmean, double[::1] bm2) except *:
    cdef str t = x.dtype.name
    cdef const float[:, ::1] xf
    cdef const double[:, ::1] xd
    cdef const int32_t[:, ::1] xi
    cdef const int64_t[:, ::1] xl
    cdef const uint8_t[:, ::1] xb
    if t == "float32":
        xf = x
        with nogil:
            _deviation_pass(xf, bmean, bm2)
    elif t == "float64":
        xd = x
        with nogil:
            _deviation_pass(xd, bmean, bm2)
    elif t == "int32":
        xi = x
        with nogil:
            _deviation_pass(xi, bmean, bm2)
    elif t == "int64":
        xl = x
        with nogil:
            _deviation_pass(xl, bmean, bm2)
    else:
        xb = x
        with nogil:
            _deviation_pass(xb, bmean, bm2)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _dispatch_bins(object x, object uniform_lo, object uniform_inv, object edges_obj,
                         int nbins, int64_t[:, ::1] hist) except *:
    cdef str t = x.dtype.name
    cdef const float[:, ::1] xf
    cdef const double[:, ::1] xd
    cdef const int32_t[:, ::1] xi
    cdef const int64_t[:, ::1] xl
    cdef const uint8_t[:, ::1] xb
    cdef const double[::1] lo
    cdef const double[::1] inv
    cdef const double[:, ::1] edges = edges_obj
    cdef bint uniform = uniform_lo is not None
    if uniform:
        lo = uniform_lo
        inv = uniform_inv
    if t == "float32":
        xf = x
        with nogil:
            if uniform:
                _bin_uniform(xf, lo, inv, nbins, hist)
            else:
                _bin_edges(xf, edges, nbins, hist)
    elif t == "float64":
        xd = x
        with nogil:
            if uniform:
                _bin_uniform(xd, lo, inv, nbins, hist)
            else:
                _bin_edges(xd, edges, nbins, hist)
    elif t == "int32":
        xi = x
        with nogil:
            if uniform:
                _bin_uniform(xi, lo, inv, nbins, hist)
            else:
                _bin_edges(xi, edges, nbins, hist)
    elif t == "int64":
        xl = x
        with nogil:
            if uniform:
                _bin_uniform(xl, lo, inv, nbins, hist)
            else:
                _bin_edges(xl, edges, nbins, hist)
    else:
        xb = x
        with nogil:
            if uniform:
                _bin_uniform(xb, lo, inv, nbins, hist)
            else:
                _bin_edges(xb, edges, nbins, hist)


cdef class FeatureStats:
    """Count, mean, variance, min, max, NaN/Inf counts and a histogram per feature."""

    def __init__(self, int n_features, *, edges=None, value_range=None, int n_bins=10,
                 int warmup_rows=1024, int sample_every=1):
        if n_features < 1:
            raise ValueError("n_features must be >= 1")
        if sample_every < 1:
            raise ValueError("sample_every must be >= 1")
        self.n_features = n_features
        self.sample_every = sample_every
        self.warmup_rows = warmup_rows
        self._warmup = []
        self._warmup_n = 0
        self._uniform_lo = None
        self._uniform_inv = None
        self._edges = None
        if edges is not None:
            e = np.asarray(edges, dtype=np.float64)
            if e.ndim == 1:
                e = np.broadcast_to(e, (n_features, e.shape[0]))
            if e.ndim != 2 or e.shape[0] != n_features or e.shape[1] < 2:
                raise ValueError("edges must be [n_bins + 1] or [n_features, n_bins + 1]")
            if not np.all(np.diff(e, axis=1) >= 0) or not np.all(np.isfinite(e)):
                raise ValueError("edges must be finite and non-decreasing")
            n_bins = e.shape[1] - 1
            self._edges = np.ascontiguousarray(e)
        elif value_range is not None:
            lo, hi = (float(v) for v in value_range)
            if not lo < hi:
                raise ValueError("value_range must be (low, high) with low < high")
            self._set_uniform(np.full(n_features, lo), np.full(n_features, hi), n_bins)
        elif warmup_rows < 1:
            raise ValueError("give edges, value_range or warmup_rows >= 1")
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        self.n_bins = n_bins
        self.reset()

    def _set_uniform(self, lo, hi, int n_bins):
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        self._edges = np.ascontiguousarray(
            lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, n_bins + 1)[None, :])
        self._edges[:, -1] = hi
        self._uniform_lo = np.ascontiguousarray(lo)
        self._uniform_inv = np.ascontiguousarray(n_bins / (hi - lo))

    def reset(self):
        """Forget the moments, counts and histogram (frozen edges are kept)."""
        nf = self.n_features
        self._count = np.zeros(nf, dtype=np.int64)
        self._mean = np.zeros(nf, dtype=np.float64)
        self._m2 = np.zeros(nf, dtype=np.float64)
        self._min = np.full(nf, np.inf)
        self._max = np.full(nf, -np.inf)
        self._nan = np.zeros(nf, dtype=np.int64)
        self._inf = np.zeros(nf, dtype=np.int64)
        self._hist = np.zeros((nf, self.n_bins + 2), dtype=np.int64)
        self._bcnt = np.zeros(nf, dtype=np.int64)
        self._bsum = np.zeros(nf, dtype=np.float64)
        self._bm2 = np.zeros(nf, dtype=np.float64)
        self._bmean = np.zeros(nf, dtype=np.float64)
        self._warmup = []
        self._warmup_n = 0
        self.batches_seen = 0
        self.batches_observed = 0

    @property
    def edges(self):
        """Bin edges ``[features, n_bins + 1]`` or None while warming up."""
        return None if self._edges is None else self._edges.copy()

    cdef void _bin(self, object x) except *:
        _dispatch_bins(x, self._uniform_lo, self._uniform_inv, self._edges, self.n_bins,
                       self._hist)

    cpdef bint observe(self, object batch) except -1:
        """Fold one batch in; returns False when skipped by sampling (every k-th batch)."""
        self.batches_seen += 1
        if (self.batches_seen - 1) % self.sample_every != 0:
            return False
        x = _as_2d(batch, self.n_features)
        self.batches_observed += 1
        if x.shape[0] == 0:
            return True
        self._bcnt.fill(0)
        self._bsum.fill(0.0)
        self._bm2.fill(0.0)
        _dispatch_moments(x, self._bcnt, self._bsum, self._min, self._max, self._nan, self._inf)
        _batch_mean(self._bcnt, self._bsum, self._bmean)
        _dispatch_deviation(x, self._bmean, self._bm2)
        _chan_merge(self._count, self._mean, self._m2, self._bcnt, self._bmean, self._bm2)
        if self._edges is not None:
            self._bin(x)
        else:
            self._warmup.append(x)
            self._warmup_n += x.shape[0]
            if self._warmup_n >= self.warmup_rows:
                self._freeze_from_warmup()
        return True

    def _freeze_from_warmup(self):
        rows = np.concatenate([w.astype(np.float64, copy=False) for w in self._warmup])
        finite = np.where(np.isfinite(rows), rows, np.nan)
        lo = np.zeros(self.n_features)
        hi = np.ones(self.n_features)
        edges = np.empty((self.n_features, self.n_bins + 1))
        qs = np.linspace(0.0, 1.0, self.n_bins + 1)
        for f in range(self.n_features):
            col = finite[:, f]
            col = col[~np.isnan(col)]
            if col.size == 0:
                edges[f] = lo[f] + (hi[f] - lo[f]) * qs
                continue
            e = np.quantile(col, qs)
            if e[0] == e[-1]:
                e = e[0] - 0.5 + qs
            edges[f] = e
        self._edges = np.ascontiguousarray(edges)
        for w in self._warmup:
            self._bin(w)
        self._warmup = []

    cpdef void merge(self, FeatureStats other) except *:
        """Add ``other``'s statistics (same feature count; same edges once both froze)."""
        if other.n_features != self.n_features or other.n_bins != self.n_bins:
            raise ValueError("feature statistics have different shapes")
        if self._edges is not None and other._edges is not None:
            if not np.array_equal(self._edges, other._edges):
                raise ValueError("feature statistics have different bin edges")
        _chan_merge(self._count, self._mean, self._m2, other._count, other._mean, other._m2)
        np.minimum(self._min, other._min, out=self._min)
        np.maximum(self._max, other._max, out=self._max)
        self._nan += other._nan
        self._inf += other._inf
        if other._edges is not None and self._edges is None:
            self._edges = other._edges.copy()
            self._uniform_lo = other._uniform_lo
            self._uniform_inv = other._uniform_inv
            for w in self._warmup:
                self._bin(w)
            self._warmup = []
        if self._edges is not None:
            self._hist += other._hist
            for w in other._warmup:
                self._bin(w)
        else:
            self._warmup.extend(other._warmup)
            self._warmup_n += other._warmup_n
        self.batches_seen += other.batches_seen
        self.batches_observed += other.batches_observed

    def state(self):
        """Copies of the running state as plain numpy arrays (dict)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(self._count > 1, self._m2 / np.maximum(self._count - 1, 1), np.nan)
        return dict(count=self._count.copy(), mean=self._mean.copy(), m2=self._m2.copy(),
                    variance=var, min=self._min.copy(), max=self._max.copy(),
                    nan_count=self._nan.copy(), inf_count=self._inf.copy(),
                    edges=self.edges, histogram=self._hist.copy(),
                    batches_seen=self.batches_seen, batches_observed=self.batches_observed)

    def copy(self):
        """An independent accumulator with the same state."""
        cdef FeatureStats c = FeatureStats.__new__(FeatureStats)
        c.n_features = self.n_features
        c.n_bins = self.n_bins
        c.sample_every = self.sample_every
        c.warmup_rows = self.warmup_rows
        c._edges = None if self._edges is None else self._edges.copy()
        c._uniform_lo = self._uniform_lo
        c._uniform_inv = self._uniform_inv
        c.reset()
        c.batches_seen = 0
        c.merge(self)
        return c
