"""The typed ``policy:`` and ``faults:`` blocks: errors name the dotted key, the worked example
parses, fault injection needs the process setting."""
from __future__ import annotations

import pathlib

import pytest
from pydantic import ValidationError

from gateway.config.errors import SettingsError
from gateway.config.model import load_model_config
from gateway.policy.config import (
    AdaptiveLimitConfig,
    FallbackConfig,
    FaultInjectionConfig,
    OutputGuardConfig,
    PolicyConfig,
    StaticStep,
)


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


@pytest.mark.parametrize("make, fragment", [
    (lambda: AdaptiveLimitConfig(min_limit=10, initial_limit=5), "min_limit <= initial_limit <= max_limit"),
    (lambda: OutputGuardConfig(min_value=2, max_value=1), "min_value is greater than max_value"),
    (lambda: FallbackConfig.model_validate({"chain": [{"cache": {}}, {"cache": {}}]}), "at most one cache step"),
    (lambda: StaticStep(static={}), "give at least one output"),
    (lambda: StaticStep(static={"p": [0.5, True]}), "output 'p': expected a number"),
    (lambda: StaticStep(static={"p": [float("nan")]}), "output 'p': expected a number"),
    (lambda: StaticStep(static={"p": []}), "output 'p': expected a number"),
])
def test_inconsistent_blocks_are_rejected_saying_why(make, fragment):
    with pytest.raises(ValidationError, match=fragment):
        make()


def test_chain_steps_are_told_apart_by_their_key():
    chain = FallbackConfig.model_validate(
        {"chain": [{"model": "small"}, {"cache": {"max_entries": 5}}, {"static": {"p": [[1, 2]]}}]}).chain
    assert [type(s).__name__ for s in chain] == ["ModelStep", "CacheStep", "StaticStep"]
    assert chain[0].version == "" and chain[1].cache.max_entries == 5 and chain[2].static == {"p": [[1, 2]]}
    assert FallbackConfig().triggers == ["timeout", "error", "overloaded", "circuit_open", "invalid_output",
                                          "outlier"]


def test_faults_describe_themselves():
    assert FaultInjectionConfig().describe() == "none (all rates 0)"
    assert FaultInjectionConfig(latency_ms=5, latency_jitter_ms=2, error_rate=0.1, nan_rate=0.25).describe() == \
        "latency 5 ms (+ up to 2), error rate 0.1, NaN rate 0.25"
