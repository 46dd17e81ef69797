"""The order policies are applied in, for one request to one model version.

deadline → circuit breaker → admission → the model (under the attempt deadline) → output
guard; a failure of any of them, if the model's ``fallback.on`` lists its reason, walks
the fallback chain; when no step answers, the request is rejected with the status of the
first failure (RESOURCE_EXHAUSTED or UNAVAILABLE with a retry pushback where a retry
makes sense).

Client errors (bad input, unknown model) and cancellations are never turned into
fallbacks, and the chain is not walked once the client's deadline has passed.
"""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from ..core.errors import GatewayError, Status
from ..core.types import InferRequest, InferResponse
from . import deadlines
from .events import decision
from .fallback import input_key
from .reasons import FallbackReason

Attempt = Callable[[object, InferRequest], Awaitable[InferResponse]]

_CLIENT_ERRORS = frozenset({Status.INVALID_ARGUMENT, Status.NOT_FOUND, Status.FAILED_PRECONDITION})


class PolicyRejection(GatewayError):
    """The final answer when no fallback step answered; ``reason`` says which failure it was."""

    def __init__(self, status: Status, message: str, *, reason: FallbackReason, retry_after_ms: int | None = None):
        super().__init__(status, message, retry_after_ms=retry_after_ms)
        self.reason = reason
        self.fallback_code = int(reason)


class _Failed(Exception):
    def __init__(self, reason: FallbackReason, error: GatewayError):
        super().__init__(error.message)
        self.reason = reason
        self.error = error


class PolicyRunner:
    def __init__(self, registry, attempt: Attempt):
        self.registry = registry
        self._attempt = attempt

    async def serve(self, target, request: InferRequest) -> InferResponse:
        policy = target.policy
        if policy is None or policy.passthrough:
            return await self._attempt(target, request)
        overall_ns = deadlines.client_deadline_ns(policy.config.deadlines, request.deadline_ns,
                                                  request.t_received_ns or time.monotonic_ns())
        request.deadline_ns = overall_ns
        try:
            response = await self._guarded(target, request, overall_ns)
        except _Failed as exc:
            failure = exc
        else:
            if policy.cache is not None:
                policy.cache.put(input_key(request.inputs, request.output_names),
                                 {k: v.copy() for k, v in response.outputs.items()},
                                 (response.confidence, response.predicted_label))
            return response
        return await self._fall_back(target, request, overall_ns, failure)

    async def _guarded(self, target, request: InferRequest, overall_ns: int) -> InferResponse:
        """One model version under its own deadline, breaker, admission and guard (never its chain)."""
        policy = target.policy
        served_by = target.served_by
        start_ns = time.monotonic_ns()
        if deadlines.expired(overall_ns, start_ns):
            raise _Failed(FallbackReason.TIMEOUT, GatewayError(
                Status.DEADLINE_EXCEEDED, f"model {served_by}: deadline passed before the request was queued"))
        breaker = admission = None
        attempt_ns = overall_ns
        if policy is not None:
            breaker = policy.breaker
            if breaker is not None and not breaker.try_acquire():
                raise _Failed(FallbackReason.CIRCUIT_OPEN, GatewayError(
                    Status.UNAVAILABLE, f"model {served_by}: circuit breaker is open",
                    retry_after_ms=breaker.retry_after_ms()))
            admission = policy.admission if policy.admission.enabled else None
            if admission is not None and not admission.try_acquire(target.batcher.queue_depth):
                if breaker is not None:
                    breaker.release()
                raise _Failed(FallbackReason.OVERLOADED, GatewayError(
                    Status.RESOURCE_EXHAUSTED, f"model {served_by}: overloaded ({admission.in_flight} in flight, "
                    f"limit {admission.limit()}, {target.batcher.queue_depth} queued)",
                    retry_after_ms=admission.config.retry_after_ms))
            attempt_ns = deadlines.attempt_deadline_ns(policy.config.deadlines, overall_ns, start_ns)
        in_flight_at_start = admission.in_flight if admission is not None else 0
        failed: bool | None = None  # None: no verdict for the breaker (shed, cancelled, client error)
        learn = False
        request.deadline_ns = attempt_ns
        try:
            try:
                if attempt_ns:
                    response = await _within(self._attempt(target, request), attempt_ns)
                else:
                    response = await self._attempt(target, request)
            except asyncio.TimeoutError:
                failed = learn = True
                raise _Failed(FallbackReason.TIMEOUT, GatewayError(
                    Status.DEADLINE_EXCEEDED, f"model {served_by}: no answer within "
                    f"{(attempt_ns - start_ns) / 1e6:.0f} ms")) from None
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
            guard = policy.guard if policy is not None else None
            problem = guard.check(response.outputs) if guard is not None else None
            if problem is not None:
                failed = True
                raise _Failed(FallbackReason.INVALID_OUTPUT,
                              GatewayError(Status.UNAVAILABLE, f"model {served_by}: invalid output: {problem}"))
            failed = False
            learn = True
            return response
        finally:
            request.deadline_ns = overall_ns
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

    async def _fall_back(self, target, request: InferRequest, overall_ns: int, failure: _Failed) -> InferResponse:
        policy = target.policy
        reason = failure.reason
        label = reason.label
        rid = request.request_id
        decision(rid, "fallback.triggered", model=target.served_by, reason=label, error=failure.error.message)
        if label in policy.fallback_on and not deadlines.expired(overall_ns, time.monotonic_ns()):
            for index, (kind, step) in enumerate(policy.chain):
                if deadlines.expired(overall_ns, time.monotonic_ns()):
                    decision(rid, "fallback.deadline", model=target.served_by, step=index)
                    break
                response = await self._step(target, request, overall_ns, kind, step, index)
                if response is not None:
                    response.model = target.name
                    response.version = target.version
                    response.degraded = True
                    response.fallback_reason = label
                    policy.fallbacks[label] += 1
                    decision(rid, "fallback.answered", model=target.served_by, reason=label, step=index,
                             served_by=response.served_by)
                    return response
        policy.rejections[label] += 1
        decision(rid, "fallback.rejected", model=target.served_by, reason=label)
        raise _rejection(failure, bool(policy.chain), overall_ns)

    async def _step(self, target, request: InferRequest, overall_ns: int, kind: str, step, index: int):
        rid = request.request_id
        policy = target.policy
        if kind == "cache":
            found = policy.cache.get(input_key(request.inputs, request.output_names))
            if found is None:
                decision(rid, "fallback.step_missed", model=target.served_by, step=index, kind="cache")
                return None
            outputs, (confidence, labels) = found
            return InferResponse(request_id=rid, model=target.name, version=target.version, outputs=dict(outputs),
                                 served_by="cache", confidence=confidence, predicted_label=list(labels))
        if kind == "static":
            outputs = step.answer.outputs(request.rows, request.output_names)
            if outputs is None:
                decision(rid, "fallback.step_missed", model=target.served_by, step=index, kind="static")
                return None
            response = InferResponse(request_id=rid, model=target.name, version=target.version,
                                     outputs=outputs, served_by="static")
            if step.confidence is not None:
                import numpy as np

                rows = request.rows if step.answer.batchable else 1
                response.confidence = np.full(rows, step.confidence, dtype=np.float32)
                response.predicted_label = [step.label] * rows
            return response
        try:
            alt = self.registry.resolve(step.model, step.version)
        except GatewayError as exc:
            decision(rid, "fallback.step_missed", model=target.served_by, step=index, kind="model",
                     error=exc.message)
            return None
        if alt is target:
            return None
        try:
            return await self._guarded(alt, request, overall_ns)
        except _Failed as exc:
            decision(rid, "fallback.step_failed", model=target.served_by, step=index, kind="model",
                     served_by=alt.served_by, reason=exc.reason.label, error=exc.error.message)
        except GatewayError as exc:  # e.g. the fallback model takes other inputs
            decision(rid, "fallback.step_failed", model=target.served_by, step=index, kind="model",
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
    return PolicyRejection(Status.UNAVAILABLE, err.message + suffix, reason=reason)
