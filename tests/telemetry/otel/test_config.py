"""The standard OTEL_* environment, read once: endpoints, protocol, temporality, histograms,
sampler; bad values fall back to the defaults."""
from __future__ import annotations

import logging

from gateway.telemetry.otel.config import ExportConfig


def test_nothing_set_means_no_export_and_the_defaults():
    c = ExportConfig.from_env({})
    assert not c.enabled and (c.traces_endpoint, c.metrics_endpoint) == (None, None)
    assert (c.protocol, c.timeout_s, c.metric_interval_s) == ("grpc", 10.0, 60.0)
    assert (c.temporality, c.histogram, c.sampler, c.sampler_ratio) == \
        ("cumulative", "exponential", "parentbased_traceidratio", 0.01)
    assert c.shutdown_timeout_s == 5.0                              # the OTLP timeout, capped


def test_endpoints_per_signal_and_exporters_turned_off():
    c = ExportConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                               "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317"})
    assert (c.traces_endpoint, c.metrics_endpoint, c.enabled) == ("http://t:4317", "http://c:4317", True)
    c = ExportConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none",
                               "OTEL_METRICS_EXPORTER": " None "})
    assert (c.traces_endpoint, c.metrics_endpoint, c.enabled) == (None, None, False)


def test_values_are_read_and_normalised():
    c = ExportConfig.from_env({
        "OTEL_EXPORTER_OTLP_PROTOCOL": "HTTP/protobuf", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_METRIC_EXPORT_INTERVAL": "200", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "Delta",
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "explicit_bucket_histogram",
        "OTEL_TRACES_SAMPLER": "AlWays_On", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert (c.protocol, c.timeout_s, c.metric_interval_s) == ("http/protobuf", 2.5, 0.2)
    assert (c.temporality, c.histogram, c.sampler, c.sampler_ratio) == ("delta", "explicit", "always_on", 0.5)
    assert c.shutdown_timeout_s == 2.5
    assert ExportConfig.from_env({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "lowmemory"}).temporality \
        == "delta"


def test_bad_values_fall_back_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.telemetry"):
        c = ExportConfig.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
                                   "OTEL_EXPORTER_OTLP_TIMEOUT": "soon", "OTEL_METRIC_EXPORT_INTERVAL": "-5",
                                   "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sometimes",
                                   "OTEL_TRACES_SAMPLER_ARG": "lots"})
    assert (c.protocol, c.timeout_s, c.metric_interval_s, c.temporality, c.sampler_ratio) == \
        ("grpc", 10.0, 60.0, "cumulative", 0.01)
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon is not supported" in caplog.text
    assert "OTEL_EXPORTER_OTLP_TIMEOUT='soon' is not a number" in caplog.text
    assert ExportConfig.from_env({"OTEL_TRACES_SAMPLER_ARG": "7"}).sampler_ratio == 1.0   # clipped to [0, 1]


def test_the_start_line_states_what_is_exported_and_the_sampler_in_force():
    off = ExportConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317",
                                 "OTEL_TRACES_SAMPLER": "bogus", "OTEL_METRIC_EXPORT_INTERVAL": "1500"})
    # metrics off: no export interval; the sampler is the one in force, not the unsupported name
    assert off.describe("parentbased_traceidratio 0.01") == \
        "metrics off; traces to http://t:4317 (sampler parentbased_traceidratio 0.01)"
    both = ExportConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_SAMPLER": "always_off",
                                  "OTEL_METRIC_EXPORT_INTERVAL": "1500"})
    assert both.describe(None) == ("metrics to http://c:4317 every 1.5 s (cumulative, exponential histograms); "
                                   "traces off (sampler always_off samples nothing)")
    metrics_only = ExportConfig.from_env({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4317"})
    assert metrics_only.describe(None).endswith("; traces off")
