"""The four RPCs the load suite drives, behind one small interface, with the messages built once.

``predict`` and ``stream`` are ``gateway.v1.Gateway`` (``Predict``, ``PredictStream``); ``infer``
and ``stream_infer`` are the Open Inference Protocol's ``ModelInfer`` and ``ModelStreamInfer``
(``inference.GRPCInferenceService``, messages compiled at import from ``bench/oip.proto``), so one
client drives the gateway, MLServer and Triton alike. The protocol's modules are imported only
when used: an OIP client process never imports the gateway's stubs.

A :class:`Wire` answers ``metadata`` (input names, dtypes, shapes) and builds requests for a
batch of rows (and a second, drifted set: the same rows shifted by ``shift`` standard deviations).
Answers are read into ``(ok, degraded, error_name)``.
"""
from __future__ import annotations

import pathlib
import sys
from typing import Any

import grpc
import numpy as np

METHODS = ("predict", "stream", "infer", "stream_infer")
STREAMING = {"stream", "stream_infer"}
OIP_METHODS = {"infer", "stream_infer"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]

OIP_TO_NUMPY = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64,
                "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


class NoSuchService(RuntimeError):
    """The server does not implement the protocol asked for (UNIMPLEMENTED on its metadata call)."""


def check_loopback(address: str) -> None:
    if address.startswith("unix:"):
        return
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise SystemExit(f"bench: {address!r} is not a loopback address; the bench only loads local servers")


def oip_modules() -> tuple[Any, Any]:
    """(messages, services) of ``bench/oip.proto``, compiled at import by grpcio-tools."""
    root = str(pathlib.Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return grpc.protos_and_services("bench/oip.proto")


def _rows(shapes: list[tuple[str, Any, list[int]]], batch: int, seed: int, shift: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _name, dtype, dims in shapes:
        shape = [batch] + [1 if d < 0 else int(d) for d in dims[1:]]
        x = rng.standard_normal(shape) + shift
        out.append(x.astype(dtype))
    return out


class Wire:
    def __init__(self, method: str, channel: grpc.aio.Channel, model: str):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
        self.method, self.model, self.channel = method, model, channel
        self.oip = method in OIP_METHODS
        if self.oip:
            self.pb, svc = oip_modules()
            self.stub = svc.GRPCInferenceServiceStub(channel)
        else:
            from gateway._proto import gateway_pb2, gateway_pb2_grpc
            self.pb = gateway_pb2
            self.stub = gateway_pb2_grpc.GatewayStub(channel)
        self.inputs: list[tuple[str, Any, list[int]]] = []

    async def metadata(self, timeout_s: float = 10.0) -> None:
        try:
            if self.oip:
                meta = await self.stub.ModelMetadata(self.pb.ModelMetadataRequest(name=self.model), timeout=timeout_s)
                self.inputs = [(t.name, OIP_TO_NUMPY[t.datatype], list(t.shape)) for t in meta.inputs]
                self.oip_dtypes = {t.name: t.datatype for t in meta.inputs}
            else:
                from gateway.adapters.grpc_v1.dtypes import WIRE_TO_NUMPY
                meta = await self.stub.GetModel(self.pb.GetModelRequest(name=self.model), timeout=timeout_s)
                self.inputs = [(t.name, WIRE_TO_NUMPY[t.dtype], list(t.shape)) for t in meta.inputs]
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                service = "inference.GRPCInferenceService" if self.oip else "gateway.v1.Gateway"
                raise NoSuchService(f"server has no {service}") from None
            raise

    def requests(self, batch: int, count: int, seed: int, shift: float = 0.0) -> list[Any]:
        """``count`` requests of ``batch`` rows each (ids ``r0..``), each with rows of its own
        (drawn once, here: seeded by ``seed`` and the request's index)."""
        out = []
        for k in range(count):
            arrays = _rows(self.inputs, batch, seed * 1_000_003 + k, shift)
            if self.oip:
                tensors = [self.pb.ModelInferRequest.InferInputTensor(name=name, datatype=self.oip_dtypes[name],
                                                                      shape=list(a.shape))
                           for (name, _, _), a in zip(self.inputs, arrays)]
                out.append(self.pb.ModelInferRequest(model_name=self.model, id=f"r{k}", inputs=tensors,
                                                     raw_input_contents=[a.tobytes() for a in arrays]))
            else:
                from gateway.client import from_numpy
                out.append(self.pb.PredictRequest(model=self.model, request_id=f"r{k}",
                                                  inputs=[from_numpy(name, a) for (name, _, _), a in
                                                          zip(self.inputs, arrays)]))
        return out

    @staticmethod
    def set_id(request: Any, rid: str) -> None:
        if hasattr(request, "request_id"):
            request.request_id = rid
        else:
            request.id = rid

    def open_stream(self) -> Any:
        return self.stub.PredictStream() if self.method == "stream" else self.stub.ModelStreamInfer()

    async def unary(self, request: Any, timeout_s: float) -> Any:
        if self.method == "predict":
            return await self.stub.Predict(request, timeout=timeout_s)
        return await self.stub.ModelInfer(request, timeout=timeout_s)

    def read_answer(self, answer: Any) -> tuple[str, bool, str | None]:
        """(request id, degraded, error name or None) of a unary or stream answer."""
        if self.method == "predict":
            return answer.request_id, bool(answer.degraded), None
        if self.method == "stream":
            if answer.HasField("error"):
                return answer.request_id, False, _status_name(answer.error.code)
            return answer.request_id, bool(answer.response.degraded), None
        if self.method == "stream_infer":
            if answer.error_message:
                return answer.infer_response.id, False, "STREAM_ERROR"
            answer = answer.infer_response
        param = answer.parameters.get("degraded") if answer.parameters else None
        return answer.id, bool(param is not None and param.bool_param), None


def _status_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return f"CODE_{code}"
