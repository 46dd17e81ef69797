"""Outlier scores against a reference, checked against a plain loop, and the gate's decision."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gateway.policy.outliers import OutlierGate, reference, scores

REF = reference(low=[-1.0, 0.0, -5.0], high=[1.0, 10.0, 5.0], center=[0.0, 5.0, 0.0], scale=[0.5, 2.0, 0.0])


def _loop(x, ref):
    out, z = [], []
    for row in np.asarray(x, dtype=np.float64).reshape(len(x), -1):
        n, best = 0, 0.0
        for f, v in enumerate(row):
            if not (ref.low[f] <= v <= ref.high[f]):
                n += 1
            s = ref.scale[f]
            if math.isfinite(v) and math.isfinite(s):
                best = max(best, abs(v - ref.center[f]) / s)
        out.append(n)
        z.append(best)
    return out, z


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 20), st.just(3)),
              elements=st.one_of(st.floats(-100, 100), st.sampled_from([math.nan, math.inf, -math.inf]))))
def test_scores_equal_a_plain_loop(x):
    n, z = scores(x, REF)
    want_n, want_z = _loop(x, REF)
    assert n.tolist() == want_n
    assert np.allclose(z, want_z)


def test_an_unusable_scale_leaves_the_feature_out_of_the_z_score_only():
    n, z = scores(np.array([[0.0, 5.0, 1000.0]]), REF)    # feature 2: scale 0, far out of range
    assert n.tolist() == [1] and z.tolist() == [0.0]


def test_the_gate_names_the_first_outlier_row():
    gate = OutlierGate(0, 8.0, {"features": REF})
    assert gate.check({"features": np.array([[0.1, 5.0, 0.0], [0.5, 6.0, 1.0]])}) is None
    why = gate.check({"features": np.array([[0.1, 5.0, 0.0], [0.5, 60.0, 1.0]])})
    assert why == ("row 1 of input 'features' is an outlier against the reference: 1 features outside its "
                   "range (at most 0), robust z 27.5 (at most 8)") and gate.outliers == 1
    lenient = OutlierGate(1, None, {"features": REF})          # one feature out allowed, no z limit
    assert lenient.check({"features": np.array([[0.5, 60.0, 1.0]])}) is None
    assert lenient.check({"features": np.array([[5.0, 60.0, 1.0]])}) is not None
    assert lenient.check({"other": np.zeros((1, 3))}) is None  # inputs it has no reference of pass


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_inf_count_as_out_of_range(value):
    gate = OutlierGate(0, None, {"features": REF})
    assert "1 features outside" in gate.check({"features": np.array([[value, 5.0, 0.0]])})
