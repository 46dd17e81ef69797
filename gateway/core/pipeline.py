"""The order of the stages for one request, top to bottom.

route → validate → deadline → outlier gate (the model asked for only) → (for the model asked
for, then each model step of its fallback chain:) breaker → admission → attempt (batcher, under the attempt's deadline share)
→ output guard → fallback walk. The policy objects (:mod:`gateway.policy`) only decide
(may this call go? does this output pass? how long may it take?); everything is called from
here and nothing calls back up.

A failure of the model asked for walks its fallback chain when the model's ``fallback.on``
lists its reason; when no step answers, the request is rejected with the status of the first
failure (RESOURCE_EXHAUSTED or UNAVAILABLE with a retry pushback where a retry makes sense).
Client errors (bad input, unknown model) and cancellations never turn into fallbacks, and the
chain is not walked once the client's deadline has passed.
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, cast

from ..api import GatewayError, InferRequest, InferResponse, Status
from ..policy import deadlines
from ..policy.fallback import input_key
from ..policy.reasons import FallbackReason
from .context import Attempt
from .observers import Decisions
from .registry import ModelRegistry, ModelVersion
from .shadow import Shadowing
from .validation import validate

if TYPE_CHECKING:
    from ..policy.fallback import ResponseCache

_CLIENT_ERRORS = frozenset({Status.INVALID_ARGUMENT, Status.NOT_FOUND, Status.FAILED_PRECONDITION})


class PolicyRejection(GatewayError):
    """The final answer when no fallback step answered; ``fallback_code`` (and ``reason``, its
    label) says which failure it was."""

    def __init__(self, status: Status, message: str, *, reason: FallbackReason, retry_after_ms: int | None = None):
        super().__init__(status, message, retry_after_ms=retry_after_ms, reason=reason.label)
        self.fallback_code = int(reason)


class _Failed(Exception):
    """An attempt failed for a reason the fallback chain may answer."""

    def __init__(self, reason: FallbackReason, error: GatewayError):
        super().__init__(error.message)
        self.reason = reason
        self.error = error


class Served:
    """The pipeline's result: the response, the model attempt that produced it (None for a
    cache or static answer) and the fallback reason code (0: not degraded)."""

    __slots__ = ("response", "attempt", "fallback_code")

    def __init__(self, response: InferResponse, attempt: Attempt | None, fallback_code: int = 0) -> None:
        self.response = response
        self.attempt = attempt
        self.fallback_code = fallback_code


class Pipeline:
    def __init__(self, registry: ModelRegistry, decisions: Decisions, shadowing: Shadowing | None = None) -> None:
        self.registry = registry
        self._decide = decisions
        self.shadowing = shadowing

    async def run(self, request: InferRequest, attempts: list[Attempt]) -> Served:
        """Serve ``request``; every attempt made is appended to ``attempts`` (the last one
        answered, when one did)."""
        target = self.registry.resolve(request.model, request.version, request.routing_key)  # route
        primary = Attempt(target.served_by, target.telemetry_id)
        attempts.append(primary)
        model = target.model
        primary.rows = validate(request, model.inputs, model.input_by_name, model.output_names,  # validate
                                target.served_by, model.batchable)
        policy = target.policy
        if policy.passthrough:
            primary.deadline_ns = request.deadline_ns
            if primary.deadline_ns and primary.deadline_ns <= time.monotonic_ns():
                raise GatewayError(Status.DEADLINE_EXCEEDED,
                                   f"model {target.served_by}: deadline passed before queueing", reason="deadline")
            served = Served(await self._attempt(target, request, primary), primary)
            self._mirror(target, request, served.response)
            return served
        overall_ns = deadlines.client_deadline_ns(policy.config.deadlines, request.deadline_ns,  # deadline
                                                  request.t_received_ns or time.monotonic_ns())
        try:
            gate = policy.outliers                                                    # outlier gate
            why = gate.check(request.inputs) if gate is not None else None
            if why is not None:
                raise _Failed(FallbackReason.OUTLIER, GatewayError(
                    Status.FAILED_PRECONDITION, f"model {target.served_by}: {why}"))
            response = await self._guarded(target, request, primary, overall_ns)
        except _Failed as failure:
            return await self._fall_back(target, request, primary.rows, overall_ns, failure, attempts)
        if policy.cache is not None:
            policy.cache.put(input_key(request.inputs, request.output_names),
                             {k: v.copy() for k, v in response.outputs.items()},
                             (response.confidence, response.predicted_label))
        self._mirror(target, request, response)
        return Served(response, primary)

    def _mirror(self, target: ModelVersion, request: InferRequest, response: InferResponse) -> None:
        """Shadow traffic: decided here, run off the response path (gateway.core.shadow)."""
        if self.shadowing is not None:
            candidates = self.registry.shadows(target.name)
            if candidates:
                self.shadowing.mirror(target, candidates, request, response)

    async def _attempt(self, target: ModelVersion, request: InferRequest, attempt: Attempt) -> InferResponse:
        """One pass through the model's batcher; the classifier head's answer rides along."""
        result = await target.batcher.submit(request, attempt)
        outputs = result.outputs
        if request.output_names:
            outputs = {name: outputs[name] for name in request.output_names}
        response = InferResponse(request_id=request.request_id, model=target.name, version=target.version,
                                 outputs=outputs, served_by=target.served_by)
        if result.confidence is not None and target.head is not None:
            response.confidence = result.confidence
            response.predicted_label = target.head.label_of(result.classes)
        return response

    async def _guarded(self, target: ModelVersion, request: InferRequest, attempt: Attempt,
                       overall_ns: int) -> InferResponse:
        """One model version under its own deadline share, breaker, admission and guard."""
        policy = target.policy
        served_by = target.served_by
        start_ns = time.monotonic_ns()
        if deadlines.expired(overall_ns, start_ns):
            raise _Failed(FallbackReason.TIMEOUT, GatewayError(
                Status.DEADLINE_EXCEEDED, f"model {served_by}: deadline passed before the request was queued"))
        breaker = policy.breaker                                                      # breaker
        if breaker is not None and not breaker.try_acquire():
            raise _Failed(FallbackReason.CIRCUIT_OPEN, GatewayError(
                Status.UNAVAILABLE, f"model {served_by}: circuit breaker is open",
                retry_after_ms=breaker.retry_after_ms()))
        admission = policy.admission if policy.admission.enabled else None            # admission
        queued = target.batcher.queue_depth
        if admission is not None and not admission.try_acquire(queued):
            if breaker is not None:
                breaker.release()
            raise _Failed(FallbackReason.OVERLOADED, GatewayError(
                Status.RESOURCE_EXHAUSTED, f"model {served_by}: overloaded ({admission.in_flight} in flight, "
                f"limit {admission.limit()}, {queued} queued)", retry_after_ms=admission.config.retry_after_ms))
        attempt.deadline_ns = deadlines.attempt_deadline_ns(policy.config.deadlines, overall_ns, start_ns)
        in_flight_at_start = admission.in_flight if admission is not None else 0
        failed: bool | None = None  # None: no verdict for the breaker (shed, cancelled, client error)
        learn = False
        try:
            try:                                                                      # attempt
                if attempt.deadline_ns:
                    response = await _within(self._attempt(target, request, attempt), attempt.deadline_ns)
                else:
                    response = await self._attempt(target, request, attempt)
            except asyncio.TimeoutError:
                failed = learn = True
                raise _Failed(FallbackReason.TIMEOUT, GatewayError(
                    Status.DEADLINE_EXCEEDED, f"model {served_by}: no answer within "
                    f"{(attempt.deadline_ns - start_ns) / 1e6:.0f} ms")) from None
            except GatewayError as exc:
                if exc.status in _CLIENT_ERRORS:
                    raise
                if exc.status == Status.DEADLINE_EXCEEDED:  # dropped from the queue by the batcher
                    failed = learn = True
                    raise _Failed(FallbackReason.TIMEOUT, exc) from None
                if exc.status == Status.RESOURCE_EXHAUSTED:  # the batcher's queue is full
                    raise _Failed(FallbackReason.OVERLOADED, exc) from None
                failed = True
                raise _Failed(FallbackReason.ERROR, exc) from None
            guard = policy.guard                                                      # guard
            problem = guard.check(response.outputs) if guard is not None else None
            if problem is not None:
                failed = True
                raise _Failed(FallbackReason.INVALID_OUTPUT,
                              GatewayError(Status.UNAVAILABLE, f"model {served_by}: invalid output: {problem}"))
            failed = False
            learn = True
            return response
        finally:
            elapsed_s = (time.monotonic_ns() - start_ns) / 1e9
            if breaker is not None:
                if failed is None:
                    breaker.release()
                elif failed:
                    breaker.on_error(elapsed_s)
                else:
                    breaker.on_success(elapsed_s)
            if admission is not None:
                admission.release(elapsed_s if learn else None, in_flight_at_start)

    async def _fall_back(self, target: ModelVersion, request: InferRequest, rows: int, overall_ns: int,
                         failure: _Failed, attempts: list[Attempt]) -> Served:
        """Walk the chain in order; the first step that answers is the (degraded) answer."""
        policy = target.policy
        reason = failure.reason
        label = reason.label
        decide = self._decide
        decide(request, "fallback.triggered", model=target.served_by, reason=label, error=failure.error.message)
        walk = label in policy.fallback_on and not deadlines.expired(overall_ns, time.monotonic_ns())
        if walk:
            for index, (kind, step) in enumerate(policy.chain):
                if deadlines.expired(overall_ns, time.monotonic_ns()):
                    decide(request, "fallback.deadline", model=target.served_by, step=index)
                    break
                attempt: Attempt | None = None
                if kind == "cache":
                    response = self._cached(target, request, index)
                elif kind == "static":
                    response = self._static(target, request, rows, step, index)
                else:
                    answered = await self._model_step(target, request, overall_ns, step, index, attempts)
                    response, attempt = answered if answered is not None else (None, None)
                if response is not None:
                    response.model = target.name
                    response.version = target.version
                    response.degraded = True
                    response.fallback_reason = label
                    policy.fallbacks[label] += 1
                    decide(request, "fallback.answered", model=target.served_by, reason=label, step=index,
                           served_by=response.served_by)
                    return Served(response, attempt, int(reason))
        policy.rejections[label] += 1
        decide(request, "fallback.rejected", model=target.served_by, reason=label)
        raise _rejection(failure, walk and bool(policy.chain), overall_ns)

    def _cached(self, target: ModelVersion, request: InferRequest, index: int) -> InferResponse | None:
        cache = cast("ResponseCache", target.policy.cache)  # (a cache step exists only with a cache)
        found = cache.get(input_key(request.inputs, request.output_names))
        if found is None:
            self._decide(request, "fallback.step_missed", model=target.served_by, step=index,
                         kind="cache")
            return None
        outputs, (confidence, labels) = found
        return InferResponse(request_id=request.request_id, model=target.name, version=target.version,
                             outputs=dict(outputs), served_by="cache", confidence=confidence,
                             predicted_label=list(labels))

    def _static(self, target: ModelVersion, request: InferRequest, rows: int, answer, index: int):
        outputs = answer.outputs(rows, request.output_names)
        if outputs is None:
            self._decide(request, "fallback.step_missed", model=target.served_by, step=index,
                         kind="static")
            return None
        response = InferResponse(request_id=request.request_id, model=target.name, version=target.version,
                                 outputs=outputs, served_by="static")
        if target.head is not None:
            response.confidence, response.predicted_label = target.head.answer(outputs)
        return response

    async def _model_step(self, target: ModelVersion, request: InferRequest, overall_ns: int, step,
                          index: int, attempts: list[Attempt]) -> tuple[InferResponse, Attempt] | None:
        try:
            alt = self.registry.resolve(step.model, step.version)
        except GatewayError as exc:
            self._decide(request, "fallback.step_missed", model=target.served_by, step=index, kind="model",
                         error=exc.message)
            return None
        if alt is target:
            return None
        attempt = Attempt(alt.served_by, alt.telemetry_id)
        attempts.append(attempt)
        try:
            model = alt.model
            attempt.rows = validate(request, model.inputs, model.input_by_name, model.output_names,
                                    alt.served_by, model.batchable)
            return await self._guarded(alt, request, attempt, overall_ns), attempt
        except _Failed as exc:
            self._decide(request, "fallback.step_failed", model=target.served_by, step=index, kind="model",
                         served_by=alt.served_by, reason=exc.reason.label, error=exc.error.message)
        except GatewayError as exc:  # e.g. the fallback model takes other inputs
            self._decide(request, "fallback.step_failed", model=target.served_by, step=index, kind="model",
                         served_by=alt.served_by, error=exc.message)
        return None


async def _within(coro, deadline_ns: int):
    """Await ``coro`` until the monotonic deadline; cancelling it (and its queue slot) after."""
    remaining_s = (deadline_ns - time.monotonic_ns()) / 1e9
    if sys.version_info >= (3, 11):
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + remaining_s):
            return await coro
    return await asyncio.wait_for(coro, max(0.0, remaining_s))  # pragma: no cover - Python 3.10


def _rejection(failure: _Failed, chain_tried: bool, overall_ns: int) -> PolicyRejection:
    err = failure.error
    reason = failure.reason
    suffix = "; no fallback step could answer" if chain_tried else ""
    if reason is FallbackReason.TIMEOUT or deadlines.expired(overall_ns, time.monotonic_ns()):
        return PolicyRejection(Status.DEADLINE_EXCEEDED, err.message + suffix, reason=reason)
    if reason is FallbackReason.OVERLOADED:
        return PolicyRejection(Status.RESOURCE_EXHAUSTED, err.message + suffix, reason=reason,
                               retry_after_ms=err.retry_after_ms)
    if reason is FallbackReason.CIRCUIT_OPEN:
        return PolicyRejection(Status.UNAVAILABLE, err.message + suffix, reason=reason,
                               retry_after_ms=err.retry_after_ms)
    if reason is FallbackReason.OUTLIER:  # the same input would be refused again: no retry pushback
        return PolicyRejection(Status.FAILED_PRECONDITION, err.message + suffix, reason=reason)
    return PolicyRejection(Status.UNAVAILABLE, err.message + suffix, reason=reason)
