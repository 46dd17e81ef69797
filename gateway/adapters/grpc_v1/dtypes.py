"""gateway.v1 wire element types (``DataType``) <-> numpy dtypes (little-endian)."""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    from ..._proto.gateway_pb2 import DataType

WIRE_TO_NUMPY: dict[int, np.dtype] = {
    1: np.dtype("?"),
    2: np.dtype("u1"),
    3: np.dtype("i1"),
    4: np.dtype("<u2"),
    5: np.dtype("<i2"),
    6: np.dtype("<u4"),
    7: np.dtype("<i4"),
    8: np.dtype("<u8"),
    9: np.dtype("<i8"),
    10: np.dtype("<f2"),
    11: np.dtype("<f4"),
    12: np.dtype("<f8"),
}
# typed as the wire's enum (protobuf enum values are plain ints at run time)
NUMPY_TO_WIRE = cast("dict[np.dtype, DataType]", {v: k for k, v in WIRE_TO_NUMPY.items()})


def to_wire(dtype: np.dtype) -> DataType:
    return NUMPY_TO_WIRE[np.dtype(dtype)]
