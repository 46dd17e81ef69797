"""Output guard, the last-good-answer cache, static answers, and the policy config."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from gateway.config.errors import SettingsError
from gateway.config.model import load_model_config
from gateway.api import TensorSpec
from gateway.policy.config import CacheSettings, OutputGuardConfig, PolicyConfig
from gateway.policy.fallback import ResponseCache, StaticAnswer, input_key
from gateway.policy.guard import OutputGuard
from gateway.policy.reasons import REASON_LABELS, FallbackReason


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


def test_input_key_depends_on_bytes_dtype_shape_and_outputs():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    base = input_key({"x": x}, ())
    assert input_key({"x": x.copy()}, ()) == base
    assert input_key({"x": x.reshape(3, 2)}, ()) != base
    assert input_key({"x": x.astype(np.float64)}, ()) != base
    assert input_key({"x": x + 1}, ()) != base
    assert input_key({"x": x}, ("y",)) != base
    assert input_key({"x": x.T}, ()) == input_key({"x": np.ascontiguousarray(x.T)}, ())


def test_cache_is_a_bounded_lru_with_max_age():
    now = [0.0]
    c = ResponseCache(CacheSettings(max_entries=2, max_age_s=10), clock=lambda: now[0])
    c.put(b"a", {"y": np.ones(1)})
    c.put(b"b", {"y": np.zeros(1)})
    assert c.get(b"a") is not None  # a is now the most recent
    c.put(b"c", {"y": np.zeros(1)})
    assert c.get(b"b") is None and len(c) == 2
    now[0] = 11.0
    assert c.get(b"a") is None  # too old
    assert c.hits == 1 and c.misses == 2


def test_static_answer_repeats_per_row_and_checks_shapes():
    specs = {"probabilities": TensorSpec("probabilities", np.dtype("<f4"), (-1, 3))}
    s = StaticAnswer({"probabilities": [0.6, 0.3, 0.1]}, specs, True, "m@1")
    out = s.outputs(4, ())
    assert out["probabilities"].shape == (4, 3) and out["probabilities"].dtype == np.float32
    assert s.outputs(1, ("other",)) is None
    with pytest.raises(ValueError, match="shape"):
        StaticAnswer({"probabilities": [0.5, 0.5]}, specs, True, "m@1")
    with pytest.raises(ValueError, match="names output 'nope'"):
        StaticAnswer({"nope": 1.0}, specs, True, "m@1")


def test_reason_codes_are_defined_once():
    assert REASON_LABELS == ("timeout", "error", "overloaded", "circuit_open", "invalid_output")
    assert [int(FallbackReason.from_label(r)) for r in REASON_LABELS] == [1, 2, 3, 4, 5]


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_policy_config_errors_name_the_key(tmp_path):
    with pytest.raises(SettingsError, match=r"policy\.circuit_breaker\.failure_rate_threshold"):
        load_model_config(_write(tmp_path, "policy:\n  circuit_breaker:\n    failure_rate_threshold: 300\n"))
    with pytest.raises(SettingsError, match=r"policy\.admission\.max_inflight: unknown key"):
        load_model_config(_write(tmp_path, "policy:\n  admission:\n    max_inflight: 3\n"))
    with pytest.raises(SettingsError, match=r"policy\.fallback\.chain\.0"):
        load_model_config(_write(tmp_path, "policy:\n  fallback:\n    chain:\n      - {nonsense: 1}\n"))
    with pytest.raises(SettingsError, match=r"policy\.fallback\.triggers\.0"):
        load_model_config(_write(tmp_path, "policy:\n  fallback:\n    triggers: [meltdown]\n"))


def test_worked_example_parses(tmp_path):
    cfg = load_model_config(_write(tmp_path, """
policy:
  deadlines: {default_timeout_ms: 200, attempt_timeout_ms: 100}
  admission: {max_in_flight: 64, adaptive: {enabled: true}}
  circuit_breaker: {enabled: true, minimum_number_of_calls: 20, wait_duration_in_open_state_ms: 5000}
  output_guard: {enabled: true, min_value: 0, max_value: 1}
  fallback:
    chain:
      - model: classifier_small
      - cache: {max_entries: 10000}
      - static: {probabilities: [0.6, 0.3, 0.1]}
"""))
    assert len(cfg.policy.fallback.chain) == 3
    assert PolicyConfig() == PolicyConfig.model_validate({})


def test_faults_need_the_process_setting(tmp_path):
    path = _write(tmp_path, "faults:\n  error_rate: 0.5\n")
    with pytest.raises(SettingsError, match="GATEWAY_ALLOW_FAULT_INJECTION"):
        load_model_config(path)
    assert load_model_config(path, allow_fault_injection=True).faults.error_rate == 0.5
