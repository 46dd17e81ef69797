"""The core's whole API for protocol adapters: infer, liveness, readiness, model readiness and
metadata, the repository index, statistics and delayed labels (``feedback``) — all in plain
types (:mod:`gateway.api`).

:meth:`DataPlane.infer` runs the pipeline (:mod:`.pipeline`) and then tells every request
observer, once, whatever the outcome. A request whose deadline passed ends DEADLINE_EXCEEDED,
also when its answer came too late or its protocol cancelled it for the deadline
(:func:`gateway.policy.deadlines.ran_out`); cancelled sooner, it ends CANCELLED. Nothing here
knows a wire protocol.

Memory: the request payload bytes admitted and not yet answered (``inflight_bytes``) are
bounded by ``max_inflight_bytes``; a request that would pass it is refused with
RESOURCE_EXHAUSTED and a retry delay before it is queued, batched or run.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from ..api import (
    BatchingInfo,
    GatewayError,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelSummary,
    Status,
    VersionState,
    invalid,
)
from ..api.alerts import AlertList
from ..api.history import MAX_HISTORY_EVENTS_PER_CALL, HistoryEvent
from ..api.feedback import MAX_LABELS_PER_CALL, FeedbackLabel, FeedbackResult, Outcome
from ..api.stats import MAX_WINDOW_S, ModelStatsSnapshot, Statistics
from ..policy import deadlines
from ..policy.reasons import FallbackReason
from .context import NO_ATTEMPT, Attempt
from .observers import Decisions, RequestObserver
from .pipeline import Pipeline, Served
from .registry import ModelRegistry, ModelVersion, version_key
from .rejections import Rejections, added
from .shadow import Shadowing

log = logging.getLogger("gateway.core")

StatsSource = Callable[[float], Statistics]


class FeedbackSink(Protocol):
    """Where delayed labels go (``gateway.monitoring.labels.PredictionStore``)."""

    def join_many(self, labels: Sequence[FeedbackLabel]) -> list[Outcome]: ...


FEEDBACK_CHUNK = 1000  # labels joined between yields to the event loop (~1-2 ms)

# Requests at least this large feed (answered OK) the estimate of how long payload bytes stay
# in flight (the retry delay given to a request refused for bytes; small ones would only dilute
# it) and are counted in ``large_payload_bytes`` / ``large_failed_bytes`` (what the composition
# root's memory return watches).
LARGE_REQUEST_BYTES = 1 << 20
_RETRY_AFTER_MS = (10, 5000, 100)  # least, most, before any large request has been answered


class DataPlane:
    """Built by the composition root (``gateway.app``) with everything it calls passed in."""

    def __init__(self, registry: ModelRegistry, *, observers: tuple[RequestObserver, ...] = (),
                 decisions: Decisions | None = None, statistics: StatsSource | None = None,
                 max_inflight_bytes: int = 0, feedback: FeedbackSink | None = None,
                 alerts: Callable[[], AlertList] | None = None,
                 history: Callable[[str, int], list[HistoryEvent]] | None = None,
                 shadowing: Shadowing | None = None,
                 on_labels: Callable[[Sequence[FeedbackLabel]], None] | None = None) -> None:
        self.registry = registry
        self.shadowing = shadowing or Shadowing()
        self._pipeline = Pipeline(registry, decisions or Decisions(), self.shadowing)
        self._observers = observers
        self._statistics = statistics
        self._feedback = feedback
        self._alerts = alerts
        self._history = history
        self._on_labels = on_labels  # the capture's (labels of captured requests are written too)
        self._accepting = False
        self.in_flight = 0
        self.max_inflight_bytes = max_inflight_bytes  # 0: no bound
        self.inflight_bytes = 0
        self.large_payload_bytes = 0  # answered so far, admitted or not (monotonic)
        self.large_failed_bytes = 0   # of those, answered with an error
        self._large_request_ms = float(_RETRY_AFTER_MS[2])  # moving average, see LARGE_REQUEST_BYTES
        self.rejections = Rejections(self._as_counted)

    # -- inference ------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResponse:
        if not request.request_id or not request.t_received_ns:
            request = request._replace(request_id=request.request_id or uuid.uuid4().hex,
                                       t_received_ns=request.t_received_ns or time.monotonic_ns())
        status = Status.OK
        served: Served | None = None
        fallback_code = 0  # policy.reasons.FallbackReason
        attempts: list[Attempt] = []
        payload = request.payload_bytes
        admitted = 0
        self.in_flight += 1
        try:
            limit = self.max_inflight_bytes
            if limit and self.inflight_bytes + payload > limit:
                raise self._over_inflight_bytes(payload, limit)
            self.inflight_bytes += payload
            admitted = payload
            served = await self._pipeline.run(request, attempts)
            fallback_code = served.fallback_code
            now_ns = time.monotonic_ns()
            if request.deadline_ns and now_ns >= request.deadline_ns:
                # The client has given up by now (its deadline is no later than this one): the
                # protocol ends the call as DEADLINE_EXCEEDED whatever is sent, so that is the answer.
                raise GatewayError(Status.DEADLINE_EXCEEDED, f"deadline passed while the request was "
                                   f"served: {served.response.served_by} answered "
                                   f"{(now_ns - request.deadline_ns) / 1e6:.1f} ms after it", reason="deadline")
            return served.response
        except GatewayError as exc:
            status = exc.status
            fallback_code = getattr(exc, "fallback_code", 0)
            self.rejections.count(request.model, request.version, exc,
                                  FallbackReason(fallback_code).label if fallback_code else "")
            raise
        except asyncio.CancelledError:
            # The protocol cancels a call its client left: cancelled, or out of time (a client's
            # deadline resets the call just as a cancel does, see deadlines.ran_out).
            status = (Status.DEADLINE_EXCEEDED
                      if deadlines.ran_out(request.deadline_ns, request.t_received_ns, time.monotonic_ns())
                      else Status.CANCELLED)
            raise
        except Exception as exc:  # a bug, not the client's fault: still one terminal answer
            log.exception("request %s failed unexpectedly", request.request_id)
            status = Status.INTERNAL
            error = GatewayError(Status.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            self.rejections.count(request.model, request.version, error)
            raise error from exc
        finally:
            self.in_flight -= 1
            self.inflight_bytes -= admitted
            t_responded_ns = time.monotonic_ns()
            if payload >= LARGE_REQUEST_BYTES:
                self.large_payload_bytes += payload
                if status is not Status.OK:
                    self.large_failed_bytes += payload
                elif admitted:
                    held_ms = (t_responded_ns - request.t_received_ns) / 1e6
                    self._large_request_ms += 0.25 * (held_ms - self._large_request_ms)
            if served is not None:
                response: InferResponse | None = served.response if status is Status.OK else None
                attempt = served.attempt or _timeline(attempts)
            else:
                response, attempt = None, _timeline(attempts)
            for observer in self._observers:
                try:
                    observer.on_answer(request, attempt, status, response, fallback_code, t_responded_ns)
                except Exception:  # observers observe: a failing one never changes the answer
                    log.exception("request observer %r failed", observer)

    def refused(self, model: str, error: GatewayError) -> None:
        """Count a request its protocol adapter refused before it reached :meth:`infer` (its
        bytes did not parse, a tensor could not be decoded): ``model`` as the request named it
        ("" when it could not be read)."""
        self.rejections.count(model, "", error)

    def _as_counted(self, model: str, version: str) -> tuple[str, str]:
        entry = self.registry.get(model) if model else None
        if entry is None:
            return "", ""
        return model, version if version in entry.versions else ""

    def _over_inflight_bytes(self, payload: int, limit: int) -> GatewayError:
        """Retry after about the time a large request has been taking to answer: the bytes in
        flight are held by such requests (small ones alone rarely reach the bound)."""
        least, most, _ = _RETRY_AFTER_MS
        retry_ms = int(min(most, max(least, self._large_request_ms)))
        return GatewayError(Status.RESOURCE_EXHAUSTED,
                            f"{self.inflight_bytes} bytes of request payload are in flight and this "
                            f"request's {payload} would pass max_inflight_bytes ({limit}); retry in "
                            f"{retry_ms} ms", retry_after_ms=retry_ms, reason="inflight_bytes")

    # -- health -----------------------------------------------------------------------------
    def set_accepting(self, accepting: bool) -> None:
        """The composition root says when the server has started and when it drains."""
        self._accepting = accepting

    def live(self) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        """Ready: started, at least one model version loaded, not draining."""
        if not self._accepting:
            return False, "not ready: starting or draining"
        if not any(e.versions for e in self.registry.entries()):
            return False, "not ready: no model loaded"
        return True, "ready"

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.registry.resolve(name, version)
        except GatewayError:
            return False
        return True

    # -- metadata ---------------------------------------------------------------------------
    def repository_index(self) -> list[ModelSummary]:
        out = []
        for entry in self.registry.entries():
            latest = entry.latest
            out.append(ModelSummary(
                name=entry.name, versions=tuple(sorted(entry.versions, key=version_key)),
                latest_version=latest or "", state=entry.state, error=entry.describe_errors(),
                execution_provider=entry.versions[latest].model.provider if latest else ""))
        return out

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """Raises NOT_FOUND / UNAVAILABLE as inference would."""
        target = self.registry.resolve(name, version)
        entry = self.registry.get(name)
        model = target.model
        versions = tuple(sorted(entry.versions, key=version_key)) if entry is not None else (target.version,)
        return ModelMetadata(
            name=target.name, version=target.version, versions=versions, platform="onnxruntime",
            execution_provider=model.provider, inputs=tuple(model.inputs), outputs=tuple(model.outputs),
            max_batch_size=model.max_batch_size, labels=target.labels,
            state=entry.state if entry is not None else "READY", batching=_batching(target),
            instance_count=target.batcher.instance_count)

    def version_states(self) -> list[VersionState]:
        """Queue depth, breaker state and admission limit of every loaded version."""
        out = []
        for entry in self.registry.entries():
            for mv in list(entry.versions.values()):
                policy = mv.policy
                breaker = policy.breaker
                out.append(VersionState(mv.name, mv.version, mv.batcher.queue_depth,
                                        breaker.state.value if breaker is not None else None,
                                        policy.admission.limit()))
        return out

    # -- statistics -------------------------------------------------------------------------
    async def statistics(self, window_s: float, model: str = "") -> Statistics:
        """Live per-model statistics over the last ``window_s`` (computed off the event loop).

        INVALID_ARGUMENT for a window that is not in (0, MAX_WINDOW_S] seconds (a fraction
        rounds up to whole seconds), NOT_FOUND for a ``model`` the registry does not hold."""
        if not 0 < window_s <= MAX_WINDOW_S:  # (also NaN)
            raise invalid(f"window_s must be more than 0 and at most {MAX_WINDOW_S} seconds, got {window_s:g}")
        if self._statistics is None:
            raise GatewayError(Status.FAILED_PRECONDITION, "telemetry is disabled (telemetry.enabled=false)")
        if model and self.registry.get(model) is None:
            self.registry.resolve(model)  # raises the NOT_FOUND a request naming it gets
        stats = await asyncio.get_running_loop().run_in_executor(None, self._statistics, window_s)
        models: list[ModelStatsSnapshot] = [s for s in stats.models if not model or s.model == model]
        shadow = tuple(s for s in self.shadowing.snapshot() if not model or s.primary.split("@")[0] == model)
        # (``stats.rejected``: the other workers' tallies, where this is one of several)
        others = tuple(r for r in stats.rejected if not model or r.model == model)
        rejected = added(self.rejections.snapshot(model), others)
        return dataclasses.replace(stats, models=models, rejected=rejected, shadow=shadow)

    # -- version history --------------------------------------------------------------------
    def history(self, model: str = "", limit: int = 100) -> list[HistoryEvent]:
        """The newest ``limit`` version-history events (of ``model``), newest first.
        INVALID_ARGUMENT for a limit outside [1, MAX_HISTORY_EVENTS_PER_CALL]; FAILED_PRECONDITION
        where the gateway keeps none."""
        if not 1 <= limit <= MAX_HISTORY_EVENTS_PER_CALL:
            raise invalid(f"limit must be in 1..{MAX_HISTORY_EVENTS_PER_CALL}, got {limit}")
        if self._history is None:
            raise GatewayError(Status.FAILED_PRECONDITION, "this gateway keeps no version history")
        return self._history(model, limit)

    # -- alerts -----------------------------------------------------------------------------
    def alerts(self, model: str = "") -> AlertList:
        """The alerts firing now (``model``: only its versions'). FAILED_PRECONDITION where no
        rules are evaluated (``alerts.enabled: false``, or telemetry off)."""
        if self._alerts is None:
            raise GatewayError(Status.FAILED_PRECONDITION, "alerting is off (alerts.enabled=false or "
                               "telemetry.enabled=false)")
        listing = self._alerts()
        if model:
            listing = AlertList([a for a in listing.alerts if a.model == model], listing.rules,
                                listing.pending, listing.untracked)
        return listing

    # -- delayed labels ---------------------------------------------------------------------
    async def feedback(self, labels: Sequence[FeedbackLabel]) -> FeedbackResult:
        """Join each label to the answer its request id names; counts of what became of them.

        A label with an empty request id, or with no truth or more than one, is invalid (the
        others still count). INVALID_ARGUMENT for more than MAX_LABELS_PER_CALL labels (none
        is joined); FAILED_PRECONDITION where the gateway keeps no answers for labels."""
        if self._feedback is None:
            raise GatewayError(Status.FAILED_PRECONDITION, "feedback is off: this gateway keeps no answers to join "
                               "labels to (feedback_store_entries=0)")
        if len(labels) > MAX_LABELS_PER_CALL:
            raise invalid(f"{len(labels)} labels in one call, more than the {MAX_LABELS_PER_CALL} allowed")
        if self._on_labels is not None:
            try:
                self._on_labels(labels)
            except Exception:  # the capture observes: it never changes the answer
                log.exception("label capture failed")
        outcomes: list[Outcome] = []
        for start in range(0, len(labels), FEEDBACK_CHUNK):
            if start:
                await asyncio.sleep(0)  # (a long call does not hold the loop)
            chunk = labels[start:start + FEEDBACK_CHUNK]
            formed = [label for label in chunk if _well_formed(label)]
            joined = iter(self._feedback.join_many(formed))
            outcomes.extend(next(joined) if _well_formed(label) else Outcome.INVALID for label in chunk)
        return FeedbackResult.of(outcomes)


def _batching(mv: ModelVersion) -> BatchingInfo | None:
    batcher = mv.batcher
    if not batcher.batching:
        return None
    return BatchingInfo(batcher.max_queue_delay_us, batcher.preferred_batch_sizes, batcher.max_queue_size)


def _well_formed(label: FeedbackLabel) -> bool:
    return bool(label.request_id) and \
        (label.label is not None) + (label.index is not None) + (label.target is not None) == 1


def _timeline(attempts: list[Attempt]) -> Attempt:
    """The attempt whose timeline a request's record carries when no model attempt answered
    (a cache or static answer, a rejection): the last one that reached a model, else the
    attempt at the model asked for (its version is the one the request counts for)."""
    for attempt in reversed(attempts):
        if attempt.t_enqueued_ns:
            return attempt
    return attempts[0] if attempts else NO_ATTEMPT
