"""Property tests of every decoder from wire bytes to numpy (issue 11, item 9), in-process.

Whatever the bytes — random tensors and requests, valid messages with bytes mutated, noise — the
decoders either give a request whose arrays are read-only views no larger than the limit and the
message, or raise INVALID_ARGUMENT with a bounded message; nothing else escapes, and what Python
allocates while decoding stays within a small multiple of the message's length.

Each property runs 150 examples; ``GATEWAY_FUZZ_EXAMPLES=5000 pytest tests/adapters/grpc_v1/test_fuzz.py``
runs a longer search. Failing examples found are kept below as ``@example`` cases.
"""
from __future__ import annotations

import math
import os
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway._proto import gateway_pb2 as pb
from gateway.adapters.grpc_v1 import converters
from gateway.adapters.grpc_v1.converters import MAX_INPUTS, MAX_RANK, decode_tensor, parse_request, to_infer_request
from gateway.adapters.grpc_v1.dtypes import WIRE_TO_NUMPY
from gateway.api import GatewayError, InferRequest, Status
from gateway.api.text import MESSAGE_LIMIT_BYTES

MAX_BYTES = 1 << 16
FUZZ = settings(max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

HUGE = st.sampled_from([1 << 31, 1 << 32, 1 << 62, (1 << 63) - 1])
DIMS = st.one_of(st.integers(0, 9), HUGE, st.integers(0, (1 << 63) - 1))
SHAPES = st.one_of(
    st.lists(st.integers(0, 6), max_size=5),                                      # mostly holdable
    st.lists(DIMS, max_size=MAX_RANK + 8),
    st.tuples(st.lists(DIMS, min_size=1, max_size=4), st.integers(0, 4)).map(     # a zero beside the rest
        lambda dims_at: dims_at[0][:dims_at[1]] + [0] + dims_at[0][dims_at[1]:]),
    st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=8))                 # negatives too
VALID_DTYPES = st.sampled_from(sorted(WIRE_TO_NUMPY))
DTYPES = st.one_of(VALID_DTYPES, VALID_DTYPES, VALID_DTYPES, st.integers(-(1 << 31), (1 << 31) - 1))
NAMES = st.text(max_size=120)


@st.composite
def tensors(draw) -> pb.Tensor:
    """Random fields, and about half the time data of exactly the length the shape asks for."""
    dtype, shape = draw(DTYPES), draw(SHAPES)
    itemsize = WIRE_TO_NUMPY[dtype].itemsize if dtype in WIRE_TO_NUMPY else 1
    needed = math.prod(shape) * itemsize if all(d >= 0 for d in shape) else -1
    if 0 <= needed <= 4096 and draw(st.booleans()):
        data = draw(st.binary(min_size=needed, max_size=needed))
    else:
        data = draw(st.binary(max_size=300))
    return pb.Tensor(name=draw(NAMES), dtype=dtype, shape=shape, data=data)


@st.composite
def requests(draw) -> pb.PredictRequest:
    inputs = draw(st.lists(tensors(), max_size=4))
    if inputs and draw(st.booleans()):
        inputs.append(inputs[0])  # a duplicate name
    return pb.PredictRequest(model=draw(NAMES), version=draw(NAMES), request_id=draw(NAMES), inputs=inputs,
                             output_names=draw(st.lists(NAMES, max_size=3)),
                             parameters=draw(st.dictionaries(NAMES, NAMES, max_size=3)))


def _invalid(exc: GatewayError) -> None:
    assert exc.status is Status.INVALID_ARGUMENT, exc
    assert exc.message and len(exc.message.encode()) <= MESSAGE_LIMIT_BYTES


def _check_array(array: np.ndarray, tensor: pb.Tensor) -> None:
    assert array.dtype == WIRE_TO_NUMPY[tensor.dtype] and array.shape == tuple(tensor.shape)
    assert array.nbytes == len(tensor.data) <= MAX_BYTES
    assert not array.flags.owndata and not array.flags.writeable  # a read-only view of the bytes


@FUZZ
@given(tensors())
@example(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[0, 1 << 62]))          # numpy: "array is too big"
@example(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[0] * (MAX_RANK + 1)))  # numpy: "maximum ... 64"
@example(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT64, shape=[0, 1 << 31, 1 << 31, 1 << 31]))
@example(pb.Tensor(name="x", dtype=pb.DATA_TYPE_BOOL, shape=[(1 << 63) - 1, 0]))
def test_decode_tensor_gives_a_bounded_view_or_invalid_argument(tensor):
    try:
        array = decode_tensor(tensor, MAX_BYTES)
    except GatewayError as exc:
        _invalid(exc)
        assert exc.message.startswith("input ")
        return
    _check_array(array, tensor)


def _decode(data: bytes) -> InferRequest | None:
    """parse + convert; None for INVALID_ARGUMENT (checked), anything else propagates."""
    try:
        return to_infer_request(parse_request(data), t_received_ns=1, deadline_ns=0, max_bytes=MAX_BYTES)
    except GatewayError as exc:
        _invalid(exc)
        return None


def _decode_bounded(data: bytes) -> InferRequest | None:
    """:func:`_decode`, checking that Python allocates at most a small multiple of the message
    (the tensors' bytes are copied once out of the message; shapes are at most MAX_RANK long)."""
    tracemalloc.start()
    try:
        decoded = _decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 2 * len(data) + 256 * 1024, (peak, len(data))
    if decoded is not None:
        assert decoded.payload_bytes == sum(a.nbytes for a in decoded.inputs.values()) <= len(data)
    return decoded


@FUZZ
@given(requests())
def test_random_requests_decode_or_are_invalid_argument(msg):
    decoded = _decode_bounded(msg.SerializeToString())
    if decoded is None:
        return
    assert (decoded.model, decoded.version) == (msg.model, msg.version) and decoded.model
    assert decoded.request_id == (msg.request_id or decoded.request_id) and decoded.request_id
    assert decoded.output_names == tuple(msg.output_names)
    for tensor in msg.inputs:
        _check_array(decoded.inputs[tensor.name], tensor)


def _valid_request(draw) -> pb.PredictRequest:
    arrays = draw(st.lists(st.tuples(VALID_DTYPES,
                                     st.lists(st.integers(0, 4), max_size=4)), min_size=1, max_size=3))
    inputs = [pb.Tensor(name=f"in{i}", dtype=dtype, shape=shape,
                        data=b"\1" * (math.prod(shape) * WIRE_TO_NUMPY[dtype].itemsize))
              for i, (dtype, shape) in enumerate(arrays)]
    return pb.PredictRequest(model=draw(NAMES.filter(bool)), request_id=draw(NAMES), inputs=inputs,
                             output_names=draw(st.lists(NAMES, max_size=2)),
                             parameters=draw(st.dictionaries(NAMES, NAMES, max_size=2)))


MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                               st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)), min_size=1, max_size=6)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for op, where, noise in mutations:
        at = where % (len(out) + 1)
        if op == "flip" and at < len(out):
            out[at] ^= noise[0] or 0x80
        elif op == "set" and at < len(out):
            out[at] = noise[0]
        elif op == "insert":
            out[at:at] = noise
        elif op == "delete":
            del out[at:at + len(noise)]
        elif op == "truncate":
            del out[at:]
    return bytes(out)


@FUZZ
@given(st.data(), MUTATIONS)
def test_valid_messages_with_bytes_mutated_decode_or_are_invalid_argument(data, mutations):
    wire = _valid_request(data.draw).SerializeToString()
    assert _decode_bounded(wire) is not None  # the unmutated message is fine
    _decode_bounded(_mutate(wire, mutations))


@FUZZ
@given(st.binary(max_size=512))
@example(b"\x00")           # field 0: grpcio's deserializer raised DecodeError (UNKNOWN to the client)
@example(b"\x0a\x02\xc3\x28")  # model with invalid UTF-8
@example(b"\x22\x03\x1a\x01\xff")  # a shape varint cut inside a tensor
def test_noise_decodes_or_is_invalid_argument(data):
    _decode_bounded(data)


@FUZZ
@given(st.sampled_from([pb.ListModelsRequest, pb.GetModelRequest, pb.GetStatsRequest]), st.binary(max_size=64))
@example(pb.GetModelRequest, b"\x0a\x01\xff")  # a name of invalid UTF-8
def test_the_other_requests_parse_or_are_invalid_argument(kind, data):
    try:
        msg = converters.parse_message(kind, data)
    except GatewayError as exc:
        _invalid(exc)
        assert exc.message.startswith(f"request is not a valid {kind.DESCRIPTOR.full_name} ({len(data)} bytes): ")
    else:
        assert isinstance(msg, kind)


@FUZZ
@given(st.data(), st.one_of(st.integers(0, 8), st.integers(MAX_INPUTS - 4, MAX_INPUTS + 2)),
       st.integers(0, 3 * MAX_RANK), st.booleans())
def test_the_scan_of_long_messages_refuses_only_what_the_parse_would(data, extra_inputs, rank, packed):
    """The scan that runs before protobuf's parse on long messages (entry and rank limits) refuses
    no message that the checks after the parse would accept, and lets through no more entries."""
    msg = _valid_request(data.draw)
    msg.inputs.extend(pb.Tensor(name=f"x{i}", dtype=pb.DATA_TYPE_UINT8, shape=[0]) for i in range(extra_inputs))
    if packed:
        deep = pb.Tensor(name="deep", dtype=pb.DATA_TYPE_UINT8, shape=[1] * rank, data=b"\1").SerializeToString()
    else:  # the same dimensions one field each (parsers accept both encodings)
        deep = pb.Tensor(name="deep", dtype=pb.DATA_TYPE_UINT8, data=b"\1").SerializeToString() + b"\x18\x01" * rank
    body = msg.SerializeToString() + b"\x22" + _varint(len(deep)) + deep
    inputs = len(msg.inputs) + 1
    try:
        converters._Prescan(body).request()
    except GatewayError as exc:
        _invalid(exc)
        assert inputs > MAX_INPUTS or rank > MAX_RANK
        assert _decode(body) is None  # the checks after the parse refuse it too
    else:
        assert inputs <= MAX_INPUTS and (rank <= MAX_RANK or packed)
        assert (_decode(body) is not None) == (rank <= MAX_RANK)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)
