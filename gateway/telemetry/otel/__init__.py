"""OpenTelemetry export of the gateway's telemetry: OTLP push (metrics and traces) to a
collector, and Prometheus text on the admin port.

:class:`TelemetryExport` is what the server starts and stops. Configuration is the
standard ``OTEL_*`` environment only (:mod:`.config`); with no OTLP endpoint nothing tries
to export and ``/metrics`` on the admin port is the way out. Module map: ``config``
(environment), ``resource``, ``points`` (native snapshots → SDK point dataclasses),
``system`` (SDK observable instruments), ``metrics`` (export loop + scrape view),
``prometheus`` (text format), ``traces`` (spans off the request path), ``admin`` (HTTP).
"""
from __future__ import annotations

import logging

from ..tracecontext import HeadSampler
from .config import ExportConfig
from .resource import make_resource

__all__ = ["ExportConfig", "TelemetryExport", "make_resource"]

log = logging.getLogger("gateway.telemetry")


def _otlp_exporters(cfg: ExportConfig):
    metric_exporter = span_exporter = None
    if cfg.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
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


class TelemetryExport:
    """Metrics pipeline (always, for ``/metrics``), OTLP metric push and span export (when an
    endpoint is configured), the head sampler the servicer consults, and the admin server.

    ``metric_exporter`` / ``span_exporter`` override the OTLP ones (tests pass in-memory ones).
    """

    def __init__(self, telemetry, *, dataplane=None, registry=None, config: ExportConfig | None = None,
                 metric_exporter=None, span_exporter=None, max_features: int = 32,
                 admin_host: str = "127.0.0.1", admin_port: int = 0, ready=None,
                 span_queue: int = 2048) -> None:
        from .metrics import MetricsPipeline
        from .system import (register_gateway_instruments, register_gpu_instruments,
                             register_process_instruments)

        self.config = cfg = config or ExportConfig.from_env()
        self.resource = make_resource()
        if metric_exporter is None and span_exporter is None and cfg.enabled:
            metric_exporter, span_exporter = _otlp_exporters(cfg)
        self.dropped: dict[str, int] = {"spans": 0, "metrics": 0}

        def register(meter):
            if dataplane is not None and registry is not None:
                register_gateway_instruments(meter, dataplane, registry)
            register_process_instruments(meter)
            register_gpu_instruments(meter)

        self.metrics = MetricsPipeline(
            telemetry, self.resource, exporter=metric_exporter, interval_s=cfg.metric_interval_s,
            timeout_s=cfg.timeout_s, temporality=cfg.temporality, histogram=cfg.histogram,
            max_features=max_features, dropped=self.dropped, register=register)
        self.spans = None
        self.sampler: HeadSampler | None = None
        if span_exporter is not None:
            try:
                sampler = HeadSampler(cfg.sampler, cfg.sampler_ratio)
            except ValueError as exc:
                log.warning("%s; using parentbased_traceidratio", exc)
                sampler = HeadSampler("parentbased_traceidratio", cfg.sampler_ratio)
            if not sampler.never:
                from .traces import SpanPipeline

                self.sampler = sampler
                self.spans = SpanPipeline(span_exporter, self.resource, max_queue=span_queue,
                                          dropped=self.dropped)
            else:
                span_exporter.shutdown()
        self.admin = None
        if admin_port:
            from .admin import AdminServer

            try:
                self.admin = AdminServer(admin_host, admin_port, metrics_text=self.prometheus_text,
                                         ready=ready or (lambda: (True, "")))
            except OSError as exc:  # serving matters more than the admin port
                log.error("admin HTTP port %s:%d unavailable (%s): no /metrics, /healthz, /readyz",
                          admin_host, admin_port, exc, extra={"event": "admin.bind_failed"})

    def prometheus_text(self) -> str:
        from .prometheus import render

        return render(self.metrics.scrape.collect())

    def start(self) -> None:
        self.metrics.start()
        if self.spans is not None:
            self.spans.start()
        if self.admin is not None:
            self.admin.start()
        cfg = self.config
        if cfg.enabled:
            log.info("OTLP export: metrics %s every %.1f s (%s, %s histograms), traces %s (sampler %s %.3g)",
                     cfg.metrics_endpoint or "off", cfg.metric_interval_s, cfg.temporality, cfg.histogram,
                     cfg.traces_endpoint or "off", cfg.sampler, cfg.sampler_ratio,
                     extra={"event": "telemetry.export_configured"})

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
        if self.admin is not None:
            self.admin.stop()
