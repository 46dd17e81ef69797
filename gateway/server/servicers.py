"""gateway.v1.Gateway: converts messages and calls the core. No decisions are made here."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc

from .._proto import gateway_pb2 as pb
from .._proto import gateway_pb2_grpc as pb_grpc
from ..core.dataplane import DataPlane
from ..core.errors import GatewayError, Status
from ..core.registry import version_key
from ..core.types import RPC_PREDICT, RPC_PREDICT_STREAM
from . import converters

log = logging.getLogger("gateway.server")


def _deadline_ns(context: grpc.aio.ServicerContext, now_ns: int) -> int:
    remaining = context.time_remaining()
    return 0 if remaining is None else now_ns + int(remaining * 1e9)


async def _abort(context: grpc.aio.ServicerContext, exc: GatewayError):
    if exc.retry_after_ms is not None:
        context.set_trailing_metadata((("grpc-retry-pushback-ms", str(exc.retry_after_ms)),))
    await context.abort(grpc.StatusCode[exc.status.name], exc.message)


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, dataplane: DataPlane, *, max_message_bytes: int):
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.telemetry = dataplane.telemetry
        self._max_bytes = max_message_bytes
        self.sampler = None  # telemetry.tracecontext.HeadSampler when traces are exported

    async def _predict(self, msg: pb.PredictRequest, context, rpc: int = RPC_PREDICT) -> pb.PredictResponse:
        now = time.monotonic_ns()
        request = converters.to_infer_request(msg, t_received_ns=now, deadline_ns=_deadline_ns(context, now),
                                              max_bytes=self._max_bytes)
        request.rpc = rpc
        if self.sampler is not None:
            request.trace = self.sampler.start(context.invocation_metadata(), rpc)
        response = await self.dataplane.infer(request)
        return converters.to_predict_response(response)

    async def Predict(self, request, context):
        try:
            return await self._predict(request, context)
        except GatewayError as exc:
            await _abort(context, exc)

    async def PredictStream(self, request_iterator, context):
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def answer(msg: pb.PredictRequest) -> None:
            try:
                resp = await self._predict(msg, context, RPC_PREDICT_STREAM)
                out = pb.PredictStreamResponse(request_id=resp.request_id, response=resp)
            except GatewayError as exc:
                out = pb.PredictStreamResponse(request_id=msg.request_id,
                                               error=pb.ErrorStatus(code=int(exc.status), message=exc.message))
            answers.put_nowait(out)

        async def read() -> int:
            count = 0
            async for msg in request_iterator:
                if not msg.request_id:  # answers are matched by id, so every request needs one
                    msg.request_id = _new_id()
                task = asyncio.create_task(answer(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                count += 1
            return count

        reader = asyncio.create_task(read())
        getter: asyncio.Future | None = None
        sent = 0
        try:
            while not reader.done():
                getter = asyncio.ensure_future(answers.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    sent += 1
                else:
                    getter.cancel()
            total = reader.result()  # re-raises a read error
            while sent < total:
                yield await answers.get()
                sent += 1
        finally:  # the client may have gone: leave nothing pending behind
            if getter is not None:
                getter.cancel()
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def ListModels(self, request, context):
        models = []
        for entry in self.registry.entries():
            latest = entry.latest
            provider = entry.versions[latest].model.provider if latest else ""
            models.append(pb.ModelSummary(
                name=entry.name, versions=sorted(entry.versions, key=version_key), latest_version=latest or "",
                state=entry.state, error=entry.describe_errors(), execution_provider=provider))
        return pb.ListModelsResponse(models=models)

    async def GetModel(self, request, context):
        try:
            target = self.registry.resolve(request.name, request.version)
        except GatewayError as exc:
            await _abort(context, exc)
        model = target.model
        entry = self.registry.get(request.name)
        return pb.ModelMetadata(
            name=target.name, version=target.version, versions=sorted(entry.versions, key=version_key),
            platform="onnxruntime", execution_provider=model.provider,
            inputs=[converters.tensor_spec(s) for s in model.inputs],
            outputs=[converters.tensor_spec(s) for s in model.outputs],
            max_batch_size=model.max_batch_size, labels=model.config.labels, state=entry.state)

    async def GetStats(self, request, context):
        if self.telemetry is None or not self.telemetry.enabled:
            await _abort(context, GatewayError(Status.FAILED_PRECONDITION,
                                               "telemetry is disabled (telemetry.enabled=false)"))
        window = request.window_s or 10.0
        snaps = await asyncio.get_running_loop().run_in_executor(None, self.telemetry.snapshot, window)
        models = []
        for s in snaps:
            if request.model and s.model != request.model:
                continue
            models.append(pb.ModelStats(
                model=s.model, version=s.version, requests=s.requests,
                latency=_latency(s.latency), queue=_latency(s.queue), compute=_latency(s.compute),
                requests_per_s=s.requests_per_s, rows_per_s=s.rows_per_s, error_share=s.error_share,
                degraded_share=s.degraded_share, mean_batch_size=s.mean_batch_size,
                mean_confidence=s.mean_confidence,
                top_shifts=[pb.FeatureShift(input=f.input, feature=f.feature, mean=f.mean, std=f.std,
                                            shift_score=f.shift_score, nan_count=f.nan_count)
                            for f in s.top_shifts]))
        return pb.StatsResponse(models=models, ring_drops=self.telemetry.ring_drops)


def _latency(summary) -> pb.LatencySummary:
    return pb.LatencySummary(count=summary.count, p50_ms=summary.p50_ms, p90_ms=summary.p90_ms,
                             p99_ms=summary.p99_ms, max_ms=summary.max_ms)


def _new_id() -> str:
    return uuid.uuid4().hex
