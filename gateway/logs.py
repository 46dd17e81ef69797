"""Process-wide logging set-up: text for people, JSON lines for collectors.

Inside a request whose trace is known (sampled, or continued from a client ``traceparent``)
every line carries ``trace_id`` and ``span_id``. The per-request access log is off unless
``access_log: true``, sampled, and never carries raw input values unless ``log_inputs: true``.
"""
from __future__ import annotations

import contextvars
import json
import logging
import random
import sys
import threading
import time

#: (trace_id_hex, span_id_hex) of the request being served, for log lines (set by the
#: adapter's tracing when a request's trace is known).
current_ids: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "gateway_trace_ids", default=None)


class TraceIdsFilter(logging.Filter):
    """Stamps ``trace_id`` / ``span_id`` of the request being served onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            ids = current_ids.get()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id", "model", "version", "event"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(TraceIdsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("gateway").setLevel(level)


class AccessLog:
    """Request observer: a log line on ``gateway.access`` for a sampled share of requests.

    Input values appear only with ``log_inputs``; otherwise names, dtypes and shapes."""

    def __init__(self, sample_ratio: float, log_inputs: bool = False) -> None:
        self.ratio = sample_ratio
        self.log_inputs = log_inputs
        self.log = logging.getLogger("gateway.access")

    def on_answer(self, request, attempt, status, response, fallback_code: int, t_responded_ns: int) -> None:
        if self.ratio < 1.0 and random.random() >= self.ratio:
            return
        inputs = {name: ({"dtype": str(a.dtype), "shape": list(a.shape), "values": a.tolist()}
                         if self.log_inputs else {"dtype": str(a.dtype), "shape": list(a.shape)})
                  for name, a in request.inputs.items()}
        fields = {"request_id": request.request_id, "status": getattr(status, "name", str(status)),
                  "duration_ms": round((t_responded_ns - request.t_received_ns) / 1e6, 3),
                  "rows": attempt.rows, "batch_size": attempt.batch_size, "inputs": inputs}
        if response is not None:
            fields.update(served_by=response.served_by, degraded=response.degraded)
            if response.fallback_reason:
                fields["fallback_reason"] = response.fallback_reason
            if response.predicted_label:
                fields["predicted"] = response.predicted_label[:16]
        extra = {"event": "request", "model": request.model,
                 "version": response.version if response is not None else request.version,
                 "fields": fields}
        trace = request.trace
        if trace is not None:
            extra["trace_id"], extra["span_id"] = f"{trace.trace_id:032x}", f"{trace.span_id:016x}"
        self.log.info("%s %s %s", request.model, fields["status"], fields["duration_ms"], extra=extra)


class FallbackEventLog:
    """Decision observer: one INFO line per fallback decision, at most ``per_s`` a second
    (the rest are counted and reported on the next line that gets through)."""

    def __init__(self, per_s: float = 20.0) -> None:
        self.per_s = per_s
        self.log = logging.getLogger("gateway.policy")
        self._window = 0
        self._n = 0
        self._suppressed = 0
        self._lock = threading.Lock()

    def __call__(self, request, event: str, attributes: dict) -> None:
        if not event.startswith("fallback.") or not self.log.isEnabledFor(logging.INFO):
            return
        request_id = request.request_id if request is not None else ""
        with self._lock:
            sec = int(time.monotonic())
            if sec != self._window:
                self._window, self._n = sec, 0
            self._n += 1
            if self._n > self.per_s:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
        fields = {"request_id": request_id, **{k: str(v) for k, v in attributes.items()}}
        if suppressed:
            fields["suppressed_before"] = suppressed
        self.log.info("%s request=%s %s", event, request_id,
                      " ".join(f"{k}={v}" for k, v in attributes.items()),
                      extra={"event": event, "model": str(attributes.get("model", "")) or None,
                             "fields": fields})
