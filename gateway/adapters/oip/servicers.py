"""inference.GRPCInferenceService: converts messages and calls the data plane, as
:mod:`gateway.adapters.grpc_v1` does for gateway.v1. No decisions are made here.

Every call takes its request as raw bytes and parses it here (bytes that are no valid request:
INVALID_ARGUMENT), and errors end the call with the status ``Predict`` would give
(:func:`gateway.adapters.grpc_v1.servicers._fail`). On ``ModelStreamInfer`` a failed request
gets its answer with ``error_message`` set (``"<STATUS>: <message>"``) and the stream goes on;
every message read gets exactly one answer, at most :data:`STREAM_MAX_PENDING` unanswered at a
time. The admin calls (RepositoryModelLoad, RepositoryModelUnload) need the admin token
(:mod:`gateway.adapters.auth`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc

from ..streaming import answer_each
from ..._proto import oip_pb2 as pb
from ..._version import __version__
from ...api import CallTable, GatewayError, Status, quote
from ...api.text import bounded
from ...core.dataplane import DataPlane
from ..auth import AdminToken
from ..grpc_v1.servicers import _deadline_ns, _fail
from ..tracing import HeadSampler
from . import converters

log = logging.getLogger("gateway.server")

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "onnx-inference-gateway"
STREAM_MAX_PENDING = 1024
STATS_WINDOW_S = 1.0  # (the totals ModelStatistics reports are cumulative, whatever the window)


class ModelControl(Protocol):
    """Loading and unloading models on request (``gateway.repository.RepositoryManager``)."""

    async def load_model(self, name: str) -> None: ...

    async def unload_model(self, name: str) -> None: ...

    def unloaded(self) -> list[str]: ...


class InferenceServicer:
    """The handlers of inference.GRPCInferenceService (:meth:`method_handlers`). ``admin``:
    the token admin calls need; ``control``: what loads and unloads (None: those calls are off)."""

    name = SERVICE

    def __init__(self, dataplane: DataPlane, calls: CallTable, *, max_message_bytes: int,
                 sampler: HeadSampler | None = None, admin: AdminToken | None = None,
                 control: ModelControl | None = None) -> None:
        self.dataplane = dataplane
        self._max_bytes = max_message_bytes
        self._sampler = sampler
        self._admin = admin if admin is not None else AdminToken(None)
        self._control = control
        self._infer_call = calls.register("grpc", SERVICE, "ModelInfer")
        self._stream_call = calls.register("grpc", SERVICE, "ModelStreamInfer")

    def extensions(self) -> list[str]:
        """The protocol extensions this gateway really serves."""
        out = ["classification", "model_configuration", "statistics"]
        if self._admin.enabled and self._control is not None:
            out.append("model_repository")
        return out

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        def unary(kind, handler, reply) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(_parsing(kind, handler), request_deserializer=None,
                                                       response_serializer=reply.SerializeToString)

        return {
            "ServerLive": unary(pb.ServerLiveRequest, self.ServerLive, pb.ServerLiveResponse),
            "ServerReady": unary(pb.ServerReadyRequest, self.ServerReady, pb.ServerReadyResponse),
            "ModelReady": unary(pb.ModelReadyRequest, self.ModelReady, pb.ModelReadyResponse),
            "ServerMetadata": unary(pb.ServerMetadataRequest, self.ServerMetadata, pb.ServerMetadataResponse),
            "ModelMetadata": unary(pb.ModelMetadataRequest, self.ModelMetadata, pb.ModelMetadataResponse),
            "ModelConfig": unary(pb.ModelConfigRequest, self.ModelConfig, pb.ModelConfigResponse),
            "ModelStatistics": unary(pb.ModelStatisticsRequest, self.ModelStatistics, pb.ModelStatisticsResponse),
            "RepositoryIndex": unary(pb.RepositoryIndexRequest, self.RepositoryIndex, pb.RepositoryIndexResponse),
            "RepositoryModelLoad": unary(pb.RepositoryModelLoadRequest, self.RepositoryModelLoad,
                                         pb.RepositoryModelLoadResponse),
            "RepositoryModelUnload": unary(pb.RepositoryModelUnloadRequest, self.RepositoryModelUnload,
                                           pb.RepositoryModelUnloadResponse),
            # (these two serialize their answers themselves, to check their size)
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                self.ModelInfer, request_deserializer=None, response_serializer=None),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self.ModelStreamInfer, request_deserializer=None, response_serializer=None),
        }

    # -- health and metadata --------------------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready()[0])

    async def ModelReady(self, request, context):
        if not request.name:
            raise GatewayError(Status.INVALID_ARGUMENT, "request names no model (field 'name' is empty)")
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=self.extensions())

    async def ModelMetadata(self, request, context):
        return converters.model_metadata(self.dataplane.model_metadata(request.name, request.version))

    async def ModelConfig(self, request, context):
        meta = self.dataplane.model_metadata(request.name, request.version)
        return pb.ModelConfigResponse(config=converters.model_config(meta))

    async def ModelStatistics(self, request, context):
        stats = await self.dataplane.statistics(STATS_WINDOW_S, request.name)
        models = [s for s in stats.models if not request.version or s.version == request.version]
        if request.version and not models:
            raise GatewayError(Status.NOT_FOUND, f"model {quote(request.name)} has no version "
                               f"{quote(request.version)} with statistics")
        return pb.ModelStatisticsResponse(model_stats=[converters.model_statistics(s) for s in models])

    # -- repository -----------------------------------------------------------------------
    async def RepositoryIndex(self, request, context):
        unloaded = self._control.unloaded() if self._control is not None else []
        return converters.repository_index(self.dataplane.repository_index(), unloaded, request.ready)

    async def RepositoryModelLoad(self, request, context):
        control = self._admitted(context, "RepositoryModelLoad", request.model_name)
        await control.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        control = self._admitted(context, "RepositoryModelUnload", request.model_name)
        await control.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _admitted(self, context, what: str, model: str) -> ModelControl:
        self._admin.check(context.invocation_metadata(), what)
        if self._control is None:
            raise GatewayError(Status.FAILED_PRECONDITION, f"{what}: this server has no model repository to control")
        if not model:
            raise GatewayError(Status.INVALID_ARGUMENT, f"{what}: request names no model (field 'model_name' is empty)")
        return self._control

    # -- inference ------------------------------------------------------------------------
    async def _infer(self, msg: pb.ModelInferRequest, context, call: int) -> pb.ModelInferResponse:
        """The answer to one request. A request refused here, before or after the data plane
        (it cannot be decoded, its answer cannot be encoded), is counted by the data plane."""
        now = time.monotonic_ns()
        trace = self._sampler.start(context.invocation_metadata()) if self._sampler is not None else None
        try:
            request, wanted = converters.to_infer_request(
                msg, t_received_ns=now, deadline_ns=_deadline_ns(context, now), max_bytes=self._max_bytes,
                call=call, trace=trace)
        except GatewayError as exc:
            self.dataplane.refused(msg.model_name, exc)
            raise
        response = await self.dataplane.infer(request)
        labels: tuple[str, ...] = ()
        if any(o.classes for o in wanted):
            try:
                labels = self.dataplane.model_metadata(response.model, response.version).labels
            except GatewayError:  # unloaded since it answered: the classes go without their labels
                labels = ()
        try:
            return converters.to_infer_response(response, wanted, labels)
        except GatewayError as exc:
            self.dataplane.refused(msg.model_name, exc)
            raise

    def _parsed(self, data: bytes) -> pb.ModelInferRequest:
        try:
            return converters.parse_infer_request(data)
        except GatewayError as exc:
            self.dataplane.refused("", exc)
            raise

    def _within(self, data: bytes, request_id: str, model: str) -> bytes:
        """An answer's wire bytes, refused (and counted) when too large for the wire."""
        try:
            return converters.within(data, request_id, self._max_bytes)
        except GatewayError as exc:
            self.dataplane.refused(model, exc)
            raise

    async def ModelInfer(self, request: bytes, context):
        try:
            msg = self._parsed(request)
            response = await self._infer(msg, context, self._infer_call)
            return self._within(response.SerializeToString(), response.id, msg.model_name)
        except GatewayError as exc:
            await _fail(context, exc, len(request))
        except Exception as exc:  # a bug: still a definite status, and the traceback in the log
            await _fail(context, _internal(exc), len(request))
        return None

    async def ModelStreamInfer(self, request_iterator, context):
        async def answer(msg: pb.ModelInferRequest) -> bytes:
            try:
                resp = await self._infer(msg, context, self._stream_call)
                return self._within(converters.stream_answer(resp.SerializeToString()), resp.id, msg.model_name)
            except GatewayError as exc:
                return _error_answer(msg, self._max_bytes, exc)
            except Exception as exc:  # a bug: this message still gets its one answer, the stream goes on
                return _error_answer(msg, self._max_bytes, _internal(exc))

        def cancelled(msg: pb.ModelInferRequest) -> bytes:
            return _error_answer(msg, self._max_bytes, GatewayError(
                Status.CANCELLED, f"request {quote(msg.id)} was cancelled inside the gateway"))

        def bad(count: int, exc: GatewayError) -> bytes:
            return _error_answer(None, self._max_bytes, GatewayError(
                exc.status, f"stream message {count} (counting from 1): {exc.message}"))

        async for out in answer_each(request_iterator, max_pending=STREAM_MAX_PENDING, parse=self._parsed,
                                     answer=answer, cancelled=cancelled, bad=bad):
            yield out


def _parsing(kind, handler: Callable[..., Awaitable]):
    """``handler`` called with the request parsed from its bytes; its GatewayError (and a bad
    parse: INVALID_ARGUMENT) ends the call with that status."""
    async def parse_then_handle(data: bytes, context):
        try:
            return await handler(converters.parse(kind, data), context)
        except GatewayError as exc:
            await _fail(context, exc)
        except Exception as exc:  # a bug: still a definite status, and the traceback in the log
            await _fail(context, _internal(exc))
        return None

    return parse_then_handle


def _error_answer(msg: pb.ModelInferRequest | None, max_bytes: int, exc: GatewayError) -> bytes:
    """A stream's answer to a failed request: ``error_message``, and the request's id and model
    in ``infer_response`` (where they fit the message limit)."""
    text = f"{exc.status.name}: {exc.message}"
    answer = pb.ModelStreamInferResponse(error_message=text)
    if msg is not None:
        answer.infer_response.id = msg.id
        answer.infer_response.model_name = msg.model_name
        answer.infer_response.model_version = msg.model_version
    data = answer.SerializeToString()
    if len(data) > max_bytes:  # an id or name of nearly the whole message: sending it back would end the stream
        data = pb.ModelStreamInferResponse(error_message=bounded(
            f"(request id and model not echoed: the answer would exceed the {max_bytes}-byte message limit) "
            f"{text}")).SerializeToString()
    return data


def _internal(exc: Exception) -> GatewayError:
    log.error("unexpected error while answering an Open Inference Protocol call", exc_info=exc,
              extra={"event": "request.internal_error"})
    return GatewayError(Status.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
