"""Checks a decoded request against the model's declared inputs; every message names the tensor
(client-supplied names cut by :func:`gateway.api.quote`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..api import InferRequest, TensorSpec, dims, dtype_name, invalid, quote


def _shape(shape: Sequence[int]) -> str:
    return dims(shape, sep=",")


def validate(request: InferRequest, inputs: Sequence[TensorSpec], input_by_name: dict[str, TensorSpec],
             output_names: Sequence[str], served_by: str, batchable: bool) -> int:
    """Raise INVALID_ARGUMENT naming the first problem; return the request's row count.

    Row count is the shared leading dimension for batchable models, else 1.
    """
    got = request.inputs
    for spec in inputs:
        if spec.name not in got:
            raise invalid(f"model {served_by}: missing input {spec.name!r} "
                          f"(expected {spec.describe()})", "missing_input")
    if len(got) != len(inputs):
        extra = sorted(set(got) - set(input_by_name))
        raise invalid(f"model {served_by}: unexpected input {quote(extra[0])}; "
                      f"the model takes {', '.join(repr(s.name) for s in inputs)}", "unexpected_input")
    rows = -1
    for spec in inputs:
        array = got[spec.name]
        if array.dtype != spec.dtype:
            raise invalid(f"input {spec.name!r}: expected dtype {dtype_name(spec.dtype)}, "
                          f"got {dtype_name(array.dtype)}", "dtype")
        if array.ndim != len(spec.shape):
            raise invalid(f"input {spec.name!r}: expected rank {len(spec.shape)} "
                          f"(shape {_shape(spec.shape)}), got rank {array.ndim} (shape {_shape(array.shape)})",
                          "shape")
        for axis, (want, have) in enumerate(zip(spec.shape, array.shape)):
            if want >= 0 and want != have:
                raise invalid(f"input {spec.name!r}: dimension {axis} expected {want}, got {have} "
                              f"(expected shape {_shape(spec.shape)}, got {_shape(array.shape)})", "shape")
        if batchable:
            if array.shape[0] == 0:
                raise invalid(f"input {spec.name!r}: batch dimension is 0; send at least one row", "empty_batch")
            if rows == -1:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise invalid(f"input {spec.name!r}: has {array.shape[0]} rows but other inputs have {rows}",
                              "rows_mismatch")
    for name in request.output_names:
        if name not in output_names:
            raise invalid(f"model {served_by}: unknown output {quote(name)}; outputs are "
                          f"{', '.join(repr(n) for n in output_names)}", "unknown_output")
    return rows if batchable else 1


def contiguous(array: np.ndarray) -> np.ndarray:
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)
