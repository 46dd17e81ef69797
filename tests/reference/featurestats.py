"""Reference twin of ``gateway.kernels.FeatureStats``: per-feature moments, NaN/Inf counts
and a histogram of one model input, a batch at a time.

A batch ``[rows, features]`` (1-D: rows of ``features`` values; higher ranks flattened to
``[rows, -1]``) is folded feature by feature, rows in order:

* NaN and +/-Inf are counted and left out of everything else;
* batch moments of the finite values: sum (added in row order), mean = sum / count, sum of
  squared deviations about that mean (row order); merged into the running moments with
  Chan et al.'s update, the rule ``merge`` uses for two accumulators;
* min / max: a value replaces the running one only when strictly smaller / larger;
* histogram slot of a finite value ``v`` with edges ``e[0..n]``: 0 below ``e[0]``, n + 1
  above ``e[n]``, otherwise 1 + the bin ``[e_i, e_i+1)`` holding it, the last bin closed
  (``numpy.histogram``'s rule) -- for explicit, uniform (``value_range``) and quantile
  (first ``warmup_rows`` rows, then frozen) edges alike;
* the quantile edges come from the *freeze set*: the buffered batches up to the first that
  brings the count to ``warmup_rows``. With ``defer_freeze`` the owner freezes
  (``freeze_pending``, ``freeze_part``, ``freeze_with``), or ``observe`` does once
  ``DEFER_MAX_FACTOR`` x ``warmup_rows`` rows are buffered; either way the result is the same
  as an inline freeze's.
"""
from __future__ import annotations

import bisect
import math

import numpy as np

from tests.reference._cy import c_int

DEFER_MAX_FACTOR = 2  # as ext/featurestats.pyx


def _c_int32(v):
    return c_int(v, 32, True)


def _as_2d(batch, n_features):
    arr = batch if type(batch) is np.ndarray else np.asarray(batch)
    if arr.ndim == 0:
        raise ValueError("input batch must have at least one dimension")
    if arr.ndim == 1:
        arr = arr.reshape(-1, n_features) if n_features > 1 else arr.reshape(-1, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], math.prod(arr.shape[1:]))   # also with 0 rows
    if arr.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features per row, got {arr.shape[1]}")
    return arr.astype(np.float64)               # a copy: the caller may reuse its array


def uniform_edges(lo, hi, n_bins):
    """The edges a ``value_range`` stands for: ``lo + (hi - lo) * linspace(0, 1)``, last = hi."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    e = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, n_bins + 1)[None, :]
    e[:, -1] = hi
    return e


def slot(v: float, e) -> int:
    """Histogram slot of a finite ``v`` for edges ``e`` (see the module docstring)."""
    n = len(e) - 1
    if v < e[0]:
        return 0
    if v > e[n]:
        return n + 1
    if v == e[n]:
        return n                                  # the last bin is closed
    return bisect.bisect_right(e, v, 0, n)      # edges e[0..n-1] at or below v


def quantile_edges(rows, n_bins):
    """Frozen edges from warm-up rows ``[rows, features]``: per feature the quantiles of
    its finite values (no finite value: 0..1; a single value: that value - 0.5 + q); the
    order statistics themselves where interpolating would leave the double range."""
    qs = np.linspace(0.0, 1.0, n_bins + 1)
    edges = np.empty((rows.shape[1], n_bins + 1))
    for f in range(rows.shape[1]):
        col = rows[:, f][np.isfinite(rows[:, f])]
        if col.size == 0:
            edges[f] = qs
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.quantile(col, qs)
        if not (np.isfinite(e).all() and (e[1:] >= e[:-1]).all()):
            e = np.quantile(col, qs, method="lower")
        edges[f] = e[0] - 0.5 + qs if e[0] == e[-1] else e
    return edges + 0.0  # (a zero edge is +0.0, whichever of -0.0 and 0.0 the quantile picked)


class FeatureStats:
    """Count, mean, variance, min, max, NaN/Inf counts and a histogram per feature."""

    def __init__(self, n_features, *, edges=None, value_range=None, n_bins=10,
                 warmup_rows=1024, sample_every=1, defer_freeze=False):
        n_features, n_bins = _c_int32(n_features), _c_int32(n_bins)
        warmup_rows, sample_every = _c_int32(warmup_rows), _c_int32(sample_every)
        if n_features < 1:
            raise ValueError("n_features must be >= 1")
        if sample_every < 1:
            raise ValueError("sample_every must be >= 1")
        e = None
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
        self._setup(n_features, n_bins, warmup_rows, sample_every)
        self._defer_freeze = bool(defer_freeze)
        if e is not None:
            self._edges = np.array(e, dtype=np.float64)
        elif value_range is not None:
            self._edges = uniform_edges(np.full(n_features, lo), np.full(n_features, hi),
                                        n_bins)

    def _setup(self, n_features, n_bins, warmup_rows, sample_every):
        self._n_features = n_features
        self._n_bins = n_bins
        self._warmup_rows = warmup_rows
        self._sample_every = sample_every
        self._defer_freeze = False
        self._edges = None
        self._warmup_gen = 0
        self.reset()

    n_features = property(lambda self: self._n_features)
    n_bins = property(lambda self: self._n_bins)
    sample_every = property(lambda self: self._sample_every)
    warmup_rows = property(lambda self: self._warmup_rows)
    defer_freeze = property(lambda self: self._defer_freeze)
    batches_seen = property(lambda self: self._batches_seen)
    batches_observed = property(lambda self: self._batches_observed)

    def reset(self):
        """Forget the moments, counts and histogram (frozen edges are kept)."""
        nf = self._n_features
        self._count = [0] * nf
        self._mean = [0.0] * nf
        self._m2 = [0.0] * nf
        self._min = [math.inf] * nf
        self._max = [-math.inf] * nf
        self._nan = [0] * nf
        self._inf = [0] * nf
        self._hist = [[0] * (self._n_bins + 2) for _ in range(nf)]
        self._warmup: list[np.ndarray] = []
        self._warmup_n = 0
        self._warmup_gen += 1
        self._batches_seen = 0
        self._batches_observed = 0

    @property
    def edges(self):
        """Bin edges ``[features, n_bins + 1]`` or None while warming up."""
        return None if self._edges is None else self._edges.copy()

    def _chan(self, f, n_b, mean_b, m2_b):
        """Merge moments (n_b, mean_b, m2_b) into feature ``f``'s running ones."""
        if n_b == 0:
            return
        n = self._count[f] + n_b
        nb = float(n_b)
        delta = mean_b - self._mean[f]
        self._mean[f] = self._mean[f] + delta * (nb / float(n))
        self._m2[f] = self._m2[f] + (m2_b + delta * delta * (float(self._count[f]) * nb
                                                             / float(n)))
        self._count[f] = n

    def _bin_rows(self, x):
        for f in range(self._n_features):
            e = self._edges[f].tolist()
            for v in x[:, f].tolist():
                if math.isfinite(v):
                    self._hist[f][slot(v, e)] += 1

    def _fold(self, x):
        for f in range(self._n_features):
            col = x[:, f].tolist()
            finite = [v for v in col if math.isfinite(v)]
            self._nan[f] += sum(1 for v in col if v != v)
            self._inf[f] += sum(1 for v in col if v in (math.inf, -math.inf))
            total = 0.0
            for v in finite:
                total += v
                if v < self._min[f]:
                    self._min[f] = v
                if v > self._max[f]:
                    self._max[f] = v
            if finite:
                mean_b = total / float(len(finite))
                m2_b = 0.0
                for v in finite:
                    d = v - mean_b
                    m2_b += d * d
                self._chan(f, len(finite), mean_b, m2_b)
        if self._edges is not None:
            self._bin_rows(x)

    def observe(self, batch):
        """Fold one batch in; returns False when skipped by sampling (every k-th batch)."""
        self._batches_seen += 1
        if (self._batches_seen - 1) % self._sample_every != 0:
            return False
        x = _as_2d(batch, self._n_features)
        self._batches_observed += 1
        if x.shape[0] == 0:
            return True
        self._fold(x)
        if self._edges is None:
            self._warmup.append(x)
            self._warmup_n += x.shape[0]
            if self._warmup_n >= self._warmup_rows and (
                    not self._defer_freeze or self._warmup_n >= DEFER_MAX_FACTOR * self._warmup_rows):
                self.freeze_with(self._warmup_gen, self.freeze_part(self._warmup[:self._freeze_set()]))
        return True

    def _freeze_set(self):
        rows = 0
        for k, w in enumerate(self._warmup, 1):
            rows += w.shape[0]
            if rows >= self._warmup_rows:
                return k
        return 0

    @property
    def freeze_due(self):
        return self._edges is None and self._warmup_n >= self._warmup_rows

    def freeze_pending(self):
        k = self._freeze_set() if self._edges is None else 0
        return (self._warmup_gen, self._warmup[:k]) if k else None

    def freeze_part(self, batches):
        xs = [_as_2d(w, self._n_features) for w in batches]
        if not xs:
            raise ValueError("freeze_part needs at least one batch")
        part = FeatureStats(self._n_features, edges=quantile_edges(np.concatenate(xs), self._n_bins))
        for x in xs:
            part._bin_rows(x)
        return part

    def freeze_with(self, token, part):
        if not isinstance(part, FeatureStats):
            raise TypeError(f"Argument 'part' has incorrect type (expected FeatureStats, "
                            f"got {type(part).__name__})")
        if self._edges is not None or token != self._warmup_gen or part._edges is None:
            return False
        if part._n_features != self._n_features or part._n_bins != self._n_bins:
            return False
        k = self._freeze_set()
        if k == 0:
            return False
        self._edges = part._edges.copy()
        for f in range(self._n_features):
            for i, n in enumerate(part._hist[f]):
                self._hist[f][i] += n
        for w in self._warmup[k:]:
            self._bin_rows(w)
        self._warmup = []
        self._warmup_gen += 1
        return True

    def merge(self, other):
        """Add ``other``'s statistics (same feature count; same edges once both froze)."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"Argument 'other' has incorrect type (expected FeatureStats, "
                            f"got {type(other).__name__})")
        if other._n_features != self._n_features or other._n_bins != self._n_bins:
            raise ValueError("feature statistics have different shapes")
        if self._edges is not None and other._edges is not None:
            if not np.array_equal(self._edges, other._edges):
                raise ValueError("feature statistics have different bin edges")
        theirs = dict(count=other._count[:], mean=other._mean[:], m2=other._m2[:],
                      min=other._min[:], max=other._max[:], nan=other._nan[:],
                      inf=other._inf[:], hist=[h[:] for h in other._hist],
                      edges=other._edges, warmup=other._warmup[:], warmup_n=other._warmup_n,
                      seen=other._batches_seen, observed=other._batches_observed)
        for f in range(self._n_features):
            self._chan(f, theirs["count"][f], theirs["mean"][f], theirs["m2"][f])
            if theirs["min"][f] < self._min[f]:
                self._min[f] = theirs["min"][f]
            if theirs["max"][f] > self._max[f]:
                self._max[f] = theirs["max"][f]
            self._nan[f] += theirs["nan"][f]
            self._inf[f] += theirs["inf"][f]
        if theirs["edges"] is not None and self._edges is None:
            self._edges = theirs["edges"].copy()
            for w in self._warmup:
                self._bin_rows(w)
            self._warmup = []
            self._warmup_gen += 1
        if self._edges is not None:
            for f in range(self._n_features):
                for i, n in enumerate(theirs["hist"][f]):
                    self._hist[f][i] += n
            for w in theirs["warmup"]:
                self._bin_rows(w)
        else:
            self._warmup.extend(theirs["warmup"])
            self._warmup_n += theirs["warmup_n"]
        self._batches_seen += theirs["seen"]
        self._batches_observed += theirs["observed"]

    def state(self):
        """Copies of the running state as plain numpy arrays (dict)."""
        count = np.array(self._count, dtype=np.int64)
        m2 = np.array(self._m2, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(count > 1, m2 / np.maximum(count - 1, 1), np.nan)
        return dict(count=count, mean=np.array(self._mean, dtype=np.float64), m2=m2,
                    variance=var, min=np.array(self._min, dtype=np.float64),
                    max=np.array(self._max, dtype=np.float64),
                    nan_count=np.array(self._nan, dtype=np.int64),
                    inf_count=np.array(self._inf, dtype=np.int64),
                    edges=self.edges,
                    histogram=np.array(self._hist, dtype=np.int64).reshape(
                        self._n_features, self._n_bins + 2),
                    batches_seen=self._batches_seen, batches_observed=self._batches_observed)

    def copy(self):
        """An independent accumulator with the same state."""
        c = FeatureStats.__new__(FeatureStats)
        c._setup(self._n_features, self._n_bins, self._warmup_rows, self._sample_every)
        c._defer_freeze = self._defer_freeze
        c.merge(self)
        return c
