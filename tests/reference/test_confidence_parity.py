"""Parity suite of the classifier-output kernels: ``gateway.kernels.ConfidenceStats`` and
``top1`` against the twins in ``tests.reference.confidence``, on the same cases (``impl``)
and on hypothesis batches (probabilities and logits with NaN, +/-inf, huge, tiny and
subnormal, negative and tied scores; empty batches, single rows and columns, 1-D and 3-D
input, float32 / float64 / integer dtypes), merges and resets, compared exactly (float32
outputs byte for byte).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.kernels import ConfidenceStats as NativeStats
from gateway.kernels import top1 as native_top1
from tests.reference.confidence import ConfidenceStats as TwinStats
from tests.reference.confidence import top1 as twin_top1
from tests.reference.impls import public

ADVERSARIAL = np.array([
    [np.inf, 1.0, 2.0],
    [np.nan, 0.0, 1.0],
    [-np.inf, -np.inf, -np.inf],
    [np.inf, np.inf, 0.0],
    [1e30, 1e30, -1e30],
    [3e38, -3e38, 0.0],
    [-5.0, -7.0, -1.0],
    [0.2, 0.2, 0.6],
    [0.5, 0.5, 0.0],
    [5e-324, 0.0, -0.0],
    [1.7976931348623157e308, -1.7976931348623157e308, 1.0],
    [-np.inf, 0.3, -np.inf],
    [np.nan, np.nan, np.nan],
    [1.0, np.nan, np.inf],
])

_scalar = st.one_of(st.floats(), st.floats(0.0, 1.0), st.floats(-30.0, 30.0),
                    st.sampled_from([0.0, -0.0, 1.0, 0.5, math.nan, math.inf, -math.inf,
                                     5e-324, 1e-310, 3.4e38, 1e308, -1e308]))


@st.composite
def batches(draw, n_classes=None):
    """A [rows, classes] score array (sometimes 1-D or 3-D, another dtype, tied rows)."""
    c = n_classes or draw(st.integers(1, 6))
    rows = draw(st.integers(0, 12))
    x = draw(hnp.arrays(np.float64, (rows, c), elements=_scalar))
    if rows and draw(st.booleans()):
        x[draw(st.integers(0, rows - 1))] = draw(_scalar)      # a row of one value: ties
    kind = draw(st.sampled_from(["2d", "2d", "f32", "int", "1d", "3d"]))
    if kind == "f32":
        with np.errstate(over="ignore", invalid="ignore"):
            x = x.astype(np.float32)
    elif kind == "int":
        x = np.nan_to_num(x, nan=0, posinf=9, neginf=-9).clip(-9, 9).astype(np.int64)
    elif kind == "1d" and rows == 1:
        x = x[0]
    elif kind == "3d" and c % 2 == 0:
        x = x.reshape(rows, 2, c // 2)
    return x


def _out(result):
    top, cls = result
    assert top.dtype == np.float32 and cls.dtype == np.int64
    return top.tobytes(), cls.tolist()


def _state(c):
    s = c.state()
    assert set(s) == {"rows", "invalid_rows", "mean_top1", "class_counts", "top1_hist",
                      "margin_hist", "entropy_hist", "entropy_max"}
    return ({k: (v.tolist() if isinstance(v, np.ndarray) else
                 np.float64(v).tobytes() if isinstance(v, float) else v)
             for k, v in s.items()},
            c.rows, c.invalid_rows, np.float64(c.top1_sum).tobytes(), c.n_classes, c.n_bins)


@st.composite
def sessions(draw):
    n_classes = draw(st.integers(1, 6))
    n_bins = draw(st.integers(1, 25))
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("observe"), batches(n_classes), st.booleans()),
        st.tuples(st.just("merge"), st.lists(st.tuples(batches(n_classes), st.booleans()),
                                             max_size=3)),
        st.tuples(st.just("merge_self")),
        st.tuples(st.just("reset")),
    ), max_size=8))
    return n_classes, n_bins, ops


def _call(fn, *args):
    """What a call returned, or the type of what it raised (compared across impls)."""
    try:
        return _out(fn(*args))
    except Exception as e:       # noqa: BLE001 - the type is the observation
        return type(e)


def run(cls, top1, session):
    n_classes, n_bins, ops = session
    c = cls(n_classes, n_bins)
    trace = [_state(c)]
    for op, *args in ops:
        if op == "observe":
            x, logits = args
            trace.append(_call(c.observe, x, logits))
            trace.append(_call(top1, x, logits))
        elif op == "merge":
            other = cls(n_classes, n_bins)
            for x, logits in args[0]:
                _call(other.observe, x, logits)
            c.merge(other)
        elif op == "merge_self":
            c.merge(c)
        else:
            c.reset()
        trace.append(_state(c))
    return trace


@settings(max_examples=250, deadline=None)
@given(sessions())
def test_native_equals_twin_on_random_sessions(session):
    assert run(NativeStats, native_top1, session) == run(TwinStats, twin_top1, session)


@settings(max_examples=150, deadline=None)
@given(batches(), st.booleans())
def test_top1_is_the_observe_rule(x, logits):
    """top1() gives what observe() returns, row for row, and records nothing (both impls)."""
    shape = np.shape(x)
    n_classes = shape[0] if len(shape) == 1 else int(np.prod(shape[1:]))
    for cls, top1 in ((NativeStats, native_top1), (TwinStats, twin_top1)):
        c = cls(max(n_classes, 1))
        if n_classes:
            assert _call(top1, x, logits) == _call(c.observe, x, logits)
    assert _call(native_top1, x, logits) == _call(twin_top1, x, logits)


@pytest.mark.parametrize("logits", [False, True])
def test_adversarial_rows(impl, logits):
    """Scores a broken model can produce: the per-row rule, and nothing corrupted."""
    c = impl.ConfidenceStats(3, n_bins=7)
    for _ in range(20):
        top, cls = c.observe(ADVERSARIAL, logits=logits)
    nan_rows, dead_row = [1, 12, 13], 2
    assert cls[nan_rows].tolist() == [-1] * 3 and np.isnan(top[nan_rows]).all()
    assert cls[dead_row] == -1 and top[dead_row] == 0.0          # all -inf: 0 and -1
    assert cls[[0, 3, 4, 7, 8, 11]].tolist() == [0, 0, 0, 2, 0, 1]   # first maximum wins
    st_ = c.state()
    assert st_["invalid_rows"] == 20 * 4 and st_["rows"] == 20 * (len(ADVERSARIAL) - 4)
    for h in ("top1_hist", "margin_hist", "entropy_hist", "class_counts"):
        assert int(st_[h].sum()) == st_["rows"], h
    assert _out(impl.top1(ADVERSARIAL, logits)) == (top.tobytes(), cls.tolist())
    if logits:
        assert top[3] == 1.0 and top[6] == pytest.approx(1 / (1 + math.exp(-4) + math.exp(-6)))


def test_public_api_is_the_same():
    assert public(NativeStats) == public(TwinStats)


def test_shapes_and_errors(impl):
    c = impl.ConfidenceStats(2)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            impl.ConfidenceStats(bad)
        with pytest.raises(ValueError):
            impl.ConfidenceStats(2, bad)
    with pytest.raises(ValueError):
        c.observe(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        c.merge(impl.ConfidenceStats(3))
    with pytest.raises(TypeError):
        c.merge("stats")
    top, cls = c.observe(np.zeros((0, 2)))
    assert top.shape == cls.shape == (0,) and c.rows == 0
    top, cls = c.observe([0.3, 0.7])                          # 1-D: one row
    assert cls.tolist() == [1] and c.rows == 1
    assert c.state()["mean_top1"] == pytest.approx(0.7)
    assert math.isnan(impl.ConfidenceStats(2).state()["mean_top1"])
    top, cls = impl.top1(np.zeros((3, 0)))
    assert top.tolist() == [0.0] * 3 and cls.tolist() == [-1] * 3
    top, cls = impl.top1(np.zeros((0, 4)))
    assert len(top) == len(cls) == 0
    for attr in ("rows", "invalid_rows", "top1_sum", "n_classes", "n_bins"):
        with pytest.raises(AttributeError):
            setattr(c, attr, 0)


# -- the case of the former tests/telemetry/test_kernels.py -------------------------------


@pytest.mark.parametrize("logits", [True, False])
def test_confidence_against_numpy(impl, logits):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 5)) * 4
    z[0] = [1e30, 0, 0, 0, -1e30] if logits else [1, 0, 0, 0, 0]
    if not logits:
        z = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    z[5, 2] = np.nan
    c = impl.ConfidenceStats(5)
    top1, pred = c.observe(z.astype(np.float32), logits=logits)
    p = z
    if logits:
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
    ok = ~np.isnan(z).any(1)
    np.testing.assert_allclose(top1[ok], p.max(1)[ok], rtol=1e-5)
    assert pred[ok].tolist() == p.argmax(1)[ok].tolist()
    assert pred[5] == -1 and np.isnan(top1[5])
    st = c.state()
    assert st["invalid_rows"] == 1 and st["rows"] == ok.sum()
    assert st["class_counts"].tolist() == np.bincount(p.argmax(1)[ok], minlength=5).tolist()
    assert st["top1_hist"].sum() == st["entropy_hist"].sum() == ok.sum()


def test_empty_rank3_batch(impl):
    c = impl.ConfidenceStats(4)
    top, cls = c.observe(np.zeros((0, 2, 2)))
    assert top.shape == cls.shape == (0,) and c.rows == c.invalid_rows == 0
    top, cls = impl.top1(np.zeros((0, 2, 2)))
    assert top.shape == cls.shape == (0,)


def test_merge_none_is_a_type_error(impl):
    c = impl.ConfidenceStats(2)
    with pytest.raises(TypeError):
        c.merge(None)
