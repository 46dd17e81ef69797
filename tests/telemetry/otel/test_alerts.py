"""Alert events as OTel log records; the endpoint rules."""
from __future__ import annotations

import json

from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.resources import Resource

from gateway.telemetry.otel.alerts import EventLogExport, logs_endpoint

EVENT = {"status": "firing", "rule": "errors", "metric": "error_share", "comparator": ">", "threshold": 0.05,
         "severity": "critical", "labels": {"team": "ml"}, "model": "m", "version": "1", "value": 0.5,
         "firing_since_unix_s": 10.0, "at_unix_s": 10.0}


def test_events_become_log_records():
    exporter = InMemoryLogRecordExporter()
    export = EventLogExport(Resource.create({"service.name": "t"}), exporter)
    export.emit(EVENT)
    export.emit(EVENT | {"status": "resolved", "value": None})
    export.stop(2.0)
    records = [r.log_record for r in exporter.get_finished_logs()]
    assert [r.event_name for r in records] == ["alert.firing", "alert.resolved"]
    first = records[0]
    assert first.severity_text == "WARNING" and json.loads(first.body) == EVENT
    attrs = dict(first.attributes)
    assert attrs["gateway.alert.rule"] == "errors" and attrs["gateway.alert.label.team"] == "ml"
    assert attrs["gateway.model.name"] == "m" and attrs["gateway.alert.value"] == 0.5
    assert "gateway.alert.value" not in dict(records[1].attributes)


def test_logs_endpoint_from_the_environment():
    assert logs_endpoint({}) is None
    assert logs_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == "http://c:4317"
    assert logs_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "a", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "b"}) == "b"
    assert logs_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "a", "OTEL_LOGS_EXPORTER": "none"}) is None
