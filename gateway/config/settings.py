"""The gateway's settings: YAML file (``--config``), then ``GATEWAY_*`` environment, then CLI flags."""
from __future__ import annotations

import pathlib
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import SettingsError, describe_validation_error


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Record every request in the native ring (switch off only to measure its cost)."""
    ring_capacity: int = Field(65536, ge=1024, le=1 << 24)
    """Request records held between aggregator drains; beyond it records are dropped and counted."""
    histogram_max_buckets: int = Field(160, ge=8, le=4096)
    input_stats_sample_every: int = Field(1, ge=1)
    """Feed input statistics from every k-th batch."""
    aggregate_interval_s: float = Field(0.2, gt=0, le=60)
    export_max_features: int = Field(32, ge=0, le=100_000)
    """Per input, how many features' statistics are exported as metrics (the first N)."""
    span_queue: int = Field(2048, ge=16, le=1 << 20)
    """Sampled requests waiting for span export; beyond it spans are dropped and counted."""


class GatewaySettings(BaseSettings):
    """Settings for ``gateway serve``. Environment variables use the ``GATEWAY_`` prefix and
    ``__`` for nesting (``GATEWAY_TELEMETRY__ENABLED=false``)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid")

    model_repository: pathlib.Path | None = None
    """Directory of ``<model>/<version>/model.onnx``; default: the bundled demo repository."""
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=0, le=65535)
    """gRPC port (0 picks a free one and logs it)."""
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest request or response message; larger requests get RESOURCE_EXHAUSTED."""
    grace_period_s: float = Field(10.0, ge=0)
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish."""
    reload_interval_s: float = Field(5.0, ge=0)
    """Poll the repository for changes this often (0: only on SIGHUP)."""
    batching: bool = True
    """Global switch: false runs every request alone whatever the models' configs say."""
    execution_providers: list[Literal["cuda", "cpu"]] | None = None
    """Default provider preference for models that don't set their own."""
    inline_execution_below_us: int = Field(250, ge=0, le=10_000)
    """Run a model on the event loop instead of a worker thread while its executions average less
    than this (tiny models, where the thread hop costs more than the model); 0 disables."""
    executor_threads: int = Field(4, ge=1, le=256)
    """Threads that run onnxruntime sessions (off the event loop)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    access_log: bool = False
    """One log line per request (``gateway.access``), sampled by ``access_log_sample_ratio``."""
    access_log_sample_ratio: float = Field(0.01, ge=0, le=1)
    log_inputs: bool = False
    """Put raw input values in access log lines (off: only names, shapes and dtypes)."""
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(8002, ge=0, le=65535)
    """Admin HTTP port: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz`` (0 disables)."""
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    allow_fault_injection: bool = False
    """Let models' ``faults:`` blocks inject latency, errors and NaN outputs (tests and benchmarks
    only; each active block is logged as a WARNING at load). Off: such configs are rejected."""


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_yaml(path: pathlib.Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"invalid YAML in {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping at the top level")
    return data


def load_settings(config_file: str | pathlib.Path | None = None, **overrides: Any) -> GatewaySettings:
    """Build settings from (lowest first) defaults, the YAML file, the environment and ``overrides``.

    Raises :class:`SettingsError` naming every bad key.
    """
    file_data = _read_yaml(pathlib.Path(config_file)) if config_file else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}

    class _Settings(GatewaySettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, _YamlSource(settings_cls, file_data))

    source = " + ".join(filter(None, [str(config_file) if config_file else "", "GATEWAY_* environment"]))
    try:
        return GatewaySettings.model_validate(_Settings(**overrides).model_dump())
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(source, exc)) from None
