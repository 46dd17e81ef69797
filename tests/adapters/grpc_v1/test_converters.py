from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway._proto import gateway_pb2 as pb
from gateway.adapters.grpc_v1.dtypes import NUMPY_TO_WIRE
from gateway.adapters.grpc_v1.converters import (
    MAX_INPUTS,
    MAX_OUTPUT_NAMES,
    MAX_PARAMETERS,
    MAX_RANK,
    PRESCAN_ABOVE_BYTES,
    PRESCAN_MAX_FIELDS,
    decode_tensor,
    encode_tensor,
    parse_request,
    serialized,
    to_infer_request,
    to_predict_response,
)
from gateway.api import GatewayError, InferResponse, Status
from gateway.api.text import MESSAGE_LIMIT_BYTES
from tests.conftest import parse_reason

DTYPES = st.sampled_from(sorted(NUMPY_TO_WIRE, key=str))


@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_round_trip_is_exact_and_zero_copy(array):
    tensor = encode_tensor("x", array)
    decoded = decode_tensor(tensor, 1 << 20)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    assert not decoded.flags.owndata  # a view on the message bytes


def test_errors_name_the_tensor():
    ok = np.zeros((2, 3), np.float32).tobytes()
    with pytest.raises(GatewayError, match="'x': 20 bytes of data but shape \\[2, 3\\] x float32 needs 24"):
        decode_tensor(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[2, 3], data=ok[:20]), 1 << 20)
    with pytest.raises(GatewayError, match="'x': dimension 1 is negative"):
        decode_tensor(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[2, -3]), 1 << 20)
    with pytest.raises(GatewayError, match="message limit"):
        decode_tensor(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT64, shape=[1 << 31, 1 << 31]), 1 << 20)
    with pytest.raises(GatewayError, match="unsupported or missing dtype 99"):
        decode_tensor(pb.Tensor(name="x", dtype=99, shape=[1]), 1 << 20)


# -- shapes numpy cannot hold (issue 11, item 1): INVALID_ARGUMENT naming the tensor and the limit --
UNHOLDABLE = [
    ("rank above numpy's limit", pb.DATA_TYPE_FLOAT32, [1] * (MAX_RANK + 1), f"the {MAX_RANK} dimensions"),
    ("rank 100000", pb.DATA_TYPE_FLOAT32, [1] * 100_000, "rank 100000"),
    ("zero beside a huge dimension", pb.DATA_TYPE_FLOAT32, [0, 1 << 62], "is empty but"),
    ("huge dimension beside a zero", pb.DATA_TYPE_UINT8, [1 << 62, 0], "is empty but"),
    ("zero beside dims whose product overflows int64", pb.DATA_TYPE_FLOAT64, [0, 1 << 31, 1 << 31, 1 << 31],
     "is empty but"),
    ("the largest int64 dimension", pb.DATA_TYPE_BOOL, [(1 << 63) - 1], "message limit"),
    ("64 huge dimensions", pb.DATA_TYPE_FLOAT32, [1 << 62] * 64, "more than 10^"),
    ("bytes past the limit", pb.DATA_TYPE_FLOAT64, [1 << 17, 1 << 4], "message limit"),
]


@pytest.mark.parametrize("case,dtype,shape,fragment", UNHOLDABLE, ids=[c[0] for c in UNHOLDABLE])
def test_shapes_numpy_cannot_hold_are_invalid_argument_naming_tensor_and_limit(case, dtype, shape, fragment):
    with pytest.raises(GatewayError) as info:
        decode_tensor(pb.Tensor(name="x", dtype=dtype, shape=shape), 1 << 20)
    assert info.value.status is Status.INVALID_ARGUMENT
    message = info.value.message
    assert message.startswith("input 'x': ") and fragment in message
    assert str(MAX_RANK) in message or "1048576-byte message limit (max_message_bytes)" in message
    assert len(message.encode()) <= MESSAGE_LIMIT_BYTES


def test_empty_shapes_numpy_can_hold_still_decode():
    assert decode_tensor(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[0, 16]), 1 << 20).shape == (0, 16)
    assert decode_tensor(pb.Tensor(name="x", dtype=pb.DATA_TYPE_UINT8, shape=[0] * MAX_RANK), 64).ndim == MAX_RANK
    # the limit is inclusive: [0, 2**18] float32 describes exactly 1 MiB beside its zero
    assert decode_tensor(pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[0, 1 << 18]), 1 << 20).size == 0


def test_client_names_are_quoted_cut():
    name = "n" * 1_000_000
    with pytest.raises(GatewayError) as info:
        decode_tensor(pb.Tensor(name=name, dtype=pb.DATA_TYPE_FLOAT32, shape=[2], data=b"x"), 1 << 20)
    assert "… (1000000 chars): 1 bytes of data" in info.value.message
    assert len(info.value.message) < 300
    request = pb.PredictRequest(model="m", inputs=[pb.Tensor(name=name, dtype=pb.DATA_TYPE_UINT8, shape=[1],
                                                             data=b"1")] * 2)
    with pytest.raises(GatewayError, match=r"… \(1000000 chars\) is given more than once"):
        to_infer_request(request, t_received_ns=1, deadline_ns=0, max_bytes=1 << 20)


# -- bytes that do not parse (item 4) --
@pytest.mark.parametrize("data,reason", [
    (b"\xff\xff\xff", "Wire format was corrupt"),
    (b"\x0a\x03a\xffc", "String field had bad UTF-8"),        # model = "a\xffc"
    (b"\x0a\x05ab", "Wire format was corrupt"),              # truncated
    (b"\x22\x03\x1a\x01\xff", "Wire format was corrupt"),   # inputs[0].shape with a cut varint
])
def test_bytes_that_are_no_predict_request_are_invalid_argument(data, reason):
    with pytest.raises(GatewayError) as info:
        parse_request(data)
    assert info.value.status is Status.INVALID_ARGUMENT
    reason = parse_reason(reason)
    assert info.value.message == f"request is not a valid gateway.v1.PredictRequest ({len(data)} bytes): {reason}"


def test_a_valid_request_parses_to_the_same_message():
    msg = pb.PredictRequest(model="m", version="2", request_id="r", output_names=["y"], parameters={"k": "v"},
                            inputs=[pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[1, 2],
                                              data=np.ones(2, np.float32).tobytes())])
    assert parse_request(msg.SerializeToString()) == msg
    big = pb.PredictRequest(model="m", inputs=[pb.Tensor(name="x", dtype=pb.DATA_TYPE_UINT8, shape=[1 << 17],
                                                         data=b"\1" * (1 << 17))])
    assert parse_request(big.SerializeToString()) == big  # (scanned first: past PRESCAN_ABOVE_BYTES)


# -- entry counts that protobuf's parse would multiply (memory) --
@pytest.mark.parametrize("field,make,limit", [
    ("input tensors", lambda i: {"inputs": [pb.Tensor(name=f"t{j}") for j in range(i)]}, MAX_INPUTS),
    ("output names", lambda i: {"output_names": [f"o{j}" for j in range(i)]}, MAX_OUTPUT_NAMES),
    ("parameters", lambda i: {"parameters": {f"p{j}": "" for j in range(i)}}, MAX_PARAMETERS),
])
def test_entry_counts_are_limited_before_and_after_the_parse(field, make, limit):
    expected = f"request has more than {limit} {field}"
    small = pb.PredictRequest(model="m", **make(limit + 1)).SerializeToString()
    assert len(small) <= PRESCAN_ABOVE_BYTES
    with pytest.raises(GatewayError, match=expected):
        to_infer_request(parse_request(small), t_received_ns=1, deadline_ns=0, max_bytes=1 << 20)
    data = small + _padding_field(PRESCAN_ABOVE_BYTES)
    with pytest.raises(GatewayError, match=expected):
        parse_request(data)  # refused by the scan, before protobuf allocates the entries
    at_limit = pb.PredictRequest(model="m", **make(limit)).SerializeToString()
    parse_request(at_limit + _padding_field(PRESCAN_ABOVE_BYTES))  # the limit itself is allowed


def _padding_field(nbytes: int) -> bytes:
    """An unknown length-delimited field (number 15) of ``nbytes``: makes a message long without
    adding entries."""
    return b"\x7a" + _varint(nbytes) + b"\0" * nbytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_a_deep_shape_in_a_long_message_is_refused_by_the_scan_naming_the_tensor():
    for shape_bytes in (pb.Tensor(name="deep", shape=[1] * 100_000).SerializeToString(),
                        b"\x0a\x04deep" + b"\x18\x01" * (MAX_RANK + 1)):  # packed, then unpacked dimensions
        data = b"\x0a\x01m" + b"\x22" + _varint(len(shape_bytes)) + shape_bytes + _padding_field(PRESCAN_ABOVE_BYTES)
        with pytest.raises(GatewayError) as info:
            parse_request(data)
        assert info.value.message == f"input 'deep': shape has more than the {MAX_RANK} dimensions a tensor may have"


def test_the_scan_refuses_groups_and_bounds_its_own_work():
    with pytest.raises(GatewayError, match="field 5 has wire type 3, which gateway.v1 never uses"):
        parse_request(b"\x2b" + _padding_field(PRESCAN_ABOVE_BYTES))
    unknown = b"\x78\x01" * (PRESCAN_MAX_FIELDS + 1) + _padding_field(PRESCAN_ABOVE_BYTES)  # field 15, varints
    with pytest.raises(GatewayError, match=f"request has more than {PRESCAN_MAX_FIELDS} fields"):
        parse_request(unknown)


def test_a_long_message_that_is_corrupt_after_the_scan_is_named_by_the_parse():
    data = pb.PredictRequest(model="m").SerializeToString() + _padding_field(PRESCAN_ABOVE_BYTES)[:-1]
    with pytest.raises(GatewayError, match="not a valid gateway.v1.PredictRequest .*: "
                                           + re.escape(parse_reason("Wire format was corrupt"))):
        parse_request(data)


# -- answers that would not fit the message limit --
def test_an_answer_over_the_limit_is_resource_exhausted_naming_its_size():
    big = to_predict_response(InferResponse(request_id="r1", model="m", version="1", served_by="m@1",
                                            outputs={"y": np.zeros((1 << 12, 64), np.float32)}))  # 1 MiB of data
    size = big.ByteSize()
    assert serialized(big, "r1", size) == big.SerializeToString()  # the limit itself is allowed
    with pytest.raises(GatewayError) as info:
        serialized(big, "r1", size - 1)
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    assert info.value.message == (f"the answer to request 'r1' would be {size} bytes, more than the {size - 1}-byte "
                                  "message limit (max_message_bytes); ask for fewer rows or outputs")
