"""Per-request telemetry on native kernels, exposed as plain Python types.

Data flow: ``Telemetry.record`` writes one C struct into a ring (no Python lock, see
``ext/ring.pyx``); a background aggregator drains the ring in bulk every
``aggregate_interval_s`` and folds the records into per-(model, status) exponential
histograms of end-to-end, queue and compute time (in **seconds**) and batch size, and
into per-second windowed counters. Input and output statistics are folded per executed
batch by ``observe_inputs`` / ``observe_outputs``. Readers get dataclasses from
``gateway.telemetry.snapshots``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time

import numpy as np

from gateway.core.types import RPC_CALLS
from gateway import kernels as _kernels
from gateway.telemetry.snapshots import (
    ConfidenceSnapshot,
    CounterSnapshot,
    FeatureShift,
    FeatureStatsSnapshot,
    HistogramPoint,
    HistogramSnapshot,
    LatencySummary,
    ModelStatsSnapshot,
    OutcomeSnapshot,
)

__all__ = [
    "ConfidenceSnapshot", "CounterSnapshot", "FeatureShift", "FeatureStatsSnapshot",
    "HistogramPoint", "HistogramSnapshot", "InputBinning", "LatencySummary",
    "ModelStatsSnapshot", "OutcomeSnapshot",
    "Telemetry", "LATENCY_KINDS",
]

logger = logging.getLogger("gateway.telemetry")

LATENCY_KINDS = ("e2e", "queue", "compute")
_NS_PER_S = 1e9


@dataclasses.dataclass(frozen=True)
class InputBinning:
    """Histogram bins of a model's input statistics: uniform over ``ranges[input]`` where
    given, else edges from the quantiles of the first ``warmup_rows`` rows."""
    bins: int = 10
    warmup_rows: int = 1024
    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


class _ModelState:
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
        # Inputs whose width is dynamic (0) get their statistics when the first batch shows it.
        self.features = {name: self.new_feature_stats(name, int(n))
                         for name, n in inputs.items() if n > 0}
        self.feature_ref: dict[str, dict | None] = {name: None for name in inputs}
        self.feature_lock = threading.Lock()
        self.confidence = (_kernels.ConfidenceStats(classifier_classes)
                           if classifier_classes else None)
        self.logits = logits
        self.labels = list(labels) if labels is not None else None
        # (status code, kind, rpc) -> histogram; rpc is -1 for kinds other than "e2e"
        self.hists: dict[tuple[int, str, int], object] = {}
        self.delta_start_ns: dict[tuple[int, str, int], int] = {}
        self.counters = _kernels.WindowedCounters(300)
        # (status code, fallback code) -> requests, for exporters' per-outcome counters.
        self.outcomes: dict[tuple[int, int], int] = {}
        self.conf_sum = 0.0
        self.conf_n = 0

    def new_feature_stats(self, name: str, width: int):
        """Statistics of one input of ``width`` features, binned as configured."""
        b = self.binning
        value_range = b.ranges.get(name)
        if value_range is not None:
            return _kernels.FeatureStats(width, value_range=value_range, n_bins=b.bins,
                                         sample_every=self.sample_every)
        return _kernels.FeatureStats(width, n_bins=b.bins, warmup_rows=b.warmup_rows,
                                     sample_every=self.sample_every)

    def hist(self, status: int, kind: str, rpc: int = -1):
        key = (status, kind, rpc)
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = _kernels.ExpHistogram(self.max_buckets)
            self.delta_start_ns[key] = self.start_ns
        return h

    def merged(self, kind: str):
        out = _kernels.ExpHistogram(self.max_buckets)
        for (_, k, _), h in self.hists.items():
            if k == kind:
                out.merge(h)
        return out


def _summary(h) -> LatencySummary:
    if h.count == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    return LatencySummary(int(h.count), h.quantile(0.5) * 1e3, h.quantile(0.9) * 1e3,
                          h.quantile(0.99) * 1e3, h.max * 1e3)


def _top1_numpy(scores: np.ndarray, logits: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(scores, dtype=np.float64)
    x = x.reshape(x.shape[0], -1) if x.ndim != 1 else x.reshape(1, -1)
    if x.shape[0] == 0 or x.shape[1] == 0:
        return np.zeros(x.shape[0], np.float32), np.full(x.shape[0], -1, np.int64)
    pred = np.argmax(x, axis=1).astype(np.int64)
    if logits:
        with np.errstate(invalid="ignore", over="ignore"):
            z = np.exp(x - x.max(axis=1, keepdims=True))
            top1 = 1.0 / z.sum(axis=1)
    else:
        top1 = x.max(axis=1)
    bad = np.isnan(x).any(axis=1)
    pred[bad] = -1
    return np.where(bad, np.nan, top1).astype(np.float32), pred


class Telemetry:
    """Native per-request telemetry for the gateway (see the module docstring)."""

    def __init__(self, *, enabled: bool = True, ring_capacity: int = 65536,
                 histogram_max_buckets: int = 160, input_stats_sample_every: int = 1,
                 aggregate_interval_s: float = 0.2, shift_window_s: float = 60.0) -> None:
        self.enabled = enabled
        self._max_buckets = histogram_max_buckets
        self._sample_every = input_stats_sample_every
        self._interval_s = aggregate_interval_s
        self._shift_window_s = shift_window_s
        self._models: list[_ModelState] = []
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_rotation_ns = time.monotonic_ns()
        self.unknown_model_records = 0
        self._ring = _kernels.RequestRing(ring_capacity) if enabled else None
        # Hot path: the bound native method itself, so a call costs one C call.
        self.record = self._ring.write if enabled else _noop  # type: ignore[method-assign]

    # -- registration -------------------------------------------------------------------
    def register_model(self, model: str, version: str, *, inputs: dict[str, int],
                       classifier_classes: int | None = None, logits: bool = False,
                       labels: list[str] | None = None,
                       input_binning: InputBinning | None = None) -> int:
        """Register (model, version); returns its small integer id (idempotent). A second
        registration with other ``input_binning`` (a reloaded config) restarts that model's
        input statistics with the new binning."""
        binning = input_binning or InputBinning()
        with self._lock:
            key = (model, version)
            if key in self._ids:
                state = self._models[self._ids[key]]
                if state.binning != binning:
                    with state.feature_lock:
                        state.binning = binning
                        state.features = {name: state.new_feature_stats(name, fs.n_features)
                                          for name, fs in state.features.items()}
                        state.feature_ref = {name: None for name in state.feature_ref}
                return self._ids[key]
            if labels is not None and classifier_classes is not None \
                    and len(labels) != classifier_classes:
                raise ValueError("labels must have classifier_classes entries")
            model_id = len(self._models)
            self._models.append(_ModelState(
                model_id, model, version, inputs, classifier_classes, logits, labels,
                self._max_buckets, self._sample_every, time.monotonic_ns(), binning))
            self._ids[key] = model_id
            return model_id

    # -- hot path -------------------------------------------------------------------------
    def record(self, model_id: int, t_received_ns: int, t_enqueued_ns: int, t_batch_ns: int,
               t_compute_start_ns: int, t_compute_end_ns: int, t_responded_ns: int,
               batch_size: int, rows: int, status_code: int, degraded: bool,
               fallback_code: int, confidence: float, payload_bytes: int, rpc: int) -> None:
        """Record one request (timestamps from ``time.monotonic_ns()``; status = gRPC code;
        ``rpc`` = the call it arrived on, an index into ``gateway.core.types.RPC_CALLS``).

        Replaced per instance by the ring's native ``write`` (or a no-op when disabled);
        never blocks: when the ring is full the record is dropped and counted.
        """
        if self._ring is not None:
            self._ring.write(model_id, t_received_ns, t_enqueued_ns, t_batch_ns,
                             t_compute_start_ns, t_compute_end_ns, t_responded_ns, batch_size,
                             rows, status_code, degraded, fallback_code, confidence,
                             payload_bytes, rpc)

    @property
    def ring_drops(self) -> int:
        """Records dropped because the ring was full."""
        return int(self._ring.dropped) if self._ring is not None else 0

    # -- per batch ------------------------------------------------------------------------
    def observe_inputs(self, model_id: int, name: str, batch: np.ndarray) -> None:
        """Fold one executed batch of input ``name`` into its feature statistics."""
        if not self.enabled:
            return
        state = self._models[model_id]
        with state.feature_lock:
            fs = state.features.get(name)
            if fs is None:
                if name not in state.feature_ref:
                    raise ValueError(f"input {name!r} was not registered for {state.model}")
                width = int(np.prod(batch.shape[1:])) if batch.ndim > 1 else 1
                if width < 1:
                    return
                fs = state.features[name] = state.new_feature_stats(name, width)
            fs.observe(batch)

    def observe_outputs(self, model_id: int, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-1 probability (float32[rows]) and predicted class (int64[rows]) of a batch;
        records confidence statistics when enabled and the model is a classifier."""
        state = self._models[model_id] if model_id < len(self._models) else None
        logits = state.logits if state is not None else False
        if not self.enabled or state is None or state.confidence is None:
            return _top1_numpy(scores, logits)
        with state.feature_lock:
            return state.confidence.observe(scores, logits)

    # -- aggregation ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background aggregator (daemon thread)."""
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gateway-telemetry",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the aggregator and fold what is left in the ring."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.flush()
            except Exception:  # keep aggregating; the error is logged once per tick
                logger.exception("telemetry aggregation failed")

    def flush(self) -> None:
        """Drain the ring and aggregate now (synchronously)."""
        if not self.enabled:
            return
        with self._lock:
            while True:
                records = self._ring.drain()
                if len(records) == 0:
                    break
                self._aggregate(records)
            now = time.monotonic_ns()
            if (now - self._last_rotation_ns) / _NS_PER_S >= self._shift_window_s:
                self.rotate_shift_window()

    def _aggregate(self, records: np.ndarray) -> None:
        recv = records["t_received_ns"]
        start = records["t_compute_start_ns"]
        e2e = (records["t_responded_ns"] - recv) / _NS_PER_S
        queue = (start - records["t_enqueued_ns"]) / _NS_PER_S
        compute = (records["t_compute_end_ns"] - start) / _NS_PER_S
        batch = records["batch_size"].astype(np.float64)
        status = records["status_code"]
        rpc = records["rpc"]
        key = ((records["model_id"].astype(np.int64) << 40) | (rpc.astype(np.int64) << 32)
               | (status.astype(np.int64) & 0xFFFFFFFF))
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(key)]))
        t_resp = records["t_responded_ns"]
        rows = records["rows"].astype(np.int64)
        errors = (status != 0).astype(np.int64)
        degraded = records["degraded"].astype(np.int64)
        conf = records["confidence"]
        fallback = records["fallback_code"]
        for s, e in zip(starts, ends):
            idx = order[s:e]
            first = idx[0]
            model_id = int(records["model_id"][first])
            if model_id >= len(self._models):
                self.unknown_model_records += int(e - s)
                continue
            state = self._models[model_id]
            code = int(status[first])
            # End-to-end latency per call kind (rpc.server.call.duration has rpc.method); the
            # stages below are the same whichever call a request came in on.
            state.hist(code, "e2e", int(rpc[first])).record_array(np.ascontiguousarray(e2e[idx]))
            # Queue, compute and batch size exist only for requests that reached an execution;
            # those rejected before it (bad input, shed, unknown version) would record zeros.
            ran = idx[start[idx] > 0]
            if len(ran):
                state.hist(code, "queue").record_array(np.ascontiguousarray(queue[ran]))
                state.hist(code, "compute").record_array(np.ascontiguousarray(compute[ran]))
                state.hist(code, "batch_size").record_array(np.ascontiguousarray(batch[ran]))
            state.counters.add_arrays(np.ascontiguousarray(t_resp[idx]),
                                      np.ascontiguousarray(rows[idx]),
                                      np.ascontiguousarray(errors[idx]),
                                      np.ascontiguousarray(degraded[idx]))
            for fb, n in enumerate(np.bincount(fallback[idx]).tolist()):
                if n:
                    state.outcomes[(code, fb)] = state.outcomes.get((code, fb), 0) + n
            c = conf[idx]
            c = c[~np.isnan(c)]
            state.conf_sum += float(c.sum(dtype=np.float64))
            state.conf_n += len(c)

    def rotate_shift_window(self) -> None:
        """Start a new recent window for feature shifts: the long-run state so far becomes
        the reference the next window's means are compared with."""
        with self._lock:
            self._last_rotation_ns = time.monotonic_ns()
            for state in self._models:
                with state.feature_lock:
                    for name, fs in state.features.items():
                        state.feature_ref[name] = fs.state()

    # -- readers ------------------------------------------------------------------------
    def snapshot(self, window_s: float = 10.0) -> list[ModelStatsSnapshot]:
        """Summary per registered model; rates and shares over the last ``window_s``."""
        if not self.enabled:
            return []
        out = []
        with self._lock:
            now = time.monotonic_ns()
            for st in self._models:
                sums, covered = st.counters.window_sums(window_s, now)
                w_req = int(sums[0])
                bs = st.merged("batch_size")
                out.append(ModelStatsSnapshot(
                    model=st.model, version=st.version,
                    requests=int(st.counters.total_requests),
                    latency=_summary(st.merged("e2e")), queue=_summary(st.merged("queue")),
                    compute=_summary(st.merged("compute")),
                    requests_per_s=w_req / covered, rows_per_s=int(sums[1]) / covered,
                    error_share=int(sums[2]) / w_req if w_req else 0.0,
                    degraded_share=int(sums[3]) / w_req if w_req else 0.0,
                    mean_batch_size=bs.sum / bs.count if bs.count else math.nan,
                    mean_confidence=st.conf_sum / st.conf_n if st.conf_n else math.nan,
                    top_shifts=self._shifts(st)))
        return out

    def _shifts(self, st: _ModelState, top: int = 5) -> list[FeatureShift]:
        shifts = []
        with st.feature_lock:
            for name, fs in st.features.items():
                ref = st.feature_ref[name]
                if ref is None:
                    continue
                cur = fs.state()
                n_ref = ref["count"].astype(np.float64)
                n_new = cur["count"] - ref["count"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean_new = (cur["count"] * cur["mean"] - n_ref * ref["mean"]) / n_new
                    std_ref = np.sqrt(ref["m2"] / (n_ref - 1))
                    score = np.abs(mean_new - ref["mean"]) / std_ref
                score = np.where((n_new > 0) & (n_ref > 1), score, np.nan)
                score = np.where(np.isnan(score) & (n_new > 0) & (n_ref > 1)
                                 & (mean_new == ref["mean"]), 0.0, score)
                nan_new = cur["nan_count"] - ref["nan_count"]
                for f in np.flatnonzero(~np.isnan(score)):
                    shifts.append(FeatureShift(name, int(f), float(mean_new[f]),
                                               float(std_ref[f]), float(score[f]),
                                               int(nan_new[f])))
        shifts.sort(key=lambda s: s.shift_score, reverse=True)
        return shifts[:top]

    def histograms(self, temporality: str = "cumulative") -> list[HistogramPoint]:
        """Raw exponential histograms per (model, version, status, kind; RPC call for "e2e").

        ``delta`` returns what was recorded since the previous delta call."""
        if temporality not in ("cumulative", "delta"):
            raise ValueError("temporality must be 'cumulative' or 'delta'")
        out = []
        with self._lock:
            now = time.monotonic_ns()
            for st in self._models:
                for key, h in sorted(st.hists.items()):
                    code, kind, rpc = key
                    if temporality == "delta":
                        d = h.delta_snapshot()
                        start = st.delta_start_ns[key]
                        st.delta_start_ns[key] = now
                    else:
                        d = h.snapshot()
                        start = st.start_ns
                    service, method = RPC_CALLS[rpc] if 0 <= rpc < len(RPC_CALLS) else ("", "")
                    out.append(HistogramPoint(st.model, st.version, code, kind, temporality,
                                              HistogramSnapshot(
                                                  d["scale"], d["offset"], d["bucket_counts"],
                                                  int(d["zero_count"]), int(d["count"]),
                                                  float(d["sum"]), float(d["min"]),
                                                  float(d["max"]), start, now),
                                              service, method))
        return out

    def counters(self) -> list[CounterSnapshot]:
        """Running totals per model."""
        with self._lock:
            return [CounterSnapshot(st.model, st.version, *map(int, st.counters.totals()))
                    for st in self._models]

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
                for name, fs in st.features.items():
                    s = fs.state()
                    out.append(FeatureStatsSnapshot(
                        st.model, st.version, name, s["count"], s["mean"], s["variance"],
                        s["min"], s["max"], s["nan_count"], s["inf_count"], s["edges"],
                        s["histogram"]))
        return out

    def confidence_stats(self) -> list[ConfidenceSnapshot]:
        """Output confidence statistics per classifier model."""
        out = []
        for st in list(self._models):
            if st.confidence is None:
                continue
            with st.feature_lock:
                s = st.confidence.state()
            out.append(ConfidenceSnapshot(
                st.model, st.version, int(s["rows"]), int(s["invalid_rows"]),
                float(s["mean_top1"]), s["class_counts"], st.labels, s["top1_hist"],
                s["margin_hist"], s["entropy_hist"], float(s["entropy_max"])))
        return out


def _noop(*args: object) -> None:
    return None
