"""Protobuf <-> core types. Tensors are decoded with numpy.frombuffer over the one copy of their
bytes that reading the field makes.

Requests arrive as raw bytes (:func:`parse_request`), so a message that does not parse is an
INVALID_ARGUMENT naming what failed rather than an UNKNOWN from grpcio's deserializer. Every
error names the tensor or field and quotes client text cut (:mod:`gateway.api.text`).

Memory: decoding copies each tensor's bytes once, and no array may describe more than
``max_bytes`` (nor more dimensions than numpy holds, :data:`MAX_RANK`). Protobuf's parse turns
each repeated entry into an object tens of bytes large (an empty ``Tensor`` is 2 bytes on the
wire and ~70 parsed: 64 MiB of them would take 2 GiB), so a message longer than
:data:`PRESCAN_ABOVE_BYTES` is scanned first (its top-level fields and each tensor's,
:data:`PRESCAN_MAX_FIELDS` at most) and refused when it holds more entries than
:data:`MAX_INPUTS`, :data:`MAX_OUTPUT_NAMES`, :data:`MAX_PARAMETERS` or :data:`MAX_RANK` allow,
before anything is allocated for them; parsing a shorter one takes at most ~40x its length. The
same limits apply after the parse, whatever the length.
"""
from __future__ import annotations

import math
import uuid
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from ..._proto import gateway_pb2 as pb
from ...api import GatewayError, InferRequest, InferResponse, ModelMetadata, ModelSummary, Status, TensorSpec
from ...api import dims, dtype_name, invalid, quote
from ...api.alerts import AlertList
from ...api.feedback import MAX_LABELS_PER_CALL, FeedbackLabel, FeedbackResult
from ...api.stats import DriftMeasure, DriftSnapshot, QualitySnapshot
from .dtypes import NUMPY_TO_WIRE, WIRE_TO_NUMPY


def _numpy_max_rank() -> int:
    try:
        np.empty((1,) * 64)
    except ValueError:  # numpy 1.x (NPY_MAXDIMS 32)
        return 32
    return 64


MAX_RANK = _numpy_max_rank()  # dimensions numpy can hold (64 since numpy 2.0)
MAX_INPUTS = 1024             # tensors in one request (models with KV caches take a few hundred)
MAX_OUTPUT_NAMES = 1024
MAX_PARAMETERS = 1024
ROUTING_KEY = "routing_key"        # the request parameter that makes a traffic split sticky
MAX_ROUTING_KEY_CHARS = 1024
PRESCAN_ABOVE_BYTES = 64 * 1024
PRESCAN_MAX_FIELDS = 16 * 1024  # scanned at most (an unpacked shape is one field per dimension)
_MAX_VARINT_BYTES = 10
_REQUEST = pb.PredictRequest.DESCRIPTOR.full_name
_FEEDBACK = pb.FeedbackRequest.DESCRIPTOR.full_name
_INPUTS, _OUTPUT_NAMES, _PARAMETERS = 4, 5, 6   # PredictRequest field numbers
_SHAPE = 3                                       # Tensor.shape
_M = TypeVar("_M", bound=Message)
# what a failed parse is said to be when protobuf gives no reason (protobuf 6)
UNKNOWN_PARSE_ERROR = "the wire format is corrupt or a string is not valid UTF-8"


def parse_request(data: bytes) -> pb.PredictRequest:
    """A ``gateway.v1.PredictRequest`` from its wire bytes; INVALID_ARGUMENT saying what failed."""
    if len(data) > PRESCAN_ABOVE_BYTES:
        _Prescan(data).request()
    return parse_message(pb.PredictRequest, data)


def parse_message(kind: type[_M], data: bytes) -> _M:
    """Any request message from its wire bytes; INVALID_ARGUMENT saying what failed."""
    try:
        return kind.FromString(data)
    except DecodeError as exc:
        name = kind.DESCRIPTOR.full_name
        # upb: "Error parsing message with type 'gateway.v1.PredictRequest': Wire format was corrupt"
        # (protobuf 6 stops before the colon: no reason given)
        _, sep, reason = str(exc).partition(f"'{name}': ")
        raise invalid(f"request is not a valid {name} ({len(data)} bytes): "
                      f"{(reason if sep else '') or UNKNOWN_PARSE_ERROR}", "malformed") from None


def parse_feedback(data: bytes) -> list[FeedbackLabel]:
    """The labels of a ``gateway.v1.FeedbackRequest`` from its wire bytes. INVALID_ARGUMENT when
    they do not parse or hold more than :data:`~gateway.api.feedback.MAX_LABELS_PER_CALL` labels
    (counted before the parse for messages over :data:`PRESCAN_ABOVE_BYTES`: a 2-byte empty label
    would take ~70 parsed). A label without a truth, or with an empty request id, is kept as it
    is: the data plane counts it invalid, the others still count."""
    if len(data) > PRESCAN_ABOVE_BYTES:
        scan = _Prescan(data, _FEEDBACK)
        pos, end, labels = 0, len(data), 0
        try:
            while pos < end:
                field, wire, _, pos = scan.field(pos, end)
                if field == 1 and wire == 2:
                    labels += 1
                    if labels > MAX_LABELS_PER_CALL:
                        raise _too_many("labels", MAX_LABELS_PER_CALL)
        except IndexError:
            pass  # malformed: the parse names it
    msg = parse_message(pb.FeedbackRequest, data)
    if len(msg.labels) > MAX_LABELS_PER_CALL:
        raise _too_many("labels", MAX_LABELS_PER_CALL)
    out = []
    for label in msg.labels:
        which = label.WhichOneof("truth")
        request_id, row = label.request_id, label.row
        if which == "class_label":
            out.append(FeedbackLabel(request_id, label=label.class_label, row=row))
        elif which == "class_index":
            out.append(FeedbackLabel(request_id, index=label.class_index, row=row))
        elif which == "target":
            out.append(FeedbackLabel(request_id, target=label.target, row=row))
        else:
            out.append(FeedbackLabel(request_id, row=row))
    return out


def feedback_response(result: FeedbackResult) -> pb.FeedbackResponse:
    return pb.FeedbackResponse(accepted=result.accepted, unknown=result.unknown, late=result.late,
                               duplicate=result.duplicate, invalid=result.invalid)


def alerts_response(listing: AlertList) -> pb.ListAlertsResponse:
    return pb.ListAlertsResponse(
        alerts=[pb.Alert(rule=a.rule, metric=a.metric, comparator=a.comparator, threshold=a.threshold,
                         severity=a.severity, labels=a.labels, model=a.model, version=a.version, value=a.value,
                         firing_since_unix_s=a.since_unix_s) for a in listing.alerts],
        rules=listing.rules, pending=listing.pending, untracked=listing.untracked)


def _too_many(what: str, limit: int) -> GatewayError:
    return invalid(f"request has more than {limit} {what}", "too_large")


class _Prescan:
    """Counts what protobuf would allocate for, refusing counts no request may have (see the
    module docstring). Malformed wire data ends the scan: the parse that follows names the
    problem, having allocated no more than the entries scanned so far allow."""

    protocol = "gateway.v1"  # (named in the error for a wire type no message of it uses)

    def __init__(self, data: bytes, kind: str = _REQUEST) -> None:
        self.data = data
        self.kind = kind
        self.fields_left = PRESCAN_MAX_FIELDS  # bounds the scan's own work

    def request(self) -> None:
        counts = {_INPUTS: 0, _OUTPUT_NAMES: 0, _PARAMETERS: 0}
        limits = {_INPUTS: (MAX_INPUTS, "input tensors"), _OUTPUT_NAMES: (MAX_OUTPUT_NAMES, "output names"),
                  _PARAMETERS: (MAX_PARAMETERS, "parameters")}
        pos, end = 0, len(self.data)
        try:
            while pos < end:
                field, wire, start, pos = self.field(pos, end)
                if wire == 2 and field in counts:  # (with another wire type: an unknown field, kept as bytes)
                    counts[field] += 1
                    limit, what = limits[field]
                    if counts[field] > limit:
                        raise _too_many(what, limit)
                    if field == _INPUTS:
                        self.tensor(start, pos, counts[_INPUTS])
        except IndexError:
            return

    def tensor(self, pos: int, end: int, index: int) -> None:
        packed_bytes = unpacked = 0
        name: str | None = None
        while pos < end:
            field, wire, start, pos = self.field(pos, end)
            if field == 1 and wire == 2:  # (serializers write the name first)
                name = self.data[start:pos].decode("utf-8", "replace")
            elif field == _SHAPE and wire in (0, 2):
                if wire == 2:  # packed: each dimension takes at least one byte
                    packed_bytes += pos - start
                else:
                    unpacked += 1
                if packed_bytes > MAX_RANK * _MAX_VARINT_BYTES or unpacked > MAX_RANK:
                    which = f"input {quote(name)}" if name else f"input tensor {index} (counting from 1)"
                    raise invalid(f"{which}: shape has more than the {MAX_RANK} dimensions a tensor may have",
                                  "too_large")

    def field(self, pos: int, end: int) -> tuple[int, int, int, int]:
        """(field number, wire type, start and end of its value) of the field at ``pos``."""
        self.fields_left -= 1
        if self.fields_left < 0:
            raise _too_many("fields", PRESCAN_MAX_FIELDS)
        key, pos = self.varint(pos)
        wire = key & 7
        if wire == 0:
            start, (_, stop) = pos, self.varint(pos)
        elif wire == 1:
            start, stop = pos, pos + 8
        elif wire == 2:
            length, start = self.varint(pos)
            stop = start + length
        elif wire == 5:
            start, stop = pos, pos + 4
        else:  # proto3 never writes groups (3, 4); 6 and 7 are no wire types
            raise invalid(f"request is not a valid {self.kind}: field {key >> 3} has wire type {wire}, "
                          f"which {self.protocol} never uses", "malformed")
        if stop > end:
            raise IndexError("field runs past the end")
        return key >> 3, wire, start, stop

    def varint(self, pos: int) -> tuple[int, int]:
        """(value, position after it); IndexError when the data ends inside it."""
        data = self.data
        value = shift = 0
        for offset in range(_MAX_VARINT_BYTES):
            byte = data[pos + offset]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + offset + 1
            shift += 7
        raise IndexError("varint longer than 10 bytes")


def decode_tensor(tensor: pb.Tensor, max_bytes: int) -> np.ndarray:
    """A read-only view of the tensor's bytes; INVALID_ARGUMENT naming the tensor for anything
    numpy could not hold or the data does not match."""
    dtype = WIRE_TO_NUMPY.get(tensor.dtype)
    if dtype is None:
        wire = tensor.dtype
        raise _bad(tensor, "unsupported or missing dtype "
                           f"{pb.DataType.Name(wire) if wire in pb.DataType.values() else wire}")
    field = tensor.shape  # (each read of a field builds a new wrapper: read it once)
    rank = len(field)     # (before the shape is copied: a rank-100000 shape stays in protobuf)
    if rank > MAX_RANK:
        raise _bad(tensor, f"rank {rank} is more than the {MAX_RANK} dimensions a tensor may have", "too_large")
    shape = tuple(field)
    for axis, dim in enumerate(shape):
        if dim < 0:
            raise _bad(tensor, f"dimension {axis} is negative ({dim}) in shape {dims(shape)}")
    # Python ints, so no product overflows. numpy refuses an empty shape too when its other
    # dimensions could not be allocated ([0, 2**62]), so zeros do not exempt the rest.
    elements = math.prod(shape)
    expected = elements * dtype.itemsize
    extent = expected if elements else math.prod(d for d in shape if d) * dtype.itemsize
    if extent > max_bytes:
        what = (f"means {_count(elements)} {dtype_name(dtype)} values" if elements else
                f"is empty but its other dimensions mean {_count(extent // dtype.itemsize)} "
                f"{dtype_name(dtype)} values")
        raise _bad(tensor, f"shape {dims(shape)} {what}, more than the {max_bytes}-byte message limit "
                           "(max_message_bytes) allows", "too_large")
    data = tensor.data  # (each read of a bytes field copies it out of the message: read it once)
    if len(data) != expected:
        raise _bad(tensor, f"{len(data)} bytes of data but shape {dims(shape)} x {dtype_name(dtype)} "
                           f"needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _bad(tensor: pb.Tensor, problem: str, reason: str = "malformed") -> GatewayError:
    return invalid(f"input {quote(tensor.name)}: {problem}", reason)


def _count(n: int) -> str:
    """A count that may have hundreds of digits (64 dimensions of 2**62), readably."""
    return str(n) if n < 10 ** 18 else f"more than 10^{len(str(n)) - 1}"


def to_infer_request(msg: pb.PredictRequest, *, t_received_ns: int, deadline_ns: int, max_bytes: int,
                     call: int = 0, trace: object | None = None) -> InferRequest:
    model = msg.model
    if not model:
        raise invalid("request names no model (field 'model' is empty)", "no_model")
    tensors = msg.inputs
    if len(tensors) > MAX_INPUTS:
        raise _too_many("input tensors", MAX_INPUTS)
    output_names = tuple(msg.output_names)
    if len(output_names) > MAX_OUTPUT_NAMES:
        raise _too_many("output names", MAX_OUTPUT_NAMES)
    parameters = msg.parameters
    n_parameters = len(parameters)
    if n_parameters > MAX_PARAMETERS:
        raise _too_many("parameters", MAX_PARAMETERS)
    routing_key = parameters.get(ROUTING_KEY, "") if n_parameters else ""
    if len(routing_key) > MAX_ROUTING_KEY_CHARS:
        raise invalid(f"parameter {ROUTING_KEY!r} has {len(routing_key)} characters, more than the "
                      f"{MAX_ROUTING_KEY_CHARS} allowed", "too_large")
    inputs: dict[str, np.ndarray] = {}
    payload = 0
    for tensor in tensors:
        name = tensor.name
        if not name:
            raise invalid("an input tensor has an empty name", "malformed")
        if name in inputs:
            raise invalid(f"input {quote(name)} is given more than once", "malformed")
        array = inputs[name] = decode_tensor(tensor, max_bytes)
        payload += array.nbytes
    return InferRequest(model=model, version=msg.version, inputs=inputs,
                        request_id=msg.request_id or uuid.uuid4().hex, output_names=output_names,
                        deadline_ns=deadline_ns, payload_bytes=payload, t_received_ns=t_received_ns,
                        call=call, trace=trace, routing_key=routing_key)


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


def serialized(msg: pb.PredictResponse | pb.PredictStreamResponse, request_id: str, max_bytes: int) -> bytes:
    """``msg``'s wire bytes; RESOURCE_EXHAUSTED when they exceed ``max_bytes`` (gRPC would fail
    the call instead, and on ``PredictStream`` end the whole stream). The adapter serializes the
    answers itself, so knowing their size costs nothing."""
    data = msg.SerializeToString()
    if len(data) > max_bytes:
        raise GatewayError(Status.RESOURCE_EXHAUSTED,
                           f"the answer to request {quote(request_id)} would be {len(data)} bytes, more than the "
                           f"{max_bytes}-byte message limit (max_message_bytes); ask for fewer rows or outputs",
                           reason="too_large")
    return data


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
                                    shift_score=f.shift_score, nan_count=f.nan_count) for f in s.top_shifts],
        quality=_quality(s.quality) if s.quality is not None else None,
        drift=_drift(s.drift) if s.drift is not None else None)
        for s in stats.models]
    return pb.StatsResponse(models=models, ring_drops=stats.ring_drops, feedback_unknown=stats.feedback_unknown,
                            rejected=[pb.Rejected(model=r.model, version=r.version, status=r.status, reason=r.reason,
                                                  requests=r.requests) for r in stats.rejected],
                            shadow=[pb.ShadowPair(primary=s.primary, shadow=s.shadow, mirrored=s.mirrored, shed=s.shed,
                                                  errors=s.errors, agreement=s.agreement,
                                                  compared_rows=s.compared_rows, mean_abs_diff=s.mean_abs_diff,
                                                  p50_ms=s.p50_ms, p99_ms=s.p99_ms) for s in stats.shadow],
                            workers=stats.workers, worker_restarts=stats.worker_restarts)


def _measure(m: DriftMeasure) -> pb.DriftMeasure:
    return pb.DriftMeasure(input=m.input, feature=m.feature, psi=m.psi, js=m.js, ks=m.ks, ks_error=m.ks_error,
                           grade=m.grade, window_rows=m.window_rows, nan_rate=m.nan_rate, inf_rate=m.inf_rate,
                           out_of_range_rate=m.out_of_range_rate)


def _drift(d: DriftSnapshot) -> pb.Drift:
    return pb.Drift(
        reference=d.reference, reference_rows=d.reference_rows, window_rows=d.window_rows, window_s=d.window_s,
        features=[_measure(m) for m in d.features], features_alert=d.features_alert,
        features_warn=d.features_warn, features_ok=d.features_ok,
        predicted_class=_measure(d.predicted_class) if d.predicted_class is not None else None,
        confidence=_measure(d.confidence) if d.confidence is not None else None,
        change_alarms=d.change_alarms, outlier_rate=d.outlier_rate, outlier_scored_rows=d.outlier_scored_rows,
        changes=[pb.ChangeAlarm(input=c.input, feature=c.feature, side=c.side, row=c.row, statistic=c.statistic,
                                age_s=c.age_s) for c in d.changes],
        data_quality=[_measure(m) for m in d.data_quality],
        prediction=_measure(d.prediction) if d.prediction is not None else None)


def _quality(q: QualitySnapshot) -> pb.Quality:
    return pb.Quality(
        kind=q.kind, predictions=q.predictions, joined=q.joined, late=q.late, duplicate=q.duplicate,
        invalid=q.invalid, join_rate=q.join_rate, window=q.window, accuracy=q.accuracy,
        macro_precision=q.macro_precision, macro_recall=q.macro_recall, macro_f1=q.macro_f1,
        classes=[pb.ClassQuality(label=name, precision=p, recall=r, f1=f, support=n)
                 for name, p, r, f, n in zip(q.classes, q.precision, q.recall, q.f1, q.support)],
        confusion=q.confusion, mae=q.mae, rmse=q.rmse)
