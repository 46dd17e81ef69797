"""Protobuf <-> core types. Tensors are decoded with numpy.frombuffer: no copies."""
from __future__ import annotations

import math

import numpy as np

from .._proto import gateway_pb2 as pb
from ..core.dtypes import NUMPY_TO_WIRE, WIRE_TO_NUMPY, dtype_name
from ..core.errors import GatewayError, Status, invalid
from ..core.types import InferRequest, InferResponse, TensorSpec


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


def to_infer_request(msg: pb.PredictRequest, *, t_received_ns: int, deadline_ns: int,
                     max_bytes: int) -> InferRequest:
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
    return InferRequest(model=msg.model, version=msg.version, inputs=inputs, request_id=msg.request_id,
                        output_names=tuple(msg.output_names), deadline_ns=deadline_ns,
                        payload_bytes=payload, t_received_ns=t_received_ns)


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


def to_numpy_outputs(msg: pb.PredictResponse) -> dict[str, np.ndarray]:
    """Client side: the outputs of a response as numpy arrays."""
    return {t.name: np.frombuffer(t.data, dtype=WIRE_TO_NUMPY[t.dtype]).reshape(tuple(t.shape))
            for t in msg.outputs}


def from_numpy(name: str, array: np.ndarray) -> pb.Tensor:
    """Client side: a numpy array as a request tensor."""
    return encode_tensor(name, array)
