"""Traffic splits: weights honoured within binomial tolerance, sticky keys, pinned versions."""
from __future__ import annotations

import math
import random

import pytest

from gateway.core.registry import ModelEntry, ModelRegistry, ModelVersion
from gateway.core.routing import TrafficSplit, key_point


def _within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_random_choices_follow_the_weights_within_binomial_tolerance():
    random.seed(1)
    split = TrafficSplit({"1": 7, "2": 2, "10": 1})
    assert split.versions == ("1", "2", "10") and split.shares == {"1": 0.7, "2": 0.2, "10": 0.1}
    n = 20_000
    picks = [split.choose() for _ in range(n)]
    for version, p in split.shares.items():
        assert _within_binomial(picks.count(version), n, p), (version, picks.count(version))


def test_a_key_keeps_its_version_and_keys_spread_like_the_weights():
    split = TrafficSplit({"1": 3, "2": 1})
    assert all(split.choose("user-42") == split.choose("user-42") for _ in range(100))
    assert TrafficSplit({"1": 3, "2": 1}).choose("user-42") == split.choose("user-42")   # a new process too
    n = 20_000
    picks = [split.choose(f"user-{i}") for i in range(n)]
    assert _within_binomial(picks.count("2"), n, 0.25)
    assert 0 <= key_point("") < 1 and 0 <= key_point("\udcff") < 1 and key_point("a") != key_point("b")


def test_zero_weights_get_nothing_and_a_split_needs_a_share():
    split = TrafficSplit({"1": 0, "2": 5})
    assert split.versions == ("2",) and {split.choose(str(i)) for i in range(200)} == {"2"}
    with pytest.raises(ValueError):
        TrafficSplit({"1": 0})
    assert TrafficSplit.over({"3": 1}, {"1": object()}) is None


def _registry(*versions: str) -> ModelRegistry:
    reg = ModelRegistry()
    entry = ModelEntry("m", {v: ModelVersion("m", v, model=None, batcher=None, policy=None)  # type: ignore[arg-type]
                             for v in versions})
    reg.put(entry)
    return reg


def test_the_registry_routes_by_the_split_over_loaded_versions_and_a_pinned_version_bypasses_it():
    reg = _registry("1", "2")
    assert reg.resolve("m").version == "2"                                   # no split: the latest
    split = reg.set_weights("m", {"1": 1, "2": 1, "3": 8})                   # 3 is not loaded: no share yet
    assert split is not None and split.shares == {"1": 0.5, "2": 0.5}
    seen = {reg.resolve("m", routing_key=f"k{i}").version for i in range(200)}
    assert seen == {"1", "2"}
    assert {reg.resolve("m", "1", routing_key=f"k{i}").version for i in range(50)} == {"1"}   # pinned
    reg.put(ModelEntry("m", {v: ModelVersion("m", v, None, None, None)  # type: ignore[arg-type]
                             for v in ("1", "2", "3")}))                     # 3 loads: it gets its share
    assert reg.split("m").shares == {"1": 0.1, "2": 0.1, "3": 0.8}
    assert reg.weights("m") == {"1": 1.0, "2": 1.0, "3": 8.0}
    assert reg.set_weights("m", {}) is None and reg.resolve("m").version == "3"
    reg.set_weights("m", {"1": 1})
    reg.remove("m")
    assert reg.split("m") is None
