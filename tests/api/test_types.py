"""The shared plain types: tensor specs describe themselves, requests are read-only, errors carry
their status and retry hint."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.api import GatewayError, InferRequest, Status, TensorSpec, dtype_name, invalid, not_found


def test_dtype_names_and_spec_descriptions():
    assert [dtype_name(np.dtype(d)) for d in ("?", "<f4", "<i8", "u1", "<f2")] == \
        ["bool", "float32", "int64", "uint8", "float16"]
    assert TensorSpec("x", np.dtype("<f4"), (-1, 16)).describe() == "float32[-1,16]"
    assert TensorSpec("s", np.dtype("?"), ()).describe() == "bool[]"


def test_a_request_is_read_only():
    r = InferRequest(model="m", inputs={})
    with pytest.raises(AttributeError):           # frozen (FrozenInstanceError is one too)
        r.model = "other"
    assert (r.version, r.deadline_ns, r.call, r.trace) == ("", 0, 0, None)


def test_errors_carry_status_message_and_retry_hint():
    e = GatewayError(Status.RESOURCE_EXHAUSTED, "full", retry_after_ms=50)
    assert (e.status, e.message, e.retry_after_ms, str(e)) == (Status.RESOURCE_EXHAUSTED, "full", 50, "full")
    assert repr(e) == "GatewayError(RESOURCE_EXHAUSTED, 'full')"
    assert invalid("bad").status is Status.INVALID_ARGUMENT and not_found("gone").status is Status.NOT_FOUND
    assert invalid("bad").retry_after_ms is None
    assert [int(s) for s in (Status.OK, Status.DEADLINE_EXCEEDED, Status.INTERNAL, Status.UNAVAILABLE)] == \
        [0, 4, 13, 14]                                      # gRPC's codes, one to one
