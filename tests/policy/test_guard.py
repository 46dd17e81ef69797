"""The output guard: which outputs fail the call (NaN/Inf, out of range, only the listed ones)."""
from __future__ import annotations

import numpy as np

from gateway.policy.config import OutputGuardConfig
from gateway.policy.guard import OutputGuard


def test_guard_flags_nan_inf_and_range():
    g = OutputGuard(OutputGuardConfig(enabled=True, min_value=0, max_value=1))
    assert g.check({"p": np.array([[0.2, 0.8]], np.float32)}) is None
    assert "NaN" in g.check({"p": np.array([[np.nan, 0.8]], np.float32)})
    assert "NaN" in g.check({"p": np.array([[np.inf, 0.8]], np.float32)})
    assert "above max_value" in g.check({"p": np.array([[1e9]], np.float32)})
    assert "below min_value" in g.check({"p": np.array([[-3.0]], np.float32)})
    assert g.check({"ids": np.array([5, -7], np.int64)}) is None  # integer outputs are not checked


def test_guard_checks_only_listed_outputs():
    g = OutputGuard(OutputGuardConfig(enabled=True, outputs=["a"]))
    assert g.check({"a": np.ones(2, np.float32), "b": np.full(2, np.nan, np.float32)}) is None


def test_guard_range_only_ignores_all_nan_when_nan_allowed():
    g = OutputGuard(OutputGuardConfig(enabled=True, reject_non_finite=False, max_value=1))
    assert g.check({"p": np.full(3, np.nan, np.float32)}) is None


def test_a_disabled_guard_says_so_and_empty_or_integer_outputs_always_pass():
    assert not OutputGuard(OutputGuardConfig()).enabled
    g = OutputGuard(OutputGuardConfig(enabled=True, min_value=0))
    assert g.enabled
    assert g.check({"p": np.zeros((0, 3), np.float32), "n": np.array([-5], np.int32)}) is None
    assert g.check({"p": np.array([0.5], np.float32), "q": np.array([-0.5], np.float64)}) == \
        "output 'q' has -0.5 below min_value 0"


def test_with_nan_allowed_the_range_is_checked_on_the_finite_values():
    g = OutputGuard(OutputGuardConfig(enabled=True, reject_non_finite=False, min_value=0, max_value=1))
    assert g.check({"p": np.array([np.nan, 0.5, np.inf], np.float32)}) is None
    assert g.check({"p": np.array([np.nan, 2.0], np.float32)}) == "output 'p' has 2 above max_value 1"
