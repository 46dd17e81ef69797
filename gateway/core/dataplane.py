"""The one place a request goes through: routing → policy → validation → batching → response.

Protocol adapters call :meth:`DataPlane.infer`; the per-request telemetry record
is written here, once, whatever the outcome. The model version's policy (deadlines,
admission, breaker, guard, fallback chain: :mod:`gateway.policy`) wraps the attempt.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import numpy as np

from ..policy.reasons import FallbackReason
from ..policy.runner import PolicyRunner
from .batching import BatchResult
from .errors import GatewayError, Status
from .registry import ModelRegistry, ModelVersion
from .types import InferRequest, InferResponse
from .validation import validate

log = logging.getLogger("gateway.core")


class DataPlane:
    def __init__(self, registry: ModelRegistry, telemetry=None):
        self.registry = registry
        self.telemetry = telemetry
        self._unknown_id = telemetry.register_model("", "", inputs={}) if telemetry is not None else 0
        self._policies = PolicyRunner(registry, self._run)
        self.in_flight = 0
        self.traces = None      # telemetry.otel.traces.SpanPipeline: sampled requests only
        self.access_log = None  # logs.AccessLog when access logging is on

    async def infer(self, request: InferRequest) -> InferResponse:
        if not request.t_received_ns:
            request.t_received_ns = time.monotonic_ns()
        if not request.request_id:
            request.request_id = uuid.uuid4().hex
        status = Status.OK
        target: ModelVersion | None = None
        response: InferResponse | None = None
        fallback_code = 0  # policy.reasons.FallbackReason
        self.in_flight += 1
        if request.trace is not None and self.traces is not None:
            self.traces.begin(request)
        try:
            target = self.registry.resolve(request.model, request.version)
            response = await self._policies.serve(target, request)
            if response.degraded:
                fallback_code = int(FallbackReason.from_label(response.fallback_reason))
            return response
        except GatewayError as exc:
            status = exc.status
            fallback_code = getattr(exc, "fallback_code", 0)
            raise
        except asyncio.CancelledError:
            status = Status.CANCELLED
            raise
        except Exception as exc:  # a bug, not the client's fault: still one terminal answer
            log.exception("request %s failed unexpectedly", request.request_id)
            status = Status.INTERNAL
            raise GatewayError(Status.INTERNAL, f"internal error: {type(exc).__name__}: {exc}") from exc
        finally:
            self.in_flight -= 1
            t_responded_ns = time.monotonic_ns()
            if self.telemetry is not None:
                confidence = float(response.confidence[0]) if response is not None \
                    and response.confidence is not None and len(response.confidence) else float("nan")
                self.telemetry.record(
                    target.telemetry_id if target is not None else self._unknown_id,
                    request.t_received_ns, request.t_enqueued_ns, request.t_batch_ns,
                    request.t_compute_start_ns, request.t_compute_end_ns, t_responded_ns,
                    request.batch_size, request.rows, int(status),
                    bool(response.degraded) if response is not None else False, fallback_code,
                    confidence, request.payload_bytes, request.rpc)
            if request.trace is not None and self.traces is not None:
                self.traces.submit(request, status, response, fallback_code, t_responded_ns)
            if self.access_log is not None:
                self.access_log(request, status, response, t_responded_ns)

    async def _run(self, target: ModelVersion, request: InferRequest) -> InferResponse:
        model = target.model
        request.rows = validate(request, model.inputs, model.input_by_name, model.output_names,
                                target.served_by, model.batchable)
        if request.deadline_ns and request.deadline_ns <= time.monotonic_ns():
            raise GatewayError(Status.DEADLINE_EXCEEDED, f"model {target.served_by}: deadline passed before queueing")
        result: BatchResult = await target.batcher.submit(request, request.rows)
        outputs = result.outputs
        if request.output_names:
            outputs = {name: outputs[name] for name in request.output_names}
        response = InferResponse(request_id=request.request_id, model=target.name, version=target.version,
                                 outputs=outputs, served_by=target.served_by)
        top1 = result.extras.get("confidence")
        if top1 is not None:
            response.confidence = top1
            labels = model.config.labels
            classes = result.extras["predicted_class"]
            response.predicted_label = [labels[c] if 0 <= c < len(labels) else str(c) for c in classes.tolist()]
        return response


def confidence_observer(model, telemetry=None, telemetry_id: int = 0):
    """Per-batch hook run on the executor thread: input statistics, and top-1 confidence for classifiers."""
    output = model.classifier_output
    logits = bool(model.config.classifier and model.config.classifier.logits)

    def observe(feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if telemetry is not None:
            for name, batch in feeds.items():
                telemetry.observe_inputs(telemetry_id, name, batch)
        if output is None:
            return {}
        scores = outputs[output]
        if telemetry is not None:
            top1, cls = telemetry.observe_outputs(telemetry_id, scores)
        else:
            top1, cls = top1_numpy(scores, logits)
        return {"confidence": top1, "predicted_class": cls}

    return observe


def top1_numpy(scores: np.ndarray, logits: bool) -> tuple[np.ndarray, np.ndarray]:
    scores = scores.astype(np.float64, copy=False)
    if logits:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    cls = scores.argmax(axis=1)
    return scores[np.arange(len(scores)), cls].astype(np.float32), cls.astype(np.int64)
