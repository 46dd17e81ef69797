# cython: language_level=3
"""Sequential change detection per feature: a two-sided CUSUM on standardised values.

Each watched feature ``f`` is standardised by a reference mean and standard deviation that
the caller gives (a reference profile: training data, or a window the operator trusts),
``z = (x - mean[f]) * (1 / std[f])``, and two one-sided CUSUM statistics follow it, the
Lindley recursions

    up_n   = max(0, up_{n-1}   + z_n - k)
    down_n = max(0, down_{n-1} - z_n - k)

with the allowance ``k`` (``allowance_sigma``, in reference standard deviations). A side
alarms on the row where its statistic exceeds the threshold ``h`` (``up_n > h``); the alarm
records the feature, the side ("up" / "down"), the row's position in the stream (rows seen
so far, this one included) and the statistic, and that side restarts from 0 (the other side
goes on). CUSUM is the detector of a mean shift that minimises the worst-case expected delay
for a given false-alarm rate (Lorden, Moustakides); ``k`` is half the shift it is tuned
for, so the default ``k = 0.25`` is tuned to a 0.5-sigma shift and still catches larger ones
sooner.

One knob sets the false alarms: ``expected_rows_between_false_alarms`` (ERT, as Alibi
Detect calls it), for the whole detector -- every watched feature and both sides. With
restarts each one-sided statistic is a renewal process, alarming at a long-run rate of
1 / ARL0 per row (ARL0: its in-control average run length); the alarm rate of the detector
is the sum of its ``2 * n_features`` rates whatever the dependence between the features
(linearity of expectation), so each side of each feature gets

    ARL0 = ERT * 2 * n_features

and ``h`` is solved from Siegmund's approximation of the ARL of a CUSUM on N(mu, 1)
increments with drift ``delta = mu - k``:

    ARL(delta) = (exp(-2 delta b) + 2 delta b - 1) / (2 delta^2),   b = h + 1.166
    ARL(0)     = b^2

in control (mu = 0, delta = -k): ``ARL0 = (exp(2 k b) - 2 k b - 1) / (2 k^2)``, increasing
in ``b``, solved by bisection (``cusum_threshold``); ``h = max(0, b - 1.166)``.
(1.166 = 2 x 0.583, Siegmund's correction for the overshoot of a Gaussian random walk.)
tests/kernels/test_changepoint.py checks the resulting alarm rate by simulation. Measured
(bench/drift.py, 2026-12-01): at the default knob (ERT = 10^7 rows; 16 features: h = 33.84)
20 runs of 10^5 in-distribution N(0, 1) rows x 16 features raised 1 false alarm in all
(2 x 10^6 rows: 0.5 per 10^6 rows, where 0.2 alarms in all were expected); at ERT = 10^5
rows, 10^7 rows x 16 features raised 99 (100 expected). A 0.5-sigma shift of one feature was
flagged after a median of 127 rows with 16 features watched (105 with one; Siegmund's delay
from a zero statistic: 132 and 110).

Values: NaN is skipped (counted per feature in ``nan_count``, not folded in). +/-inf is
folded in as a value infinitely far out: that side alarms on that row with statistic inf
(and restarts), the other side drops to 0. A zero reference std means the feature was
constant in the reference: a value equal to the mean contributes ``z = 0`` and any other
value is an infinite departure (``z = +/-inf``), the limit of a vanishing std (a std so
small that its inverse overflows acts the same). A finite value whose ``z`` overflows is
infinite too. Statistics are kept in doubles; float32 input is widened exactly.

A batch ``[rows, features]`` (1-D: rows of ``features`` values; higher ranks flattened to
``[rows, -1]``) of float32 or float64 is scanned in place, other dtypes are converted to
float64 first; rows in order, features inner (contiguous), in one ``nogil`` loop for
batches of at least ``NOGIL_MIN_VALUES`` values (``gil.pxd``), so the result is exactly the
per-row recursion whatever the batching. Alarms go to a C buffer owned by the detector;
when fewer than ``n_features`` free records are left before a row, the loop stops there,
the buffer grows (with the GIL) and the loop resumes at that row. One detector is fed by one
thread at a time (like ``FeatureStats``: one per model input, fed by whoever folds its
batches); concurrent ``observe`` calls on the same detector are not supported. The
prediction distribution is watched the same way, as a detector over the output column(s)
(a regressor's prediction, a classifier's top-1 confidence) with their reference moments.
"""
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, realloc, free

from gil cimport NOGIL_MIN_VALUES

import math

import numpy as np

cnp.import_array()

# Siegmund's correction of the threshold for the overshoot of a Gaussian random walk
# (2 x 0.583, from the expected overshoot of the ladder heights).
SIEGMUND_CORRECTION = 1.166

ctypedef fused real_t:
    float
    double


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* max(s, 0) without a branch, exactly s > 0 ? s : +0.0 (NaN and -0.0 give +0.0).
       GCC keeps that conditional expression of doubles a branch, which the sign of an
       in-control CUSUM mispredicts on a large share of the values (3-4x the cost of the
       whole update here). With SSE2 (every x86-64): MAXSD, whose own rule is
       dest > src ? dest : src; elsewhere: the bits of s kept when s > 0, else cleared
       (measured in one large batch: 3.5 ns per value against MAXSD's 2.3 with 16
       features, 5.5 against 4.8 with one). */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline double gateway_cusum_pos(double s) {
        return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(s), _mm_setzero_pd()));
    }
    #else
    static inline double gateway_cusum_pos(double s) {
        uint64_t bits;
        memcpy(&bits, &s, sizeof bits);
        bits &= (uint64_t)0 - (uint64_t)(s > 0.0);
        memcpy(&s, &bits, sizeof bits);
        return s;
    }
    #endif
    """
    double _pos "gateway_cusum_pos"(double s) noexcept nogil


cdef struct _Alarm:
    int64_t row_number      # rows seen so far, the alarming one included
    int32_t feature
    int32_t side            # +1 up, -1 down
    double statistic


def cusum_arl(double threshold_sigma, double allowance_sigma, double shift_sigma=0.0):
    """Siegmund's approximation of the average run length of a one-sided CUSUM (restarted
    from 0) with threshold ``h`` and allowance ``k`` on N(shift, 1) values: with
    ``delta = shift - k`` and ``b = h + 1.166``, ``(exp(-2 delta b) + 2 delta b - 1) /
    (2 delta^2)`` (``b^2`` when ``delta`` is 0); ``shift_sigma = 0`` gives the in-control
    ARL0, a shift the expected detection delay from a zero statistic."""
    b = threshold_sigma + SIEGMUND_CORRECTION
    delta = shift_sigma - allowance_sigma
    if delta == 0.0:
        return b * b
    a = -2.0 * delta * b
    if a > 700.0:
        return math.inf
    if abs(a) < 1e-4:   # expm1(a) - a cancels, 2 delta^2 may underflow: the series (~b^2)
        return b * b * (1.0 + a / 3.0 + a * a / 12.0)
    return (math.expm1(a) - a) / (2.0 * delta * delta)


def cusum_threshold(double arl0_rows, double allowance_sigma):
    """The threshold ``h`` (>= 0) at which Siegmund's ARL0 of a one-sided CUSUM with
    allowance ``k`` is ``arl0_rows`` (see ``cusum_arl``): ``b`` by bisection to the last
    bit, ``h = max(0, b - 1.166)``."""
    if not (arl0_rows >= 1.0 and math.isfinite(arl0_rows)):
        raise ValueError("arl0_rows must be finite and >= 1")
    if not (allowance_sigma >= 0.0 and math.isfinite(allowance_sigma)):
        raise ValueError("allowance_sigma must be finite and >= 0")
    lo = 0.0
    hi = 1.0
    while cusum_arl(hi - SIEGMUND_CORRECTION, allowance_sigma) < arl0_rows:
        lo = hi
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if cusum_arl(mid - SIEGMUND_CORRECTION, allowance_sigma) < arl0_rows:
            lo = mid
        else:
            hi = mid
    return max(0.0, hi - SIEGMUND_CORRECTION)


cdef Py_ssize_t _scan(const real_t* x, Py_ssize_t start, Py_ssize_t rows, Py_ssize_t nf,
                      const double* mean, const double* inv, double k, double h,
                      double* up, double* down, int64_t* nan, int64_t rows_before,
                      _Alarm* alarms, Py_ssize_t* n_alarms,
                      Py_ssize_t capacity) noexcept nogil:
    """Rows ``start ..`` of ``x[rows, nf]`` into the statistics; returns the row it stopped
    at (``rows``, or earlier when fewer than ``nf`` alarm records are free)."""
    cdef Py_ssize_t r, f
    cdef Py_ssize_t n = n_alarms[0]
    cdef const real_t* row
    cdef double v, z, su, sd
    for r in range(start, rows):
        if capacity - n < nf:
            n_alarms[0] = n
            return r
        row = x + r * nf
        for f in range(nf):
            v = <double>row[f]
            if v != v:
                nan[f] += 1
                continue
            z = (v - mean[f]) * inv[f]
            if z != z:           # inf * 0: zero std (inverse inf) and v == mean
                z = 0.0
            su = up[f] + z - k
            sd = down[f] - z - k
            if su > h or sd > h:     # rare: out of the branch-free path
                # (at most one side: both above h would need up + down > 2 h + 2 k)
                alarms[n].row_number = rows_before + r + 1
                alarms[n].feature = <int32_t>f
                if su > h:
                    alarms[n].side = 1
                    alarms[n].statistic = su
                    su = 0.0
                else:
                    alarms[n].side = -1
                    alarms[n].statistic = sd
                    sd = 0.0
                n += 1
            up[f] = _pos(su)
            down[f] = _pos(sd)
    n_alarms[0] = n
    return rows


cdef cnp.ndarray _as_2d(object batch, int n_features):
    """A C-contiguous, aligned, native-order float32 or float64 2-D view (or copy)."""
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
    elif nd > 2:
        arr = arr.reshape(cnp.PyArray_DIMS(arr)[0], math.prod((<object>arr).shape[1:]))
    if cnp.PyArray_DIMS(arr)[1] != n_features:
        raise ValueError(f"expected {n_features} features per row, got {arr.shape[1]}")
    t = cnp.PyArray_TYPE(arr)
    if not (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE):
        return np.ascontiguousarray(arr, dtype=np.float64)
    if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISBEHAVED_RO(arr)):
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)
    return arr


cdef class ChangeDetector:
    """Two-sided CUSUM per feature against a reference mean / std; the false-alarm rate of
    all features together is set by ``expected_rows_between_false_alarms``."""

    cdef:
        readonly int n_features
        readonly double allowance_sigma
        readonly double threshold_sigma
        readonly double expected_rows_between_false_alarms
        readonly double arl0_rows_per_side
        readonly int64_t rows_seen
        readonly int64_t alarm_count
        double* _mean
        double* _std
        double* _inv
        double* _up
        double* _down
        int64_t* _nan
        _Alarm* _alarms
        Py_ssize_t _capacity

    def __cinit__(self, *args, **kwargs):
        self._mean = NULL
        self._std = NULL
        self._inv = NULL
        self._up = NULL
        self._down = NULL
        self._nan = NULL
        self._alarms = NULL
        self._capacity = 0

    def __dealloc__(self):
        free(self._mean)
        free(self._std)
        free(self._inv)
        free(self._up)
        free(self._down)
        free(self._nan)
        free(self._alarms)

    def __init__(self, reference_mean, reference_std, *,
                 double expected_rows_between_false_alarms=10_000_000.0,
                 double allowance_sigma=0.25):
        if self._mean != NULL:
            raise RuntimeError("ChangeDetector is already initialised")
        mean = np.asarray(reference_mean, dtype=np.float64)
        std = np.asarray(reference_std, dtype=np.float64)
        if mean.ndim == 0:
            mean = mean.reshape(1)
        if std.ndim == 0:
            std = std.reshape(1)
        if mean.ndim != 1 or std.shape != mean.shape or mean.shape[0] < 1:
            raise ValueError("reference_mean and reference_std must be [n_features], "
                             "n_features >= 1")
        if mean.shape[0] > 2**31 - 1:
            raise ValueError("too many features")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
            raise ValueError("the reference mean and std must be finite, the std >= 0")
        if not (expected_rows_between_false_alarms >= 1.0
                and math.isfinite(expected_rows_between_false_alarms)):
            raise ValueError("expected_rows_between_false_alarms must be finite and >= 1")
        if not (allowance_sigma >= 0.0 and math.isfinite(allowance_sigma)):
            raise ValueError("allowance_sigma must be finite and >= 0")
        nf = mean.shape[0]
        arl0 = expected_rows_between_false_alarms * 2.0 * nf
        h = cusum_threshold(arl0, allowance_sigma)
        with np.errstate(divide="ignore", over="ignore"):
            inv = np.ascontiguousarray(1.0 / std)
        mean = np.ascontiguousarray(mean)
        std = np.ascontiguousarray(std)
        cdef size_t n = <size_t>nf
        cdef Py_ssize_t f
        self._mean = <double*>malloc(n * sizeof(double))
        self._std = <double*>malloc(n * sizeof(double))
        self._inv = <double*>malloc(n * sizeof(double))
        self._up = <double*>malloc(n * sizeof(double))
        self._down = <double*>malloc(n * sizeof(double))
        self._nan = <int64_t*>malloc(n * sizeof(int64_t))
        self._capacity = 64 + 2 * nf
        self._alarms = <_Alarm*>malloc(<size_t>self._capacity * sizeof(_Alarm))
        if (self._mean == NULL or self._std == NULL or self._inv == NULL or self._up == NULL
                or self._down == NULL or self._nan == NULL or self._alarms == NULL):
            raise MemoryError()
        cdef const double* pm = <const double*>cnp.PyArray_DATA(mean)
        cdef const double* ps = <const double*>cnp.PyArray_DATA(std)
        cdef const double* pi = <const double*>cnp.PyArray_DATA(inv)
        for f in range(nf):
            self._mean[f] = pm[f]
            self._std[f] = ps[f]
            self._inv[f] = pi[f]
        self.n_features = nf
        self.allowance_sigma = allowance_sigma
        self.threshold_sigma = h
        self.expected_rows_between_false_alarms = expected_rows_between_false_alarms
        self.arl0_rows_per_side = arl0
        self.reset()

    def reset(self):
        """Both statistics of every feature back to 0; rows, NaN and alarm counts to 0."""
        cdef Py_ssize_t f
        if self._up == NULL:
            raise ValueError("ChangeDetector is not initialised")
        for f in range(self.n_features):
            self._up[f] = 0.0
            self._down[f] = 0.0
            self._nan[f] = 0
        self.rows_seen = 0
        self.alarm_count = 0

    def observe(self, batch):
        """Fold the rows of ``batch`` in, in order; returns the alarms they raised, as
        ``(feature, side, row_number, statistic)`` tuples (side "up" or "down",
        row_number = rows seen so far, the alarming row included), by row, then feature."""
        if self._up == NULL:
            raise ValueError("ChangeDetector is not initialised")
        cdef cnp.ndarray x = _as_2d(batch, self.n_features)
        cdef Py_ssize_t rows = cnp.PyArray_DIMS(x)[0]
        cdef Py_ssize_t nf = self.n_features
        cdef const void* p = cnp.PyArray_DATA(x)
        cdef bint is_float = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT
        cdef bint release = rows * nf >= NOGIL_MIN_VALUES
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t n = 0
        cdef Py_ssize_t i
        cdef Py_ssize_t cap
        cdef _Alarm* grown
        cdef int64_t before = self.rows_seen
        cdef double k = self.allowance_sigma
        cdef double h = self.threshold_sigma
        while True:
            if release:
                with nogil:
                    if is_float:
                        done = _scan(<const float*>p, done, rows, nf, self._mean, self._inv,
                                     k, h, self._up, self._down, self._nan, before,
                                     self._alarms, &n, self._capacity)
                    else:
                        done = _scan(<const double*>p, done, rows, nf, self._mean,
                                     self._inv, k, h, self._up, self._down, self._nan,
                                     before, self._alarms, &n, self._capacity)
            elif is_float:
                done = _scan(<const float*>p, done, rows, nf, self._mean, self._inv, k, h,
                             self._up, self._down, self._nan, before, self._alarms, &n,
                             self._capacity)
            else:
                done = _scan(<const double*>p, done, rows, nf, self._mean, self._inv, k, h,
                             self._up, self._down, self._nan, before, self._alarms, &n,
                             self._capacity)
            if done >= rows:
                break
            cap = 2 * self._capacity + nf
            grown = <_Alarm*>realloc(self._alarms, <size_t>cap * sizeof(_Alarm))
            if grown == NULL:
                # the rows before ``done`` are folded in; their alarms are lost
                self.rows_seen += done
                self.alarm_count += n
                raise MemoryError()
            self._alarms = grown
            self._capacity = cap
        self.rows_seen += rows
        self.alarm_count += n
        out = []
        for i in range(n):
            out.append((self._alarms[i].feature,
                        "up" if self._alarms[i].side > 0 else "down",
                        self._alarms[i].row_number, self._alarms[i].statistic))
        return out

    def state(self):
        """Copies of the running state (dict of numpy arrays and ints)."""
        cdef Py_ssize_t f
        cdef Py_ssize_t nf = self.n_features
        up = np.empty(nf, dtype=np.float64)
        down = np.empty(nf, dtype=np.float64)
        nan = np.empty(nf, dtype=np.int64)
        mean = np.empty(nf, dtype=np.float64)
        std = np.empty(nf, dtype=np.float64)
        for f in range(nf):
            up[f] = self._up[f]
            down[f] = self._down[f]
            nan[f] = self._nan[f]
            mean[f] = self._mean[f]
            std[f] = self._std[f]
        return dict(up=up, down=down, nan_count=nan, reference_mean=mean,
                    reference_std=std, rows_seen=self.rows_seen,
                    alarm_count=self.alarm_count)
