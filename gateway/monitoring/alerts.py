"""Alerts: rules (:mod:`gateway.config.alerts`) evaluated in the background over the gateway's
own statistics, per (rule, model, version): pending while the comparison holds for less than
``for_s``, firing after, resolved once it stops holding (or the version goes away). A signal
with no value (no requests in the window: no p99; no labels: no accuracy) does not hold.

Firing and resolved events are logged (logger ``gateway.monitoring``, one JSON line each with
``log_format: json``, events ``alert.firing`` / ``alert.resolved``) and, with a webhook URL,
POSTed as JSON by :class:`Webhook` from a bounded queue on its own thread. Evaluation runs on
its own thread (:class:`Alerts`), never on the request path; a failing statistics read or
webhook is logged and skipped. Memory: at most ``max_active`` states (pending or firing),
``webhook_queue`` events waiting, and per version a few numbers (change-alarm history of at
most ``window_s / evaluate_every_s + 2`` points, the first labelled accuracy).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable

from ..api.alerts import ActiveAlert, AlertList
from ..api.stats import ModelStatsSnapshot, Statistics
from ..config.alerts import AlertRule, AlertSettings

log = logging.getLogger("gateway.monitoring")

#: Joined labels a version's quality window must cover before accuracy signals have a value.
MIN_LABELS = 100


@dataclasses.dataclass(frozen=True)
class VersionFacts:
    """What the rules need from a version beyond its statistics."""

    deadline_ms: float | None = None        # its policy's attempt (else default) timeout
    reference_accuracy: float | None = None  # its reference profile's accuracy
    rolled_back: bool | None = None          # under a traffic split: whether it is rolled back


FactsSource = Callable[[str, str], VersionFacts]


@dataclasses.dataclass
class _State:
    pending_since: float    # monotonic s when the comparison began to hold
    firing_since: float | None = None  # wall-clock s when it fired
    value: float = math.nan


def _max(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


class Evaluator:
    """The rules' state machines; :meth:`evaluate` is pure apart from its own state (times
    are passed in), so tests drive it with explicit times."""

    def __init__(self, rules: list[AlertRule], *, window_s: float = 60.0, max_states: int = 1000,
                 facts: FactsSource | None = None) -> None:
        self.rules = list(rules)
        self.window_s = window_s
        self.max_states = max_states
        self._facts = facts or (lambda model, version: VersionFacts())
        self._states: dict[tuple[str, str, str], _State] = {}
        self._first_accuracy: dict[tuple[str, str], float] = {}
        self._alarms: dict[tuple[str, str], collections.deque] = {}
        self.untracked = 0  # states not kept because max_states were

    # -- signals ------------------------------------------------------------------------------
    def signals(self, m: ModelStatsSnapshot, now_s: float) -> dict[str, float]:
        key = (m.model, m.version)
        facts = self._facts(m.model, m.version)
        p99 = m.latency.p99_ms if m.latency.count else math.nan
        out = {"error_share": m.error_share, "degraded_share": m.degraded_share, "p99_ms": p99,
               "requests_per_s": m.requests_per_s,
               "p99_over_deadline": p99 / facts.deadline_ms if facts.deadline_ms else math.nan,
               "rolled_back": math.nan if facts.rolled_back is None else float(facts.rolled_back)}
        d = m.drift
        if d is not None and d.reference != "capturing":
            inputs = [f for f in d.features if f.input]
            out["drift_features_alert"] = float(d.features_alert)
            out["drift_psi_max"] = _max(f.psi for f in inputs)
            quality = list(inputs) + list(d.data_quality)
            out["nan_rate_max"] = _max(f.nan_rate for f in quality)
            out["out_of_range_rate_max"] = _max(f.out_of_range_rate for f in quality)
            if d.outlier_scored_rows:
                out["outlier_rate"] = d.outlier_rate
        if d is not None:
            history = self._alarms.setdefault(key, collections.deque())
            history.append((now_s, d.change_alarms))
            while len(history) > 1 and history[1][0] <= now_s - self.window_s:
                history.popleft()
            out["change_alarms"] = float(d.change_alarms - history[0][1])  # (0 at the first look)
        q = m.quality
        if q is not None and q.window >= MIN_LABELS:
            out["macro_f1"], out["mae"], out["rmse"] = q.macro_f1, q.mae, q.rmse
            if not math.isnan(q.accuracy):
                out["accuracy"] = q.accuracy
                ref = facts.reference_accuracy
                if ref is None:
                    ref = self._first_accuracy.setdefault(key, q.accuracy)
                out["accuracy_drop"] = ref - q.accuracy
        return {k: v for k, v in out.items() if not math.isnan(v)}

    # -- the state machines -------------------------------------------------------------------
    def evaluate(self, stats: Statistics, now_s: float, wall_s: float | None = None) -> list[dict]:
        """One pass at monotonic ``now_s``; returns the events (firing, resolved) it raised."""
        wall = time.time() if wall_s is None else wall_s
        events: list[dict] = []
        seen: set[tuple[str, str, str]] = set()
        for m in stats.models:
            values = self.signals(m, now_s)
            for rule in self.rules:
                if rule.model is not None and rule.model != m.model:
                    continue
                key = (rule.name, m.model, m.version)
                value = values.get(rule.metric, math.nan)
                holds = not math.isnan(value) and rule.holds(value)
                state = self._states.get(key)
                if not holds:
                    if state is not None:
                        del self._states[key]
                        if state.firing_since is not None:
                            events.append(self._event("resolved", rule, m.model, m.version, value, state, wall))
                    continue
                seen.add(key)
                if state is None:
                    if len(self._states) >= self.max_states:
                        self.untracked += 1
                        continue
                    state = self._states[key] = _State(now_s)
                state.value = value
                if state.firing_since is None and now_s - state.pending_since >= rule.for_s:
                    state.firing_since = wall
                    events.append(self._event("firing", rule, m.model, m.version, value, state, wall))
        rules = {r.name: r for r in self.rules}
        for key in [k for k in self._states if k not in seen]:  # versions gone (or rules filtered)
            state = self._states.pop(key)
            if state.firing_since is not None:
                events.append(self._event("resolved", rules[key[0]], key[1], key[2], math.nan, state, wall))
        live = {(m.model, m.version) for m in stats.models}
        for table in (self._first_accuracy, self._alarms):
            for k in [k for k in table if k not in live]:
                del table[k]
        return events

    def _event(self, status: str, rule: AlertRule, model: str, version: str, value: float, state: _State,
               wall: float) -> dict:
        return {"status": status, "rule": rule.name, "metric": rule.metric, "comparator": rule.comparator,
                "threshold": rule.threshold, "severity": rule.severity, "labels": dict(rule.labels),
                "model": model, "version": version, "value": None if math.isnan(value) else value,
                "firing_since_unix_s": state.firing_since, "at_unix_s": wall}

    def active(self) -> list[ActiveAlert]:
        """The firing alerts, the most severe first."""
        rules = {r.name: r for r in self.rules}
        out = []
        for (name, model, version), state in list(self._states.items()):
            if state.firing_since is None:
                continue
            r = rules[name]
            out.append(ActiveAlert(r.name, r.metric, r.comparator, r.threshold, r.severity, dict(r.labels),
                                   model, version, state.value, state.firing_since))
        order = {"critical": 0, "warning": 1, "info": 2}
        return sorted(out, key=lambda a: (order[a.severity], a.rule, a.model, a.version))

    @property
    def pending(self) -> int:
        return sum(1 for s in self._states.values() if s.firing_since is None)


class Webhook:
    """POSTs events as JSON from a bounded queue (the oldest dropped past ``max_queue``, counted)
    on one daemon thread: each event tried up to ``max_attempts`` times with exponential backoff
    and jitter, each attempt bounded by ``timeout_s``. :meth:`send` never blocks."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_queue: int = 256, max_attempts: int = 5,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._queue: collections.deque[dict] = collections.deque(maxlen=max_queue)
        self._cond = threading.Condition()
        self._stopping = False
        self.dropped = 0      # events pushed out of the full queue
        self.failed = 0       # events given up on after max_attempts
        self.delivered = 0
        self.attempts = 0
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="alert webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():  # (an attempt in flight ends within timeout_s; the thread is a daemon)
            self._thread.join(timeout_s)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, event: dict) -> None:
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                if not self._warned:
                    self._warned = True
                    log.warning("alert webhook %s: queue full (%d events), dropping the oldest (counted, "
                                "logged once)", self.url, self._queue.maxlen, extra={"event": "alert.webhook_drop"})
            self._queue.append(event)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                event = self._queue.popleft()
            self._deliver(event)

    def _deliver(self, event: dict) -> None:
        body = json.dumps(event, default=str).encode()
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            try:
                req = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.timeout_s) as answer:  # noqa: S310 (http(s) only)
                    answer.read(1 << 16)
                self.delivered += 1
                return
            except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, resets
                why = exc
            if attempt == self.max_attempts:
                break
            with self._cond:  # back off, but wake for stop
                if self._cond.wait_for(lambda: self._stopping, delay * random.uniform(0.5, 1.0)):
                    return
            delay = min(delay * 2, self.max_backoff_s)
        self.failed += 1
        log.warning("alert webhook %s: %s %s for %s/%s not delivered after %d attempts (%s)", self.url,
                    event.get("rule"), event.get("status"), event.get("model"), event.get("version"),
                    self.max_attempts, why, extra={"event": "alert.webhook_failed"})


class Alerts:
    """The evaluation thread: every ``evaluate_every_s``, ``statistics(window_s)`` through the
    :class:`Evaluator`, each event logged, handed to ``emit`` (OTel log records) and the
    webhook."""

    def __init__(self, settings: AlertSettings, statistics: Callable[[float], Statistics], *,
                 facts: FactsSource | None = None, emit: Callable[[dict], None] | None = None) -> None:
        self.settings = settings
        self.evaluator = Evaluator(settings.in_force(), window_s=settings.window_s,
                                   max_states=settings.max_active, facts=facts)
        self._statistics = statistics
        self._emit = emit
        self.webhook = Webhook(settings.webhook_url, timeout_s=settings.webhook_timeout_s,
                               max_queue=settings.webhook_queue, max_attempts=settings.webhook_max_attempts,
                               backoff_s=settings.webhook_backoff_s) if settings.webhook_url else None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self.evaluations = 0
        self.errors = 0

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.webhook is not None:
            self.webhook.stop()

    def active(self) -> list[ActiveAlert]:
        with self._lock:
            return self.evaluator.active()

    def listing(self) -> AlertList:
        with self._lock:
            ev = self.evaluator
            return AlertList(ev.active(), len(ev.rules), ev.pending, ev.untracked)

    def evaluate_now(self) -> list[dict]:
        stats = self._statistics(self.settings.window_s)
        with self._lock:
            events = self.evaluator.evaluate(stats, time.monotonic())
            self.evaluations += 1
        for event in events:
            self._publish(event)
        return events

    def _publish(self, event: dict) -> None:
        firing = event["status"] == "firing"
        value = event["value"]
        log.log(logging.WARNING if firing else logging.INFO, "alert %s %s: %s@%s %s %s (rule: %s %g, %s)",
                event["rule"], event["status"], event["model"], event["version"], event["metric"],
                "(no value)" if value is None else f"{value:.6g}", event["comparator"], event["threshold"],
                event["severity"],
                extra={"event": f"alert.{event['status']}", "model": event["model"], "version": event["version"],
                       "fields": {k: v for k, v in event.items() if k not in ("model", "version", "status")}
                       | {"alert_status": event["status"]}})
        if self._emit is not None:
            try:
                self._emit(event)
            except Exception:  # telemetry never hurts
                log.exception("alert event export failed", extra={"event": "alert.export_failed"})
        if self.webhook is not None:
            self.webhook.send(event)

    def _run(self) -> None:
        every = self.settings.evaluate_every_s
        while not self._stop.wait(every):
            try:
                self.evaluate_now()
            except Exception:  # never let a bad read end the thread
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.exception("alert evaluation failed (%d so far)", self.errors,
                                  extra={"event": "alert.evaluation_failed"})
