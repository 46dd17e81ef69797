"""The telemetry hub: registration of model versions, the recorder, the aggregator and the
readers, wired together. ``gateway.app`` builds one when ``telemetry.enabled`` (with it off
there is none, and nothing is recorded)."""
from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence

from ..api import CallTable
from ..api.stats import MAX_WINDOW_S
from ..config.profile import ReferenceProfile
from .aggregator import Aggregator, drain_into
from .models import BatchStats, InputBinning, ModelTelemetry
from .readers import ShiftSource, StatsHistory, WindowPart, histogram_points, summarize_parts, window_part
from .recorder import Recorder
from .snapshots import (
    ConfidenceSnapshot,
    CounterSnapshot,
    FeatureStatsSnapshot,
    HistogramPoint,
    ModelStatsSnapshot,
    OutcomeSnapshot,
)

# Called on the aggregator thread after each flush with the registered versions and the time.
Periodic = Callable[[Sequence[ModelTelemetry], int], None]


class Telemetry:
    """Native per-request telemetry (see :mod:`gateway.telemetry`)."""

    def __init__(self, *, ring_capacity: int = 65536, histogram_max_buckets: int = 160,
                 input_stats_sample_every: int = 1, aggregate_interval_s: float = 0.2,
                 change_ert_rows: float = 0.0,
                 calls: CallTable | None = None, periodic: Sequence[Periodic] = ()) -> None:
        self._max_buckets = histogram_max_buckets
        self._sample_every = input_stats_sample_every
        self._change_ert_rows = change_ert_rows  # sequential change detection per input (0: off)
        self._calls = calls
        self._periodic = tuple(periodic)
        self._models: list[ModelTelemetry] = []
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.RLock()
        self.unknown_model_records = 0
        self.recorder = Recorder(ring_capacity)
        self._aggregator = Aggregator(self.flush, aggregate_interval_s)
        self._history = StatsHistory(max_window_s=MAX_WINDOW_S)  # the GetStats reader's own
        # id 0: requests that named no loaded version. Exported (model "unknown") but not a
        # model of snapshot(): there is no such model to ask GetStats about.
        self.register_model("", "", inputs={})

    # -- registration (gateway.core.observers.ModelObservers) ------------------------------
    def register_model(self, model: str, version: str, *, inputs: dict[str, int],
                       classifier_classes: int | None = None, logits: bool = False,
                       labels: list[str] | None = None, input_binning: InputBinning | None = None) -> int:
        """Register (model, version); returns its small integer id (idempotent). A second
        registration (a reloaded config) with other ``input_binning`` restarts that version's
        input statistics with the new binning; with other classifier settings, its rows from
        then on are observed with those (:meth:`ModelTelemetry.reclassify`)."""
        binning = input_binning or InputBinning()
        if labels is not None and classifier_classes is not None and len(labels) != classifier_classes:
            raise ValueError("labels must have classifier_classes entries")
        with self._lock:
            key = (model, version)
            if key in self._ids:
                state = self._models[self._ids[key]]
                if state.binning != binning:
                    state.rebin(binning)
                if (state.classes, state.logits, state.labels) != \
                        (classifier_classes, logits, list(labels) if labels is not None else None):
                    state.reclassify(classifier_classes, logits, labels)
                return self._ids[key]
            model_id = len(self._models)
            self._models.append(ModelTelemetry(
                model_id, model, version, inputs, classifier_classes, logits, labels,
                self._max_buckets, self._sample_every, time.monotonic_ns(), binning, self._change_ert_rows))
            self._ids[key] = model_id
            return model_id

    def register(self, name: str, version: str, *, inputs: dict[str, int], classes: int | None,
                 logits: bool, labels: list[str] | None, input_stats, profile: ReferenceProfile | None = None,
                 outlier_thresholds: tuple[int, float | None] | None = None) -> int:
        """:meth:`register_model` from a model's ``input_stats`` config and reference profile."""
        edges = {n: fp.edges for n, fp in profile.inputs.items()} if profile is not None else {}
        ident = ""  # the edges' digest: other edges restart the statistics, the same ones do not
        if profile is not None:
            digest = hashlib.sha1(usedforsecurity=False)
            for n in sorted(edges):
                digest.update(n.encode() + b"\0" + edges[n].tobytes())
            ident = digest.hexdigest()
        model_id = self.register_model(name, version, inputs=inputs, classifier_classes=classes, logits=logits,
                                       labels=labels, input_binning=InputBinning(
                                           input_stats.bins, input_stats.warmup_rows, dict(input_stats.ranges),
                                           edges, ident))
        state = self._models[model_id]
        state.reference = profile
        if outlier_thresholds is not None:
            state.outlier_max_out_of_range, state.outlier_max_robust_z = outlier_thresholds
        return model_id

    def batch_observer(self, telemetry_id: int, classifier_output: str | None, logits: bool,
                       value_output: str | None = None) -> BatchStats:
        return BatchStats(self._models[telemetry_id], classifier_output, value_output)

    def model(self, telemetry_id: int) -> ModelTelemetry:
        return self._models[telemetry_id]

    def models(self) -> list[ModelTelemetry]:
        return list(self._models)

    @property
    def ring_drops(self) -> int:
        """Records dropped because the ring was full."""
        return self.recorder.dropped

    # -- aggregation --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background aggregator (daemon thread)."""
        self._aggregator.start()

    def stop(self) -> None:
        """Stop the aggregator and fold what is left in the ring."""
        self._aggregator.stop()
        self.flush()

    def flush(self) -> None:
        """Drain the ring and aggregate now (synchronously)."""
        with self._lock:
            self.unknown_model_records += drain_into(self.recorder, self._models)
            models = list(self._models)
            now = time.monotonic_ns()
            self._history.tick([st for st in models if st.model], now)
        for hook in self._periodic:
            hook(models, now)

    # -- readers ------------------------------------------------------------------------------
    def snapshot(self, window_s: float = 10.0, shifts: ShiftSource | None = None,
                 others: Sequence[WindowPart] = ()) -> list[ModelStatsSnapshot]:
        """Summary per registered version over the last ``window_s`` (whole seconds, a fraction
        rounds up; at most ``MAX_WINDOW_S``): rates and shares from the per-second counters,
        percentiles and means against the history's snapshot from the window's start; running totals
        (``totals``) up to date with every answer given so far.

        ``others``: other processes' parts of the same server (``gateway serve --workers``),
        merged in (:func:`~gateway.telemetry.readers.summarize_parts`); a version only they
        serve is listed after this process's. ``top_shifts`` are this process's."""
        with self._lock:
            parts = self.window_parts(window_s)
            groups: dict[tuple[str, str], list[WindowPart]] = {}
            for part in [*parts, *others]:
                groups.setdefault((part.model, part.version), []).append(part)
            out = []
            for key, group in groups.items():
                model_id = self._ids.get(key)
                top = shifts(self._models[model_id]) if shifts is not None and model_id is not None else []
                out.append(summarize_parts(group, self._max_buckets, top))
            return out

    def window_parts(self, window_s: float = 10.0) -> list[WindowPart]:
        """Each registered version's window in mergeable form (what :meth:`snapshot` summarizes)."""
        if not 0 < window_s <= MAX_WINDOW_S:  # (also NaN)
            raise ValueError(f"window_s must be in (0, {MAX_WINDOW_S}], got {window_s}")
        with self._lock:
            # the records written so far count too (a client that was answered sees its request
            # in the totals); the periodic hooks and the history wait for the aggregator's tick
            self.unknown_model_records += drain_into(self.recorder, self._models)
            now = time.monotonic_ns()
            start = now - math.ceil(window_s) * 1_000_000_000
            return [window_part(st, window_s, now, self._history.at(st.model_id, start))
                    for st in self._models if st.model]

    def histograms(self) -> list[HistogramPoint]:
        """Cumulative exponential histograms per (model, version, status, kind; call for "e2e").
        A reader that wants deltas keeps a :class:`~gateway.telemetry.readers.HistogramDeltas`."""
        with self._lock:
            return histogram_points(self._models, self._calls, time.monotonic_ns())

    def counters(self) -> list[CounterSnapshot]:
        """Running totals per version."""
        with self._lock:
            return [CounterSnapshot(st.model, st.version, *map(int, st.counters.totals())) for st in self._models]

    def outcomes(self) -> list[OutcomeSnapshot]:
        """Running request totals per (model, version, status code, fallback code)."""
        with self._lock:
            return [OutcomeSnapshot(st.model, st.version, code, fb, n)
                    for st in self._models for (code, fb), n in sorted(st.outcomes.items())]

    def feature_stats(self) -> list[FeatureStatsSnapshot]:
        """Long-run input statistics per (model, input)."""
        out = []
        for st in list(self._models):
            with st.feature_lock:
                st.adopt_frozen()
                for name, fs in st.features.items():
                    s = fs.state()
                    out.append(FeatureStatsSnapshot(
                        st.model, st.version, name, s["count"], s["mean"], s["variance"], s["min"], s["max"],
                        s["nan_count"], s["inf_count"], s["edges"], s["histogram"]))
        return out

    def confidence_stats(self) -> list[ConfidenceSnapshot]:
        """Output confidence statistics per classifier version."""
        out = []
        for st in list(self._models):
            with st.feature_lock:  # (a reload may replace the statistics and labels: read both at once)
                if st.confidence is None:
                    continue
                s = st.confidence.state()
                labels = st.labels
            out.append(ConfidenceSnapshot(
                st.model, st.version, int(s["rows"]), int(s["invalid_rows"]), float(s["mean_top1"]),
                s["class_counts"], labels, s["top1_hist"], s["margin_hist"], s["entropy_hist"],
                float(s["entropy_max"])))
        return out


__all__ = ["Telemetry"]
