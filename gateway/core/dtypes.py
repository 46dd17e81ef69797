"""Tensor element types: wire names, numpy dtypes and ONNX type strings."""
from __future__ import annotations

import numpy as np

# Wire enum values (gateway.v1.DataType) -> little-endian numpy dtype.
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

ONNX_TO_NUMPY: dict[str, np.dtype] = {
    "tensor(bool)": np.dtype("?"),
    "tensor(uint8)": np.dtype("u1"),
    "tensor(int8)": np.dtype("i1"),
    "tensor(uint16)": np.dtype("<u2"),
    "tensor(int16)": np.dtype("<i2"),
    "tensor(uint32)": np.dtype("<u4"),
    "tensor(int32)": np.dtype("<i4"),
    "tensor(uint64)": np.dtype("<u8"),
    "tensor(int64)": np.dtype("<i8"),
    "tensor(float16)": np.dtype("<f2"),
    "tensor(float)": np.dtype("<f4"),
    "tensor(double)": np.dtype("<f8"),
}

_NAMES = {
    "bool": "?", "uint8": "u1", "int8": "i1", "uint16": "<u2", "int16": "<i2",
    "uint32": "<u4", "int32": "<i4", "uint64": "<u8", "int64": "<i8",
    "float16": "<f2", "float32": "<f4", "float64": "<f8",
}
NAME_TO_NUMPY: dict[str, np.dtype] = {k: np.dtype(v) for k, v in _NAMES.items()}


def dtype_name(dtype: np.dtype) -> str:
    """Short name used in messages and metadata: float32, int64, ..."""
    return "bool" if dtype == np.dtype("?") else np.dtype(dtype).name


def to_wire(dtype: np.dtype) -> int:
    return NUMPY_TO_WIRE[np.dtype(dtype)]
