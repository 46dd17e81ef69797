"""Parity suite of the request ring: ``gateway.kernels.RequestRing`` / ``RECORD_DTYPE``
against the twin ``tests.reference.ring``, on the same cases (``impl``) and on hypothesis
sequences of writes (every field at and past its C range, floats into integer fields, NaN,
+/-inf, huge and subnormal confidences) and drains (bounded, into a caller's ``out``,
wrapping around the ring, dropping on overflow), compared byte for byte.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kernels import RECORD_DTYPE as NATIVE_DTYPE
from gateway.kernels import RequestRing as NativeRing
from tests.reference import ring as twin
from tests.reference.impls import public
from tests.reference.ring import WRITE_ARGS


def test_public_api_is_the_same():
    assert public(NativeRing) == public(twin.RequestRing)


def test_record_dtype_is_the_same_layout():
    assert twin.RECORD_DTYPE == NATIVE_DTYPE
    assert twin.RECORD_DTYPE.itemsize == NATIVE_DTYPE.itemsize == 80
    assert twin.RECORD_DTYPE.names == NATIVE_DTYPE.names
    assert [twin.RECORD_DTYPE.fields[n][1] for n in twin.RECORD_DTYPE.names] == \
        [NATIVE_DTYPE.fields[n][1] for n in NATIVE_DTYPE.names]


_RANGES = {"uint32": (0, 2**32 - 1), "int64": (-2**63, 2**63 - 1), "int32": (-2**31, 2**31 - 1),
           "uint16": (0, 2**16 - 1), "uint8": (0, 255)}
_KINDS = ["uint32", "int64", "int64", "int64", "int64", "int64", "int64", "uint32", "uint32",
          "int32", "bint", "uint16", "float", "int64", "uint8"]
assert len(_KINDS) == len(WRITE_ARGS) == 15


def _integer(kind):
    lo, hi = _RANGES[kind]
    edge = st.sampled_from([lo, hi, lo - 1, hi + 1, 0, 1, -1, 2**64, -2**64])
    return st.one_of(st.integers(lo, hi), edge,
                     st.floats(allow_nan=True, allow_infinity=True),   # truncated / refused
                     st.sampled_from([True, False, np.int64(7), np.uint64(2**63), "3", None]))


_confidence = st.one_of(
    st.floats(width=32), st.floats(),                   # any float32 / double (rounded)
    st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, 3.5e38, -1e39, 1e-46, 5e-324,
                     -0.0, 2**200, 7, True, np.float32(0.25), "0.5", None]))
_FIELD = {"bint": st.one_of(st.booleans(), st.sampled_from([0, 2, -1, "", "x", None, 0.0])),
          "float": _confidence}
_valid_record = st.tuples(*(
    st.booleans() if k == "bint" else st.floats(width=32) if k == "float"
    else st.integers(*_RANGES[k]) for k in _KINDS))
_any_record = st.tuples(*(_FIELD[k] if k in _FIELD else _integer(k) for k in _KINDS))


def _call(fn, *args):
    """(result, None) or (None, exception type): what a call did, comparable across impls."""
    try:
        return fn(*args), None
    except Exception as e:       # noqa: BLE001 - the type is the observation
        return None, type(e)


def _drained(arr):
    return None if arr is None else (arr.dtype == NATIVE_DTYPE, arr.shape, arr.tobytes())


operations = st.lists(st.one_of(
    st.tuples(st.just("write"), _valid_record),
    st.tuples(st.just("write"), _any_record),
    st.tuples(st.just("burst"), _valid_record, st.integers(1, 40)),
    st.tuples(st.just("drain"), st.one_of(st.integers(-3, 40), st.sampled_from([2.0, "1"]))),
    st.tuples(st.just("drain_out"), st.integers(-3, 40), st.integers(0, 40)),
), max_size=40)


def run(ring_cls, capacity, ops):
    r = ring_cls(capacity)
    trace = [r.capacity]
    for op, *args in ops:
        if op == "write":
            trace.append(_call(r.write, *args[0]))
        elif op == "burst":                          # many records: fill, wrap, drop
            for i in range(args[1]):
                rec = list(args[0])
                rec[1] = i
                trace.append(r.write(*rec))
        elif op == "drain":
            got, err = _call(r.drain, args[0])
            trace.append((_drained(got), err))
        else:
            out = np.frombuffer(bytes(range(256)) * (args[1] * 80 // 256 + 1),
                                dtype=np.uint8)[:args[1] * 80].copy().view(NATIVE_DTYPE)
            got, err = _call(r.drain, args[0], out)   # garbage-filled out: fully overwritten?
            trace.append((_drained(got), err, out.tobytes()))
        trace.append((len(r), r.dropped, r.written, r.capacity))
    trace.append(_drained(r.drain()))
    return trace


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 5, 8, 13, 16]), operations)
def test_native_equals_twin_on_random_operations(capacity, ops):
    assert run(NativeRing, capacity, ops) == run(twin.RequestRing, capacity, ops)


@pytest.mark.parametrize("capacity, slots", [(1, 1), (2, 2), (3, 4), (5, 8), (1024, 1024),
                                             (1025, 2048), (True, 1), (np.int8(7), 8)])
def test_capacity_is_rounded_up_to_a_power_of_two(impl, capacity, slots):
    r = impl.RequestRing(capacity)
    assert r.capacity == slots and len(r) == 0 and r.dropped == r.written == 0


def test_bad_capacity_and_bad_out(impl):
    for bad in (0, -1):
        with pytest.raises(ValueError):
            impl.RequestRing(bad)
    for bad in ("8", 8.0):                          # Py_ssize_t: __index__ only
        with pytest.raises(TypeError):
            impl.RequestRing(bad)
    r = impl.RequestRing(4)
    r.write(1, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 0)
    with pytest.raises(ValueError):
        r.drain(out=np.empty(4, dtype=np.float64))
    with pytest.raises(ValueError):
        r.drain(out=np.empty(8, dtype=impl.RECORD_DTYPE)[::2])
    assert len(r) == 1                                # a refused drain takes nothing
    assert len(r.drain(out=np.empty(0, dtype=impl.RECORD_DTYPE))) == 0
    assert r.drain(0).dtype == impl.RECORD_DTYPE and len(r) == 1
    for attr in ("capacity", "dropped", "written"):
        with pytest.raises(AttributeError):
            setattr(r, attr, 0)


# -- the cases of the former tests/telemetry/test_kernels.py and test_ring_write.py --------


def test_ring_full_drops_and_wraps(impl):
    ring = impl.RequestRing(3)
    assert ring.capacity == 4
    for i in range(6):
        ring.write(i, i, 0, 0, 0, 0, 0, 0, 0, 0, True, 0, float("nan"), 0, 0)
    assert ring.dropped == 2
    assert ring.drain(2)["model_id"].tolist() == [0, 1]
    for i in range(6, 8):
        ring.write(i, i, 0, 0, 0, 0, 0, 0, 0, 0, False, 0, 0.0, 0, 0)
    out = np.empty(10, dtype=impl.RECORD_DTYPE)
    assert ring.drain(out=out)["model_id"].tolist() == [2, 3, 6, 7]
    assert len(ring.drain()) == 0


def test_write_round_trip_all_fields(impl):
    """RequestRing.write (positional-only fast path) stores every field as given."""
    ring = impl.RequestRing(4)
    big = 5_600_000_000_000_123                      # monotonic_ns-sized timestamps
    assert ring.write(7, big, big + 1, big + 2, big + 3, big + 4, big + 5, 32, 31, 14,
                      True, 3, 0.25, 1 << 40, 1)
    assert ring.write(2**32 - 1, 0, 0, 0, 0, 0, 0, 0, 0, -1, False, 65535, math.nan, 0, 255)
    r = ring.drain()
    assert r[0].tolist() == (big, big + 1, big + 2, big + 3, big + 4, big + 5, 1 << 40,
                             7, 32, 31, 14, 0.25, 3, 1, 1)
    assert r[1]["rpc"] == 255
    assert r[1]["model_id"] == 2**32 - 1 and r[1]["status_code"] == -1
    assert math.isnan(r[1]["confidence"]) and r[1]["fallback_code"] == 65535


def test_write_rejects_bad_arguments(impl):
    ring = impl.RequestRing(4)
    with pytest.raises(TypeError):
        ring.write(0, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0)       # 14 arguments
    with pytest.raises(TypeError):
        ring.write(0, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, rpc=0)
    with pytest.raises(OverflowError):
        ring.write(-1, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 0)   # uint32 model id
    with pytest.raises(OverflowError):
        ring.write(0, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 256)  # one-byte rpc index
    assert ring.written == 0 and len(ring.drain()) == 0


def test_integer_fields_truncate_floats_like_cython(impl):
    """What Cython does with a float for a C integer: truncation toward zero (so -0.5 is a
    valid uint32), NaN refused with ValueError, inf with OverflowError."""
    ring = impl.RequestRing(4)
    assert ring.write(1.9, 2.5, 0, 0, 0, 0, 0, -0.5, 1, -3.7, 2.0, 0, 1, 0, 0)
    r = ring.drain()[0]
    assert (r["model_id"], r["t_received_ns"], r["batch_size"], r["status_code"],
            r["degraded"], r["confidence"]) == (1, 2, 0, -3, 1, 1.0)
    with pytest.raises(ValueError):
        ring.write(math.nan, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 0)
    with pytest.raises(OverflowError):
        ring.write(0, math.inf, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 0)
    assert ring.written == 1
