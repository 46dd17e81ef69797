"""Standard OpenTelemetry environment configuration, read once at start.

Only the standard variables are read (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_TRACES_SAMPLER(_ARG)``,
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``,
``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION``); the OTLP exporters read
endpoint, headers, timeout and TLS settings themselves, so their semantics are the SDK's.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

log = logging.getLogger("gateway.telemetry")

DEFAULT_SAMPLER = "parentbased_traceidratio"
DEFAULT_SAMPLER_RATIO = 0.01
SHUTDOWN_FLUSH_CAP_S = 5.0


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    traces_endpoint: str | None
    metrics_endpoint: str | None
    protocol: str                  # "grpc" | "http/protobuf"
    timeout_s: float
    metric_interval_s: float
    temporality: str               # "cumulative" | "delta"
    histogram: str                 # "exponential" | "explicit"
    sampler: str
    sampler_ratio: float

    @property
    def enabled(self) -> bool:
        return bool(self.traces_endpoint or self.metrics_endpoint)

    def describe(self, sampler: str | None) -> str:
        """What is exported where, for the start line; ``sampler`` is the one in force (the
        configured name may have been unsupported and replaced), None when no span is exported
        (no traces endpoint, or a sampler that samples nothing)."""
        if self.metrics_endpoint:
            metrics = (f"metrics to {self.metrics_endpoint} every {self.metric_interval_s:g} s "
                       f"({self.temporality}, {self.histogram} histograms)")
        else:
            metrics = "metrics off"
        if self.traces_endpoint and sampler is not None:
            traces = f"traces to {self.traces_endpoint} (sampler {sampler})"
        elif self.traces_endpoint:
            traces = f"traces off (sampler {self.sampler} samples nothing)"
        else:
            traces = "traces off"
        return f"{metrics}; {traces}"

    @property
    def shutdown_timeout_s(self) -> float:
        """Bound on the final flush at shutdown: the OTLP timeout, capped."""
        return min(self.timeout_s, SHUTDOWN_FLUSH_CAP_S)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ExportConfig":
        env = os.environ if env is None else env
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or base
        metrics = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or base
        if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
            traces = None
        if env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "none":
            metrics = None
        protocol = (env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip().lower()
        if protocol not in ("grpc", "http/protobuf"):
            log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using grpc", protocol)
            protocol = "grpc"
        temporality = (env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
                       or "cumulative").strip().lower()
        if temporality not in ("cumulative", "delta"):
            # lowmemory: delta for counters/histograms as well (we have no up-down sums).
            temporality = "delta" if temporality == "lowmemory" else "cumulative"
        agg = (env.get("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION")
               or "base2_exponential_bucket_histogram").strip().lower()
        histogram = "explicit" if agg == "explicit_bucket_histogram" else "exponential"
        sampler = (env.get("OTEL_TRACES_SAMPLER") or DEFAULT_SAMPLER).strip().lower()
        try:
            ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLER_RATIO))
        except ValueError:
            ratio = DEFAULT_SAMPLER_RATIO
        return cls(traces_endpoint=traces, metrics_endpoint=metrics, protocol=protocol,
                   timeout_s=_float(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000) / 1e3,
                   metric_interval_s=_float(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000) / 1e3,
                   temporality=temporality, histogram=histogram, sampler=sampler,
                   sampler_ratio=min(max(ratio, 0.0), 1.0))


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(env.get(key, default))
    except ValueError:
        log.warning("%s=%r is not a number; using %s", key, env.get(key), default)
        return default
    return value if value > 0 else default
