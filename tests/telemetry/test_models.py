"""Per-version telemetry state: the batch observer (inputs always, scores for classifiers),
dynamic input widths, rebinning, and the histograms readers merge."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.telemetry import InputBinning, Telemetry
from gateway.telemetry.models import BatchStats, ModelTelemetry


def _state(inputs, classes=None, binning=InputBinning()) -> ModelTelemetry:
    return ModelTelemetry(1, "m", "1", inputs, classes, False, None, 160, 1, 0, binning)


def _counts(state, name):
    return state.features[name].state()["count"].tolist()


def test_the_batch_observer_folds_every_input_and_a_classifier_s_scores():
    state = _state({"x": 2, "y": 1}, classes=3)
    BatchStats(state, "scores").observe_batch(
        {"x": np.ones((4, 2), np.float32), "y": np.zeros((4, 1), np.float32)},
        {"scores": np.array([[0.1, 0.8, 0.1]] * 4, np.float32), "other": np.zeros(4)})
    assert _counts(state, "x") == [4, 4] and _counts(state, "y") == [4]
    s = state.confidence.state()
    assert int(s["rows"]) == 4 and s["class_counts"].tolist() == [0, 4, 0]


def test_without_a_classifier_the_scores_output_is_not_looked_for():
    state = _state({"x": 2})
    assert state.confidence is None
    BatchStats(state, "scores").observe_batch({"x": np.ones((3, 2))}, {})   # no KeyError
    assert _counts(state, "x") == [3, 3]


def test_a_dynamic_width_is_taken_from_the_first_batch():
    state = _state({"seq": 0, "flat": 0})
    assert state.features == {}
    state.observe_inputs("seq", np.ones((2, 3, 2)))          # 3 x 2 features per row
    state.observe_inputs("flat", np.zeros((4, 0)))           # no features at all: nothing to keep
    assert "flat" not in state.features
    state.observe_inputs("flat", np.arange(5.0))             # a 1-D batch: one feature per row
    assert state.features["seq"].n_features == 6 and _counts(state, "seq") == [2] * 6
    assert state.features["flat"].n_features == 1 and _counts(state, "flat") == [5]
    with pytest.raises(ValueError, match="input 'z' was not registered for m"):
        state.observe_inputs("z", np.ones((1, 1)))


def test_rebin_restarts_the_statistics_with_the_new_bins_and_keeps_widths():
    state = _state({"x": 2})
    state.observe_inputs("x", np.random.default_rng(0).normal(size=(50, 2)))
    state.rebin(InputBinning(bins=4, ranges={"x": (0.0, 4.0)}))
    assert state.binning.bins == 4 and _counts(state, "x") == [0, 0]
    state.observe_inputs("x", np.array([[0.5, 3.5]]))
    s = state.features["x"].state()
    assert s["edges"][0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert s["histogram"].tolist() == [[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]]   # underflow, 4 bins, overflow


def test_histograms_are_made_once_per_key_and_merged_per_kind():
    state = _state({})
    assert state.hist(0, "e2e", 1) is state.hist(0, "e2e", 1)
    state.hist(0, "e2e", 1).record_array(np.array([1.0, 2.0]))
    state.hist(14, "e2e", 2).record_array(np.array([4.0]))
    state.hist(0, "queue").record_array(np.array([8.0]))
    e2e = state.merged("e2e")
    assert e2e.count == 3 and e2e.sum == 7.0
    assert state.merged("queue").count == 1 and state.merged("compute").count == 0
    assert state.hist(0, "e2e", 1).count == 2                 # merging copies


def test_the_hub_registers_through_the_same_state():
    t = Telemetry()
    m = t.register_model("c", "1", inputs={"x": 3}, classifier_classes=2, labels=["no", "yes"])
    observer = t.batch_observer(m, "p", False)
    assert isinstance(observer, BatchStats)
    observer.observe_batch({"x": np.ones((2, 3))}, {"p": np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)})
    (conf,) = t.confidence_stats()
    assert conf.labels == ["no", "yes"] and conf.class_counts.tolist() == [1, 1]
