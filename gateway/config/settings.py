"""The gateway's settings: YAML file (``--config``), then ``GATEWAY_*`` environment, then CLI flags."""
from __future__ import annotations

import difflib
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic_settings
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .alerts import AlertSettings
from .errors import SettingsError, validation_lines


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
    drift_window_s: float = Field(60.0, gt=0, le=3600)
    """Drift is graded over the last this many seconds of each version's rows."""
    drift_window_rows: int = Field(0, ge=0, le=100_000_000)
    """And over the last this many rows where those are more recent (0: by time only)."""
    drift_min_window_rows: int = Field(200, ge=1, le=100_000_000)
    """A window of fewer rows is not graded."""
    change_expected_rows_between_false_alarms: float = Field(1e7, ge=0, le=1e15)
    """Sequential change detection per input (all its features and both directions together)
    and for a classifier's top-1 confidence: rows expected between two false alarms (0: off)."""


class InputMask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mask: list[int] = Field(max_length=100_000)
    """Positions of the input's last axis written as 0 (the rest as sent)."""


class CaptureSettings(BaseModel):
    """Sampled capture of requests, answers and labels for replay (``gateway.lifecycle.capture``)."""
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    directory: pathlib.Path | None = None
    """Where the capture files go; default: ``<state_dir>/capture`` (one of the two is needed)."""
    sample_ratio: float = Field(0.01, ge=0, le=1)
    """Share of the answered requests captured."""
    max_file_bytes: int = Field(64 << 20, ge=4096)
    max_files: int = Field(8, ge=1, le=10_000)
    """Files kept (the oldest deleted): the capture takes at most about max_files x max_file_bytes."""
    queue: int = Field(1024, ge=1, le=1_000_000)
    """Records waiting for the writer; beyond it they are dropped (and counted)."""
    default_inputs: Literal["drop", "keep"] = "drop"
    """What happens to an input ``inputs`` does not name: not written (the default) or written."""
    inputs: dict[str, dict[str, Literal["keep", "drop"] | InputMask]] = Field(default_factory=dict)
    """model -> input -> ``keep``, ``drop`` or ``{mask: [positions]}``."""
    outputs: bool = True
    """Write the answers' outputs (replay compares them)."""


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
    max_inflight_bytes: int | None = Field(None, ge=0, validate_default=True)
    """Request payload (tensor) bytes admitted and not yet answered, past which new requests get
    RESOURCE_EXHAUSTED with a retry delay. Default 4 x ``max_message_bytes``; 0: no bound.
    Otherwise at least ``max_message_bytes``, so that a request of any size that fits a message
    is admitted while nothing else is in flight."""
    malloc_mmap_threshold_bytes: int = Field(1 << 20, ge=0, le=32 << 20)
    """glibc only (elsewhere ignored): allocations of at least this size get a mapping of their
    own that goes back to the system when freed (0, or 64 KiB to 32 MiB). 0 keeps glibc's dynamic
    threshold, which after large requests keeps freed buffers of up to 32 MiB resident."""
    workers: int = Field(1, ge=1, le=64)
    """Worker processes serving the one port (``SO_REUSEPORT``; :mod:`gateway.workers`): each
    loads every model and has its own runtime. 1 serves in this process, as without it."""
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
    execution_cpus: list[Annotated[int, Field(ge=0, le=4095)]] | None = Field(None, min_length=1, max_length=4096)
    """CPUs for the threads that run and create onnxruntime sessions (their intra-op threads
    included); the rest of the server (gRPC, event loop, telemetry) moves to the CPUs left, so a
    compute-bound model is not time-sliced with the front end. Linux only; each must be a CPU the
    process may use. Unset: the scheduler places every thread (:mod:`gateway.runtime.affinity`)."""
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
    feedback_store_entries: int = Field(0, ge=0, le=10_000_000)
    """Answers kept for delayed labels (the ``Feedback`` call; :mod:`gateway.monitoring.labels`):
    at most this many, the oldest leaving first; about 250 bytes each (one-row answers; see
    ``feedback_max_rows`` for more), plus about 100 for each id remembered after it leaves (as
    many again). 0 turns the capture and ``Feedback`` off."""
    feedback_ttl_s: float = Field(3600.0, gt=0, le=7 * 86400)
    """How long an answer waits for its label; a label after that counts as late."""
    feedback_window: int = Field(1000, ge=10, le=1_000_000)
    """Joined labels per model version that the online quality metrics cover (the last N)."""
    feedback_max_rows: int = Field(64, ge=1, le=4096)
    """Rows of one answer kept for labels (a label names its row, 0 by default); labels for
    later rows count as unknown. Each kept row costs 2 bytes (classifiers) or 8 (regressors)
    on top of its answer's entry (about 280 bytes for an answer of several rows)."""
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    """Alert rules evaluated in the background (:mod:`gateway.monitoring.alerts`; README "Alerts")."""
    shadow_max_in_flight: int = Field(64, ge=1, le=100_000)
    """Shadow requests (``traffic.shadow``) running at once; beyond it new ones are shed (counted)."""
    shadow_max_inflight_bytes: int = Field(64 << 20, ge=0)
    """Request payload bytes held by running shadows; beyond it new ones are shed (counted)."""
    shadow_timeout_ms: int = Field(1000, ge=1, le=600_000)
    """A shadow's own deadline (it never uses the client's)."""
    rollback_evaluate_every_s: float = Field(5.0, gt=0, le=3600)
    """How often models' traffic.rollback rules are evaluated (needs telemetry)."""
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    """Sampled capture of requests and answers for ``gateway replay`` (off by default)."""
    state_dir: pathlib.Path | None = None
    """Where state that outlives a restart is kept: the version history (``history.sqlite3``).
    None: the history is kept in memory only."""
    history_max_events: int = Field(100_000, ge=100, le=100_000_000)
    """Version history events kept (the oldest leave first)."""
    admin_token: SecretStr | None = None
    """The token admin calls need (the Open Inference Protocol's RepositoryModelLoad and
    RepositoryModelUnload), sent as ``authorization: Bearer <token>`` metadata; best given as
    ``GATEWAY_ADMIN_TOKEN`` or through ``admin_token_file``, never on a command line. Never
    logged or shown. With neither set, admin calls are off."""
    admin_token_file: pathlib.Path | None = None
    """A file holding the admin token (its first line; read at start)."""
    allow_fault_injection: bool = False
    """Let models' ``faults:`` blocks inject latency, errors and NaN outputs (tests and benchmarks
    only; each active block is logged as a WARNING at load). Off: such configs are rejected."""

    @field_validator("max_inflight_bytes")
    @classmethod
    def _inflight_bound(cls, value: int | None, info: ValidationInfo) -> int | None:
        message_bytes = info.data.get("max_message_bytes")
        if message_bytes is None:  # (itself invalid, and reported)
            return value
        if value is None:
            return 4 * message_bytes
        if 0 < value < message_bytes:
            raise ValueError(f"less than max_message_bytes ({message_bytes}): a request that fits a message "
                             f"could never be admitted (0 means no bound)")
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("empty: unset it to turn admin calls off")
        return value

    @field_validator("admin_token_file")
    @classmethod
    def _token_file(cls, value: pathlib.Path | None) -> pathlib.Path | None:
        if value is not None:
            _read_token(value)  # (raises naming the problem, never the token)
        return value

    @model_validator(mode="after")
    def _one_token(self) -> GatewaySettings:
        if self.admin_token is not None and self.admin_token_file is not None:
            raise ValueError("admin_token and admin_token_file are both set: give one")
        return self

    def admin_secret(self) -> str | None:
        """The admin token (from ``admin_token`` or the first line of ``admin_token_file``); None: admin calls off."""
        if self.admin_token is not None:
            return self.admin_token.get_secret_value().strip()
        if self.admin_token_file is not None:
            return _read_token(self.admin_token_file)
        return None

    @field_validator("execution_cpus")
    @classmethod
    def _cpus_usable(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not hasattr(os, "sched_getaffinity"):
            raise ValueError("needs Linux (per-thread CPU affinity)")
        allowed = os.sched_getaffinity(0)
        outside = sorted(set(value) - allowed)
        if outside:
            raise ValueError(f"CPUs {cpu_ranges(outside)} are not among those this process may use "
                             f"({cpu_ranges(allowed)})")
        return sorted(set(value))

    @field_validator("malloc_mmap_threshold_bytes")
    @classmethod
    def _mmap_threshold(cls, value: int) -> int:
        if 0 < value < 64 << 10:
            raise ValueError("0 (glibc's dynamic threshold) or at least 65536: below that most allocations "
                             "would be a system call")
        return value


    @model_validator(mode="after")
    def _capture_has_a_place(self) -> "GatewaySettings":
        if self.capture.enabled and self.capture.directory is None and self.state_dir is None:
            raise ValueError("capture.enabled needs capture.directory or state_dir (where the files go)")
        return self


def cpu_ranges(cpus) -> str:
    """``0-3,8`` for {0, 1, 2, 3, 8} (taskset's notation; short on a machine of many CPUs)."""
    out: list[tuple[int, int]] = []
    for c in sorted(cpus):
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def _read_token(path: pathlib.Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if not token:
        raise ValueError(f"{path} holds no token (its first line is empty)")
    return token


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


ENV_PREFIX = "GATEWAY_"
#: ``GATEWAY_*`` variables that are not settings of ``gateway serve`` and so are not refused
#: when set in its environment: the kernel build's switches (read by setup.py) and the server
#: address of the client commands (``gateway models | predict | stats``).
OTHER_VARIABLES = frozenset({"GATEWAY_DEBUG_BUILD", "GATEWAY_SANITIZE", "GATEWAY_CYTHON_ANNOTATE",
                             "GATEWAY_ADDRESS"})


def unknown_environment(env: Mapping[str, str]) -> list[str]:
    """One line per ``GATEWAY_*`` variable in ``env`` that names no top-level setting.

    pydantic-settings reads only the variables of known fields, so a misspelt one
    (``GATEWAY_ADMINPORT``) would be ignored without a word; unknown nested keys
    (``GATEWAY_TELEMETRY__X``) already fail validation, naming the key. Names compare
    case-insensitively, as pydantic-settings reads them.
    """
    fields = sorted(GatewaySettings.model_fields)
    lines = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_VARIABLES:
            continue
        key = upper[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if key in fields:
            continue
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.75)
        hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}?)" if close else ""
        lines.append(f"  {name}: unknown setting{hint}")
    return lines


def _origin(loc: tuple, config_file: str | None, env: Mapping[str, str], overrides: Mapping[str, Any],
            flags: bool) -> str:
    """Where the value at ``loc`` came from, as the user wrote it: ``--port`` for a flag,
    ``GATEWAY_PORT`` for a variable, ``gateway.yaml: port`` for the file (the highest
    precedence source that gives it)."""
    key = ".".join(str(p) for p in loc) or "(top level)"
    if loc and loc[0] in overrides:
        return "--" + key.replace("_", "-") if flags else key
    upper = {name.upper(): name for name in env}
    for i in range(len(loc), 0, -1):  # GATEWAY_TELEMETRY__RING_CAPACITY, or a JSON GATEWAY_TELEMETRY
        name = upper.get(ENV_PREFIX + "__".join(str(p).upper() for p in loc[:i]))
        if name is not None:
            return name + "".join(f".{p}" for p in loc[i:])
    return f"{config_file}: {key}" if config_file else key


def load_settings(config_file: str | pathlib.Path | None = None, *, flags: bool = False,
                  **overrides: Any) -> GatewaySettings:
    """Build settings from (lowest first) defaults, the YAML file, the environment and ``overrides``.

    ``flags``: the overrides are the command line's (errors name them ``--port``, not ``port``).
    Raises :class:`SettingsError` naming every bad key where the user wrote it.
    """
    file_data = _read_yaml(pathlib.Path(config_file)) if config_file else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    env = dict(os.environ)

    class _Settings(GatewaySettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, _YamlSource(settings_cls, file_data))

    file_name = str(config_file) if config_file else None
    lines = unknown_environment(env)
    try:
        settings = GatewaySettings.model_validate(_Settings(**overrides).model_dump())
    except ValidationError as exc:
        lines += validation_lines(exc, lambda loc: _origin(loc, file_name, env, overrides, flags))
    except pydantic_settings.SettingsError as exc:  # a nested setting's variable that is not JSON
        match = re.search(r'field "([^"]+)"', str(exc))
        where = _origin((match.group(1),), file_name, env, overrides, flags) if match else "environment"
        lines.append(f"  {where}: not valid JSON (a list or nested setting takes a JSON value)")
    else:
        if not lines:
            return settings
    raise SettingsError("\n".join(["invalid configuration:"] + lines))
