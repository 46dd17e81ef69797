"""Logs of a running gateway: the JSON access log with trace ids, and the notable events (one JSON
line each, with an ``event`` name)."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.logs import JsonFormatter, TraceIdsFilter
from tests.conftest import RunningGateway
from tests.e2e.traced import PARENT, TRACE, predict


@pytest.mark.parametrize("log_inputs", [False, True])
def test_access_log_json_with_trace_ids(monkeypatch, make_gateway, demo_models, caplog, log_inputs):
    spans = InMemorySpanExporter()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    gw = make_gateway(model_repository=demo_models, access_log=True, access_log_sample_ratio=1.0,
                      log_inputs=log_inputs, span_exporter=spans)
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        predict(gw, f"00-{TRACE}-{PARENT}-01")
        predict(gw)
    recs = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(recs) == 2
    line = json.loads(JsonFormatter().format(recs[0]))
    assert line["trace_id"] == TRACE and len(line["span_id"]) == 16
    assert line["event"] == "request" and line["model"] == "classifier"
    assert line["inputs"]["features"]["shape"] == [2, 16]
    assert ("values" in line["inputs"]["features"]) is log_inputs


def test_notable_events_are_json_lines_with_event_names(caplog, repo):
    """Model loaded, provider chosen, reload, config rejected, breaker transition, drain:
    each one JSON line with an ``event`` (and model/version where there is one)."""
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {error_rate: 1.0}\npolicy:\n"
        "  circuit_breaker: {enabled: true, sliding_window_size: 2, minimum_number_of_calls: 2,"
        " wait_duration_in_open_state_ms: 60000}\n"
        "  fallback: {chain: [{static: {probabilities: [0.6, 0.3, 0.1]}}]}\n")
    with caplog.at_level(logging.INFO, logger="gateway"):
        gw = RunningGateway(model_repository=repo, allow_fault_injection=True)
        for _ in range(3):
            predict(gw)
        (repo / "regressor" / "config.yaml").write_text("batching: {max_batch_sise: 1}\n")
        gw.call(_request_reload(gw.server))
        gw.close()
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    by_event = {}
    for line in lines:
        by_event.setdefault(line.get("event"), []).append(line)
    assert {"server.listening", "server.ready", "model.provider", "model.loaded",
            "circuit_breaker.transition", "repository.reload", "model.config_rejected",
            "model.released", "server.stopped"} <= set(by_event)
    provider = next(x for x in by_event["model.provider"] if x["model"] == "classifier")
    assert provider["version"] == "1" and provider["provider"] == "CPUExecutionProvider"
    breaker = by_event["circuit_breaker.transition"][0]
    assert breaker["model"].startswith("classifier") and breaker["to"] == "open"
    assert by_event["model.config_rejected"][0]["model"] == "regressor"


async def _request_reload(server):
    server.request_reload()                    # what SIGHUP does
    await asyncio.gather(*list(server._reloads))


def test_a_client_traceparent_reaches_log_lines_without_span_export(monkeypatch, caplog, repo, make_gateway):
    """No OTLP endpoint, so no span is exported: the adapter still reads the traceparent, so a
    line logged while the request is served (here the fallback decisions) carries its trace."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\nfaults: {error_rate: 1.0}\n"
        "policy:\n  fallback: {chain: [{static: {probabilities: [0.6, 0.3, 0.1]}}]}\n")
    gw = make_gateway(model_repository=repo, allow_fault_injection=True, access_log=True,
                      access_log_sample_ratio=1.0)
    caplog.handler.addFilter(TraceIdsFilter())  # what logs.configure puts on the real handler
    with caplog.at_level(logging.INFO, logger="gateway"):
        assert predict(gw, f"00-{TRACE}-{PARENT}-01").degraded
        assert predict(gw).degraded
    in_request = [r for r in caplog.records if r.name == "gateway.access"
                  or (r.name == "gateway.policy" and r.getMessage().startswith("fallback."))]
    traced, untraced = in_request[:len(in_request) // 2], in_request[len(in_request) // 2:]
    assert {r.name for r in traced} == {"gateway.access", "gateway.policy"}
    assert [getattr(r, "trace_id", None) for r in traced] == [TRACE] * len(traced)
    assert {len(r.span_id) for r in traced} == {16}
    assert [getattr(r, "trace_id", None) for r in untraced] == [None] * len(untraced)
