"""Routing: which loaded version answers (model, version); copy-on-write entries; the latest cache.

The registry only holds versions (it never calls them), so the versions here carry no session."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api import GatewayError, Status
from gateway.core.registry import ModelEntry, ModelRegistry, ModelVersion, version_key


def _version(name: str, version: str) -> ModelVersion:
    return ModelVersion(name, version, model=None, batcher=None, policy=None)


def _entry(name: str, versions=(), errors=None) -> ModelEntry:
    return ModelEntry(name, {v: _version(name, v) for v in versions}, dict(errors or {}))


def _error(registry: ModelRegistry, name: str, version: str = "") -> GatewayError:
    with pytest.raises(GatewayError) as info:
        registry.resolve(name, version)
    return info.value


def test_latest_is_the_highest_numeric_version_and_a_pinned_one_is_that_one():
    registry = ModelRegistry()
    entry = _entry("m", ["1", "2", "10"])
    registry.put(entry)
    assert registry.resolve("m") is entry.versions["10"]           # 10 > 2, not "10" < "2"
    assert registry.resolve("m", "2") is entry.versions["2"]
    assert registry.resolve("m", "1").served_by == "m@1"
    assert entry.latest == "10" and entry.state == "READY"


def test_numeric_versions_sort_numerically_after_the_others():
    assert sorted(["10", "b", "2", "a", "1"], key=version_key) == ["a", "b", "1", "2", "10"]
    assert _entry("m", ["b", "3"]).latest == "3"
    assert _entry("m", ["b", "a"]).latest == "b"


def test_unknown_models_and_versions_are_not_found_naming_what_is_loaded():
    registry = ModelRegistry()
    err = _error(registry, "m")
    assert err.status is Status.NOT_FOUND and err.message == "model 'm' not found (models: none)"
    registry.put(_entry("m", ["10", "2"]))
    registry.put(_entry("a", ["1"]))
    err = _error(registry, "x")
    assert err.status is Status.NOT_FOUND and err.message == "model 'x' not found (models: a, m)"
    err = _error(registry, "m", "7")
    assert err.status is Status.NOT_FOUND
    assert err.message == "model 'm' has no version '7' (loaded versions: 2, 10)"


def test_failed_versions_are_unavailable_with_the_load_error():
    registry = ModelRegistry()
    registry.put(_entry("m", ["1"], {"3": "bad protobuf"}))
    err = _error(registry, "m", "3")
    assert err.status is Status.UNAVAILABLE
    assert err.message == "model 'm' version '3' failed to load: bad protobuf"
    registry.put(_entry("n", [], {"1": "bad protobuf", "config": "policy.x: unknown key"}))
    err = _error(registry, "n")
    assert err.status is Status.UNAVAILABLE
    assert err.message == "model 'n' has no loaded version: 1: bad protobuf; config: policy.x: unknown key"
    assert registry.get("n").state == "UNAVAILABLE" and registry.get("n").latest is None
    err = _error(registry, "n", "2")
    assert err.status is Status.NOT_FOUND and err.message.endswith("(loaded versions: none)")


def test_put_replaces_the_entry_whole_and_readers_keep_what_they_hold():
    registry = ModelRegistry()
    old = _entry("m", ["1"])
    registry.put(old)
    held = registry.get("m")
    listed = registry.entries()
    new = _entry("m", ["2"])
    registry.put(new)
    assert held is old and list(old.versions) == ["1"]               # not merged into
    assert listed == [old]
    assert registry.get("m") is new and registry.entries() == [new]
    assert registry.resolve("m") is new.versions["2"]
    assert _error(registry, "m", "1").status is Status.NOT_FOUND


def test_the_latest_cache_follows_put_and_remove():
    registry = ModelRegistry()
    registry.put(_entry("other", ["5"]))
    registry.put(_entry("m", ["1"]))
    assert registry.resolve("m").version == "1"
    registry.put(_entry("m", ["1", "2"]))
    assert registry.resolve("m").version == "2"
    registry.put(_entry("m", ["1"]))                                  # version 2 went away
    assert registry.resolve("m").version == "1"
    registry.put(_entry("m", [], {"1": "gone"}))
    assert _error(registry, "m").status is Status.UNAVAILABLE
    registry.put(_entry("m", ["4"]))
    removed = registry.remove("m")
    assert removed is not None and list(removed.versions) == ["4"]
    assert _error(registry, "m").status is Status.NOT_FOUND
    assert registry.remove("m") is None
    assert registry.resolve("other").version == "5"                   # untouched throughout
    assert [e.name for e in registry.entries()] == ["other"]


def test_entries_are_listed_by_name():
    registry = ModelRegistry()
    for name in ("c", "a", "b"):
        registry.put(_entry(name, ["1"]))
    assert [e.name for e in registry.entries()] == ["a", "b", "c"]


def test_describe_errors_sorts_by_key():
    assert _entry("m", [], {"config": "x", "2": "y", "10": "z"}).describe_errors() == "10: z; 2: y; config: x"


_names = st.sampled_from(["a", "b", "c"])
_versions = st.lists(st.sampled_from(["1", "2", "9", "10", "beta"]), unique=True, max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("put"), _names, _versions), st.tuples(st.just("remove"), _names)),
                max_size=20))
def test_resolve_always_answers_as_the_entries_say(operations):
    registry = ModelRegistry()
    model: dict[str, list[str]] = {}
    for op in operations:
        if op[0] == "put":
            _, name, versions = op
            registry.put(_entry(name, versions, {} if versions else {"1": "failed"}))
            model[name] = versions
        else:
            registry.remove(op[1])
            model.pop(op[1], None)
    for name in ("a", "b", "c"):
        if name not in model:
            assert _error(registry, name).status is Status.NOT_FOUND
        elif not model[name]:
            assert _error(registry, name).status is Status.UNAVAILABLE
        else:
            assert registry.resolve(name).version == max(model[name], key=version_key)
    assert [e.name for e in registry.entries()] == sorted(model)
