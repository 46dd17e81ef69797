"""Reference twin of ``gateway.kernels.ChangeDetector``: a two-sided CUSUM per feature on
values standardised by a reference mean / std, and its threshold from Siegmund's ARL.

Per row, in order, for every feature whose value ``v`` is not NaN (NaN: counted, skipped):

* ``z = (v - mean) * (1 / std)``; ``inf * 0`` (a zero std, whose inverse is inf, and
  ``v == mean``) is 0;
* ``su = up + z - k`` and ``sd = down - z - k`` (left to right, doubles);
* if ``su > h`` the alarm ``(feature, "up", rows seen including this row, su)`` and
  ``su = 0``; else if ``sd > h`` the same for "down" (both cannot exceed ``h`` on one row);
* ``up = su if su > 0 else 0.0``, ``down`` likewise (+0.0 for -0.0).

Alarms come by row, then feature. ``h`` solves Siegmund's ARL0 = ERT * 2 * n_features by
the same bisection (``cusum_threshold``), with the same double arithmetic.
"""
from __future__ import annotations

import math

import numpy as np

from tests.reference._cy import c_double

SIEGMUND_CORRECTION = 1.166


def cusum_arl(threshold_sigma, allowance_sigma, shift_sigma=0.0):
    """Siegmund's ARL of a one-sided CUSUM on N(shift, 1) values (see the kernel)."""
    threshold_sigma, allowance_sigma = c_double(threshold_sigma), c_double(allowance_sigma)
    shift_sigma = c_double(shift_sigma)
    b = threshold_sigma + SIEGMUND_CORRECTION
    delta = shift_sigma - allowance_sigma
    if delta == 0.0:
        return b * b
    a = -2.0 * delta * b
    if a > 700.0:
        return math.inf
    if abs(a) < 1e-4:
        return b * b * (1.0 + a / 3.0 + a * a / 12.0)
    return (math.expm1(a) - a) / (2.0 * delta * delta)


def cusum_threshold(arl0_rows, allowance_sigma):
    """The threshold with Siegmund's ARL0 = ``arl0_rows``: bisection on b, h = b - 1.166."""
    arl0_rows, allowance_sigma = c_double(arl0_rows), c_double(allowance_sigma)
    if not (arl0_rows >= 1.0 and math.isfinite(arl0_rows)):
        raise ValueError("arl0_rows must be finite and >= 1")
    if not (allowance_sigma >= 0.0 and math.isfinite(allowance_sigma)):
        raise ValueError("allowance_sigma must be finite and >= 0")
    lo, hi = 0.0, 1.0
    while cusum_arl(hi - SIEGMUND_CORRECTION, allowance_sigma) < arl0_rows:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if cusum_arl(mid - SIEGMUND_CORRECTION, allowance_sigma) < arl0_rows:
            lo = mid
        else:
            hi = mid
    return max(0.0, hi - SIEGMUND_CORRECTION)


def _as_2d(batch, n_features):
    arr = batch if type(batch) is np.ndarray else np.asarray(batch)
    if arr.ndim == 0:
        raise ValueError("input batch must have at least one dimension")
    if arr.ndim == 1:
        arr = arr.reshape(-1, n_features) if n_features > 1 else arr.reshape(-1, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], math.prod(arr.shape[1:]))
    if arr.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features per row, got {arr.shape[1]}")
    return arr.astype(np.float64)


class ChangeDetector:
    """Two-sided CUSUM per feature against a reference mean / std; the false-alarm rate of
    all features together is set by ``expected_rows_between_false_alarms``."""

    def __init__(self, reference_mean, reference_std, *,
                 expected_rows_between_false_alarms=10_000_000.0, allowance_sigma=0.25):
        ert = c_double(expected_rows_between_false_alarms)
        k = c_double(allowance_sigma)
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
        if not (ert >= 1.0 and math.isfinite(ert)):
            raise ValueError("expected_rows_between_false_alarms must be finite and >= 1")
        if not (k >= 0.0 and math.isfinite(k)):
            raise ValueError("allowance_sigma must be finite and >= 0")
        nf = mean.shape[0]
        arl0 = ert * 2.0 * nf
        self._h = cusum_threshold(arl0, k)
        self._mean = mean.copy()
        self._std = std.copy()
        with np.errstate(divide="ignore", over="ignore"):
            self._inv = 1.0 / std
        self._nf, self._k, self._ert, self._arl0 = nf, k, ert, arl0
        self.reset()

    n_features = property(lambda self: self._nf)
    allowance_sigma = property(lambda self: self._k)
    threshold_sigma = property(lambda self: self._h)
    expected_rows_between_false_alarms = property(lambda self: self._ert)
    arl0_rows_per_side = property(lambda self: self._arl0)
    rows_seen = property(lambda self: self._rows)
    alarm_count = property(lambda self: self._alarms)

    def reset(self):
        """Both statistics of every feature back to 0; rows, NaN and alarm counts to 0."""
        self._up = np.zeros(self._nf)
        self._down = np.zeros(self._nf)
        self._nan = np.zeros(self._nf, dtype=np.int64)
        self._rows = 0
        self._alarms = 0

    def observe(self, batch):
        """Fold the rows of ``batch`` in, in order; returns the alarms they raised, as
        ``(feature, side, row_number, statistic)`` tuples (side "up" or "down",
        row_number = rows seen so far, the alarming row included), by row, then feature."""
        x = _as_2d(batch, self._nf)
        k, h = self._k, self._h
        out = []
        for r in range(x.shape[0]):
            v = x[r]
            nan = np.isnan(v)
            self._nan += nan
            with np.errstate(invalid="ignore", over="ignore"):
                z = (v - self._mean) * self._inv
                z = np.where(np.isnan(z), 0.0, z)
                su = self._up + z - k
                sd = self._down - z - k
            for f in range(self._nf):
                if nan[f]:
                    continue
                if su[f] > h:
                    out.append((f, "up", self._rows + r + 1, float(su[f])))
                    su[f] = 0.0
                elif sd[f] > h:
                    out.append((f, "down", self._rows + r + 1, float(sd[f])))
                    sd[f] = 0.0
            self._up = np.where(nan, self._up, np.where(su > 0.0, su, 0.0))
            self._down = np.where(nan, self._down, np.where(sd > 0.0, sd, 0.0))
        self._rows += x.shape[0]
        self._alarms += len(out)
        return out

    def state(self):
        """Copies of the running state (dict of numpy arrays and ints)."""
        return dict(up=self._up.copy(), down=self._down.copy(), nan_count=self._nan.copy(),
                    reference_mean=self._mean.copy(), reference_std=self._std.copy(),
                    rows_seen=self._rows, alarm_count=self._alarms)
