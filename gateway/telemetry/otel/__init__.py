"""OpenTelemetry export of the gateway's telemetry: OTLP push (metrics and traces) to a
collector, and Prometheus text on the admin port.

:class:`TelemetryExport` is what the server starts and stops. Configuration is the
standard ``OTEL_*`` environment only (:mod:`.config`); with no OTLP endpoint nothing tries
to export and ``/metrics`` on the admin port is the way out. Module map: ``config``
(environment), ``resource``, ``points`` (native snapshots → SDK point dataclasses),
``system`` (SDK observable instruments), ``metrics`` (export loop + scrape view),
``prometheus`` (text format), ``traces`` (spans off the request path).
"""
from __future__ import annotations

import logging

from .config import ExportConfig
from .resource import make_resource

__all__ = ["ExportConfig", "TelemetryExport", "make_resource", "otlp_exporters"]

log = logging.getLogger("gateway.telemetry")


def _otlp_exporters(cfg: ExportConfig):
    metric_exporter = span_exporter = None
    if cfg.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        # (the same names, bound to the other protocol's classes)
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter)
    # Their per-attempt warnings would log every cycle while a collector is down; we log
    # state changes (export failed / recovered) and count what was dropped instead.
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
    # The SDK reads OTEL_EXPORTER_OTLP_TIMEOUT as seconds; the specification says
    # milliseconds, so we pass the parsed value explicitly.
    if cfg.metrics_endpoint:
        metric_exporter = OTLPMetricExporter(timeout=cfg.timeout_s)
    if cfg.traces_endpoint:
        span_exporter = OTLPSpanExporter(timeout=cfg.timeout_s)
    return metric_exporter, span_exporter


def otlp_exporters(cfg: ExportConfig):
    """The OTLP metric and span exporters ``cfg`` asks for (None for a signal without an endpoint)."""
    return _otlp_exporters(cfg) if cfg.enabled else (None, None)


class TelemetryExport:
    """The metrics pipeline (always, for ``/metrics``), OTLP metric push when ``metric_exporter``
    is given, and the lifecycle of the span pipeline ``spans`` (built by the composition root,
    since the data plane it observes is built after it). ``dropped`` counts what the export
    path dropped, per signal, shared with ``spans``; ``sampler`` describes the head sampler in
    force for the start line. ``quality`` (a callable returning the prediction store's
    :class:`~gateway.api.stats.QualitySnapshot` per version) and ``feedback_unknown`` export online quality;
    ``drift`` (the drift monitor's per-version results) exports drift; ``alerts`` (the firing
    alerts) the ``gateway.alerts.active`` gauge."""

    def __init__(self, telemetry, *, config: ExportConfig, resource, metric_exporter=None, spans=None,
                 dataplane=None, max_features: int = 32, dropped: dict[str, int] | None = None,
                 sampler: str | None = None, quality=None, feedback_unknown=None, drift=None,
                 alerts=None, rollbacks=None) -> None:
        from .metrics import MetricsPipeline
        from .system import (register_gateway_instruments, register_gpu_instruments,
                             register_drift_instruments, register_process_instruments,
                             register_quality_instruments, register_rollback_instruments)

        self.config = cfg = config
        self.resource = resource
        self.dropped = dropped if dropped is not None else {"spans": 0, "metrics": 0}
        self.spans = spans
        self._sampler = sampler if spans is not None else None

        def register(meter):
            if dataplane is not None:
                register_gateway_instruments(meter, dataplane)
            if quality is not None:
                register_quality_instruments(meter, quality, feedback_unknown or (lambda: 0))
            if drift is not None:
                register_drift_instruments(meter, drift, max_features)
            if alerts is not None:
                from .alerts import register_alert_instruments

                register_alert_instruments(meter, alerts)
            if rollbacks is not None:
                register_rollback_instruments(meter, rollbacks)
            register_process_instruments(meter)
            register_gpu_instruments(meter)

        self.metrics = MetricsPipeline(
            telemetry, resource, exporter=metric_exporter, interval_s=cfg.metric_interval_s,
            timeout_s=cfg.timeout_s, temporality=cfg.temporality, histogram=cfg.histogram,
            max_features=max_features, dropped=self.dropped, register=register)

    def prometheus_text(self) -> str:
        from .prometheus import render

        return render(self.metrics.scrape.collect())

    @property
    def prometheus_content_type(self) -> str:
        from .prometheus import CONTENT_TYPE

        return CONTENT_TYPE

    def start(self) -> None:
        self.metrics.start()
        if self.spans is not None:
            self.spans.start()
        cfg = self.config
        if cfg.enabled:
            log.info("OTLP export: %s", cfg.describe(self._sampler), extra={"event": "telemetry.export_configured"})

    def stop(self) -> None:
        """Bounded: both signals flush in parallel within ``min(OTEL_EXPORTER_OTLP_TIMEOUT, 5 s)``."""
        import threading

        timeout = self.config.shutdown_timeout_s
        stoppers = [threading.Thread(target=self.metrics.stop, args=(timeout,), daemon=True)]
        if self.spans is not None:
            stoppers.append(threading.Thread(target=self.spans.stop, args=(timeout,), daemon=True))
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout + 0.5)
