"""Reference twin of ``gateway.kernels.ConfidenceStats`` and ``top1``.

Per row of ``scores[rows, classes]`` (probabilities, or logits when ``logits=True``):

* the first maximum wins (its column is the class); a row with any NaN gets top-1 NaN and
  class -1, a row whose maximum is -inf (all -inf) gets 0.0 and -1; both are invalid rows,
  outside the class counts and histograms;
* probabilities are used as given: top-1 = the maximum, top-2 = the largest other value
  (ties count: a tie gives margin 0), entropy = -sum(p ln p) over p > 0;
* logits: softmax relative to the row maximum m: s = sum exp(x - m), top-1 = 1/s,
  top-2 = exp(m2 - m)/s, entropy = ln s - sum(e (x - m))/s over terms with e > 0; a +inf
  maximum gives top-1 1, top-2 0, entropy 0;
* entropy below zero is 0; histograms have ``n_bins`` equal bins over [0, 1] (top-1 and
  margin = top-1 - top-2) and [0, ln C] (entropy): values <= 0 or NaN go to the first bin,
  values >= the top to the last.
"""
from __future__ import annotations

import math

import numpy as np

from tests.reference._cy import c_bint, c_int


def _as_rows(scores):
    x = np.asarray(scores)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], math.prod(x.shape[1:]))           # also with 0 rows
    return np.ascontiguousarray(x, dtype=np.float64)


def _bin(v: float, hi: float, nbins: int) -> int:
    if v != v or hi <= 0.0 or v <= 0.0:
        return 0
    if v >= hi:
        return nbins - 1
    return min(int(v / hi * nbins), nbins - 1)


def _row(row: list[float], logits: bool):
    """(valid, top1, top2, entropy, class) of one row."""
    m1, m2, arg = -math.inf, -math.inf, 0
    for c, v in enumerate(row):
        if v != v:
            return False, math.nan, math.nan, math.nan, -1
        if v > m1:
            m1, m2, arg = v, m1, c
        elif v > m2:
            m2 = v
    if m1 == -math.inf:
        return False, 0.0, 0.0, 0.0, -1
    nc = len(row)
    if logits:
        if m1 == math.inf:
            p1, p2, ent = 1.0, 0.0, 0.0
        else:
            s = acc = 0.0
            for v in row:
                e = math.exp(v - m1)
                s += e
                if e > 0.0:
                    acc += e * (v - m1)
            p1 = 1.0 / s
            p2 = math.exp(m2 - m1) / s if nc > 1 else 0.0
            ent = math.log(s) - acc / s
    else:
        p1, p2 = m1, (m2 if nc > 1 else 0.0)
        ent = 0.0
        for p in row:
            if p > 0.0:
                ent -= p * math.log(p)
    if ent < 0.0:
        ent = 0.0
    return True, p1, p2, ent, arg


def _f32(values):
    with np.errstate(over="ignore"):
        return np.array(values, dtype=np.float64).astype(np.float32)


def top1(scores, logits=False):
    """Top-1 probability (float32[rows]) and class (int64[rows]) of ``scores[rows, classes]``,
    recording nothing."""
    logits = c_bint(logits)
    x = _as_rows(scores)
    n = x.shape[0]
    if n == 0 or x.shape[1] == 0:
        return np.zeros(n, dtype=np.float32), np.full(n, -1, dtype=np.int64)
    rows = [_row(r, logits) for r in x.tolist()]
    return _f32([r[1] for r in rows]), np.array([r[4] for r in rows], dtype=np.int64)


class ConfidenceStats:
    """Top-1, margin and entropy histograms and per-class counts of a classifier's output."""

    def __init__(self, n_classes, n_bins=20):
        n_classes, n_bins = c_int(n_classes, 32, True), c_int(n_bins, 32, True)
        if n_classes < 1 or n_bins < 1:
            raise ValueError("n_classes and n_bins must be >= 1")
        self._n_classes = n_classes
        self._n_bins = n_bins
        self.reset()

    n_classes = property(lambda self: self._n_classes)
    n_bins = property(lambda self: self._n_bins)
    rows = property(lambda self: self._rows)
    invalid_rows = property(lambda self: self._invalid_rows)
    top1_sum = property(lambda self: self._top1_sum)

    def reset(self):
        """Forget everything."""
        self._rows = 0
        self._invalid_rows = 0
        self._top1_sum = 0.0
        self._class_counts = [0] * self._n_classes
        self._top1_hist = [0] * self._n_bins
        self._margin_hist = [0] * self._n_bins
        self._entropy_hist = [0] * self._n_bins

    def observe(self, scores, logits=False):
        """Fold a ``[rows, classes]`` batch in; returns (top1 float32[rows], class int64[rows])."""
        logits = c_bint(logits)
        x = _as_rows(scores)
        if x.shape[1] != self._n_classes:
            raise ValueError(f"expected {self._n_classes} classes, got {x.shape[1]}")
        ln_c = math.log(self._n_classes)
        top, cls = [], []
        batch_sum = 0.0
        for r in x.tolist():
            valid, p1, p2, ent, arg = _row(r, logits)
            top.append(p1)
            cls.append(arg)
            if not valid:
                self._invalid_rows += 1
                continue
            self._rows += 1
            self._class_counts[arg] += 1
            batch_sum += p1
            self._top1_hist[_bin(p1, 1.0, self._n_bins)] += 1
            self._margin_hist[_bin(p1 - p2, 1.0, self._n_bins)] += 1
            self._entropy_hist[_bin(ent, ln_c, self._n_bins)] += 1
        self._top1_sum += batch_sum
        return _f32(top), np.array(cls, dtype=np.int64)

    def merge(self, other):
        """Add ``other``'s counts (same class and bin counts)."""
        if not isinstance(other, ConfidenceStats):
            raise TypeError(f"Argument 'other' has incorrect type (expected ConfidenceStats, "
                            f"got {type(other).__name__})")
        if other._n_classes != self._n_classes or other._n_bins != self._n_bins:
            raise ValueError("confidence statistics have different shapes")
        theirs = (other._class_counts[:], other._top1_hist[:], other._margin_hist[:],
                  other._entropy_hist[:])
        self._rows += other._rows
        self._invalid_rows += other._invalid_rows
        self._top1_sum += other._top1_sum
        for mine, add in zip((self._class_counts, self._top1_hist, self._margin_hist,
                              self._entropy_hist), theirs):
            for i, n in enumerate(add):
                mine[i] += n

    def state(self):
        """Copies of the counters as a dict of numpy arrays and numbers."""
        return dict(rows=self._rows, invalid_rows=self._invalid_rows,
                    mean_top1=self._top1_sum / self._rows if self._rows else float("nan"),
                    class_counts=np.array(self._class_counts, dtype=np.int64),
                    top1_hist=np.array(self._top1_hist, dtype=np.int64),
                    margin_hist=np.array(self._margin_hist, dtype=np.int64),
                    entropy_hist=np.array(self._entropy_hist, dtype=np.int64),
                    entropy_max=math.log(self._n_classes))
