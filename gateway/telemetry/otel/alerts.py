"""Alerts in OTel: the ``gateway.alerts.active`` gauge (:func:`register_alert_instruments`)
and alert events as OTel log records (:class:`EventLogExport`): a LoggerProvider of its own (not the process's logging)
with a batch processor to the OTLP log exporter, only where an endpoint is configured
(``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``; none with
``OTEL_LOGS_EXPORTER=none``). The batch processor's queue is bounded (2048 records, the
SDK's default; beyond it records are dropped), so a dead collector costs nothing more. The
records' arrival at a real collector (rotel), attributes included, is checked by
tests/e2e/test_otlp_collector.py."""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation

log = logging.getLogger("gateway.telemetry")


def register_alert_instruments(meter: Meter, active: Callable[[], Sequence]) -> None:
    """``gateway.alerts.active``: 1 per firing alert (``active()``: the alert engine's
    :class:`~gateway.monitoring.alerts.ActiveAlert` list), by rule, severity, model and version."""
    def observe(_: CallbackOptions):
        return [Observation(1, {"gateway.alert.rule": a.rule, "gateway.alert.severity": a.severity,
                                "gateway.model.name": a.model, "gateway.model.version": a.version})
                for a in active()]

    meter.create_observable_gauge("gateway.alerts.active", [observe], unit="1",
                                  description="Alerts firing now (1 each), by rule, severity, model and version.")


def logs_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    if env.get("OTEL_LOGS_EXPORTER", "otlp").strip().lower() == "none":
        return None
    return env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


class EventLogExport:
    """``emit(event)``: one log record per alert event (body: the event's one-line summary;
    attributes: its fields, ``gateway.alert.*``; event name ``alert.firing`` / ``alert.resolved``)."""

    def __init__(self, resource, exporter, *, protocol: str = "grpc") -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        self.provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_queue_size=2048))
        self._logger = self.provider.get_logger("gateway.alerts")

    @classmethod
    def from_env(cls, resource, protocol: str = "grpc") -> EventLogExport | None:
        """None where no logs endpoint is configured or the exporter cannot be made."""
        if logs_endpoint() is None:
            return None
        try:
            if protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            else:
                from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (  # type: ignore[assignment]
                    OTLPLogExporter)
            exporter = OTLPLogExporter()
        except Exception as exc:  # (a missing exporter package) telemetry never stops serving
            log.warning("alert events not exported as OTel logs: %s", exc, extra={"event": "telemetry.logs_off"})
            return None
        return cls(resource, exporter, protocol=protocol)

    def emit(self, event: dict) -> None:
        from opentelemetry._logs import SeverityNumber

        firing = event.get("status") == "firing"
        attributes: dict[str, str | bool | int | float] = {}
        for key, value in event.items():
            if value is None:
                continue
            if isinstance(value, dict):
                for k, v in value.items():
                    attributes[f"gateway.alert.label.{k}"] = str(v)
            elif isinstance(value, (str, bool, int, float)):
                attributes[f"gateway.alert.{key}"] = value
        attributes["gateway.model.name"] = event.get("model", "")
        attributes["gateway.model.version"] = event.get("version", "")
        self._logger.emit(timestamp=int(time.time() * 1e9),
                          severity_number=SeverityNumber.WARN if firing else SeverityNumber.INFO,
                          severity_text="WARNING" if firing else "INFO", body=json.dumps(event, default=str),
                          attributes=attributes, event_name=f"alert.{event.get('status')}")

    def stop(self, timeout_s: float = 5.0) -> None:
        try:
            self.provider.force_flush(int(timeout_s * 1000))
        finally:
            self.provider.shutdown()
