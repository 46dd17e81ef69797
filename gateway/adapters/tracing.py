"""Request-path tracing decisions, shared by protocol adapters: W3C ``traceparent`` parsing and
head sampling.

Deliberately free of OpenTelemetry imports: this is the only tracing code that runs per
request. It reads the metadata, decides sampling with the standard samplers' semantics
(``OTEL_TRACES_SAMPLER``: ``always_on``, ``always_off``, ``traceidratio``,
``parentbased_always_on``, ``parentbased_always_off``, ``parentbased_traceidratio``) and,
for sampled requests only, returns a :class:`RequestTrace` the span builder fills in later.
Without span export the adapter still runs :meth:`HeadSampler.ids_only`, which samples nothing
but lets a client's ``traceparent`` name the trace in log lines.
"""
from __future__ import annotations

import random
import time

from ..logs import current_ids

_MAX64 = 1 << 64
_rand = random.getrandbits


class RequestTrace:
    """Ids of one sampled request's SERVER span, its parent, and what happened on the way."""

    __slots__ = ("trace_id", "span_id", "parent_span_id", "parent_remote_sampled", "events", "start_wall_ns")

    def __init__(self, trace_id: int, span_id: int, parent_span_id: int, parent_remote_sampled: bool = False):
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.parent_remote_sampled = parent_remote_sampled
        self.events: list[tuple[int, str, dict]] = []
        self.start_wall_ns = time.time_ns()


def parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    """``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`` → (trace id, span id, sampled);
    None when malformed or all-zero (W3C Trace Context §3.2)."""
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version = value[:2]
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    try:
        trace_id = int(value[3:35], 16)
        span_id = int(value[36:52], 16)
        flags = int(value[53:55], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, bool(flags & 1)


class HeadSampler:
    """Standard sampler semantics, decided without the SDK (a few hundred nanoseconds)."""

    def __init__(self, name: str = "parentbased_traceidratio", ratio: float = 0.01):
        name = name.strip().lower()
        self.parent_based = name.startswith("parentbased_")
        root = name[len("parentbased_"):] if self.parent_based else name
        if root == "always_on":
            ratio = 1.0
        elif root == "always_off":
            ratio = 0.0
        elif root != "traceidratio":
            raise ValueError(f"unsupported OTEL_TRACES_SAMPLER {name!r}")
        self.name = name
        self.ratio = ratio
        # TraceIdRatioBased: sampled when the low 64 bits of the trace id are below the bound.
        self._bound = int(ratio * _MAX64)
        self.paused = False

    @classmethod
    def configured(cls, name: str, ratio: float) -> "HeadSampler":
        """The sampler ``OTEL_TRACES_SAMPLER`` names; an unsupported name logs a warning and
        falls back to ``parentbased_traceidratio``."""
        try:
            return cls(name, ratio)
        except ValueError as exc:
            import logging

            logging.getLogger("gateway.telemetry").warning("%s; using parentbased_traceidratio", exc)
            return cls("parentbased_traceidratio", ratio)

    @classmethod
    def ids_only(cls) -> "HeadSampler":
        """Samples nothing; a client's ``traceparent`` still names the trace for log lines
        (what runs when no span exporter is configured)."""
        return cls("always_off")

    @property
    def never(self) -> bool:
        return self._bound == 0 and not self.parent_based

    def set_paused(self, paused: bool) -> None:
        """Paused, nothing is sampled (span export is failing: the spans would be dropped after
        costing their building); a client's ``traceparent`` still names the trace in log lines."""
        self.paused = paused

    def describe(self) -> str:
        """The sampler in force, as a log line states it (the ratio only where it decides)."""
        if self.name.endswith("traceidratio"):
            return f"{self.name} {self.ratio:g}"
        return self.name

    def start(self, metadata) -> RequestTrace | None:
        """Decide for one request; ``metadata`` is the request's (key, value) metadata pairs."""
        parent = None
        if metadata:
            for key, value in metadata:
                if key == "traceparent":
                    parent = parse_traceparent(value)
                    break
        if parent is not None:
            trace_id, parent_span, parent_sampled = parent
            if self.parent_based:
                sampled = parent_sampled
            else:
                sampled = (trace_id & (_MAX64 - 1)) < self._bound
            span_id = _rand(64) or 1
            current_ids.set((f"{trace_id:032x}", f"{span_id:016x}"))
            if not sampled or self.paused:
                return None
            return RequestTrace(trace_id, span_id, parent_span, parent_sampled)
        if self._bound == 0 or self.paused:  # (a draw could never be below it)
            return None
        low = _rand(64)
        if low >= self._bound:
            return None
        trace_id = (_rand(64) << 64) | low or 1
        span_id = _rand(64) or 1
        current_ids.set((f"{trace_id:032x}", f"{span_id:016x}"))
        return RequestTrace(trace_id, span_id, 0)
