"""Per-model-version telemetry state: the histograms, counters, input and confidence
statistics the aggregator and the batch observer fold into, and what readers read."""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from collections.abc import Mapping

import numpy as np

from .. import kernels
from . import freezer
from .totals import RunningTotals
from ..config.profile import ReferenceProfile
from ..policy import outliers
from ..api.stats import MAX_WINDOW_S

LATENCY_KINDS = ("e2e", "queue", "compute")


@dataclasses.dataclass(frozen=True)
class InputBinning:
    """Histogram bins of a model's input statistics: the reference profile's edges where it
    has the input (``edges[input]``, [features, bins + 1]), else uniform over
    ``ranges[input]`` where given, else edges from the quantiles of the first ``warmup_rows``
    rows, or fewer for a wide input (:func:`warmup_rows`; the reference is then captured, not
    given). ``profile`` names the profile the edges
    came from (two binnings compare equal when all else and it are equal)."""
    bins: int = 10
    warmup_rows: int = 1024
    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    edges: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, compare=False)
    profile: str = ""


CHANGES_KEPT = 256  # change alarms a version keeps (the newest), for readers
# A side of a feature that alarmed stays latched while it keeps alarming: a CUSUM restarts
# after each alarm, so a shift that persists re-alarms every few hundred rows (about h / (shift
# - k) rows: 135 for a 0.5-sigma shift at the defaults). Those re-alarms are one change, not
# many: only an alarm on a side whose previous alarm is more than CHANGE_REARM_ROWS rows back
# (of that detector's stream) is a new ChangeAlarm; the others count in ``change_repeats``.
CHANGE_REARM_ROWS = 10_000
OUTLIER_SCORE_EVERY_NS = 100_000_000  # at most one executed batch a version per 100 ms is scored
OUTLIER_MAX_OUT_OF_RANGE = 0    # a row is an outlier with more features than this outside the reference's range
OUTLIER_MAX_ROBUST_Z = 8.0      # or a robust z-score above this (policy.outliers' defaults; a version's own
                                # policy.outliers thresholds replace them, gate on or off)
# The rows an input's statistics buffer before freezing their quantile edges are capped at this
# many values (rows x features; at least WARMUP_MIN_ROWS rows): the buffer (which grows to
# twice that while the freezer thread works: kernels' DEFER_MAX_FACTOR), its float64 copies and
# the sort that takes the edges from them hold ~32 bytes a value of the cap at once for float32
# inputs (~135 MB at the cap; an uncapped 3 x 224 x 224 image input at 1,024 rows would hold
# over 4 GB).
WARMUP_MAX_VALUES = 1 << 22
WARMUP_MIN_ROWS = 32
PREDICTION_PREFIX = "output:"   # a non-classifier's predictions go by "output:<its first output>"
UNWATCHED_STD = 1e300  # the scale given to a feature the detector must not watch (only |x| > 1e300 alarms)


@dataclasses.dataclass(frozen=True)
class ChangeAlarm:
    """A sequential change detector's alarm: ``input`` ("" for the top-1 confidence), its
    ``feature``, ``side`` ("up" / "down"), the ``row`` it came on (rows the detector had seen),
    the CUSUM statistic in reference standard deviations and when (monotonic ns)."""
    t_ns: int
    input: str
    feature: int
    side: str
    row: int
    statistic: float


class _Watch:
    """The change detector of one input (or of the confidence) and how its reference is got."""

    __slots__ = ("stats", "detector", "rows", "source", "unwatched", "sum", "sum_sq", "last_alarm_row")

    def __init__(self, stats: kernels.FeatureStats | kernels.ConfidenceStats) -> None:
        self.stats = stats          # the statistics object it follows (a new one: a new watch)
        self.detector: kernels.ChangeDetector | None = None
        self.rows = 0               # rows seen before the detector started
        self.source = ""            # "given" or "captured" once it started
        self.unwatched = 0          # features it does not watch (constant in the reference)
        self.sum = self.sum_sq = 0.0  # the confidence's first rows (its reference moments)
        self.last_alarm_row: dict[tuple[int, str], int] = {}  # (feature, side) -> row of its last alarm


class ModelTelemetry:
    """One registered (model, version). Histograms, counters and outcomes are written by the
    aggregator thread under the hub's lock; features and confidence by executor threads under
    ``feature_lock``."""

    def __init__(self, model_id: int, model: str, version: str, inputs: dict[str, int],
                 classifier_classes: int | None, logits: bool, labels: list[str] | None,
                 max_buckets: int, sample_every: int, now_ns: int, binning: InputBinning,
                 change_ert_rows: float = 0.0) -> None:
        self.model_id = model_id
        self.model = model
        self.version = version
        self.max_buckets = max_buckets
        self.start_ns = now_ns
        self.sample_every = sample_every
        self.binning = binning
        self.inputs = frozenset(inputs)
        # Inputs whose width is dynamic (0) get their statistics when the first batch shows it.
        self.features = {name: self.new_feature_stats(name, int(n)) for name, n in inputs.items() if n > 0}
        self.feature_lock = threading.Lock()
        self._freezing: dict[int, kernels.FeatureStats | None] = {}  # id -> statistics whose freeze is queued
                                                                     # (None: it failed, not queued again)
        # (statistics, token, part or None: failed) the freezer finished, for adopt_frozen
        self._frozen: collections.deque[tuple[kernels.FeatureStats, int, kernels.FeatureStats | None]] = \
            collections.deque()
        self.classes = classifier_classes
        self.confidence = kernels.ConfidenceStats(classifier_classes) if classifier_classes else None
        self.logits = logits
        self.labels = list(labels) if labels is not None else None
        # (status code, kind, call) -> histogram; call is -1 for kinds other than "e2e"
        self.hists: dict[tuple[int, str, int], kernels.ExpHistogram] = {}
        self.counters = kernels.WindowedCounters(MAX_WINDOW_S)  # one slot per second
        # (status code, fallback code) -> requests, for exporters' per-outcome counters.
        self.outcomes: dict[tuple[int, int], int] = {}
        self.conf_sum = 0.0
        self.conf_n = 0
        self.totals = RunningTotals()  # exact running totals (ModelStatistics)
        # The version's reference profile (None: captured from its first rows: see InputBinning)
        self.reference: ReferenceProfile | None = None
        # Sequential change detection (0: off): expected rows between false alarms, per input
        self.change_ert_rows = change_ert_rows
        self._watches: dict[str, _Watch] = {}
        self.changes: collections.deque[ChangeAlarm] = collections.deque(maxlen=CHANGES_KEPT)
        self.change_alarms = 0      # changes so far (the deque keeps the newest): see CHANGE_REARM_ROWS
        self.change_repeats = 0     # re-alarms of a latched side, not counted as changes
        # A non-classifier's predictions (its first output): statistics like an input's
        self.prediction_stats: kernels.FeatureStats | None = None
        self.prediction_output = ""
        # Outlier rate, from a sample of the executed batches (OUTLIER_SCORE_EVERY_NS)
        self.outlier_rows = 0
        self.outlier_scored_rows = 0
        self._outlier_refs: dict[str, outliers.Reference] = {}
        self._outlier_at_ns = 0
        self.outlier_max_out_of_range = OUTLIER_MAX_OUT_OF_RANGE
        self.outlier_max_robust_z: float | None = OUTLIER_MAX_ROBUST_Z

    def new_feature_stats(self, name: str, width: int) -> kernels.FeatureStats:
        """Statistics of one input of ``width`` features, binned as configured."""
        b = self.binning
        edges = b.edges.get(name)
        if edges is not None and edges.shape[0] == width:
            return kernels.FeatureStats(width, edges=edges, sample_every=self.sample_every)
        value_range = b.ranges.get(name)
        if value_range is not None:
            return kernels.FeatureStats(width, value_range=value_range, n_bins=b.bins,
                                        sample_every=self.sample_every)
        return kernels.FeatureStats(width, n_bins=b.bins, warmup_rows=warmup_rows(b.warmup_rows, width),
                                    sample_every=self.sample_every, defer_freeze=True)

    def rebin(self, binning: InputBinning) -> None:
        """A reloaded config with other binning: restart the input statistics with it."""
        with self.feature_lock:
            self.binning = binning
            self.features = {name: self.new_feature_stats(name, fs.n_features)
                             for name, fs in self.features.items()}
            self._watches = {}      # the detectors restart with the statistics they follow
            self._outlier_refs = {}
            self.prediction_stats = None

    def reclassify(self, classes: int | None, logits: bool, labels: list[str] | None) -> None:
        """A reloaded config with other classifier settings (``classifier:``, ``labels``): rows
        from now on are observed with them. The confidence statistics go on when the number of
        classes stays (cumulative readers see no reset; recent rows show the new setting) and
        restart when it changes (the kernel is sized by it)."""
        with self.feature_lock:
            if classes != self.classes:
                self.classes = classes
                self.confidence = kernels.ConfidenceStats(classes) if classes else None
            self.logits = logits
            self.labels = list(labels) if labels is not None else None

    def hist(self, status: int, kind: str, call: int = -1) -> kernels.ExpHistogram:
        key = (status, kind, call)
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = kernels.ExpHistogram(self.max_buckets)
        return h

    def merged(self, kind: str) -> kernels.ExpHistogram:
        out = kernels.ExpHistogram(self.max_buckets)
        for (_, k, _), h in self.hists.items():
            if k == kind:
                out.merge(h)
        return out

    # -- executor threads: one executed batch ---------------------------------------------
    def _stats_for(self, name: str, batch: np.ndarray) -> kernels.FeatureStats | None:
        """The input's statistics (made on its first batch when its width was dynamic); call
        with ``feature_lock`` held."""
        fs = self.features.get(name)
        if fs is None:
            if name not in self.inputs:
                raise ValueError(f"input {name!r} was not registered for {self.model}")
            width = int(np.prod(batch.shape[1:])) if batch.ndim > 1 else 1
            if width < 1:
                return None
            fs = self.features[name] = self.new_feature_stats(name, width)
        return fs

    def observe_batch(self, feeds: Mapping[str, np.ndarray], scores: np.ndarray | None,
                      confidence: kernels.ConfidenceStats | None = None,
                      values: tuple[str, np.ndarray] | None = None) -> None:
        """One executed batch: its inputs, and the classifier's scores (None: not a classifier)
        or another model's predictions (``values``: its first output's name and values), under
        one acquisition of the lock. With ``confidence``, the scores count only while those are
        still the version's confidence statistics (a version replaced by a reload finishing its
        queue does not feed the statistics its successor restarted)."""
        with self.feature_lock:
            if self._frozen:
                self.adopt_frozen()
            if values is not None:
                self._observe_predictions(*values)
            for name, batch in feeds.items():
                fs = self._stats_for(name, batch)
                if fs is not None and fs.observe(batch) and self.change_ert_rows:
                    self._watch(name, fs, batch)
                if fs is not None and fs.freeze_due:
                    self._freeze_later(fs)
            if self.features:
                now = time.monotonic_ns()
                if now - self._outlier_at_ns >= OUTLIER_SCORE_EVERY_NS:
                    self._outlier_at_ns = now
                    self._score_outliers(feeds)
            if scores is not None and self.confidence is not None and \
                    (confidence is None or confidence is self.confidence):
                top1, _ = self.confidence.observe(scores, self.logits)
                if self.change_ert_rows:
                    self._watch("", self.confidence, top1)

    # -- quantile freezes (the slow part on the freezer thread, the rest under feature_lock) ----
    def _freeze_later(self, fs: kernels.FeatureStats) -> None:
        """Hand the freeze set of ``fs`` to the freezer thread (``feature_lock`` held). The
        freezer takes no lock: it runs at the lowest priority, and a thread that is starved while
        holding a lock stalls whoever waits on it."""
        if id(fs) in self._freezing:
            return
        pending = fs.freeze_pending()
        if pending is None:
            return
        self._freezing[id(fs)] = fs
        try:
            freezer.submit(self._freeze_part, fs, pending[0], pending[1])
        except RuntimeError:  # the interpreter is shutting down: observe freezes inline at its bound
            self._freezing[id(fs)] = None

    def _freeze_part(self, fs: kernels.FeatureStats, token: int, batches: list) -> None:
        """On the freezer thread: the quantile edges and the histogram of the freeze set (mostly
        without the GIL), left in ``_frozen`` for :meth:`adopt_frozen`. A failure is logged by the
        freezer and not retried: ``observe`` freezes those statistics itself at its bound."""
        try:
            part = fs.freeze_part(batches)
        except BaseException:
            self._frozen.append((fs, token, None))
            raise
        self._frozen.append((fs, token, part))

    def adopt_frozen(self) -> None:
        """Install the edges the freezer has finished (``feature_lock`` held): the execution
        threads do it as they observe, readers before they read."""
        while self._frozen:
            fs, token, part = self._frozen.popleft()
            if part is None:
                self._freezing[id(fs)] = None  # (the id stays taken; the object is let go)
                continue
            fs.freeze_with(token, part)  # False: reset or frozen by observe meanwhile
            self._freezing.pop(id(fs), None)

    # -- a non-classifier's predictions (executor threads, feature_lock held) -----------------
    def _observe_predictions(self, name: str, values: np.ndarray) -> None:
        """Statistics of the predictions, binned like an input's: by the profile's edges of its
        output (a regressor's profile), else the quantiles of its first ``warmup_rows`` rows."""
        if values.ndim == 0 or values.shape[0] == 0 or values.dtype.kind not in "fiu":
            return
        width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
        fs = self.prediction_stats
        if fs is None or fs.n_features != width or self.prediction_output != name:
            ref = self.reference
            given = ref.output.values if ref is not None and ref.output.name == name else None
            b = self.binning
            if given is not None and given.features == width:
                fs = kernels.FeatureStats(width, edges=given.edges, sample_every=self.sample_every)
            else:
                fs = kernels.FeatureStats(width, n_bins=b.bins, warmup_rows=warmup_rows(b.warmup_rows, width),
                                          sample_every=self.sample_every, defer_freeze=True)
            self.prediction_stats, self.prediction_output = fs, name
        if fs.observe(values) and self.change_ert_rows:
            self._watch(PREDICTION_PREFIX + name, fs, values)
        if fs.freeze_due:
            self._freeze_later(fs)

    # -- outliers (executor threads, feature_lock held) ---------------------------------------
    def _score_outliers(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Count the outlier rows of one batch (their reference: the profile's, else the
        first ``warmup_rows`` rows' range, mean and std)."""
        bad = None
        for name, batch in feeds.items():
            ref = self._outlier_refs.get(name)
            if ref is None:
                ref = self._outlier_reference(name)
                if ref is None:
                    continue
            if batch.size == 0 or batch.size % ref.low.size:
                continue
            n_out, z = outliers.scores(batch, ref)
            row_bad = n_out > self.outlier_max_out_of_range
            if self.outlier_max_robust_z is not None:
                row_bad |= z > self.outlier_max_robust_z
            bad = row_bad if bad is None or bad.shape != row_bad.shape else bad | row_bad
        if bad is not None:
            self.outlier_rows += int(bad.sum())
            self.outlier_scored_rows += int(bad.size)

    def _outlier_reference(self, name: str) -> outliers.Reference | None:
        profile = self.reference
        fs = self.features.get(name)
        if fs is None:
            return None
        if profile is not None and name in profile.inputs and profile.inputs[name].features == fs.n_features:
            ref = profile.outlier_references()[name]
        elif fs.edges is not None or fs.freeze_due:  # (due: its warm-up rows are in, the freezer has them)
            st = fs.state()
            if int(st["count"].min(initial=0)) < self.binning.warmup_rows:
                return None
            ref = outliers.reference(st["min"], st["max"], st["mean"], np.sqrt(st["variance"]))
        else:
            return None
        self._outlier_refs[name] = ref
        return ref

    # -- change detection (executor threads, feature_lock held) ------------------------------
    def _watch(self, name: str, stats, batch: np.ndarray) -> None:
        w = self._watches.get(name)
        if w is None or w.stats is not stats:
            w = self._watches[name] = _Watch(stats)
        det = w.detector
        if det is None:
            w.rows += len(batch)
            if not name:    # the top-1 confidence: its reference moments from its own first rows
                finite = batch[np.isfinite(batch)].astype(np.float64)
                w.sum += float(finite.sum())
                w.sum_sq += float((finite * finite).sum())
            det = self._start_detector(name, w)
            if det is None:
                return
        alarms = det.observe(batch if name else batch.reshape(-1, 1))
        if alarms:
            now = time.monotonic_ns()
            last = w.last_alarm_row
            for f, side, row, stat in alarms:
                before = last.get((f, side))
                last[f, side] = row
                if before is not None and row - before <= CHANGE_REARM_ROWS:
                    self.change_repeats += 1
                    continue
                self.change_alarms += 1
                self.changes.append(ChangeAlarm(now, name, f, side, row, stat))

    def _start_detector(self, name: str, w: _Watch) -> kernels.ChangeDetector | None:
        """The detector once its reference moments are known: the profile's at once, else those
        of the first ``warmup_rows`` rows (the confidence: of its first rows' histogram)."""
        profile = self.reference
        mean = std = None
        if name:
            if name.startswith(PREDICTION_PREFIX):
                output = profile.output if profile is not None else None
                given = output.values if output is not None and output.name == name[len(PREDICTION_PREFIX):] \
                    else None
            else:
                given = profile.inputs.get(name) if profile is not None else None
            fs = w.stats
            assert isinstance(fs, kernels.FeatureStats)
            if given is not None and given.features == fs.n_features:
                mean, std, w.source = given.mean, given.std, "given"
            elif w.rows >= self.binning.warmup_rows and (fs.edges is not None or fs.freeze_due):
                st = fs.state()
                mean, std, w.source = st["mean"], np.sqrt(st["variance"]), "captured"
        else:
            moments = profile.output.top1_moments if profile is not None else None
            if moments is not None:
                mean, std, w.source = moments[:1], moments[1:], "given"
            elif w.rows >= self.binning.warmup_rows:
                n = w.rows
                m = w.sum / n
                var = max(w.sum_sq / n - m * m, 0.0) * n / max(n - 1, 1)
                mean, std, w.source = np.array([m]), np.array([math.sqrt(var)]), "captured"
            else:
                return None
        if mean is None or std is None:
            return None
        # A feature constant in the reference (std 0) or without finite moments is not watched:
        # any other value would be an infinite departure, an alarm on every row. Its drift
        # measures still show a change (its values leave the reference's bins).
        watched = np.isfinite(mean) & np.isfinite(std) & (std > 0)
        mean = np.where(watched, mean, 0.0)
        std = np.where(watched, std, UNWATCHED_STD)
        w.unwatched = int((~watched).sum())
        w.detector = kernels.ChangeDetector(mean, std, expected_rows_between_false_alarms=self.change_ert_rows)
        return w.detector

    def observe_inputs(self, name: str, batch: np.ndarray) -> None:
        self.observe_batch({name: batch}, None)

    def observe_scores(self, scores: np.ndarray) -> None:
        self.observe_batch({}, scores)


def warmup_rows(configured: int, width: int) -> int:
    """The warm-up rows an input of ``width`` features buffers: ``configured``, unless that
    would pass :data:`WARMUP_MAX_VALUES` (then as many rows as fit, and never fewer than
    :data:`WARMUP_MIN_ROWS` or more than configured)."""
    return min(configured, max(WARMUP_MIN_ROWS, WARMUP_MAX_VALUES // max(width, 1)))


class BatchStats:
    """The batch observer of one version: input statistics, and confidence for classifiers or
    prediction statistics for other models (``value_output``: the output they are taken from)."""

    __slots__ = ("_state", "_output", "_confidence", "_values")

    def __init__(self, state: ModelTelemetry, classifier_output: str | None, value_output: str | None = None) -> None:
        self._state = state
        self._output = classifier_output if state.confidence is not None else None
        self._confidence = state.confidence  # the statistics this version's scores belong to
        self._values = value_output if self._output is None else None

    def observe_batch(self, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        output = self._output
        values = None
        if self._values is not None:
            v = outputs.get(self._values)
            values = (self._values, v) if v is not None else None
        self._state.observe_batch(feeds, outputs[output] if output is not None else None, self._confidence, values)
