"""The fallback chain's own answers: the input key, the last-good-answer cache, static answers."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.api import TensorSpec
from gateway.policy.config import CacheSettings
from gateway.policy.fallback import ResponseCache, StaticAnswer, input_key


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


def test_input_key_does_not_depend_on_the_order_of_the_inputs():
    a, b = np.zeros(2, np.float32), np.ones(2, np.float32)
    assert input_key({"a": a, "b": b}, ()) == input_key({"b": b, "a": a}, ())
    assert input_key({"a": a, "b": b}, ()) != input_key({"a": b, "b": a}, ())
    assert input_key({"a": a}, ("x", "y")) != input_key({"a": a}, ("y", "x"))


def test_cache_keeps_extras_and_replaces_an_entry_put_again():
    now = [0.0]
    c = ResponseCache(CacheSettings(max_entries=4), clock=lambda: now[0])
    c.put(b"k", {"y": np.ones(1)}, ("conf", ["label"]))
    now[0] = 1e9                                        # no max_age: never too old
    outputs, extras = c.get(b"k")
    assert extras == ("conf", ["label"]) and outputs["y"].tolist() == [1.0]
    c.put(b"k", {"y": np.zeros(1)})
    assert len(c) == 1 and c.get(b"k")[0]["y"].tolist() == [0.0]
    assert (c.hits, c.misses) == (2, 0)


def test_a_static_answer_for_a_model_without_a_batch_dimension_is_the_whole_answer():
    specs = {"y": TensorSpec("y", np.dtype("<f4"), (2, 2)), "n": TensorSpec("n", np.dtype("<i8"), (1,))}
    s = StaticAnswer({"y": [[1, 2], [3, 4]], "n": [7]}, specs, False, "m@1")
    out = s.outputs(1, ())
    assert out["y"].tolist() == [[1.0, 2.0], [3.0, 4.0]] and out["n"].dtype == np.int64
    out["y"][0, 0] = 99                                 # a copy: the next answer is unchanged
    again = s.outputs(1, ("y",))
    assert list(again) == ["y"] and again["y"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="one answer of that output has shape \\[2, 2\\]"):
        StaticAnswer({"y": [1, 2]}, specs, False, "m@1")


def test_a_static_row_matches_any_size_of_a_dynamic_dimension():
    specs = {"seq": TensorSpec("seq", np.dtype("<f4"), (-1, -1))}
    s = StaticAnswer({"seq": [0.5, 0.5, 0.5]}, specs, True, "m@1")
    assert s.outputs(2, ("seq",))["seq"].shape == (2, 3)
