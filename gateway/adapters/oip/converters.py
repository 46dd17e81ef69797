"""Open Inference Protocol messages <-> gateway.api types.

Requests arrive as raw bytes (:func:`parse`), so a message that does not parse is an
INVALID_ARGUMENT naming the message rather than an UNKNOWN from grpcio's deserializer. Input
data comes either in ``raw_input_contents`` (one entry per input, in order, little-endian
element bytes) or in each input's typed ``contents``; the two never mix in one request. Every
error names the input, output or field and quotes client text cut (:mod:`gateway.api.text`).
No input may describe more than ``max_bytes`` of data (nor more dimensions than numpy holds).
Typed FP32 and FP64 contents are read from their packed wire bytes at once; integer and bool
contents are decoded value by value (varints), so they carry at most
:data:`TYPED_VARINT_MAX_VALUES` values an input (more would hold the event loop for seconds:
``raw_input_contents`` carries tensors that large).
As on gateway.v1, a message longer than ``PRESCAN_ABOVE_BYTES`` is scanned before it is parsed
and refused when it holds more inputs, raw contents, requested outputs, parameters or
dimensions than a request may (:class:`_Scan`), so its parse allocates nothing for them.

Answers carry every output in ``raw_output_contents`` (what tritonclient reads), or in typed
``contents`` where every requested output asks ``binary_data: false``. An output requested
with ``classification: k`` is answered as Triton's classification extension answers it: a
BYTES tensor of the top ``k`` classes of each row, ``"<score>:<index>[:<label>]"``, highest
score first, labels from the model's ``labels``.

Of the request's parameters, ``timeout`` (µs, Triton's) shortens the deadline and
``routing_key`` (a string) keeps the request's version under a traffic split, as on gateway.v1;
the others (sequence and priority ones among them) are not used.
"""
from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from ..._proto import oip_pb2 as pb
from ...api import GatewayError, InferRequest, InferResponse, ModelMetadata, ModelSummary, Status, TensorSpec
from ...api import dims, invalid, quote
from ...api.stats import ModelStatsSnapshot
from ..grpc_v1.converters import (
    _MAX_VARINT_BYTES,
    MAX_INPUTS,
    MAX_OUTPUT_NAMES,
    MAX_PARAMETERS,
    MAX_RANK,
    MAX_ROUTING_KEY_CHARS,
    PRESCAN_ABOVE_BYTES,
    ROUTING_KEY,
    UNKNOWN_PARSE_ERROR,
    _Prescan,
)
from . import datatypes

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
CLASSIFICATION = "classification"
BINARY_DATA = "binary_data"
TIMEOUT = "timeout"
# Typed integer and bool contents: values an input may carry (decoded one by one, ~70 ns each)
TYPED_VARINT_MAX_VALUES = 1 << 20
# The packed fixed-width fields: (their tag byte in InferTensorContents, element size)
_PACKED_FIXED = {"fp32_contents": (0x32, 4), "fp64_contents": (0x3A, 8)}
MAX_CLASSES = 1 << 16  # classification: k is capped at the classes a row has, and this

_M = TypeVar("_M", bound=Message)


_INPUTS, _OUTPUTS, _PARAMETERS, _RAW = 5, 6, 4, 7  # ModelInferRequest field numbers
_SHAPE, _TENSOR_PARAMETERS = 3, 4                  # InferInputTensor


class _Scan(_Prescan):
    """Counts a ModelInferRequest's entries before it is parsed (see the module docstring)."""

    protocol = "the Open Inference Protocol"

    def request(self) -> None:
        limits = {_INPUTS: (MAX_INPUTS, "input tensors"), _RAW: (MAX_INPUTS, "raw_input_contents"),
                  _OUTPUTS: (MAX_OUTPUT_NAMES, "requested outputs"), _PARAMETERS: (MAX_PARAMETERS, "parameters")}
        counts = dict.fromkeys(limits, 0)
        pos, end = 0, len(self.data)
        try:
            while pos < end:
                field, wire, start, pos = self.field(pos, end)
                if wire == 2 and field in counts:
                    counts[field] += 1
                    limit, what = limits[field]
                    if counts[field] > limit:
                        raise invalid(f"request has more than {limit} {what}", "too_large")
                    if field == _INPUTS:
                        self.tensor(start, pos, counts[_INPUTS])
        except IndexError:
            return

    def tensor(self, pos: int, end: int, index: int) -> None:
        packed_bytes = unpacked = params = 0
        name: str | None = None
        while pos < end:
            field, wire, start, pos = self.field(pos, end)
            if field == 1 and wire == 2:
                name = self.data[start:pos].decode("utf-8", "replace")
            elif field == _SHAPE and wire in (0, 2):
                if wire == 2:
                    packed_bytes += pos - start
                else:
                    unpacked += 1
                if packed_bytes > MAX_RANK * _MAX_VARINT_BYTES or unpacked > MAX_RANK:
                    which = f"input {quote(name)}" if name else f"input tensor {index} (counting from 1)"
                    raise invalid(f"{which}: shape has more than the {MAX_RANK} dimensions a tensor may have",
                                  "too_large")
            elif field == _TENSOR_PARAMETERS and wire == 2:
                params += 1
                if params > MAX_PARAMETERS:
                    raise invalid(f"input tensor {index} (counting from 1) has more than {MAX_PARAMETERS} parameters",
                                  "too_large")


def parse_infer_request(data: bytes) -> pb.ModelInferRequest:
    """A ModelInferRequest from its wire bytes (scanned first when long); INVALID_ARGUMENT saying what failed."""
    if len(data) > PRESCAN_ABOVE_BYTES:
        _Scan(data, "inference.ModelInferRequest").request()
    return parse(pb.ModelInferRequest, data)


def parse(kind: type[_M], data: bytes) -> _M:
    msg = kind()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError) as exc:  # (ValueError: strings that are not UTF-8)
        # named as the protocol names it (inference.<Message>), not by this gateway's package
        _, sep, reason = str(exc).partition(f"'{kind.DESCRIPTOR.full_name}': ")
        raise invalid(f"request is not a valid inference.{kind.DESCRIPTOR.name} ({len(data)} bytes): "
                      f"{(reason if sep else '') or UNKNOWN_PARSE_ERROR}", "malformed") from None
    return msg


# -- requests --------------------------------------------------------------------------------

class OutputRequest:
    """What the client asked of one output: its name, ``classification`` k (0: the tensor)
    and whether it wants typed ``contents`` (``binary_data: false``)."""

    __slots__ = ("name", "classes", "typed")

    def __init__(self, name: str, classes: int = 0, typed: bool = False) -> None:
        self.name = name
        self.classes = classes
        self.typed = typed


def to_infer_request(msg: pb.ModelInferRequest, *, t_received_ns: int, deadline_ns: int, max_bytes: int,
                     call: int = 0, trace: object | None = None) -> tuple[InferRequest, list[OutputRequest]]:
    model = msg.model_name
    if not model:
        raise invalid("request names no model (field 'model_name' is empty)", "no_model")
    tensors = msg.inputs
    if len(tensors) > MAX_INPUTS:
        raise invalid(f"request has more than {MAX_INPUTS} input tensors", "too_large")
    if len(msg.outputs) > MAX_OUTPUT_NAMES:
        raise invalid(f"request has more than {MAX_OUTPUT_NAMES} requested outputs", "too_large")
    params = msg.parameters
    n_params = len(params)
    if n_params > MAX_PARAMETERS:
        raise invalid(f"request has more than {MAX_PARAMETERS} parameters", "too_large")
    raw = msg.raw_input_contents
    if len(raw) and len(raw) != len(tensors):
        raise invalid(f"request has {len(raw)} raw_input_contents for {len(tensors)} inputs: give one per "
                      "input, in the order of the inputs, or none (and typed contents)", "malformed")
    inputs: dict[str, np.ndarray] = {}
    payload = 0
    for i, tensor in enumerate(tensors):
        name = tensor.name
        if not name:
            raise invalid(f"input {i + 1} (counting from 1) has an empty name", "malformed")
        if name in inputs:
            raise invalid(f"input {quote(name)} is given more than once", "malformed")
        array = inputs[name] = decode_input(tensor, raw[i] if len(raw) else None, max_bytes)
        payload += array.nbytes
    outputs = [output_request(o) for o in msg.outputs]
    typed = [o.typed for o in outputs]
    if any(typed) and not all(typed):
        raise invalid("binary_data: false is given for some requested outputs and not others: an answer "
                      "carries all its outputs raw or all typed", "malformed")
    names = tuple(o.name for o in outputs)
    if len(set(names)) != len(names):
        raise invalid("an output is requested more than once", "malformed")
    if n_params and TIMEOUT in params:  # Triton's request timeout (tritonclient's timeout=, in µs)
        p = params[TIMEOUT]
        if p.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param") or \
                (p.int64_param if p.HasField("int64_param") else p.uint64_param) <= 0:
            raise invalid("parameter 'timeout' must be a positive int64 (microseconds)", "malformed")
        timeout_ns = t_received_ns + (p.int64_param if p.HasField("int64_param") else p.uint64_param) * 1000
        deadline_ns = min(deadline_ns, timeout_ns) if deadline_ns else timeout_ns
    routing_key = ""
    if n_params and ROUTING_KEY in params:  # (as gateway.v1's parameters.routing_key: sticky under a traffic split)
        p = params[ROUTING_KEY]
        if p.WhichOneof("parameter_choice") != "string_param":
            raise invalid(f"parameter {ROUTING_KEY!r} must be a string", "malformed")
        routing_key = p.string_param
        if len(routing_key) > MAX_ROUTING_KEY_CHARS:
            raise invalid(f"parameter {ROUTING_KEY!r} has {len(routing_key)} characters, more than the "
                          f"{MAX_ROUTING_KEY_CHARS} allowed", "too_large")
    request = InferRequest(model=model, version=msg.model_version, inputs=inputs,
                           request_id=msg.id or uuid.uuid4().hex, output_names=names, deadline_ns=deadline_ns,
                           payload_bytes=payload, t_received_ns=t_received_ns, call=call, trace=trace,
                           routing_key=routing_key)
    return request, outputs


def output_request(o: pb.ModelInferRequest.InferRequestedOutputTensor) -> OutputRequest:
    if not o.name:
        raise invalid("a requested output has an empty name", "malformed")
    classes = 0
    typed = False
    params = o.parameters
    if CLASSIFICATION in params:
        p = params[CLASSIFICATION]
        which = p.WhichOneof("parameter_choice")
        value = p.int64_param if which == "int64_param" else p.uint64_param if which == "uint64_param" else None
        if value is None or value < 0:
            raise invalid(f"output {quote(o.name)}: parameter 'classification' must be a non-negative int64 "
                          f"(the number of classes to answer), got {which or 'nothing'}", "malformed")
        classes = value
    if BINARY_DATA in params:
        p = params[BINARY_DATA]
        if p.WhichOneof("parameter_choice") != "bool_param":
            raise invalid(f"output {quote(o.name)}: parameter 'binary_data' must be a bool", "malformed")
        typed = not p.bool_param
    return OutputRequest(o.name, classes, typed)


def decode_input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, max_bytes: int) -> np.ndarray:
    """A read-only array of the input's data; INVALID_ARGUMENT naming the input for a datatype
    the gateway does not carry, a shape numpy could not hold, or data that does not fit it."""
    name = tensor.datatype
    if name == datatypes.BYTES:
        raise _bad(tensor, "datatype BYTES (strings) is not supported: the gateway's ONNX runtime serves "
                           "numeric and bool tensors only", "dtype")
    dtype = datatypes.NAME_TO_NUMPY.get(name)
    if dtype is None:
        known = ", ".join(sorted(datatypes.KNOWN))
        what = "unsupported datatype BF16 (no numpy type)" if name == "BF16" else \
            f"unknown datatype {quote(name)} (the protocol's: {known})" if name else "no datatype"
        raise _bad(tensor, what, "dtype")
    field = tensor.shape
    rank = len(field)
    if rank > MAX_RANK:
        raise _bad(tensor, f"rank {rank} is more than the {MAX_RANK} dimensions a tensor may have", "too_large")
    shape = tuple(field)
    for axis, dim in enumerate(shape):
        if dim < 0:
            raise _bad(tensor, f"dimension {axis} is negative ({dim}) in shape {dims(shape)}")
    elements = math.prod(shape)
    extent = (elements if elements else math.prod(d for d in shape if d)) * dtype.itemsize
    if extent > max_bytes:
        raise _bad(tensor, f"shape {dims(shape)} of {name} means more than the {max_bytes}-byte message limit "
                           "(max_message_bytes) allows", "too_large")
    has_contents = tensor.HasField("contents")
    if raw is not None:
        if has_contents and any(len(getattr(tensor.contents, f)) for f in datatypes.CONTENTS_FIELDS):
            raise _bad(tensor, "has both typed contents and raw_input_contents: give one")
        expected = elements * dtype.itemsize
        if len(raw) != expected:
            raise _bad(tensor, f"{len(raw)} bytes of raw_input_contents but shape {dims(shape)} x {name} "
                               f"needs {expected}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    return _typed(tensor, name, dtype, shape, elements)


def _typed(tensor, name: str, dtype: np.dtype, shape: tuple[int, ...], elements: int) -> np.ndarray:
    contents = tensor.contents
    given = [f for f in datatypes.CONTENTS_FIELDS if len(getattr(contents, f))]
    wanted = datatypes.CONTENTS_FIELD.get(name)
    if wanted is None:
        raise _bad(tensor, f"{name} data can only come in raw_input_contents (the protocol has no typed "
                           f"contents for it)")
    if not given and elements:
        raise _bad(tensor, f"no data: neither raw_input_contents nor contents.{wanted}")
    if given and given != [wanted]:
        raise _bad(tensor, f"datatype {name} takes contents.{wanted}, got contents.{', contents.'.join(given)}")
    values = getattr(contents, wanted)
    if len(values) != elements:
        raise _bad(tensor, f"{len(values)} values in contents.{wanted} but shape {dims(shape)} has {elements}")
    if wanted in _PACKED_FIXED:
        array = _packed_fixed(contents, wanted, dtype, elements)
    elif elements > TYPED_VARINT_MAX_VALUES:
        raise _bad(tensor, f"{elements} values in contents.{wanted}: typed {name} contents carry at most "
                           f"{TYPED_VARINT_MAX_VALUES} values (each is decoded on its own); send a tensor this "
                           "large in raw_input_contents", "too_large")
    elif dtype.kind in "iu" and dtype.itemsize < 4:
        wide = np.fromiter(values, dtype=np.int64, count=elements)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            bad = wide[(wide < info.min) | (wide > info.max)][0]
            raise _bad(tensor, f"value {int(bad)} in contents.{wanted} does not fit {name} "
                               f"([{info.min}, {info.max}])")
        array = wide.astype(dtype)
    else:
        array = np.fromiter(values, dtype=dtype, count=elements)
    array = array.reshape(shape)
    array.flags.writeable = False
    return array


def _packed_fixed(contents: pb.InferTensorContents, field: str, dtype: np.dtype, elements: int) -> np.ndarray:
    """``contents.<field>`` (the only field set) from its packed wire bytes: one tag, the length
    and the little-endian values, read at once instead of one Python float each (16 MB of FP32
    took 0.43 s and 144 MB that way). Should the bytes not be that (a serializer that does not
    pack), value by value."""
    tag, size = _PACKED_FIXED[field]
    data = contents.SerializeToString()
    head = _field_head(tag, elements * size)
    if elements and len(data) == len(head) + elements * size and data.startswith(head):
        return np.frombuffer(data, dtype=dtype, count=elements, offset=len(head))
    return np.fromiter(getattr(contents, field), dtype=dtype, count=elements)


def _bad(tensor, problem: str, reason: str = "malformed") -> GatewayError:
    return invalid(f"input {quote(tensor.name)}: {problem}", reason)


# -- answers ---------------------------------------------------------------------------------

_Output = pb.ModelInferResponse.InferOutputTensor
_Param = pb.InferParameter
_DEGRADED = {False: _Param(bool_param=False), True: _Param(bool_param=True)}  # (copied into each answer)


def to_infer_response(resp: InferResponse, wanted: Sequence[OutputRequest],
                      labels: Sequence[str] = ()) -> pb.ModelInferResponse:
    """The answer; ``wanted`` as :func:`to_infer_request` gave it (empty: every output, raw),
    ``labels`` the model's class names (classification). Built in one constructor call, which
    costs a third of filling the message field by field."""
    params = {"served_by": _Param(string_param=resp.served_by), "degraded": _DEGRADED[bool(resp.degraded)]}
    if resp.degraded:
        params["fallback_reason"] = _Param(string_param=resp.fallback_reason)
    typed = bool(wanted) and all(o.typed for o in wanted)
    asks = {o.name: o for o in wanted}
    outputs: list[pb.ModelInferResponse.InferOutputTensor] = []
    raw: list[bytes] = []
    for name, array in resp.outputs.items():
        ask = asks.get(name)
        if ask is not None and ask.classes:
            strings = classify(name, array, ask.classes, labels)
            values = strings.ravel().tolist()
            if typed:
                outputs.append(_Output(name=name, datatype=datatypes.BYTES, shape=strings.shape,
                                       contents=pb.InferTensorContents(bytes_contents=values)))
            else:
                outputs.append(_Output(name=name, datatype=datatypes.BYTES, shape=strings.shape))
                raw.append(serialize_bytes(values))
            continue
        if not array.flags.c_contiguous:  # (ascontiguousarray would also turn 0-d into 1-d)
            array = np.ascontiguousarray(array)
        kind = datatypes.NUMPY_TO_NAME.get(array.dtype)
        if kind is None:
            raise GatewayError(Status.INTERNAL, f"output {quote(name)} has dtype {array.dtype}, which the protocol "
                                                "cannot carry")
        if typed:
            field = datatypes.CONTENTS_FIELD.get(kind)
            if field is None:
                raise invalid(f"output {quote(name)} is {kind}, which has no typed contents: ask for it raw "
                              "(without binary_data: false)", "malformed")
            outputs.append(_Output(name=name, datatype=kind, shape=array.shape, contents=_contents(field, array)))
        else:
            outputs.append(_Output(name=name, datatype=kind, shape=array.shape))
            raw.append(array.tobytes())
    return pb.ModelInferResponse(model_name=resp.model, model_version=resp.version, id=resp.request_id,
                                 parameters=params, outputs=outputs, raw_output_contents=raw)


def _contents(field: str, array: np.ndarray) -> pb.InferTensorContents:
    """Typed contents of an answer: FP32 and FP64 parsed from their packed wire bytes (one copy),
    the others value by value."""
    packed = _PACKED_FIXED.get(field)
    if packed is None or not array.size:
        return pb.InferTensorContents(**{field: array.ravel().tolist()})
    return pb.InferTensorContents.FromString(_length_delimited(packed[0], array.astype(array.dtype.newbyteorder("<"),
                                                                                       copy=False).tobytes()))


def _length_delimited(tag: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: its head (:func:`_field_head`), then the payload."""
    return _field_head(tag, len(payload)) + payload


def _field_head(tag: int, n: int) -> bytes:
    """A length-delimited field's tag byte and its payload length ``n`` as a varint."""
    head = bytearray((tag,))
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head)


def stream_answer(answer: bytes) -> bytes:
    """The wire bytes of ``ModelStreamInferResponse(infer_response=<answer>)`` from the answer's
    own bytes: field 2, length-delimited (protobuf's encoding), without copying the message
    into a wrapper to serialize it again."""
    return _length_delimited(0x12, answer)


def classify(name: str, scores: np.ndarray, k: int, labels: Sequence[str]) -> np.ndarray:
    """The top ``k`` classes of each row of ``scores`` ([rows, classes], or [classes] for one
    row) as ``b"<score>:<index>[:<label>]"``, highest first: shape [rows, k] (or [k])."""
    if scores.dtype.kind not in "fiu" or scores.ndim not in (1, 2) or scores.shape[-1] == 0:
        raise invalid(f"output {quote(name)} cannot be classified: classification needs numeric scores of shape "
                      f"[classes] or [rows, classes], the output is {scores.dtype} {dims(scores.shape)}", "malformed")
    rows = scores.reshape(1, -1) if scores.ndim == 1 else scores
    k = min(k, rows.shape[1], MAX_CLASSES)
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty(order.shape, dtype=object)
    for r in range(order.shape[0]):
        for j, index in enumerate(order[r].tolist()):
            text = f"{rows[r, index]:f}:{index}"
            if index < len(labels):
                text += f":{labels[index]}"
            out[r, j] = text.encode()
    return out[0] if scores.ndim == 1 else out


def serialize_bytes(values: Sequence[bytes]) -> bytes:
    """BYTES elements as the protocol's raw form: each a 4-byte little-endian length, then it."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def within(data: bytes, request_id: str, max_bytes: int) -> bytes:
    """``data``, an answer's wire bytes; RESOURCE_EXHAUSTED when they exceed ``max_bytes``."""
    if len(data) > max_bytes:
        raise GatewayError(Status.RESOURCE_EXHAUSTED,
                           f"the answer to request {quote(request_id)} would be {len(data)} bytes, more than the "
                           f"{max_bytes}-byte message limit (max_message_bytes); ask for fewer rows or outputs",
                           reason="too_large")
    return data


# -- metadata, configuration, statistics, repository -----------------------------------------

def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=datatypes.name_of(spec.dtype),
                                                   shape=spec.shape)


def model_metadata(m: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(name=m.name, versions=m.versions, platform=PLATFORM,
                                    inputs=[_tensor_metadata(s) for s in m.inputs],
                                    outputs=[_tensor_metadata(s) for s in m.outputs])


def _config_dims(spec: TensorSpec, batched: bool) -> tuple[int, ...]:
    """A tensor's dims as a model configuration gives them: without the batch dimension when
    the model batches (max_batch_size > 0)."""
    return spec.shape[1:] if batched and spec.shape else spec.shape


def model_config(m: ModelMetadata) -> pb.ModelConfig:
    batched = m.max_batch_size > 0
    config = pb.ModelConfig(
        name=m.name, platform=PLATFORM, backend=BACKEND, max_batch_size=max(m.max_batch_size, 0),
        input=[pb.ModelInput(name=s.name, data_type=datatypes.config_type(s.dtype),  # type: ignore[arg-type]
                             dims=_config_dims(s, batched)) for s in m.inputs],
        output=[pb.ModelOutput(name=s.name, data_type=datatypes.config_type(s.dtype),  # type: ignore[arg-type]
                               dims=_config_dims(s, batched)) for s in m.outputs],
        instance_group=[pb.ModelInstanceGroup(
            name=m.name, count=m.instance_count,
            kind=pb.ModelInstanceGroup.KIND_GPU if "CUDA" in m.execution_provider else pb.ModelInstanceGroup.KIND_CPU)])
    config.parameters["execution_provider"].string_value = m.execution_provider
    if m.labels:
        config.parameters["labels"].string_value = ",".join(m.labels)
    b = m.batching
    if b is not None:
        config.dynamic_batching.preferred_batch_size.extend(b.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = b.max_queue_delay_us
        config.dynamic_batching.default_queue_policy.max_queue_size = b.max_queue_size
    return config


def _duration(count: int, ns: int) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=count, ns=ns)


def model_statistics(s: ModelStatsSnapshot) -> pb.ModelStatistics:
    """One version's statistics. The gateway times the model run as a whole (``compute_infer``);
    it does not time copying inputs in and outputs out apart (they are inside ``queue`` and
    ``success``), so ``compute_input`` and ``compute_output`` carry the same counts as
    ``compute_infer`` with 0 ns: clients that check the three counts agree (perf_analyzer stops
    with "compute counts must be the same" otherwise) and no time is counted twice."""
    t = s.totals
    if t is None:
        raise GatewayError(Status.INTERNAL, f"model {quote(s.model)} version {quote(s.version)}: no running totals")
    stats = pb.InferStatistics(success=_duration(t.success.count, t.success.ns),
                               fail=_duration(t.fail.count, t.fail.ns),
                               queue=_duration(t.queue.count, t.queue.ns),
                               compute_input=_duration(t.compute.count, 0),
                               compute_infer=_duration(t.compute.count, t.compute.ns),
                               compute_output=_duration(t.compute.count, 0))
    return pb.ModelStatistics(
        name=s.model, version=s.version, last_inference=t.last_unix_ms, inference_count=t.rows,
        execution_count=t.executions, inference_stats=stats,
        batch_stats=[pb.InferBatchStatistics(batch_size=b.batch_size,
                                             compute_input=_duration(b.executions, 0),
                                             compute_infer=_duration(b.executions, b.compute_ns),
                                             compute_output=_duration(b.executions, 0))
                     for b in t.batches])


def repository_index(models: Sequence[ModelSummary], unloaded: Sequence[str], ready_only: bool
                     ) -> pb.RepositoryIndexResponse:
    """One entry per loaded version (READY) and, unless ``ready_only``, one per model with no
    version loaded (UNAVAILABLE, with why) and per model unloaded on request."""
    out = pb.RepositoryIndexResponse()
    Index = pb.RepositoryIndexResponse.ModelIndex
    for m in models:
        out.models.extend(Index(name=m.name, version=v, state="READY") for v in m.versions)
        if not m.versions and not ready_only:
            out.models.append(Index(name=m.name, state="UNAVAILABLE", reason=m.error))
    if not ready_only:
        out.models.extend(Index(name=name, state="UNAVAILABLE", reason="unloaded") for name in unloaded)
    return out
