"""One metrics pipeline, two exits: OTLP push on a background thread, Prometheus text on scrape.

SDK instruments (observable gauges/counters, :mod:`.system`) and native metrics
(:mod:`.points`) are merged into one ``MetricsData`` per export cycle, so a collector
sees them in the same request with the same resource.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import cast

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .points import NativeMetrics

log = logging.getLogger("gateway.telemetry")

SCOPE_NAME = "gateway.telemetry"


def _preferred(temporality: str) -> dict:
    d, c = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
    if temporality != "delta":
        return {k: c for k in (Counter, UpDownCounter, Histogram, ObservableCounter,
                               ObservableUpDownCounter, ObservableGauge)}
    return {Counter: d, Histogram: d, ObservableCounter: d, UpDownCounter: c,
            ObservableUpDownCounter: c, ObservableGauge: c}


def count_points(data: MetricsData) -> int:
    return sum(len(m.data.data_points) for rm in data.resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics)


class _Exit:
    """One reader + native builder pair (one temporality)."""

    def __init__(self, provider_readers: list, native: NativeMetrics, temporality: str, resource):
        self.reader = InMemoryMetricReader(preferred_temporality=_preferred(temporality))
        provider_readers.append(self.reader)
        self.native = native
        self.resource = resource
        self.lock = threading.Lock()

    def collect(self) -> MetricsData:
        from gateway._version import __version__

        with self.lock:
            sdk = self.reader.get_metrics_data()
            native = self.native.collect()
        scopes: list[ScopeMetrics] = []
        if sdk is not None:
            for rm in sdk.resource_metrics:
                scopes.extend(rm.scope_metrics)
        scopes.append(ScopeMetrics(InstrumentationScope(SCOPE_NAME, __version__), native, ""))
        return MetricsData([ResourceMetrics(self.resource, scopes, "")])


class MetricsPipeline:
    """Owns the meter provider, the OTLP export loop (when ``exporter`` is given) and the
    cumulative view that ``/metrics`` renders."""

    def __init__(self, telemetry, resource, *, exporter=None, interval_s: float = 60.0,
                 timeout_s: float = 10.0, temporality: str = "cumulative",
                 histogram: str = "exponential", max_features: int = 32, dropped=None,
                 register=None) -> None:
        self.exporter = exporter
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.dropped = dropped if dropped is not None else {}
        self.exports_ok = 0
        self.exports_failed = 0
        self._healthy = True
        readers: list = []
        self.scrape = _Exit(readers, NativeMetrics(telemetry, temporality="cumulative",
                                                   histogram="explicit", max_features=max_features,
                                                   dropped=self._dropped_view),
                            "cumulative", resource)
        self.push = None
        if exporter is not None:
            self.push = _Exit(readers, NativeMetrics(telemetry, temporality=temporality,
                                                     histogram=histogram, max_features=max_features,
                                                     dropped=self._dropped_view),
                              temporality, resource)
        self.provider = MeterProvider(resource=resource, metric_readers=readers)
        self.meter = self.provider.get_meter(SCOPE_NAME)
        if register is not None:
            register(self.meter)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _dropped_view(self) -> dict:
        return dict(self.dropped)

    # -- OTLP push ----------------------------------------------------------------------
    def start(self) -> None:
        if self.push is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gateway-otlp-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            self.export_once()
            if time.monotonic() > next_at:  # a slow collector: skip cycles rather than pile up
                next_at = time.monotonic() + self.interval_s

    def export_once(self, timeout_s: float | None = None) -> bool:
        """Collect and push one cycle; failures are counted, never raised."""
        try:
            data = cast("_Exit", self.push).collect()  # (called only with a push exit)
        except Exception:
            log.exception("collecting metrics failed")
            return False
        timeout_ms = 1e3 * (self.timeout_s if timeout_s is None else timeout_s)
        try:
            ok = self.exporter.export(data, timeout_millis=timeout_ms) is MetricExportResult.SUCCESS
        except Exception as exc:
            log.debug("metric export raised %r", exc)
            ok = False
        if ok:
            self.exports_ok += 1
            if not self._healthy:
                log.info("metrics export recovered", extra={"event": "telemetry.export_recovered"})
        else:
            self.exports_failed += 1
            self.dropped["metrics"] = self.dropped.get("metrics", 0) + count_points(data)
            if self._healthy:
                log.warning("metrics export failed; counting dropped points until the collector is back",
                            extra={"event": "telemetry.export_failed"})
        self._healthy = ok
        return ok

    def stop(self, timeout_s: float) -> None:
        """Stop the loop and push a last cycle, bounded by ``timeout_s`` in all."""
        deadline = time.monotonic() + timeout_s
        thread, self._thread = self._thread, None
        self._stop.set()
        if self.push is not None:
            flusher = threading.Thread(target=self._final_flush, args=(thread, deadline),
                                       name="gateway-otlp-metrics-flush", daemon=True)
            flusher.start()
            flusher.join(max(0.0, deadline - time.monotonic()))
            try:
                self.exporter.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1e3)
            except Exception:
                pass
        try:
            self.provider.shutdown(timeout_millis=max(1.0, (deadline - time.monotonic()) * 1e3))
        except Exception:
            pass

    def _final_flush(self, thread, deadline: float) -> None:
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return
        remaining = deadline - time.monotonic()
        if remaining > 0.05:
            self.export_once(timeout_s=remaining)
