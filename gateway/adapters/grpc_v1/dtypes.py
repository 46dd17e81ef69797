"""gateway.v1 wire element types (``DataType``) <-> numpy dtypes (little-endian)."""
from __future__ import annotations

import numpy as np

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
NUMPY_TO_WIRE: dict[np.dtype, int] = {v: k for k, v in WIRE_TO_NUMPY.items()}


def to_wire(dtype: np.dtype) -> int:
    return NUMPY_TO_WIRE[np.dtype(dtype)]
