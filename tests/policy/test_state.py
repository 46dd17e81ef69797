"""A version's policy state: built from its ``policy:`` config, and switched in place by
``apply`` (unchanged parts keep their state, changed parts start fresh, a config that does not fit
the model changes nothing)."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.api import TensorSpec
from gateway.policy.breaker import BreakerState
from gateway.policy.config import PolicyConfig
from gateway.policy.state import ModelPolicy

OUTPUTS = [TensorSpec("probabilities", np.dtype("<f4"), (-1, 3))]
BREAKER = {"enabled": True, "sliding_window_size": 1, "minimum_number_of_calls": 1,
           "wait_duration_in_open_state_ms": 1000}
STATIC = {"static": {"probabilities": [0.6, 0.3, 0.1]}}


def _config(**blocks) -> PolicyConfig:
    return PolicyConfig.model_validate(blocks)


def _policy(config: PolicyConfig, **kw) -> ModelPolicy:
    return ModelPolicy("m@1", config, OUTPUTS, True, **kw)


def _open(policy: ModelPolicy) -> None:
    assert policy.breaker.try_acquire()
    policy.breaker.on_error(0.001)
    assert policy.breaker.state is BreakerState.OPEN


def test_the_defaults_are_a_passthrough_with_nothing_built():
    p = _policy(PolicyConfig())
    assert p.passthrough and p.breaker is None and p.guard is None and p.cache is None and p.chain == []
    assert not p.admission.enabled and p.admission.limit() is None
    assert p.fallback_on == frozenset({"timeout", "error", "overloaded", "circuit_open", "invalid_output",
                                       "outlier"})
    assert p.outliers is None


@pytest.mark.parametrize("blocks", [
    {"deadlines": {"default_timeout_ms": 100}}, {"deadlines": {"attempt_timeout_ms": 100}},
    {"admission": {"max_in_flight": 4}}, {"admission": {"max_queue_depth": 4}},
    {"admission": {"adaptive": {"enabled": True}}}, {"circuit_breaker": {"enabled": True}},
    {"output_guard": {"enabled": True}}, {"fallback": {"chain": [STATIC]}},
])
def test_any_part_in_force_ends_the_passthrough(blocks):
    assert not _policy(_config(**blocks)).passthrough


def test_the_chain_is_built_in_order():
    p = _policy(_config(fallback={"chain": [{"model": "small", "version": "2"}, {"cache": {"max_entries": 3}},
                                            STATIC], "triggers": ["timeout"]}))
    kinds = [kind for kind, _ in p.chain]
    assert kinds == ["model", "cache", "static"]
    assert p.chain[0][1].model == "small" and p.chain[0][1].version == "2" and p.chain[1][1] is None
    assert p.chain[2][1].outputs(2, ())["probabilities"].shape == (2, 3)
    assert p.cache.max_entries == 3 and p.fallback_on == frozenset({"timeout"})


def test_apply_keeps_the_state_of_parts_whose_config_did_not_change():
    p = _policy(_config(circuit_breaker=BREAKER, admission={"max_in_flight": 4},
                        fallback={"chain": [{"cache": {"max_entries": 8}}, STATIC]}))
    _open(p)
    breaker, admission, cache = p.breaker, p.admission, p.cache
    assert admission.try_acquire(0)
    cache.put(b"key", {"probabilities": np.ones((1, 3), np.float32)})
    p.apply(_config(circuit_breaker=BREAKER, admission={"max_in_flight": 4},
                    output_guard={"enabled": True},                           # only the guard is new
                    fallback={"chain": [STATIC, {"cache": {"max_entries": 8}}]}))
    assert p.breaker is breaker and p.breaker.state is BreakerState.OPEN
    assert p.admission is admission and p.admission.in_flight == 1
    assert p.cache is cache and len(p.cache) == 1
    assert p.guard is not None and [kind for kind, _ in p.chain] == ["static", "cache"]


def test_apply_starts_changed_parts_fresh():
    p = _policy(_config(circuit_breaker=BREAKER, admission={"max_in_flight": 4},
                        fallback={"chain": [{"cache": {"max_entries": 8}}]}))
    _open(p)
    assert p.admission.try_acquire(0)
    p.cache.put(b"key", {"probabilities": np.ones((1, 3), np.float32)})
    p.apply(_config(circuit_breaker={**BREAKER, "sliding_window_size": 2}, admission={"max_in_flight": 5},
                    fallback={"chain": [{"cache": {"max_entries": 9}}]}))
    assert p.breaker.state is BreakerState.CLOSED and p.breaker.config.sliding_window_size == 2
    assert p.admission.in_flight == 0 and p.admission.limit() == 5
    assert p.cache.max_entries == 9 and len(p.cache) == 0
    p.apply(PolicyConfig())
    assert p.breaker is None and p.cache is None and p.passthrough


def test_a_static_answer_that_does_not_fit_changes_nothing():
    first = _config(circuit_breaker=BREAKER, fallback={"chain": [STATIC]})
    p = _policy(first)
    breaker, chain = p.breaker, p.chain
    bad = _config(fallback={"chain": [{"cache": {}}, {"static": {"probabilities": [0.5, 0.5]}}]})
    with pytest.raises(ValueError, match=r"^policy\.fallback\.chain\.1\.static: model m@1: static fallback for "
                                         r"'probabilities' has shape \[2\]"):
        p.apply(bad)
    assert p.config is first and p.breaker is breaker and p.chain is chain and p.cache is None
    with pytest.raises(ValueError, match=r"chain\.0\.static: .*names output 'scores'"):
        _policy(_config(fallback={"chain": [{"static": {"scores": [1.0]}}]}))


def test_breaker_transitions_are_heard_and_follow_the_clock():
    now = [100.0]
    heard = []
    p = _policy(_config(circuit_breaker=BREAKER), on_transition=lambda *t: heard.append(t), clock=lambda: now[0])
    _open(p)
    assert not p.breaker.try_acquire()
    now[0] += 1.5                                           # the open state's second is over
    assert p.breaker.try_acquire() and p.breaker.state is BreakerState.HALF_OPEN
    assert heard == [("m@1", "closed", "open"), ("m@1", "open", "half_open")]


def test_snapshot_in_plain_values():
    p = _policy(_config(circuit_breaker=BREAKER, admission={"max_in_flight": 4},
                        fallback={"chain": [{"cache": {}}]}))
    _open(p)
    assert not p.breaker.try_acquire()
    p.fallbacks["error"] += 2
    p.rejections["circuit_open"] += 1
    assert p.snapshot() == {
        "served_by": "m@1", "breaker_state": "open",
        "breaker_rates": {"calls": 1, "failure_rate": 100.0, "slow_call_rate": 0.0},
        "breaker_not_permitted": 1, "in_flight": 0, "concurrency_limit": 4, "shed": 0, "cache_entries": 0,
        "fallbacks": {"error": 2}, "rejections": {"circuit_open": 1}}
    assert _policy(PolicyConfig()).snapshot()["breaker_state"] == "disabled"
