from __future__ import annotations

import numpy as np
import pytest

from gateway.api import GatewayError, Status
from gateway.api import InferRequest, TensorSpec
from gateway.core.validation import validate

SPECS = [TensorSpec("a", np.dtype("<f4"), (-1, 4)), TensorSpec("b", np.dtype("<i8"), (-1,))]


def _check(inputs, batchable=True, outputs=()):
    return validate(InferRequest(model="m", inputs=inputs, output_names=outputs), SPECS,
                    {s.name: s for s in SPECS}, ["out"], "m@1", batchable)


def test_rows_are_the_shared_leading_dimension():
    assert _check({"a": np.zeros((3, 4), np.float32), "b": np.zeros(3, np.int64)}) == 3
    assert _check({"a": np.zeros((3, 4), np.float32), "b": np.zeros(3, np.int64)}, batchable=False) == 1


@pytest.mark.parametrize("inputs,fragment", [
    ({"a": np.zeros((3, 4), np.float32)}, "missing input 'b' (expected int64[-1])"),
    ({"a": np.zeros((3, 4), np.float32), "b": np.zeros(2, np.int64)}, "input 'b': has 2 rows but other inputs have 3"),
    ({"a": np.zeros((3, 5), np.float32), "b": np.zeros(3, np.int64)}, "dimension 1 expected 4, got 5"),
    ({"a": np.zeros((3, 4), np.float16), "b": np.zeros(3, np.int64)}, "expected dtype float32, got float16"),
    ({"a": np.zeros((3, 4, 1), np.float32), "b": np.zeros(3, np.int64)}, "expected rank 2"),
    ({"a": np.zeros((3, 4), np.float32), "b": np.zeros(3, np.int64), "c": np.zeros(1)}, "unexpected input 'c'"),
])
def test_each_problem_is_named(inputs, fragment):
    with pytest.raises(GatewayError) as info:
        _check(inputs)
    assert info.value.status == Status.INVALID_ARGUMENT
    assert fragment in info.value.message


def test_unknown_output_is_named():
    with pytest.raises(GatewayError, match="unknown output 'nope'"):
        _check({"a": np.zeros((1, 4), np.float32), "b": np.zeros(1, np.int64)}, outputs=("nope",))
