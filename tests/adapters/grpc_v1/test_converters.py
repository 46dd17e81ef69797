from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway._proto import gateway_pb2 as pb
from gateway.adapters.grpc_v1.dtypes import NUMPY_TO_WIRE
from gateway.api import GatewayError
from gateway.adapters.grpc_v1.converters import decode_tensor, encode_tensor

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
