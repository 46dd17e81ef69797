"""The Prometheus text exposition of the scrape view (what /metrics serves), in-process."""
from __future__ import annotations

import re

from gateway.telemetry import Telemetry
from gateway.telemetry.otel import ExportConfig, TelemetryExport, make_resource
from gateway.telemetry.otel.prometheus import CONTENT_TYPE, _labels, _value, metric_name
from tests.telemetry.records import record


def test_names_follow_the_otel_to_prometheus_rules():
    assert metric_name("rpc.server.call.duration", "s") == "rpc_server_call_duration_seconds"
    assert metric_name("process.memory.usage", "By") == "process_memory_usage_bytes"
    assert metric_name("gateway.requests", "1", counter=True) == "gateway_requests_ratio_total"
    assert metric_name("gateway.requests", None, counter=True) == "gateway_requests_total"
    assert metric_name("x_total", None, counter=True) == "x_total"
    assert metric_name("latency_seconds", "s") == "latency_seconds"
    assert metric_name("odd-name/with space", "") == "odd_name_with_space"


def test_label_values_are_escaped_and_special_floats_spelled_out():
    assert _labels({"a.b": 'say "hi"\\now\n'}) == '{a_b="say \\"hi\\"\\\\now\\n"}'
    assert _labels({}) == "" and _labels(None, (("le", "+Inf"),)) == '{le="+Inf"}'
    assert [_value(v) for v in (float("nan"), float("inf"), -float("inf"), 0.25, 3)] == \
        ["NaN", "+Inf", "-Inf", "0.25", "3"]


def test_the_scrape_renders_counters_histograms_and_the_resource():
    t = Telemetry()
    m = t.register_model("clf", "1", inputs={})
    for i in range(10):
        record(t, m, t_enqueued_ns=100, t_compute_start_ns=200, t_compute_end_ns=300,
               t_responded_ns=(1 + i) * 1_000_000, status=0 if i < 8 else 14, batch_size=2)
    t.flush()
    export = TelemetryExport(t, config=ExportConfig.from_env({}), resource=make_resource())
    try:
        text = export.prometheus_text()
    finally:
        export.stop()
    assert export.prometheus_content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    lines = text.splitlines()
    assert lines[0] == "# TYPE target_info gauge" and 'service_name="onnx-inference-gateway"' in lines[1]
    assert "# TYPE rpc_server_call_duration_seconds histogram" in lines
    assert lines.count("# TYPE rpc_server_call_duration_seconds histogram") == 1      # once per name
    ok = [line for line in lines if line.startswith("rpc_server_call_duration_seconds_bucket")
          and 'gateway_model_name="clf"' in line and 'rpc_grpc_status_code="0"' in line]
    counts = [int(line.rsplit(" ", 1)[1]) for line in ok]
    assert counts == sorted(counts) and counts[-1] == 8 and 'le="+Inf"' in ok[-1]      # cumulative buckets
    count = next(line for line in lines if re.match(r'rpc_server_call_duration_seconds_count\{.*status_code="14"', line)
                 and 'gateway_model_name="clf"' in line)
    assert count.endswith(" 2")
    requests = [line for line in lines if line.startswith("gateway_requests_total{") and '"clf"' in line]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in requests) == 10
    assert text.endswith("\n")
