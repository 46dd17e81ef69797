"""Native telemetry snapshots → OpenTelemetry SDK point dataclasses (``Metric`` lists).

Nothing here touches the request path: :class:`NativeMetrics` reads the aggregated kernels'
snapshots (``Telemetry.histograms/outcomes/counters/feature_stats/confidence_stats``) and
turns them into ``Metric`` objects the SDK's OTLP exporters and our Prometheus renderer both
take. Latency histograms stay exponential (or become explicit-bucket when configured);
they are never reduced to percentile gauges.
"""
from __future__ import annotations

import bisect
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from ...policy.reasons import FallbackReason
from ..readers import HistogramDeltas

RPC_DURATION = "rpc.server.call.duration"
LATENCY_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
                    0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# kind -> (metric name, unit, description); e2e is the RPC semantic-convention metric.
_HIST_METRICS = {
    "e2e": (RPC_DURATION, "s", "Server-side duration of a prediction: a Predict call or one PredictStream message "
                               "(received to answered)."),
    "queue": ("gateway.request.queue.duration", "s",
              "Time a request waited in its model's batch queue (OK answers)."),
    "compute": ("gateway.request.compute.duration", "s",
                "Model execution time of the batch that carried the request (OK answers)."),
    "batch_size": ("gateway.batch.size", "{row}",
                   "Rows in the batch each request was executed in (OK answers)."),
}


def _model_attrs(model: str, version: str) -> dict:
    return {"gateway.model.name": model or "unknown", "gateway.model.version": version or "unknown"}


def _reason(code: int) -> str:
    try:
        return FallbackReason(code).label or "none"
    except ValueError:
        return str(code)


def exp_to_explicit(scale: int, offset: int, counts, zero_count: int,
                    bounds) -> list[int]:
    """Re-bucket a positive base-2 exponential histogram into explicit ``bounds``
    (``len(bounds) + 1`` counts; each exponential bucket goes where its upper edge falls)."""
    out = [0] * (len(bounds) + 1)
    out[0 if bounds and bounds[0] >= 0 else bisect.bisect_left(bounds, 0.0)] += int(zero_count)
    step = 2.0 ** -scale
    for i, c in enumerate(np.asarray(counts).tolist()):
        if c:
            upper = 2.0 ** ((offset + i + 1) * step)  # exact at powers of two
            out[bisect.bisect_left(bounds, upper * (1 - 1e-9))] += int(c)
    return out


class NativeMetrics:
    """Builds the gateway's native metrics for one reader (one temporality).

    ``temporality`` is ``"cumulative"`` or ``"delta"``; a delta reader keeps its own delta
    storage, so any number of them can read one telemetry. ``max_features`` caps the
    features exported per input. ``dropped`` is a callable returning a dict
    ``{signal: count}`` of telemetry dropped by the export path.
    """

    def __init__(self, telemetry, *, temporality: str = "cumulative", histogram: str = "exponential",
                 max_features: int = 32, dropped=None) -> None:
        self.telemetry = telemetry
        self.delta = temporality == "delta"
        self.temporality = (AggregationTemporality.DELTA if self.delta
                            else AggregationTemporality.CUMULATIVE)
        self.explicit = histogram == "explicit"
        self.max_features = max_features
        self._dropped = dropped
        # monotonic → wall clock, fixed once so start times stay stable across exports
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.start_ns = time.time_ns()
        self._last_collect_ns = self.start_ns
        self._previous: dict[tuple, Any] = {}
        self._histogram_deltas = HistogramDeltas() if self.delta else None  # this reader's own

    # -- helpers ------------------------------------------------------------------------
    def _sum(self, name, unit, desc, values: Mapping[tuple, float], now, monotonic=True) -> Metric:
        points = []
        start = self._last_collect_ns if self.delta else self.start_ns
        for attrs, value in values.items():
            if self.delta:
                key = (name, attrs)
                prev = self._previous.get(key, 0)
                self._previous[key] = value
                # a running total that went down restarted (a version's confidence statistics
                # when a reload changes its number of classes): it counts from the restart
                value = value - prev if not (monotonic and value < prev) else value
            points.append(NumberDataPoint(dict(attrs), start, now, value))
        return Metric(name, desc, unit, Sum(points, self.temporality, monotonic))

    @staticmethod
    def _gauge(name, unit, desc, values: dict[tuple, float], now) -> Metric:
        return Metric(name, desc, unit, Gauge([NumberDataPoint(dict(a), now, now, v)
                                               for a, v in values.items()]))

    def _explicit_point(self, name, attrs: dict, counts: list[int], bounds, total: int,
                        total_sum: float, vmin: float, vmax: float, now) -> HistogramDataPoint:
        start = self.start_ns
        if self.delta:
            key = (name, tuple(sorted(attrs.items())))
            prev = self._previous.get(key)
            self._previous[key] = (list(counts), total, total_sum)
            start = self._last_collect_ns
            if prev is not None and total >= prev[1]:  # (fewer than before: restarted, count from it)
                counts = [a - b for a, b in zip(counts, prev[0])]
                total, total_sum = total - prev[1], total_sum - prev[2]
                vmin = vmax = math.nan
        return HistogramDataPoint(attrs, start, now, int(total), float(total_sum), counts,
                                  list(bounds), vmin, vmax)

    # -- the metric set ------------------------------------------------------------------
    def collect(self) -> list[Metric]:
        """Every native metric, as of now."""
        t = self.telemetry
        now = time.time_ns()
        out: list[Metric] = []
        if t is not None:
            t.flush()
            out.extend(self._histograms(now))
            out.extend(self._counters(now))
            out.extend(self._features(now))
            out.extend(self._confidence(now))
            out.append(self._sum("gateway.telemetry.ring.drops", "{record}",
                                 "Request records dropped because the telemetry ring was full.",
                                 {(): t.ring_drops}, now))
        if self._dropped is not None:
            out.append(self._sum("gateway.telemetry.dropped", "{item}",
                                 "Telemetry dropped by the export path (spans, metric points).",
                                 {(("signal", k),): v for k, v in self._dropped().items()}, now))
        self._last_collect_ns = now
        return out

    def _histograms(self, now: int) -> list[Metric]:
        by_metric: dict[str, list] = {}
        points = self.telemetry.histograms()
        if self._histogram_deltas is not None:
            points = self._histogram_deltas.delta(points)
        for p in points:
            if p.kind not in _HIST_METRICS or (p.kind != "e2e" and p.status_code != 0):
                continue
            h = p.histogram
            if h.count == 0 and self.delta:
                continue
            attrs = _model_attrs(p.model, p.version)
            if p.kind == "e2e":
                attrs = {"rpc.system": p.rpc_system, "rpc.service": p.rpc_service, "rpc.method": p.rpc_method,
                         "rpc.grpc.status_code": int(p.status_code), **attrs}
            start = self._wall_offset_ns + h.start_time_ns
            t_ns = self._wall_offset_ns + h.time_ns
            vmin = h.min if h.count else math.nan
            vmax = h.max if h.count else math.nan
            point: HistogramDataPoint | ExponentialHistogramDataPoint
            if self.explicit:
                bounds = BATCH_BOUNDS if p.kind == "batch_size" else LATENCY_BOUNDS_S
                counts = exp_to_explicit(h.scale, h.offset, h.bucket_counts, h.zero_count, bounds)
                point = HistogramDataPoint(attrs, start, t_ns, h.count, h.sum, counts, list(bounds),
                                           vmin, vmax)
            else:
                point = ExponentialHistogramDataPoint(
                    attrs, start, t_ns, h.count, h.sum, h.scale, h.zero_count,
                    Buckets(int(h.offset), [int(c) for c in np.asarray(h.bucket_counts).tolist()]),
                    Buckets(0, []), 0, vmin, vmax)
            by_metric.setdefault(p.kind, []).append(point)
        out = []
        for kind, points in by_metric.items():
            name, unit, desc = _HIST_METRICS[kind]
            data = (Histogram(points, self.temporality) if self.explicit
                    else ExponentialHistogram(points, self.temporality))
            out.append(Metric(name, desc, unit, data))
        return out

    def _counters(self, now: int) -> list[Metric]:
        requests: dict[tuple, int] = {}
        errors: dict[tuple, int] = {}
        degraded: dict[tuple, int] = {}
        for o in self.telemetry.outcomes():
            m = tuple(_model_attrs(o.model, o.version).items())
            code = ("rpc.grpc.status_code", int(o.status_code))
            reason = ("gateway.fallback.reason", _reason(o.fallback_code))
            requests[m + (code, reason)] = o.requests
            if o.status_code != 0:
                errors[m + (code,)] = errors.get(m + (code,), 0) + o.requests
            if o.fallback_code != 0 and o.status_code == 0:
                degraded[m + (reason,)] = degraded.get(m + (reason,), 0) + o.requests
        rows = {tuple(_model_attrs(c.model, c.version).items()): c.rows
                for c in self.telemetry.counters() if c.requests}
        return [
            self._sum("gateway.requests", "{request}", "Requests answered, by outcome.", requests, now),
            self._sum("gateway.rows", "{row}", "Input rows in requests answered.", rows, now),
            self._sum("gateway.errors", "{request}", "Requests answered with a non-OK status.",
                      errors, now),
            self._sum("gateway.degraded", "{response}",
                      "OK answers served by a fallback, by reason.", degraded, now),
        ]

    def _features(self, now: int) -> list[Metric]:
        values: dict[str, dict[tuple, float]] = {k: {} for k in ("mean", "std", "min", "max", "nan_rate")}
        for f in self.telemetry.feature_stats():
            base = tuple(_model_attrs(f.model, f.version).items()) + (("gateway.input.name", f.input),)
            n = min(len(f.count), self.max_features)
            for i in range(n):
                count = int(f.count[i])
                seen = count + int(f.nan_count[i]) + int(f.inf_count[i])
                if seen == 0:
                    continue
                a = base + (("gateway.input.feature", i),)
                values["nan_rate"][a] = int(f.nan_count[i]) / seen
                if count:
                    values["mean"][a] = float(f.mean[i])
                    var = float(f.variance[i])
                    if not math.isnan(var):
                        values["std"][a] = math.sqrt(max(var, 0.0))
                    values["min"][a] = float(f.min[i])
                    values["max"][a] = float(f.max[i])
        return [self._gauge(f"gateway.input.feature.{k}", "1",
                            f"Per-feature input {k.replace('_', ' ')} since start.", v, now)
                for k, v in values.items() if v]

    def _confidence(self, now: int) -> list[Metric]:
        points, classes = [], {}
        for c in self.telemetry.confidence_stats():
            attrs = _model_attrs(c.model, c.version)
            hist = np.asarray(c.top1_hist).tolist()
            n = len(hist)
            bounds = [i / n for i in range(1, n)]
            points.append(self._explicit_point(
                "gateway.output.confidence", attrs, [int(x) for x in hist], bounds, int(sum(hist)),
                float(c.mean_top1) * c.rows if c.rows else 0.0, math.nan, math.nan, now))
            m = tuple(attrs.items())
            for k, count in enumerate(np.asarray(c.class_counts).tolist()):
                if count:
                    label = c.labels[k] if c.labels and k < len(c.labels) else str(k)
                    classes[m + (("gateway.output.class", label),)] = int(count)
        out = []
        if points:
            out.append(Metric("gateway.output.confidence", "Top-1 probability of classifier outputs.",
                              "1", Histogram(points, self.temporality)))
        if classes:
            out.append(self._sum("gateway.output.predicted_class", "{row}",
                                 "Rows predicted per class.", classes, now))
        return out
