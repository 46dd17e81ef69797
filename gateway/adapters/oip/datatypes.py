"""The protocol's element type names ("FP32", "INT64", "BYTES", ...) and the model
configuration's (``TYPE_FP32``) <-> numpy dtypes (little-endian).

BYTES (strings) has no numpy dtype here: the gateway's ONNX runtime carries numeric and bool
tensors only, so a BYTES input is refused by name, and BYTES appears only in answers the
adapter makes itself (classification). BF16 has no numpy dtype either.
"""
from __future__ import annotations

import numpy as np

BYTES = "BYTES"

NAME_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
NUMPY_TO_NAME: dict[np.dtype, str] = {v: k for k, v in NAME_TO_NUMPY.items()}
KNOWN = frozenset(NAME_TO_NUMPY) | {BYTES, "BF16"}

# InferTensorContents field that carries each type's values (FP16 has none: raw only)
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}
CONTENTS_FIELDS = tuple(sorted(set(CONTENTS_FIELD.values())))

# model_config.proto's DataType numbers
_CONFIG_TYPE = {"BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7,
                "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, BYTES: 13, "BF16": 14}


def name_of(dtype: np.dtype) -> str:
    return NUMPY_TO_NAME[np.dtype(dtype)]


def config_type(dtype: np.dtype) -> int:
    """``TYPE_<...>`` of model_config.proto for a numpy dtype."""
    return _CONFIG_TYPE[name_of(dtype)]
