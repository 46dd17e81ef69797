"""Protobuf <-> core types. Tensors are decoded with numpy.frombuffer: no copies."""
from __future__ import annotations

import math
import uuid

import numpy as np

from ..._proto import gateway_pb2 as pb
from ...api import GatewayError, InferRequest, InferResponse, ModelMetadata, ModelSummary, Status, TensorSpec
from ...api import dtype_name, invalid
from .dtypes import NUMPY_TO_WIRE, WIRE_TO_NUMPY


def decode_tensor(tensor: pb.Tensor, max_bytes: int) -> np.ndarray:
    name = tensor.name
    dtype = WIRE_TO_NUMPY.get(tensor.dtype)
    if dtype is None:
        raise invalid(f"input {name!r}: unsupported or missing dtype "
                      f"{pb.DataType.Name(tensor.dtype) if tensor.dtype in pb.DataType.values() else tensor.dtype}")
    shape = tuple(tensor.shape)
    for axis, dim in enumerate(shape):
        if dim < 0:
            raise invalid(f"input {name!r}: dimension {axis} is negative ({dim}) in shape {list(shape)}")
    elements = math.prod(shape)
    if elements * dtype.itemsize > max_bytes:
        raise invalid(f"input {name!r}: shape {list(shape)} means {elements} {dtype_name(dtype)} values, "
                      f"more than the {max_bytes}-byte message limit allows")
    expected = elements * dtype.itemsize
    if len(tensor.data) != expected:
        raise invalid(f"input {name!r}: {len(tensor.data)} bytes of data but shape {list(shape)} x "
                      f"{dtype_name(dtype)} needs {expected}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def to_infer_request(msg: pb.PredictRequest, *, t_received_ns: int, deadline_ns: int, max_bytes: int,
                     call: int = 0, trace: object | None = None) -> InferRequest:
    if not msg.model:
        raise invalid("request names no model (field 'model' is empty)")
    inputs: dict[str, np.ndarray] = {}
    payload = 0
    for tensor in msg.inputs:
        if not tensor.name:
            raise invalid("an input tensor has an empty name")
        if tensor.name in inputs:
            raise invalid(f"input {tensor.name!r} is given more than once")
        inputs[tensor.name] = decode_tensor(tensor, max_bytes)
        payload += len(tensor.data)
    return InferRequest(model=msg.model, version=msg.version, inputs=inputs,
                        request_id=msg.request_id or uuid.uuid4().hex, output_names=tuple(msg.output_names),
                        deadline_ns=deadline_ns, payload_bytes=payload, t_received_ns=t_received_ns,
                        call=call, trace=trace)


def encode_tensor(name: str, array: np.ndarray) -> pb.Tensor:
    if not array.flags.c_contiguous:  # (ascontiguousarray would also turn 0-d into 1-d)
        array = np.ascontiguousarray(array)
    wire = NUMPY_TO_WIRE.get(array.dtype)
    if wire is None:
        raise GatewayError(Status.INTERNAL, f"output {name!r} has dtype {array.dtype} that the wire can't carry")
    return pb.Tensor(name=name, dtype=wire, shape=array.shape, data=array.tobytes())


def to_predict_response(resp: InferResponse) -> pb.PredictResponse:
    msg = pb.PredictResponse(
        request_id=resp.request_id, model=resp.model, version=resp.version,
        outputs=[encode_tensor(k, v) for k, v in resp.outputs.items()],
        degraded=resp.degraded, fallback_reason=resp.fallback_reason, served_by=resp.served_by,
        predicted_label=resp.predicted_label)
    if resp.confidence is not None:
        msg.confidence.extend(resp.confidence.tolist())
    return msg


def tensor_spec(spec: TensorSpec) -> pb.TensorSpec:
    return pb.TensorSpec(name=spec.name, dtype=NUMPY_TO_WIRE[spec.dtype], shape=spec.shape)


def model_summary(m: ModelSummary) -> pb.ModelSummary:
    return pb.ModelSummary(name=m.name, versions=m.versions, latest_version=m.latest_version, state=m.state,
                           error=m.error, execution_provider=m.execution_provider)


def model_metadata(m: ModelMetadata) -> pb.ModelMetadata:
    return pb.ModelMetadata(
        name=m.name, version=m.version, versions=m.versions, platform=m.platform,
        execution_provider=m.execution_provider, inputs=[tensor_spec(s) for s in m.inputs],
        outputs=[tensor_spec(s) for s in m.outputs], max_batch_size=m.max_batch_size, labels=m.labels,
        state=m.state)


def _latency(summary) -> pb.LatencySummary:
    return pb.LatencySummary(count=summary.count, p50_ms=summary.p50_ms, p90_ms=summary.p90_ms,
                             p99_ms=summary.p99_ms, max_ms=summary.max_ms)


def stats_response(stats) -> pb.StatsResponse:
    """:class:`gateway.api.stats.Statistics` as the wire carries it."""
    models = [pb.ModelStats(
        model=s.model, version=s.version, requests=s.requests,
        latency=_latency(s.latency), queue=_latency(s.queue), compute=_latency(s.compute),
        requests_per_s=s.requests_per_s, rows_per_s=s.rows_per_s, error_share=s.error_share,
        degraded_share=s.degraded_share, mean_batch_size=s.mean_batch_size,
        mean_confidence=s.mean_confidence,
        top_shifts=[pb.FeatureShift(input=f.input, feature=f.feature, mean=f.mean, std=f.std,
                                    shift_score=f.shift_score, nan_count=f.nan_count) for f in s.top_shifts])
        for s in stats.models]
    return pb.StatsResponse(models=models, ring_drops=stats.ring_drops)
