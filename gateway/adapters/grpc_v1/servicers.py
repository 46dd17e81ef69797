"""gateway.v1.Gateway: converts messages and calls the data plane. No decisions are made here.

Every call takes its request as raw bytes (:meth:`GatewayServicer.method_handlers`) and parses it
here, so bytes that are no valid request get INVALID_ARGUMENT saying what failed, and on
``PredictStream`` only that message does: the stream goes on. Every message a stream reads gets exactly
one answer, an unexpected exception included (INTERNAL, logged); a stream holds at most
:data:`STREAM_MAX_PENDING` requests read but not yet answered, then reads no more until answers
are written (the client's sends wait on HTTP/2 flow control).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc

from ..streaming import answer_each
from ..._proto import gateway_pb2 as pb
from ..._proto import gateway_pb2_grpc as pb_grpc
from ...api import CallTable, GatewayError, Status, quote
from ...api.text import bounded
from ...core.dataplane import DataPlane
from ..tracing import HeadSampler
from . import converters

log = logging.getLogger("gateway.server")

SERVICE = pb.DESCRIPTOR.services_by_name["Gateway"].full_name  # gateway.v1.Gateway
STREAM_MAX_PENDING = 1024  # per stream: requests read whose answers are not yet written


def _deadline_ns(context: grpc.aio.ServicerContext, now_ns: int) -> int:
    remaining = context.time_remaining()
    return 0 if remaining is None else now_ns + int(remaining * 1e9)


LARGE_PAYLOAD_BYTES = 1 << 20      # a refused request this large ends by a status set, not abort
SET_STATUS_MIN_REMAINING_S = 1.0   # ... when its deadline is at least this far


async def _fail(context: grpc.aio.ServicerContext, exc: GatewayError, payload_bytes: int = 0) -> None:
    """End the call with ``exc``'s status.

    A large request (``payload_bytes``) whose deadline is not near gets the status set and
    the handler returns None (grpc.aio discards the answer of a call whose status is not OK):
    ``context.abort`` raises through the handler, and the exception's traceback joins the
    call's frames (with the request bytes) in a reference cycle that only the cyclic
    collector's next full pass frees, so a refused 60 MB request stayed resident for seconds.

    Every other call is ended with ``abort``: a status set is sent only after the handler
    returns, and when gRPC has ended the call by then (its deadline fired, or the client
    reset it) grpc.aio logs the failed send as an error with a traceback. ``abort`` sends it
    at once, and a call already ended raises ExecuteBatchError (an InternalError) out of it:
    the handler then ends as cancelled, which gRPC logs at DEBUG only, and the client has its
    own DEADLINE_EXCEEDED or CANCELLED already."""
    if exc.retry_after_ms is not None:
        context.set_trailing_metadata((("grpc-retry-pushback-ms", str(exc.retry_after_ms)),))
    code = grpc.StatusCode[exc.status.name]
    if payload_bytes >= LARGE_PAYLOAD_BYTES:
        remaining = context.time_remaining()
        if remaining is None or remaining > SET_STATUS_MIN_REMAINING_S:
            context.set_code(code)
            context.set_details(exc.message)
            return
    try:
        await context.abort(code, exc.message)
    except grpc.aio.InternalError:
        raise asyncio.CancelledError(f"call already ended; not sent: {exc.status.name}") from None


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, dataplane: DataPlane, calls: CallTable, *, max_message_bytes: int,
                 sampler: HeadSampler | None = None):
        self.dataplane = dataplane
        self._max_bytes = max_message_bytes
        self._sampler = sampler
        self._predict_call = calls.register("grpc", SERVICE, "Predict")
        self._stream_call = calls.register("grpc", SERVICE, "PredictStream")

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The service's handlers, as the generated ``add_GatewayServicer_to_server`` builds them
        except that every request arrives as bytes and is parsed here (Predict and PredictStream
        parse their own; the other calls through :func:`_parsing`), and Predict and PredictStream
        serialize their answers themselves (to check their size)."""
        return {
            "Predict": grpc.unary_unary_rpc_method_handler(
                self.Predict, request_deserializer=None, response_serializer=None),
            "PredictStream": grpc.stream_stream_rpc_method_handler(
                self.PredictStream, request_deserializer=None, response_serializer=None),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                _parsing(pb.ListModelsRequest, self.ListModels), request_deserializer=None,
                response_serializer=pb.ListModelsResponse.SerializeToString),
            "GetModel": grpc.unary_unary_rpc_method_handler(
                _parsing(pb.GetModelRequest, self.GetModel), request_deserializer=None,
                response_serializer=pb.ModelMetadata.SerializeToString),
            "GetStats": grpc.unary_unary_rpc_method_handler(
                _parsing(pb.GetStatsRequest, self.GetStats), request_deserializer=None,
                response_serializer=pb.StatsResponse.SerializeToString),
            "Feedback": grpc.unary_unary_rpc_method_handler(
                self.Feedback, request_deserializer=None,
                response_serializer=pb.FeedbackResponse.SerializeToString),
            "ListAlerts": grpc.unary_unary_rpc_method_handler(
                _parsing(pb.ListAlertsRequest, self.ListAlerts), request_deserializer=None,
                response_serializer=pb.ListAlertsResponse.SerializeToString),
            "ModelHistory": grpc.unary_unary_rpc_method_handler(
                _parsing(pb.ModelHistoryRequest, self.ModelHistory), request_deserializer=None,
                response_serializer=pb.ModelHistoryResponse.SerializeToString),
        }

    async def _predict(self, msg: pb.PredictRequest, context, call: int) -> pb.PredictResponse:
        now = time.monotonic_ns()
        trace = self._sampler.start(context.invocation_metadata()) if self._sampler is not None else None
        try:
            request = converters.to_infer_request(msg, t_received_ns=now, deadline_ns=_deadline_ns(context, now),
                                                  max_bytes=self._max_bytes, call=call, trace=trace)
        except GatewayError as exc:
            self.dataplane.refused(msg.model, exc)
            raise
        response = await self.dataplane.infer(request)
        return converters.to_predict_response(response)

    def _serialized(self, msg, request_id: str, model: str) -> bytes:
        try:
            return converters.serialized(msg, request_id, self._max_bytes)
        except GatewayError as exc:   # the answer is too large for the wire
            self.dataplane.refused(model, exc)
            raise

    def _parsed(self, data: bytes) -> pb.PredictRequest:
        try:
            return converters.parse_request(data)
        except GatewayError as exc:
            self.dataplane.refused("", exc)
            raise

    async def Predict(self, request: bytes, context):
        msg: pb.PredictRequest | None = None
        try:
            msg = self._parsed(request)
            response = await self._predict(msg, context, self._predict_call)
            return self._serialized(response, response.request_id, msg.model)
        except GatewayError as exc:
            await _fail(context, exc, len(request))
        except Exception as exc:  # a bug: still a definite status, and the traceback in the log
            await _fail(context, _internal(exc, msg.request_id if msg is not None else ""), len(request))
        return None

    async def PredictStream(self, request_iterator, context):
        def parse(raw: bytes) -> pb.PredictRequest:
            msg = self._parsed(raw)
            if not msg.request_id:  # answers are matched by id, so every request needs one
                msg.request_id = _new_id()
            return msg

        async def answer(msg: pb.PredictRequest) -> bytes:
            try:
                resp = await self._predict(msg, context, self._stream_call)
                return self._serialized(pb.PredictStreamResponse(request_id=resp.request_id, response=resp),
                                        resp.request_id, msg.model)
            except GatewayError as exc:
                return _error_answer(msg.request_id, self._max_bytes, exc)
            except Exception as exc:  # a bug: this message still gets its one answer, the stream goes on
                return _error_answer(msg.request_id, self._max_bytes, _internal(exc, msg.request_id))

        def cancelled(msg: pb.PredictRequest) -> bytes:
            return _error_answer(msg.request_id, self._max_bytes, GatewayError(
                Status.CANCELLED, f"request {quote(msg.request_id)} was cancelled inside the gateway"))

        def bad(count: int, exc: GatewayError) -> bytes:
            return _error_answer("", self._max_bytes, GatewayError(
                exc.status, f"stream message {count} (counting from 1; its request_id is unknown): {exc.message}"))

        async for out in answer_each(request_iterator, max_pending=STREAM_MAX_PENDING, parse=parse,
                                     answer=answer, cancelled=cancelled, bad=bad):
            yield out

    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[converters.model_summary(m)
                                             for m in self.dataplane.repository_index()])

    async def GetModel(self, request, context):
        try:
            return converters.model_metadata(self.dataplane.model_metadata(request.name, request.version))
        except GatewayError as exc:
            await _fail(context, exc)
            return None

    async def GetStats(self, request, context):
        try:
            stats = await self.dataplane.statistics(request.window_s or 10.0, request.model)
        except GatewayError as exc:
            await _fail(context, exc)
            return None
        return converters.stats_response(stats)

    async def Feedback(self, request: bytes, context):
        """Parses its own bytes: a message of many labels is counted before it is parsed."""
        try:
            labels = converters.parse_feedback(request)
            result = await self.dataplane.feedback(labels)
        except GatewayError as exc:
            await _fail(context, exc)
            return None
        return converters.feedback_response(result)


    async def ListAlerts(self, request, context):
        try:
            return converters.alerts_response(self.dataplane.alerts(request.model))
        except GatewayError as exc:
            await _fail(context, exc)
            return None

    async def ModelHistory(self, request, context):
        try:
            events = self.dataplane.history(request.model, request.limit or 100)
            return pb.ModelHistoryResponse(events=[
                pb.HistoryEvent(t_unix_s=e.t_unix_s, model=e.model, version=e.version, kind=e.kind,
                                detail=e.detail, source=e.source) for e in events])
        except GatewayError as exc:
            await _fail(context, exc)
            return None


def _new_id() -> str:
    return uuid.uuid4().hex


def _parsing(kind, handler):
    """``handler`` called with the request parsed from its bytes; INVALID_ARGUMENT when they do not parse."""
    async def parse_then_handle(data: bytes, context):
        try:
            request = converters.parse_message(kind, data)
        except GatewayError as exc:
            await _fail(context, exc)
            return None
        return await handler(request, context)

    return parse_then_handle


def _error_answer(request_id: str, max_bytes: int, exc: GatewayError) -> bytes:
    error = pb.ErrorStatus(code=int(exc.status), message=exc.message)
    data = pb.PredictStreamResponse(request_id=request_id, error=error).SerializeToString()
    if len(data) > max_bytes:  # an id of nearly the whole message: sending it back would end the stream
        error.message = bounded(f"(request_id of {len(request_id)} chars not echoed: the answer would exceed "
                                f"the {max_bytes}-byte message limit) {exc.message}")
        data = pb.PredictStreamResponse(error=error).SerializeToString()
    return data


def _internal(exc: Exception, request_id: str) -> GatewayError:
    log.error("request %s: unexpected error while answering it", quote(request_id or "(unknown)"), exc_info=exc,
              extra={"event": "request.internal_error"})
    return GatewayError(Status.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
