"""Drift of a feature's distribution between a reference and a recent window, from histograms.

The measures compare two histograms over the **same bins**: arrays of counts whose last axis
is the bins (for :class:`~gateway.kernels.FeatureStats`, ``state()["histogram"]``:
``[features, n_bins + 2]`` = underflow, bins, overflow; NaN and +/-Inf are not in it), and
whose leading axes (usually ``[features]``) are compared one by one. A categorical
distribution, e.g. predicted-class counts ``[classes]`` or ``[1, classes]``, works too (KS
only means something where the bins are ordered; for classes use PSI or JS).

Results have the shape of the inputs less the bins axis (``[features]``; a 1-D input gives a
numpy scalar or 0-d array). A feature whose reference or current histogram holds no rows has
NaN for every measure (no exception), and :func:`grade` calls it ``"unknown"``.

* :func:`psi` -- population stability index, natural log, empty bins floored at
  :data:`PSI_EPS`; in ``[0, (2 + bins * eps) * ln(1 / eps)]`` (about 18.4 for few bins).
* :func:`js_distance` -- Jensen-Shannon distance (square root of the divergence), base 2, in
  ``[0, 1]``; equals ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
* :func:`ks_binned` -- the two-sample Kolmogorov-Smirnov statistic at the bin edges, with the
  sharp bound on how far the statistic on the raw values can lie above it.

The kernels only keep cumulative state, so :class:`HistogramWindows` keeps a bounded ring of
cumulative snapshots and returns a recent window (by rows or by seconds) as the difference of
two of them. :func:`feature_drift` measures and grades every feature of a window against a
reference. Numpy only; nothing here runs on the request path.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "PSI_EPS", "Grade", "Threshold", "DriftThresholds", "DEFAULT_THRESHOLDS", "psi", "js_distance",
    "ks_binned", "grade", "Snapshot", "Window", "HistogramWindows", "FeatureDrift", "feature_drift",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PSI_EPS = 1e-4
"""Floor of a bin's proportion in :func:`psi` (proportions below it count as ``1e-4``; no
renormalisation). Without a floor a bin empty in one window and not in the other makes PSI
infinite. With it, a bin holding mass ``m`` on one side and nothing on the other adds
``(m - 1e-4) * ln(m / 1e-4)``: 0.046 for ``m = 0.01``, 0.38 for ``m = 0.05``. Bins empty on
both sides add 0."""

Grade = Literal["ok", "warn", "alert", "unknown"]


def _pair(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"reference {ref.shape} and current {cur.shape} histograms differ in shape")
    if ref.ndim < 1 or ref.shape[-1] < 1:
        raise ValueError("histograms need a bins axis with at least one bin")
    if not (np.isfinite(ref).all() and np.isfinite(cur).all()):
        raise ValueError("histogram counts must be finite")
    if (ref < 0).any() or (cur < 0).any():
        raise ValueError("histogram counts must be >= 0")
    return ref, cur


def _proportions(counts: FloatArray) -> FloatArray:
    """Each histogram divided by its row count (all NaN where it has no rows)."""
    n = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / n
    out: FloatArray = np.where(n > 0, p, np.nan)
    return out


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, eps: float = PSI_EPS) -> FloatArray:
    """Population stability index ``sum_i (q_i - p_i) * ln(q_i / p_i)`` of the current
    proportions ``q`` against the reference ones ``p`` (each histogram divided by its own row
    count), every proportion floored at ``eps`` (:data:`PSI_EPS`). Unitless, natural log,
    symmetric in the two histograms; each bin's term is >= 0, so PSI lies in
    ``[0, (2 + bins * eps) * ln(1 / eps)]``. NaN where either side has no rows."""
    if not 0.0 < eps < 1.0:
        raise ValueError("eps must lie in (0, 1)")
    ref, cur = _pair(reference, current)
    p = _proportions(ref)
    q = _proportions(cur)
    p = np.maximum(p, eps)      # NaN stays NaN
    q = np.maximum(q, eps)
    with np.errstate(invalid="ignore"):
        out: FloatArray = ((q - p) * np.log(q / p)).sum(axis=-1)
    return out


def js_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """Jensen-Shannon distance, base 2: ``sqrt((KL(p || m) + KL(q || m)) / 2)`` with
    ``m = (p + q) / 2``, ``p`` and ``q`` the two histograms as proportions and KL in bits.
    Unitless, symmetric, in ``[0, 1]`` (1: no bin holds mass on both sides); the same as
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``. NaN where either side has no
    rows."""
    ref, cur = _pair(reference, current)
    p = _proportions(ref)
    q = _proportions(cur)
    m = (p + q) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        # x * log(x / m), 0 where x == 0 (then m > 0 or both are 0); NaN rows stay NaN
        left = np.where(p > 0, p * np.log(p / m), np.where(np.isnan(p), np.nan, 0.0))
        right = np.where(q > 0, q * np.log(q / m), np.where(np.isnan(q), np.nan, 0.0))
    js = (left.sum(axis=-1) + right.sum(axis=-1)) / np.log(2.0)
    # rounding can leave a divergence a few ulps below 0 (or the distance above 1)
    out: FloatArray = np.minimum(np.sqrt(np.maximum(js / 2.0, 0.0)), 1.0)
    return np.where(np.isnan(js), np.nan, out)


def ks_binned(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Kolmogorov-Smirnov statistic from binned CDFs, and its binning error.

    With ``R_k`` and ``C_k`` the reference and current cumulative proportions through bin
    ``k`` (``R_{-1} = C_{-1} = 0``; the last is 1), the statistic is
    ``D = max_k |R_k - C_k|``: the exact two-sample KS statistic at the bin edges. Unitless,
    in ``[0, 1]``. The bins must partition the line into ordered intervals (underflow first,
    overflow last), each open or closed at either end, as FeatureStats' are.

    Returns ``(D, error)``. The raw-value statistic ``D_raw = sup_x |F_ref(x) - F_cur(x)|``
    (what ``scipy.stats.ks_2samp`` computes on the values that were binned: for FeatureStats
    the finite ones) satisfies ``D <= D_raw <= D + error``, where ``D + error`` is

        ``max(D, max_j max(R_j - C_{j-1}, C_j - R_{j-1}))``.

    Proof: every ``R_k - C_k`` is a value or a left limit of ``F_ref - F_cur`` (at the right
    end of bin ``k``; the last is 0), so ``D <= D_raw``. Every ``x`` lies in some bin ``j``; the rows of the
    bins before ``j`` are below ``x`` and those of the bins after it above, so (the empirical
    CDFs being non-decreasing) ``F_ref(x)`` lies in ``[R_{j-1}, R_j]`` and ``F_cur(x)`` in
    ``[C_{j-1}, C_j]``, hence ``F_ref(x) - F_cur(x)`` in ``[R_{j-1} - C_j, R_j - C_{j-1}]``.
    The bound is sharp: in a bin of non-zero width, the reference rows of bin ``j`` placed near
    its left end and the current rows near its right end make ``F_ref - F_cur = R_j - C_{j-1}``
    between them (swapped: ``C_j - R_{j-1}``), so no smaller bound follows from the two
    histograms alone.

    Corollary: with ``p_j``, ``q_j`` the bin's proportions,
    ``R_j - C_{j-1} = (R_{j-1} - C_{j-1}) + p_j = (R_j - C_j) + q_j <= D + min(p_j, q_j)``,
    and likewise ``C_j - R_{j-1}``; so ``error <= max_j min(p_j, q_j)``: the raw statistic
    exceeds the binned one by at most the *smaller* of one bin's two masses (so at most the
    larger too, and not at all through a bin that only one side has rows in). One bin holding
    everything gives ``D = 0`` and ``error = 1``. NaN (both) where either side has no rows.
    """
    ref, cur = _pair(reference, current)
    nr = ref.sum(axis=-1, keepdims=True)
    nc = cur.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        # cumulative counts then one division: the last entry is exactly 1
        r = np.cumsum(ref, axis=-1) / nr
        c = np.cumsum(cur, axis=-1) / nc
    zero = np.zeros(r.shape[:-1] + (1,))
    r_prev = np.concatenate([zero, r[..., :-1]], axis=-1)
    c_prev = np.concatenate([zero, c[..., :-1]], axis=-1)
    d = np.abs(r - c).max(axis=-1)
    upper = np.maximum(r - c_prev, c - r_prev).max(axis=-1)
    err = np.maximum(upper, d) - d
    empty = (nr[..., 0] <= 0) | (nc[..., 0] <= 0)
    return np.where(empty, np.nan, d), np.where(empty, np.nan, err)


# -- thresholds -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Threshold:
    """One measure's grades: ``"warn"`` from ``warn`` (None: no warn level), ``"alert"`` from
    ``alert``; both inclusive, in the measure's own units."""
    warn: float | None
    alert: float

    def __post_init__(self) -> None:
        if self.warn is not None and self.warn > self.alert:
            raise ValueError(f"warn {self.warn} above alert {self.alert}")


@dataclasses.dataclass(frozen=True)
class DriftThresholds:
    """Default grades per measure.

    * PSI: warn 0.1, alert 0.25 (the customary bands).
    * JS distance (base 2): alert 0.1, no warn level.
    * KS (binned statistic): warn 0.1, alert 0.2. For two unit normals a mean shift of
      ``delta`` standard deviations gives ``KS = 2 * Phi(delta / 2) - 1`` and PSI about
      ``delta ** 2`` (binned, a little less): the alert 0.2 sits at a half-sigma shift
      (KS 0.197), where PSI reaches its 0.25; the warn 0.1 at a quarter sigma (0.0995).
      Under no drift the statistic of a window of ``n`` rows against a much larger reference
      stays below ``1.63 / sqrt(n)`` 99 % of the time, i.e. below the warn level for windows
      of 266 rows or more; shorter windows warn by chance. The binned statistic is a lower
      bound of the raw one (:func:`ks_binned`), so a coarse binning grades low, not high.
    """
    psi: Threshold = Threshold(warn=0.1, alert=0.25)
    js: Threshold = Threshold(warn=None, alert=0.1)
    ks: Threshold = Threshold(warn=0.1, alert=0.2)


DEFAULT_THRESHOLDS = DriftThresholds()


def grade(value: float, threshold: Threshold) -> Grade:
    """``"alert"`` at or above ``threshold.alert``, ``"warn"`` at or above ``threshold.warn``,
    ``"ok"`` below, ``"unknown"`` for NaN (a window without rows)."""
    v = float(value)
    if np.isnan(v):
        return "unknown"
    if v >= threshold.alert:
        return "alert"
    if threshold.warn is not None and v >= threshold.warn:
        return "warn"
    return "ok"


_ORDER: dict[Grade, int] = {"unknown": 0, "ok": 1, "warn": 2, "alert": 3}


# -- windows over cumulative histograms ------------------------------------------------------

class Snapshot(NamedTuple):
    """Cumulative state at ``t_ns`` (monotonic ns): ``rows_total`` rows so far and the
    cumulative histogram ``counts`` ``[features, bins]`` (int64, a private copy)."""
    t_ns: int
    rows_total: int
    counts: IntArray


class Window(NamedTuple):
    """The rows observed between two snapshots: ``counts`` ``[features, bins]`` (int64),
    ``rows`` of them, from ``start_t_ns`` to ``end_t_ns`` (monotonic ns)."""
    counts: IntArray
    rows: int
    start_t_ns: int
    end_t_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_t_ns - self.start_t_ns) / 1e9


class HistogramWindows:
    """Recent windows of a cumulative histogram, as differences of cumulative snapshots.

    :meth:`add` is given each cumulative state (e.g. once per aggregator flush). The latest
    one is always kept as the end of every window; it also enters a ring of at most
    ``max_snapshots`` snapshots when it is ``min_interval_s`` or more after the ring's newest
    (so flushes every 0.2 s do not fill the ring in 100 s). The ring reaches back about
    ``max_snapshots * max(min_interval_s, flush interval)`` seconds (defaults: 600 s, twice
    ``GetStats``' longest window). Memory: ``features * bins * 8`` bytes per snapshot (plus
    about 200 bytes of Python objects), so at most ``(max_snapshots + 1)`` times that, e.g.
    601 * 16 * 12 * 8 B = 0.88 MiB for 16 features of 10 bins (+ under/overflow);
    :attr:`nbytes` says the current figure. With ``max_bytes``, a histogram too wide for
    ``max_snapshots`` of it within that many bytes gets a shorter ring, its snapshots spaced
    further apart (:attr:`interval_ns`) so that it reaches back as far; never fewer than 2
    (the ring and the latest: 3 snapshots, whatever ``max_bytes`` says).

    A window starts at a ring snapshot, so its length is as close to the asked one as the
    ring's spacing allows: :meth:`by_rows` returns ``N <= rows < N + g`` and :meth:`by_time`
    ``T <= duration < T + g'``, where ``g`` (``g'``) is the rows (seconds) between the start
    snapshot and the next newer one (``g'`` about ``min_interval_s``, or one flush interval
    when flushes are further apart).

    A reset -- rows_total or any bin count going down, the histogram's shape changing, or
    edges given that differ from the last ones given (the statistics were restarted or
    rebinned; edges first given after calls without them, as when a FeatureStats' warm-up
    ends, are no reset) -- starts over: the ring is
    emptied and the new state is its first snapshot, so no window reaches back past it (the
    rows between the restart and that snapshot are in no window). Not thread-safe: call it
    from one thread (the aggregator's).
    """

    def __init__(self, max_snapshots: int = 600, min_interval_s: float = 1.0, max_bytes: int | None = None) -> None:
        if max_snapshots < 1:
            raise ValueError("max_snapshots must be >= 1")
        if min_interval_s < 0:
            raise ValueError("min_interval_s must be >= 0")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.max_snapshots = max_snapshots
        self.min_interval_ns = int(min_interval_s * 1e9)
        self.interval_ns = self.min_interval_ns  # between ring snapshots (wider: see max_bytes)
        self.max_bytes = max_bytes
        self._ring: deque[Snapshot] = deque(maxlen=max_snapshots)
        self._latest: Snapshot | None = None
        self._edges: FloatArray | None = None
        self.resets = 0

    def __len__(self) -> int:
        """Snapshots in the ring (window starts)."""
        return len(self._ring)

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    @property
    def snapshots(self) -> tuple[Snapshot, ...]:
        """The ring, oldest first."""
        return tuple(self._ring)

    @property
    def nbytes(self) -> int:
        """Bytes of histogram data held (ring and latest)."""
        held = {id(s): s.counts.nbytes for s in self._ring}
        if self._latest is not None:
            held[id(self._latest)] = self._latest.counts.nbytes
        return sum(held.values())

    def clear(self) -> None:
        self._ring.clear()
        self._latest = None
        self._edges = None

    def add(self, t_ns: int, rows_total: int, counts: npt.ArrayLike,
            edges: npt.ArrayLike | None = None) -> bool:
        """Record the cumulative state at ``t_ns`` (monotonic ns, not before the previous
        call's): ``rows_total`` rows so far, cumulative ``counts`` ``[features, bins]``
        (a 1-D histogram is one feature) and optionally the bin ``edges`` it was binned with
        (a change of edges is a reset). Returns True when it was a reset (the windows start
        over from this state)."""
        hist = np.array(counts, dtype=np.int64, copy=True)
        if hist.ndim == 1:
            hist = hist[None, :]
        if hist.ndim != 2:
            raise ValueError(f"counts must be [features, bins], not {hist.shape}")
        if (hist < 0).any():
            raise ValueError("cumulative counts must be >= 0")
        rows_total = int(rows_total)
        t_ns = int(t_ns)
        prev = self._latest
        if prev is not None and t_ns < prev.t_ns:
            raise ValueError(f"t_ns {t_ns} is before the previous snapshot's {prev.t_ns}")
        e = None if edges is None else np.array(edges, dtype=np.float64, copy=True)
        reset = prev is not None and (
            rows_total < prev.rows_total or hist.shape != prev.counts.shape
            or bool((hist < prev.counts).any())
            or (e is not None and self._edges is not None
                and (e.shape != self._edges.shape or not np.array_equal(e, self._edges, equal_nan=True))))
        if reset:
            self._ring.clear()
            self.resets += 1
        if e is not None:
            self._edges = e
        if not self._ring and self.max_bytes is not None:
            self._fit(hist.nbytes)
        snap = Snapshot(t_ns, rows_total, hist)
        self._latest = snap
        if not self._ring or snap.t_ns - self._ring[-1].t_ns >= self.interval_ns:
            self._ring.append(snap)
        return reset

    def _fit(self, snapshot_bytes: int) -> None:
        """Size the (empty) ring for snapshots of this many bytes within ``max_bytes``."""
        assert self.max_bytes is not None
        n = min(self.max_snapshots, max(2, self.max_bytes // max(snapshot_bytes, 1) - 1))  # (-1: the latest)
        if n != self._ring.maxlen:
            self._ring = deque(maxlen=n)
        self.interval_ns = max(self.min_interval_ns, self.max_snapshots * self.min_interval_ns // n)

    def _window(self, start: Snapshot) -> Window:
        end = self._latest
        assert end is not None
        return Window(end.counts - start.counts, end.rows_total - start.rows_total, start.t_ns, end.t_ns)

    def by_rows(self, window_rows: int) -> Window | None:
        """The most recent ``window_rows`` or more rows: from the newest ring snapshot at least
        ``window_rows`` rows before the latest state (``window_rows <= rows < window_rows +``
        the rows between that snapshot and the next). None while the ring does not reach back
        that far."""
        if window_rows < 1:
            raise ValueError("window_rows must be >= 1")
        if self._latest is None:
            return None
        last = self._latest.rows_total
        for s in reversed(self._ring):
            if last - s.rows_total >= window_rows:
                return self._window(s)
        return None

    def by_time(self, window_s: float) -> Window | None:
        """The rows of the last ``window_s`` seconds or a little more: from the newest ring
        snapshot at least ``window_s`` before the latest state (``window_s <= duration_s <
        window_s +`` the time to the next snapshot). None while the ring does not reach back
        that far."""
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        if self._latest is None:
            return None
        window_ns = int(window_s * 1e9)
        last = self._latest.t_ns
        for s in reversed(self._ring):
            if last - s.t_ns >= window_ns:
                return self._window(s)
        return None


# -- all features at once --------------------------------------------------------------------

class FeatureDrift(NamedTuple):
    """One feature's drift of a window against the reference (plain Python types): PSI,
    JS distance (base 2), binned KS and its error bound (raw KS lies in
    ``[ks, ks + ks_error]``), their grades and ``grade``, the worst of the three. Measures are
    NaN and grades ``"unknown"`` when either side has no rows."""
    feature: int
    reference_rows: int
    window_rows: int
    psi: float
    js: float
    ks: float
    ks_error: float
    psi_grade: Grade
    js_grade: Grade
    ks_grade: Grade
    grade: Grade


def feature_drift(reference: npt.ArrayLike, current: npt.ArrayLike,
                  thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
                  psi_eps: float = PSI_EPS) -> list[FeatureDrift]:
    """PSI, JS, KS (+ error) and grades of every feature: ``reference`` and ``current`` are
    counts ``[features, bins]`` over the same bins (a 1-D histogram is one feature). Row
    counts are the histograms' sums (rows with NaN/Inf are not in a FeatureStats histogram)."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim == 1:
        ref, cur = ref[None, :], cur[None, :]
    if ref.ndim != 2:
        raise ValueError(f"histograms must be [features, bins], not {ref.shape}")
    p = psi(ref, cur, psi_eps)
    j = js_distance(ref, cur)
    k, k_err = ks_binned(ref, cur)
    nr = ref.sum(axis=1)
    nc = cur.sum(axis=1)
    out = []
    for f in range(ref.shape[0]):
        grades = (grade(p[f], thresholds.psi), grade(j[f], thresholds.js), grade(k[f], thresholds.ks))
        worst = max(grades, key=_ORDER.__getitem__)
        out.append(FeatureDrift(f, int(nr[f]), int(nc[f]), float(p[f]), float(j[f]), float(k[f]),
                                float(k_err[f]), grades[0], grades[1], grades[2], worst))
    return out
