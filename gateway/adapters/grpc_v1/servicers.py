"""gateway.v1.Gateway: converts messages and calls the data plane. No decisions are made here."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc

from ..._proto import gateway_pb2 as pb
from ..._proto import gateway_pb2_grpc as pb_grpc
from ...api import CallTable, GatewayError
from ...core.dataplane import DataPlane
from ..tracing import HeadSampler
from . import converters

log = logging.getLogger("gateway.server")

SERVICE = pb.DESCRIPTOR.services_by_name["Gateway"].full_name  # gateway.v1.Gateway


def _deadline_ns(context: grpc.aio.ServicerContext, now_ns: int) -> int:
    remaining = context.time_remaining()
    return 0 if remaining is None else now_ns + int(remaining * 1e9)


async def _abort(context: grpc.aio.ServicerContext, exc: GatewayError):
    if exc.retry_after_ms is not None:
        context.set_trailing_metadata((("grpc-retry-pushback-ms", str(exc.retry_after_ms)),))
    await context.abort(grpc.StatusCode[exc.status.name], exc.message)


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, dataplane: DataPlane, calls: CallTable, *, max_message_bytes: int,
                 sampler: HeadSampler | None = None):
        self.dataplane = dataplane
        self._max_bytes = max_message_bytes
        self._sampler = sampler
        self._predict_call = calls.register("grpc", SERVICE, "Predict")
        self._stream_call = calls.register("grpc", SERVICE, "PredictStream")

    async def _predict(self, msg: pb.PredictRequest, context, call: int) -> pb.PredictResponse:
        now = time.monotonic_ns()
        trace = self._sampler.start(context.invocation_metadata()) if self._sampler is not None else None
        request = converters.to_infer_request(msg, t_received_ns=now, deadline_ns=_deadline_ns(context, now),
                                              max_bytes=self._max_bytes, call=call, trace=trace)
        response = await self.dataplane.infer(request)
        return converters.to_predict_response(response)

    async def Predict(self, request, context):
        try:
            return await self._predict(request, context, self._predict_call)
        except GatewayError as exc:
            await _abort(context, exc)

    async def PredictStream(self, request_iterator, context):
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def answer(msg: pb.PredictRequest) -> None:
            try:
                resp = await self._predict(msg, context, self._stream_call)
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
        return pb.ListModelsResponse(models=[converters.model_summary(m)
                                             for m in self.dataplane.repository_index()])

    async def GetModel(self, request, context):
        try:
            return converters.model_metadata(self.dataplane.model_metadata(request.name, request.version))
        except GatewayError as exc:
            await _abort(context, exc)

    async def GetStats(self, request, context):
        try:
            stats = await self.dataplane.statistics(request.window_s or 10.0, request.model)
        except GatewayError as exc:
            await _abort(context, exc)
        return converters.stats_response(stats)


def _new_id() -> str:
    return uuid.uuid4().hex
