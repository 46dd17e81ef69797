"""Parity suite of the change detector: ``gateway.kernels.ChangeDetector`` (and the threshold
functions) against the twin ``tests.reference.changepoint``, on hypothesis sessions --
references with zero, tiny and huge std, thresholds from small and large knobs, batches of
every accepted dtype and layout with NaN, +/-inf, huge values whose z overflows, -0.0,
empty batches and single rows, resets -- and on adversarial cases, compared exactly
(alarms, statistics to the bit, counts)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.kernels import ChangeDetector as NativeDetector
from gateway.kernels import cusum_arl as native_arl
from gateway.kernels import cusum_threshold as native_threshold
from tests.reference.changepoint import ChangeDetector as TwinDetector
from tests.reference.changepoint import cusum_arl as twin_arl
from tests.reference.changepoint import cusum_threshold as twin_threshold
from tests.reference.impls import public

_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_value = st.one_of(
    st.floats(-4.0, 4.0), st.floats(-4.0, 4.0), st.integers(-3, 3).map(float), _finite,
    st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1e308, -1e308,
                     1.7976931348623157e308, 0.5, 1.0]))
_DTYPES = [np.float64, np.float64, np.float32, np.float32, np.int64, np.int32, np.uint8,
           np.float16, np.bool_, ">f8", "<f4"]


@st.composite
def configs(draw):
    """(reference_mean, reference_std, keyword arguments)."""
    nf = draw(st.integers(1, 5))
    mean = draw(st.lists(st.one_of(st.floats(-2, 2), st.sampled_from([0.0, 1.0]), _finite),
                         min_size=nf, max_size=nf))
    std = draw(st.lists(st.one_of(st.floats(0.1, 3), st.just(1.0), st.just(0.0),
                                  st.sampled_from([5e-324, 1e-300, 1e300]),
                                  st.floats(0, 1e308)), min_size=nf, max_size=nf))
    kw = {}
    if draw(st.booleans()):
        # small knobs: thresholds near 0, many alarms
        kw["expected_rows_between_false_alarms"] = draw(st.one_of(
            st.floats(1.0, 50.0), st.floats(1.0, 1e12), st.sampled_from([1.0, 1e6, 1e7])))
    if draw(st.booleans()):
        kw["allowance_sigma"] = draw(st.one_of(st.floats(0.0, 2.0),
                                               st.sampled_from([0.0, 0.25, 1e-300, 1e-6])))
    return mean, std, kw


@st.composite
def batches(draw, nf):
    rows = draw(st.integers(0, 8))
    scale = draw(st.sampled_from([1.0, 1.0, 3.0]))
    x = draw(hnp.arrays(np.float64, (rows, nf), elements=_value))
    dtype = draw(st.sampled_from(_DTYPES))
    with np.errstate(all="ignore"):
        x = x * scale
        if np.dtype(dtype).kind in "iub":
            x = np.nan_to_num(x, nan=0, posinf=7, neginf=-7).clip(-7, 7)
            if np.dtype(dtype).kind in "ub":
                x = np.abs(x)
        x = x.astype(dtype)
    layout = draw(st.sampled_from(["c", "c", "fortran", "list", "1d", "3d", "strided"]))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "list":
        x = x.tolist()
    elif layout == "1d":
        x = x.reshape(-1)
    elif layout == "3d":
        x = x.reshape(rows, 1, nf)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=0)[::2]
    return x


@st.composite
def sessions(draw):
    mean, std, kw = draw(configs())
    xs = batches(len(mean))
    ops = draw(st.lists(st.one_of(st.tuples(st.just("observe"), xs),
                                  st.tuples(st.just("observe"), xs),
                                  st.tuples(st.just("observe"), xs),
                                  st.tuples(st.just("reset"))), max_size=12))
    return mean, std, kw, ops


def _exact(v):
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes() if v.dtype.kind == "f" else v.tolist())
    if isinstance(v, float):
        return ("float", v.hex())
    return v


def _alarms(alarms):
    for a in alarms:
        assert type(a) is tuple and len(a) == 4
        assert type(a[0]) is int and a[1] in ("up", "down") and type(a[2]) is int
        assert type(a[3]) is float
    return [(f, side, row, s.hex()) for f, side, row, s in alarms]


def snapshot(d):
    s = d.state()
    assert set(s) == {"up", "down", "nan_count", "reference_mean", "reference_std",
                      "rows_seen", "alarm_count"}
    return ({k: _exact(v) for k, v in s.items()}, d.n_features, _exact(d.allowance_sigma),
            _exact(d.threshold_sigma), _exact(d.expected_rows_between_false_alarms),
            _exact(d.arl0_rows_per_side), d.rows_seen, d.alarm_count)


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as e:       # noqa: BLE001 - the type is the observation
        return type(e)


def run(cls, session):
    mean, std, kw, ops = session
    try:
        d = cls(mean, std, **kw)
    except Exception as e:       # noqa: BLE001
        return [type(e)]
    trace = [snapshot(d)]
    for op, *args in ops:
        if op == "observe":
            got = _call(d.observe, args[0])
            trace.append(got if isinstance(got, type) else _alarms(got))
        else:
            d.reset()
        trace.append(snapshot(d))
    return trace


@settings(max_examples=400, deadline=None)
@given(sessions())
def test_native_equals_twin_on_random_sessions(session):
    with np.errstate(all="ignore"):
        assert run(NativeDetector, session) == run(TwinDetector, session)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(1.0, 1e15), st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from([1.0, 2.0, 1e308, 0.5, -1.0])),
       st.one_of(st.floats(0.0, 3.0), st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from([0.0, 5e-324, 1e-300, 0.25, 1e300])),
       st.one_of(st.floats(-3.0, 3.0), st.floats(allow_nan=True, allow_infinity=True)))
def test_threshold_and_arl_are_the_same(arl0, k, shift):
    a, b = _call(native_threshold, arl0, k), _call(twin_threshold, arl0, k)
    assert _exact(a) == _exact(b)
    for h in (0.0, 1.0, 30.0, abs(arl0) if math.isfinite(arl0) else 1.0):
        a, b = _call(native_arl, h, k, shift), _call(twin_arl, h, k, shift)
        assert (a == b) if not isinstance(a, float) else (_exact(a) == _exact(b)
                                                          or math.isnan(a) and math.isnan(b))


def test_public_api_is_the_same():
    assert public(NativeDetector) == public(TwinDetector)


def _both(mean, std, batches, **kw):
    traces = []
    for cls in (NativeDetector, TwinDetector):
        d = cls(mean, std, **kw)
        traces.append([_alarms(d.observe(x)) for x in batches] + [snapshot(d)])
    assert traces[0] == traces[1]
    return traces[0]


def test_adversarial_values_alike():
    x = np.array([[np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0, -0.0, 5e-324]])
    mean, std = [0.0, 0.0, 0.0, -1e308, 1e308, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1e-300,
                                                                 1e-300, 0.0, 0.0, 0.0]
    trace = _both(mean, std, [x, x, x[:0], np.repeat(x, 5, axis=0)])
    first = trace[0]
    # NaN: no alarm; +inf and -inf: an alarm with statistic inf on that side; an
    # overflowing z likewise; zero std: equal values (0.0, -0.0) none, 5e-324 up at once
    assert [(f, side) for f, side, _, _ in first] == [(1, "up"), (2, "down"), (3, "up"),
                                                      (4, "down"), (7, "up")]
    assert all(s == float("inf").hex() for *_, s in first)


def test_single_rows_equal_one_batch():
    rng = np.random.default_rng(3)
    x = rng.normal(0.6, 1.0, size=(400, 3))
    x[rng.random(x.shape) < 0.05] = np.nan
    kw = dict(expected_rows_between_false_alarms=100.0)
    whole = _both([0.0] * 3, [1.0] * 3, [x], **kw)
    rows = _both([0.0] * 3, [1.0] * 3, list(x), **kw)
    assert [a for batch in rows[:-1] for a in batch] == whole[0] and whole[0]
    assert rows[-1] == whole[-1]


def test_api_errors_are_the_same(impl):
    for args, kw in ((([], []), {}), (([0.0], [1.0, 1.0]), {}), (([[0.0]], [[1.0]]), {}),
                     (([np.nan], [1.0]), {}), (([0.0], [-1.0]), {}), (([0.0], [np.inf]), {}),
                     (([0.0], [1.0]), dict(expected_rows_between_false_alarms=0.5)),
                     (([0.0], [1.0]), dict(expected_rows_between_false_alarms=np.inf)),
                     (([0.0], [1.0]), dict(expected_rows_between_false_alarms=1e308)),
                     (([0.0], [1.0]), dict(allowance_sigma=-0.1)),
                     (([0.0], [1.0]), dict(allowance_sigma=np.nan))):
        with pytest.raises(ValueError):
            impl.ChangeDetector(*args, **kw)
    with pytest.raises(TypeError):
        impl.ChangeDetector([0.0], [1.0], expected_rows_between_false_alarms="many")
    with pytest.raises(TypeError):
        impl.ChangeDetector([0.0], [1.0], 1e6)          # the knob is keyword-only
    d = impl.ChangeDetector([0.0, 0.0], [1.0, 1.0])
    for bad in (np.float64(1.0), np.zeros((2, 3)), np.zeros(3), [["a", "b"]]):
        with pytest.raises(ValueError):
            d.observe(bad)
    assert d.rows_seen == 0
    for attr in ("n_features", "threshold_sigma", "rows_seen", "alarm_count",
                 "allowance_sigma", "expected_rows_between_false_alarms"):
        with pytest.raises(AttributeError):
            setattr(d, attr, 1)
