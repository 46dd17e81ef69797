"""Where drift is decided: which recent window of each model version is compared with which
reference, on the telemetry aggregator's thread (never the request path).

For every registered version :class:`DriftMonitor` keeps, per input, the per-feature
histograms' recent windows (:class:`~gateway.monitoring.drift.HistogramWindows` over the
cumulative state of the native input statistics), and likewise for a classifier's predicted
class counts and top-1 probability histogram. The reference is the version's profile where it
has one (``given``: the live statistics bin by its edges) or else what the first rows showed
(``captured``: the input histograms when the statistics' warm-up froze their edges, the
predicted classes and confidence of the first ``capture_rows`` rows). Each
``every_s`` it grades the last ``window_s`` seconds (and, where ``window_rows`` is set and
more recent, the last ``window_rows`` rows) against the reference with PSI, JS distance and
binned KS (:func:`~gateway.monitoring.drift.feature_drift`); a window of fewer than
``min_window_rows`` rows is not graded (by chance alone, the KS statistic of 200 rows
against a large reference passes 0.115 one time in a hundred).

Memory: per version and input, one reference ``[features, bins + 2]`` int64 and at most
``max_snapshots + 1`` snapshots of the same size (:class:`HistogramWindows`' bound: 16
features of 10 bins, 600 snapshots, about 0.9 MiB), and never more than
:data:`WINDOW_MAX_BYTES` of snapshots for one histogram (a wide input keeps fewer, further
apart, reaching back as far: 4,096 features of 10 bins, 84 snapshots 7 s apart; at least 3
snapshots), plus the same for class counts and the 20-bin confidence histogram.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..api.stats import DRIFT_TOP, ChangeEvent, DriftMeasure, DriftSnapshot
from ..telemetry.models import PREDICTION_PREFIX, ChangeAlarm, ModelTelemetry
from .drift import DEFAULT_THRESHOLDS, DriftThresholds, FeatureDrift, HistogramWindows, Window, feature_drift

Source = Literal["given", "captured", "capturing"]
WINDOW_MAX_BYTES = 32 << 20  # snapshots of one histogram (HistogramWindows' max_bytes)


@dataclass(frozen=True)
class InputDrift:
    """One input's features graded against the reference over the window, and its data
    quality there: per feature the shares of NaN, of infinite values and of finite values
    outside the reference's range (below its first bin edge or above its last), all over every
    value the window saw of that feature."""
    input: str
    features: list[FeatureDrift]
    nan_rate: list[float] = field(default_factory=list)
    inf_rate: list[float] = field(default_factory=list)
    out_of_range_rate: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class VersionDrift:
    """What the monitor last decided for one version (plain values: readers copy nothing)."""
    model: str
    version: str
    source: Source                       # where the reference came from
    reference_rows: int                  # rows the input reference holds (0 while capturing)
    window_rows: int                     # rows in the window graded
    window_s: float                      # its length
    inputs: list[InputDrift] = field(default_factory=list)
    predicted_class: FeatureDrift | None = None
    confidence: FeatureDrift | None = None
    outlier_rate: float = math.nan                           # over the window, from the rows scored
    outlier_scored_rows: int = 0                             # rows scored in the window (a sample)
    change_alarms: int = 0                                   # the change detectors', so far
    changes: list[ChangeAlarm] = field(default_factory=list)  # the newest DRIFT_TOP, newest first
    at_ns: int = 0                                           # when this was decided
    prediction: InputDrift | None = None                     # a non-classifier's predictions

    def worst(self, n: int) -> list[tuple[str, FeatureDrift]]:
        """The ``n`` features with the highest PSI (NaN last), as (input, drift)."""
        rows = [(d.input, f) for d in self.inputs for f in d.features]
        rows.sort(key=lambda r: -r[1].psi if r[1].psi == r[1].psi else float("inf"))
        return rows[:n]

    def quality(self, name: str, feature: int) -> tuple[float, float, float]:
        for d in self.inputs:
            if d.input == name and feature < len(d.nan_rate):
                return d.nan_rate[feature], d.inf_rate[feature], d.out_of_range_rate[feature]
        return (math.nan,) * 3

    def worst_quality(self, n: int) -> list[tuple[str, FeatureDrift]]:
        """The ``n`` features with the most NaN, infinite or out-of-range values (none: none)."""
        rows = [(d.input, f, d.nan_rate[f.feature] + d.inf_rate[f.feature] + d.out_of_range_rate[f.feature])
                for d in self.inputs for f in d.features]
        rows = [r for r in rows if r[2] > 0]
        rows.sort(key=lambda r: -r[2])
        return [(name, f) for name, f, _ in rows[:n]]

    def snapshot(self, top: int = DRIFT_TOP) -> DriftSnapshot:
        grades = [f.grade for d in self.inputs for f in d.features]
        return DriftSnapshot(
            self.source, self.reference_rows, self.window_rows, self.window_s,
            tuple(self._measure(name, f) for name, f in self.worst(top)),
            grades.count("alert"), grades.count("warn"), grades.count("ok"),
            self._measure("", self.predicted_class) if self.predicted_class is not None else None,
            self._measure("", self.confidence) if self.confidence is not None else None,
            self.change_alarms, self.outlier_rate, self.outlier_scored_rows,
            tuple(ChangeEvent(c.input, c.feature, c.side, c.row, c.statistic,
                              max(0.0, (self.at_ns - c.t_ns) / 1e9)) for c in self.changes[:top]),
            tuple(self._measure(name, f) for name, f in self.worst_quality(top)),
            self._prediction_measure())

    def _prediction_measure(self) -> DriftMeasure | None:
        """The prediction feature with the highest PSI (most models predict one value a row)."""
        p = self.prediction
        if p is None or not p.features:
            return None
        f = max(p.features, key=lambda f: f.psi if f.psi == f.psi else -1.0)
        i = f.feature
        return DriftMeasure(p.input, i, f.psi, f.js, f.ks, f.ks_error, f.grade, f.window_rows,
                            p.nan_rate[i], p.inf_rate[i], p.out_of_range_rate[i])

    def _measure(self, name: str, f: FeatureDrift) -> DriftMeasure:
        nan, inf, out = self.quality(name, f.feature) if name else (math.nan,) * 3
        return DriftMeasure(name, f.feature, f.psi, f.js, f.ks, f.ks_error, f.grade, f.window_rows, nan, inf, out)


class _Tracked:
    """The windows of one histogram and the reference they are graded against."""

    __slots__ = ("stats", "windows", "reference", "source")

    def __init__(self, stats: object, windows: HistogramWindows) -> None:
        self.stats = stats                      # the kernel object the state comes from
        self.windows = windows
        self.reference: np.ndarray | None = None
        self.source: Source = "capturing"


class DriftMonitor:
    def __init__(self, *, window_s: float = 60.0, window_rows: int = 0, min_window_rows: int = 200,
                 every_s: float = 1.0, capture_rows: int = 1024, thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
                 max_snapshots: int = 600) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self.window_rows = window_rows
        self.min_window_rows = min_window_rows
        self.every_ns = int(every_s * 1e9)
        self.capture_rows = capture_rows
        self.thresholds = thresholds
        self.max_snapshots = max_snapshots
        # how often a window start is kept: enough for window_s in max_snapshots
        self._min_interval_s = min(1.0, window_s / 8)
        self._tracked: dict[tuple[int, str], _Tracked] = {}
        self._results: dict[int, VersionDrift] = {}
        self._lock = threading.Lock()
        self._last_ns: int | None = None
        self.ticks = 0

    # -- the aggregator's thread ------------------------------------------------------------
    def tick(self, models: Sequence[ModelTelemetry], now_ns: int) -> None:
        if self._last_ns is not None and now_ns - self._last_ns < self.every_ns:
            return
        self._last_ns = now_ns
        self.ticks += 1
        results = {}
        for st in models:
            if not st.model:  # id 0: requests that named no version
                continue
            if not st.inputs and st.confidence is None and st.prediction_stats is None:  # monitoring off
                continue
            results[st.model_id] = self._version(st, now_ns)
        with self._lock:
            self._results = results

    def _track(self, key: tuple[int, str], stats: object) -> _Tracked:
        tr = self._tracked.get(key)
        if tr is None or tr.stats is not stats:   # new, or the statistics were restarted
            tr = self._tracked[key] = _Tracked(stats, HistogramWindows(self.max_snapshots, self._min_interval_s,
                                                                       WINDOW_MAX_BYTES))
        return tr

    def _grade(self, tr: _Tracked, now_ns: int, counts: np.ndarray, rows: int,
               edges: np.ndarray | None = None) -> tuple[list[FeatureDrift], Window | None]:
        if tr.windows.add(now_ns, rows, counts, edges):
            tr.reference, tr.source = None, "capturing"  # (a reset the stats object did not show)
        if tr.reference is None:
            return [], None
        window = tr.windows.by_time(self.window_s)
        if self.window_rows:
            by_rows = tr.windows.by_rows(self.window_rows)
            if by_rows is not None and (window is None or by_rows.start_t_ns > window.start_t_ns):
                window = by_rows
        if window is None or window.rows < self.min_window_rows:
            return [], None
        bins = tr.reference.shape[1]   # (an input's window counts carry NaN and Inf counts after its bins)
        return feature_drift(tr.reference, window.counts[:, :bins], self.thresholds), window

    def _version(self, st: ModelTelemetry, now_ns: int) -> VersionDrift:
        profile = st.reference
        inputs: list[InputDrift] = []
        sources: set[Source] = set()
        reference_rows = 0
        window_rows = 0
        window_s = 0.0
        with st.feature_lock:
            st.adopt_frozen()
            states = {name: (fs, fs.state()) for name, fs in st.features.items()}
            conf = st.confidence
            conf_state = conf.state() if conf is not None else None
            change_alarms = st.change_alarms
            changes = list(st.changes)[-DRIFT_TOP:][::-1]
            outlier_counts = np.array([[st.outlier_rows, st.outlier_scored_rows - st.outlier_rows]], np.int64)
            ps = st.prediction_stats
            prediction_state = (ps, ps.state(), st.prediction_output) if ps is not None else None
        for name, (fs, state) in states.items():
            given = profile.inputs.get(name) if profile is not None else None
            found = self._stats_drift(st, name, fs, state, given, now_ns)
            if found is None:           # still warming up: no bins yet
                sources.add("capturing")
                continue
            from_, rows, drift, window = found
            sources.add(from_)
            reference_rows = max(reference_rows, rows)
            if drift is not None and window is not None:
                window_rows = max(window_rows, window.rows)
                window_s = max(window_s, window.duration_s)
                inputs.append(drift)
        prediction = None
        if prediction_state is not None:
            fs, state, output = prediction_state
            given_out = profile.output.values if profile is not None and profile.output.name == output else None
            found = self._stats_drift(st, PREDICTION_PREFIX + output, fs, state, given_out, now_ns)
            if found is not None:
                prediction = found[2]
        predicted = confidence = None
        if conf is not None and conf_state is not None:
            rows = int(conf_state["rows"]) - int(conf_state["invalid_rows"])
            predicted = self._output(st, ("classes", conf), conf_state["class_counts"], rows, now_ns,
                                     profile.output.class_counts if profile is not None else None)
            confidence = self._output(st, ("top1", conf), conf_state["top1_hist"], rows, now_ns,
                                      profile.output.top1_histogram if profile is not None else None)
        outlier_rate, scored = math.nan, 0
        tr = self._track((st.model_id, "#outliers"), st)
        tr.windows.add(now_ns, int(outlier_counts.sum()), outlier_counts)
        window = tr.windows.by_time(self.window_s)
        if window is not None and window.rows > 0:
            scored = window.rows
            outlier_rate = float(window.counts[0, 0]) / scored
        if not sources:
            sources.add("given" if profile is not None else "capturing")
        source: Source = "given" if sources == {"given"} else ("capturing" if "capturing" in sources else "captured")
        return VersionDrift(st.model, st.version, source, reference_rows, window_rows, window_s, inputs,
                            predicted, confidence, outlier_rate, scored, change_alarms, changes, now_ns, prediction)

    def _stats_drift(self, st: ModelTelemetry, name: str, fs, state, given,
                     now_ns: int) -> tuple[Source, int, InputDrift | None, Window | None] | None:
        """One FeatureStats' drift and data quality over the window (None while it warms up):
        the reference is ``given``'s histogram where its edges are the statistics' own, else
        the rows the warm-up froze the edges on (windows start after them)."""
        tr = self._track((st.model_id, name), fs)
        edges = state["edges"]
        hist = state["histogram"]
        if edges is None:
            return None
        if tr.reference is None:
            if given is not None and given.edges.shape == edges.shape and np.array_equal(given.edges, edges):
                tr.reference, tr.source = given.histogram.astype(np.int64), "given"
            else:
                tr.reference, tr.source = hist.astype(np.int64, copy=True), "captured"
                tr.windows.clear()
        rows = int(tr.reference.sum(axis=1).max(initial=0))
        counts = np.concatenate([hist, state["nan_count"][:, None], state["inf_count"][:, None]], axis=1)
        graded, window = self._grade(tr, now_ns, counts, int(counts.sum(axis=1).max(initial=0)), edges)
        if window is None:
            return tr.source, rows, None, None
        w = window.counts.astype(np.float64)
        seen = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            nan_rate, inf_rate = w[:, -2] / seen, w[:, -1] / seen
            out = (w[:, 0] + w[:, -3]) / seen       # underflow and overflow bins
        return tr.source, rows, InputDrift(name, graded, nan_rate.tolist(), inf_rate.tolist(), out.tolist()), window

    def _output(self, st: ModelTelemetry, what: tuple[str, object], counts: np.ndarray, rows: int, now_ns: int,
                given: np.ndarray | None) -> FeatureDrift | None:
        tr = self._track((st.model_id, what[0]), what[1])
        counts = counts.reshape(1, -1)
        if tr.reference is None:
            if given is not None and given.size == counts.size:
                tr.reference, tr.source = given.astype(np.int64).reshape(1, -1), "given"
            elif rows >= self.capture_rows:
                tr.reference, tr.source = counts.astype(np.int64, copy=True), "captured"
                tr.windows.clear()
            else:
                return None
        graded, _ = self._grade(tr, now_ns, counts, rows)
        return graded[0] if graded else None

    # -- readers ----------------------------------------------------------------------------
    def drift(self, telemetry_id: int) -> VersionDrift | None:
        with self._lock:
            return self._results.get(telemetry_id)

    def all(self) -> list[VersionDrift]:
        with self._lock:
            return list(self._results.values())

    def snapshots(self) -> dict[tuple[str, str], DriftSnapshot]:
        """Every version's drift as ``GetStats`` reports it, by (model, version)."""
        return {(d.model, d.version): d.snapshot() for d in self.all()}
