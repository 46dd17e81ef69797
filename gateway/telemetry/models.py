"""Per-model-version telemetry state: the histograms, counters, input and confidence
statistics the aggregator and the batch observer fold into, and what readers read."""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping

import numpy as np

from .. import kernels
from ..config.profile import ReferenceProfile
from ..api.stats import MAX_WINDOW_S

LATENCY_KINDS = ("e2e", "queue", "compute")


@dataclasses.dataclass(frozen=True)
class InputBinning:
    """Histogram bins of a model's input statistics: the reference profile's edges where it
    has the input (``edges[input]``, [features, bins + 1]), else uniform over
    ``ranges[input]`` where given, else edges from the quantiles of the first ``warmup_rows``
    rows (the reference is then captured, not given). ``profile`` names the profile the edges
    came from (two binnings compare equal when all else and it are equal)."""
    bins: int = 10
    warmup_rows: int = 1024
    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    edges: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, compare=False)
    profile: str = ""


class ModelTelemetry:
    """One registered (model, version). Histograms, counters and outcomes are written by the
    aggregator thread under the hub's lock; features and confidence by executor threads under
    ``feature_lock``."""

    def __init__(self, model_id: int, model: str, version: str, inputs: dict[str, int],
                 classifier_classes: int | None, logits: bool, labels: list[str] | None,
                 max_buckets: int, sample_every: int, now_ns: int, binning: InputBinning) -> None:
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
        # The version's reference profile (None: captured from its first rows: see InputBinning)
        self.reference: ReferenceProfile | None = None

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
        return kernels.FeatureStats(width, n_bins=b.bins, warmup_rows=b.warmup_rows,
                                    sample_every=self.sample_every)

    def rebin(self, binning: InputBinning) -> None:
        """A reloaded config with other binning: restart the input statistics with it."""
        with self.feature_lock:
            self.binning = binning
            self.features = {name: self.new_feature_stats(name, fs.n_features)
                             for name, fs in self.features.items()}

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
                      confidence: kernels.ConfidenceStats | None = None) -> None:
        """One executed batch: its inputs, and the classifier's scores (None: not a classifier),
        under one acquisition of the lock. With ``confidence``, the scores count only while
        those are still the version's confidence statistics (a version replaced by a reload
        finishing its queue does not feed the statistics its successor restarted)."""
        with self.feature_lock:
            for name, batch in feeds.items():
                fs = self._stats_for(name, batch)
                if fs is not None:
                    fs.observe(batch)
            if scores is not None and self.confidence is not None and \
                    (confidence is None or confidence is self.confidence):
                self.confidence.observe(scores, self.logits)

    def observe_inputs(self, name: str, batch: np.ndarray) -> None:
        self.observe_batch({name: batch}, None)

    def observe_scores(self, scores: np.ndarray) -> None:
        self.observe_batch({}, scores)


class BatchStats:
    """The batch observer of one version: input statistics, and confidence for classifiers."""

    __slots__ = ("_state", "_output", "_confidence")

    def __init__(self, state: ModelTelemetry, classifier_output: str | None) -> None:
        self._state = state
        self._output = classifier_output if state.confidence is not None else None
        self._confidence = state.confidence  # the statistics this version's scores belong to

    def observe_batch(self, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        output = self._output
        self._state.observe_batch(feeds, outputs[output] if output is not None else None, self._confidence)
